"""Callbacks for training with observation normalisation.

:class:`FreezeNormalization` stops VecNormalize's running statistics after a number of steps. A position that the
policy only weakly holds (CartPoleNoVel's cart) feeds back through them: the cart wanders, the running std of its
position grows, the network sees a smaller position and lets it wander further, and once the learning rate has
annealed towards 0 the network cannot follow (README "Ablations"). In an rl-zoo3 entry (``attn-zoo train``)::

    callback:
      - sb3_attn_ac.callbacks.FreezeNormalization:
          after_steps: 50000
"""

from stable_baselines3.common.callbacks import BaseCallback


class FreezeNormalization(BaseCallback):
    """Stop updating VecNormalize's observation and return statistics once ``after_steps`` steps have been collected
    (the statistics keep being applied, frozen, as at evaluation).

    :param after_steps: timesteps (all envs together) after which the statistics stop updating
    """

    def __init__(self, after_steps: int) -> None:
        super().__init__()
        if isinstance(after_steps, bool) or not isinstance(after_steps, int | float) or after_steps < 0:
            raise ValueError(f"after_steps must be a number of timesteps >= 0, got {after_steps!r}")
        self.after_steps = after_steps

    def _on_training_start(self) -> None:
        if self.model.get_vec_normalize_env() is None:
            raise ValueError("FreezeNormalization needs a VecNormalize env (rl-zoo3: normalize: True)")

    def _on_step(self) -> bool:
        env = self.model.get_vec_normalize_env()
        if env.training and self.num_timesteps >= self.after_steps:
            env.training = False
        return True

"""An rl-zoo3 callback for the benchmarks' entries: VecNormalize's running statistics stop updating after a given
number of steps (``ablations.py`` variant ``"freeze normalization at half"``). A position's running mean and std
follow where the policy keeps it; once the learning rate has annealed towards 0 the network cannot follow them
(README "Ablations", ``cartpole_checkpoints.py``).

In an entry (the benchmarks folder on the path, as ``report.train`` puts it)::

    callback:
      - normalization.FreezeNormalization:
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
        if after_steps < 0:
            raise ValueError(f"after_steps must be >= 0, got {after_steps}")
        self.after_steps = after_steps

    def _on_training_start(self) -> None:
        if self.model.get_vec_normalize_env() is None:
            raise ValueError("FreezeNormalization needs a VecNormalize env (rl-zoo3: normalize: True)")

    def _on_step(self) -> bool:
        env = self.model.get_vec_normalize_env()
        if env.training and self.num_timesteps >= self.after_steps:
            env.training = False
        return True

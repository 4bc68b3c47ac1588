"""POPGym's baseline observations for any gymnasium env, as rl-zoo3's ``env_wrapper`` (which wraps the Monitor'ed
env that ``gym.make`` returned; POPGym's own wrappers accept only a bare ``POPGymEnv``). POPGym's baselines
(``popgym/baselines/ppo.py``) train every model on ``Antialias(PreviousAction(env))``: each observation also holds
the action taken before it (a null action at the episode's first step) and a flag that is 1 at that step. Both
are POPGym's static methods, applied here in the same order.
"""

from typing import Any

import gymnasium as gym
from popgym.wrappers import Antialias, PreviousAction


class PreviousActionAntialias(gym.Wrapper):
    """``Antialias(PreviousAction(env))`` of POPGym on any env.

    :param env: the env to wrap
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._with_action = PreviousAction.add_act_space_to_obs_space(env.observation_space, env.action_space)
        self.observation_space = Antialias.antialias_obs_space(self._with_action)
        self._null_action = PreviousAction.get_null_action(env.action_space)

    def _observation(self, obs: Any, action: Any, first: bool) -> Any:
        obs = PreviousAction.add_act_to_obs(self.env.observation_space, obs, action)
        return Antialias.antialias_obs(self._with_action, obs, first)

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs, self._null_action, True), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs, action, False), reward, terminated, truncated, info

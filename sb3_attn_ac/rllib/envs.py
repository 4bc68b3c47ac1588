"""Gymnasium envs that other packages register (rl-zoo3's NoVel envs, POPGym), made in every RLlib env runner."""

import importlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
from ray.tune.registry import register_env


def make_gym_env(
    env_config: dict[str, Any], env_id: str, imports: Sequence[str], wrappers: Sequence[Callable[[gym.Env], gym.Env]]
) -> gym.Env:
    """``gym.make(env_id, **env_config)`` after importing the modules that register it, wrapped in ``wrappers``.

    :param env_config: RLlib's env config (keyword arguments of ``gym.make``)
    :param env_id: the gymnasium id
    :param imports: modules whose import registers the env (e.g. ``"rl_zoo3.import_envs"``, ``"popgym"``)
    :param wrappers: applied in order
    """
    for module in imports:
        importlib.import_module(module)
    env = gym.make(env_id, **dict(env_config))
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def register_gym_env(
    env_id: str, imports: Sequence[str] = (), wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (), name: str | None = None
) -> str:
    """Register a gymnasium env with RLlib under ``name`` (default ``env_id``), so that env runners in other
    processes and on other nodes make it: a gymnasium id registered by an import in the driver is unknown there.

    :param env_id: the gymnasium id
    :param imports: modules whose import registers it (e.g. ``"rl_zoo3.import_envs"`` for ``CartPoleNoVel-v1``)
    :param wrappers: gymnasium wrappers applied in order (e.g. ``gymnasium.wrappers.FlattenObservation``)
    :param name: the name to pass to ``config.environment()``
    :return: that name
    """
    name = env_id if name is None else name
    register_env(name, partial(make_gym_env, env_id=env_id, imports=tuple(imports), wrappers=tuple(wrappers)))
    return name

"""SB3's identity tests (tests/test_identity.py of stable-baselines3) for our algorithms.

Settings as SB3 checks A2C and PPO: one env, ``gamma=0.4``, ``learning_rate=2e-3``, PPO with ``n_steps=256`` and
``n_epochs=4``; 1200 steps on the discrete envs (dim 4), 2000 (A2C) / 1000 (PPO) on the Box env; a pass is a mean
reward >= 90 over 20 evaluation episodes. There, context is useless: nothing should be lost against A2C / PPO.
"""

import numpy as np
import pytest
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_attn_ac import AttnA2C, AttnPPO

DIM = 4
ENVS = {
    "discrete": lambda: IdentityEnv(DIM),
    "multidiscrete": lambda: IdentityEnvMultiDiscrete(DIM),
    "multibinary": lambda: IdentityEnvMultiBinary(DIM),
    "box": lambda: IdentityEnvBox(eps=0.5),
}


def identity_reward(algo: type, env_name: str, seed: int) -> float:
    """Mean evaluation reward of ``algo`` trained on an identity env at SB3's settings."""
    env = DummyVecEnv([ENVS[env_name]])
    ppo = algo in (PPO, AttnPPO)
    kwargs = dict(n_steps=256, n_epochs=4) if ppo else {}
    total_timesteps = (1000 if ppo else 2000) if env_name == "box" else 1200
    model = algo("MlpPolicy", env, gamma=0.4, learning_rate=2e-3, seed=seed, **kwargs).learn(total_timesteps)
    mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=20, warn=False)
    return mean_reward


@pytest.mark.parametrize("algo", [AttnA2C, AttnPPO])
def test_multibinary_identity(algo: type) -> None:
    # The hardest of the four at this budget: over seeds 0-15, A2C reaches a mean of 80.6 and PPO 82.3 (only 2
    # and 5 of the 16 seeds pass 90). Ours must pass SB3's seed (3) and keep that mean on seeds 0-3.
    # Before the value head's init was scaled down: AttnA2C 30.6, 86.4, 57.2, 82.6; AttnPPO 74.4, 79.7, 89.2, 56.2.
    rewards = [identity_reward(algo, "multibinary", seed) for seed in range(4)]
    assert rewards[3] >= 90, rewards
    assert np.mean(rewards) >= 80, rewards


@pytest.mark.slow
@pytest.mark.parametrize("env_name", list(ENVS))
@pytest.mark.parametrize(("sb3_algo", "algo"), [(A2C, AttnA2C), (PPO, AttnPPO)])
def test_identity_no_worse_than_sb3(sb3_algo: type, algo: type, env_name: str) -> None:
    seeds = range(6)
    theirs = [identity_reward(sb3_algo, env_name, seed) for seed in seeds]
    ours = [identity_reward(algo, env_name, seed) for seed in seeds]
    assert np.mean(ours) >= np.mean(theirs) - 5, (ours, theirs)
    if min(theirs) >= 90:  # where SB3's algorithm passes on every seed, so does ours
        assert min(ours) >= 90, (ours, theirs)

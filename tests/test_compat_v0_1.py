"""Models saved by sb3-attn-ac 0.1.0 (tests/data, written by tests/data/make_v0_1_models.py with that release)
load and act exactly as they did: 0.1 used sinusoidal positions (``position_encoding="absolute"`` now)."""

from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_attn_ac import AttnActorCriticPolicy, AttnPPO

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "attn_ppo_v0_1_outputs.npz"))


def actions_of(model: AttnPPO | AttnActorCriticPolicy, observations: np.ndarray) -> list[int]:
    actions, state, starts = [], None, np.array([True])
    for obs in observations:
        action, state = model.predict(obs[None], state=state, episode_start=starts, deterministic=True)
        actions.append(int(action[0]))
        starts = np.array([False])
    return actions


def test_model_saved_by_v0_1_loads_and_acts_the_same(expected: dict[str, np.ndarray]) -> None:
    model = AttnPPO.load(DATA / "attn_ppo_v0_1.zip", env=make_vec_env("CartPole-v1", n_envs=2))
    assert model.position_encoding == "absolute"
    assert actions_of(model, expected["observations"]) == expected["actions"].tolist()
    np.testing.assert_allclose(model.policy.trajectory_values(expected["observations"]), expected["values"], atol=1e-6)
    model.learn(32)  # and trains on
    with open(DATA / "attn_ppo_v0_1.zip", "rb") as f:  # from a file object too (read twice)
        assert AttnPPO.load(f).position_encoding == "absolute"


def test_policy_saved_by_v0_1_loads_and_acts_the_same(expected: dict[str, np.ndarray]) -> None:
    policy = AttnActorCriticPolicy.load(DATA / "attn_ppo_v0_1_policy.pt")
    assert policy.position_encoding == "absolute"
    assert actions_of(policy, expected["observations"]) == expected["actions"].tolist()
    with th.no_grad():
        np.testing.assert_allclose(policy.trajectory_values(expected["observations"]), expected["values"], atol=1e-6)


def test_new_saves_keep_their_position_encoding(tmp_path) -> None:
    model = AttnPPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=8, batch_size=16, d_model=8, context_len=4)
    model.save(tmp_path / "model.zip")
    model.policy.save(tmp_path / "policy.pt")
    assert AttnPPO.load(tmp_path / "model.zip").position_encoding == "relative"
    assert AttnActorCriticPolicy.load(tmp_path / "policy.pt").position_encoding == "relative"

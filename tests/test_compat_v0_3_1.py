"""Models saved by sb3-attn-ac 0.3.1 (tests/data, written by tests/data/make_v0_3_1_models.py with that release)
load and act exactly as they did: 0.3.1 embedded a Box action space's previous action raw, unclipped
(``prev_action_encoding="raw"`` now; new models clip and scale it, ``"bounded"``)."""

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_attn_ac import AttnActorCriticPolicy, AttnPPO

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "attn_ppo_v0_3_1_prev_action_outputs.npz"))


def actions_of(model: AttnPPO | AttnActorCriticPolicy, observations: np.ndarray) -> np.ndarray:
    actions, state, starts = [], None, np.array([True])
    for obs in observations:
        action, state = model.predict(obs[None], state=state, episode_start=starts, deterministic=True)
        actions.append(action[0])
        starts = np.array([False])
    return np.array(actions)


def test_model_saved_by_v0_3_1_loads_and_acts_the_same(expected: dict[str, np.ndarray]) -> None:
    model = AttnPPO.load(DATA / "attn_ppo_v0_3_1_prev_action.zip", env=make_vec_env("Pendulum-v1", n_envs=2))
    assert model.prev_action_encoding == model.policy.prev_action_encoding == "raw"
    np.testing.assert_allclose(actions_of(model, expected["observations"]), expected["actions"], atol=1e-6)
    model.learn(32)  # and trains on
    # The saved weights with the new encoding act otherwise (so the comparison above can fail).
    bounded = AttnPPO.load(DATA / "attn_ppo_v0_3_1_prev_action.zip", prev_action_encoding="bounded")
    assert np.abs(actions_of(bounded, expected["observations"]) - expected["actions"]).max() > 1e-4


def test_policy_saved_by_v0_3_1_loads_and_acts_the_same(expected: dict[str, np.ndarray]) -> None:
    policy = AttnActorCriticPolicy.load(DATA / "attn_ppo_v0_3_1_prev_action_policy.pt")
    assert policy.prev_action_encoding == "raw"
    np.testing.assert_allclose(actions_of(policy, expected["observations"]), expected["actions"], atol=1e-6)


def test_new_saves_keep_the_bounded_encoding(tmp_path) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=2)
    model = AttnPPO("MlpPolicy", env, n_steps=8, batch_size=16, d_model=8, context_len=4, actor_context=True, prev_action=True)
    model.save(tmp_path / "model.zip")
    model.policy.save(tmp_path / "policy.pt")
    assert AttnPPO.load(tmp_path / "model.zip").policy.prev_action_encoding == "bounded"
    assert AttnActorCriticPolicy.load(tmp_path / "policy.pt").prev_action_encoding == "bounded"

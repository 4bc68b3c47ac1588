"""GPU smoke tests: skipped cleanly on machines without CUDA."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_attn_ac import AttnA2C

pytestmark = pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")


def test_cuda_learn_predict_save_load(tmp_path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    model = AttnA2C("MlpPolicy", env, device="cuda", seed=0, n_layers=2).learn(400)
    assert model.policy.device.type == "cuda"
    assert np.isfinite(evaluate_policy(model, env, n_eval_episodes=2)[0])
    model.save(tmp_path / "m.zip")
    cpu = AttnA2C.load(tmp_path / "m.zip", device="cpu")
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    assert th.allclose(model.policy.trajectory_values(obs).cpu(), cpu.policy.trajectory_values(obs), atol=1e-4)

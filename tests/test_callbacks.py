import pytest
import yaml
from rl_zoo3.utils import get_callback_list
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_attn_ac import AttnPPO, zoo
from sb3_attn_ac.callbacks import FreezeNormalization


@pytest.mark.parametrize("algo", [PPO, AttnPPO])
def test_freeze_normalization_stops_the_statistics_after_its_steps(algo) -> None:
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = algo("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, seed=0)
    model.learn(128, callback=FreezeNormalization(after_steps=64))
    # The statistics saw the first reset's 2 observations and the steps up to the 64th (two envs a step), then none.
    assert not env.training and env.obs_rms.count == pytest.approx(2 + 64 + 1e-4)
    returns = env.ret_rms.count
    model.learn(64, reset_num_timesteps=False)  # a later learn keeps them frozen
    assert env.obs_rms.count == pytest.approx(2 + 64 + 1e-4) and env.ret_rms.count == returns


def test_freeze_normalization_rejects_bad_input() -> None:
    for bad in (-1, "50000", None, True):
        with pytest.raises(ValueError, match="after_steps must be a number of timesteps >= 0"):
            FreezeNormalization(after_steps=bad)
    with pytest.raises(ValueError, match="needs a VecNormalize env"):
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).learn(32, callback=FreezeNormalization(0))


def test_cartpole_novel_entry_freezes_the_statistics_at_half_its_budget() -> None:
    # rl-zoo3 builds the entry's callbacks from their import path: the package's, so attn-zoo runs it anywhere.
    entry = yaml.safe_load((zoo.HYPERPARAMS_DIR / "ppo_attn.yml").read_text())["CartPoleNoVel-v1"]
    (callback,) = get_callback_list(entry)
    assert isinstance(callback, FreezeNormalization) and callback.after_steps == float(entry["n_timesteps"]) / 2

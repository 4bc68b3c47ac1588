"""SB3 behaviours users rely on, run with the real SB3 on tiny budgets."""

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_attn_ac import AttnA2C, AttnActorCriticPolicy, AttnPPO

TINY = dict(n_steps=4, context_len=4, d_model=16, seed=0)


def user_script(algo: type, env) -> float:
    """Code written for A2C: it must run unchanged with AttnA2C."""
    model = algo("MlpPolicy", env, n_steps=8, seed=0, verbose=0)
    model.learn(total_timesteps=64, progress_bar=False)
    obs = env.reset()
    _, state = model.predict(obs, deterministic=True)
    assert state is None
    mean, _ = evaluate_policy(model, env, n_eval_episodes=2)
    return mean


def test_drop_in_for_a2c_and_ppo() -> None:
    for algo in (A2C, AttnA2C, PPO, AttnPPO):
        assert np.isfinite(user_script(algo, make_vec_env("CartPole-v1", n_envs=2, seed=0)))


def test_save_load_identity(tmp_path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = AttnA2C("MlpPolicy", env, n_layers=2, ct_coef=0.2, **TINY).learn(64)
    model.save(tmp_path / "model.zip")
    loaded = AttnA2C.load(tmp_path / "model.zip", env=env)
    for name in ["context_len", "n_layers", "d_model", "ct_coef", "ct_temperature", "mask_ratio", "key_encoder"]:
        assert getattr(loaded, name) == getattr(model, name)
    assert loaded.rollout_buffer.prefix_len == 2 * 3
    obs = np.random.default_rng(0).normal(size=(25, 4)).astype(np.float32)
    starts = np.zeros(25, dtype=bool)
    starts[10] = True
    assert th.equal(loaded.policy.trajectory_values(obs, starts), model.policy.trajectory_values(obs, starts))
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    for p, q in zip(loaded.policy.state_dict().values(), model.policy.state_dict().values(), strict=True):
        assert th.equal(p, q)
    without_env = AttnA2C.load(tmp_path / "model.zip")  # as rl-zoo3's enjoy does
    assert np.array_equal(without_env.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    loaded.learn(32, reset_num_timesteps=False)  # keeps training after loading
    assert loaded.num_timesteps == model.num_timesteps + 32


def test_learn_twice_and_set_env() -> None:
    model = AttnA2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), **TINY)
    model.learn(40)
    model.learn(40, reset_num_timesteps=False)
    assert model.num_timesteps == 80
    model.set_env(make_vec_env("CartPole-v1", n_envs=2, seed=5))
    model.learn(16)
    assert model.num_timesteps == 16
    with pytest.raises(AssertionError):
        model.set_env(make_vec_env("CartPole-v1", n_envs=3))  # as SB3: same number of envs


def test_vec_normalize(tmp_path) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.99)
    model = AttnA2C("MlpPolicy", env, **TINY).learn(64)
    assert env.obs_rms.count > 64
    mean, std = evaluate_policy(model, env, n_eval_episodes=1)
    assert np.isfinite(mean) and np.isfinite(std)
    env.save(tmp_path / "vecnormalize.pkl")
    loaded = VecNormalize.load(tmp_path / "vecnormalize.pkl", make_vec_env("Pendulum-v1", n_envs=2))
    assert np.allclose(loaded.obs_rms.mean, env.obs_rms.mean)


def test_callbacks_with_progress_bar(tmp_path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    eval_cb = EvalCallback(make_vec_env("CartPole-v1", n_envs=1), eval_freq=10, n_eval_episodes=1, log_path=str(tmp_path))
    ckpt = CheckpointCallback(save_freq=10, save_path=str(tmp_path / "ckpt"))
    AttnA2C("MlpPolicy", env, **TINY).learn(48, callback=[eval_cb, ckpt], progress_bar=True)
    assert (tmp_path / "evaluations.npz").exists()
    assert len(list((tmp_path / "ckpt").glob("*.zip"))) >= 2


def test_logger_records_train_keys(tmp_path) -> None:
    model = AttnA2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), **TINY)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(80, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/contrastive_loss", "train/value_loss", "train/explained_variance", "time/fps"} <= set(header)


def test_seeded_determinism() -> None:
    def run() -> list[th.Tensor]:
        model = AttnA2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), bert_masking=True, **TINY).learn(64)
        return list(model.policy.state_dict().values())

    for p, q in zip(run(), run(), strict=True):
        assert th.equal(p, q)


def test_stopping_callback_keeps_context_continuous() -> None:
    from stable_baselines3.common.callbacks import StopTrainingOnMaxEpisodes

    model = AttnA2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=0), **TINY)
    model.learn(10_000, callback=StopTrainingOnMaxEpisodes(max_episodes=1))
    assert model.num_timesteps < 10_000
    model.learn(16, reset_num_timesteps=False)  # resumes after a rollout cut short


@pytest.mark.parametrize(
    "env",
    [
        IdentityEnvBox(eps=0.5, ep_length=10),
        IdentityEnvMultiDiscrete(dim=3, ep_length=10),
        IdentityEnvMultiBinary(dim=3, ep_length=10),
    ],
    ids=["box", "multidiscrete", "multibinary"],
)
def test_action_spaces(env) -> None:
    model = AttnA2C("MlpPolicy", DummyVecEnv([lambda: env]), **TINY).learn(32)
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype))


def test_dict_observations() -> None:
    env = DummyVecEnv([lambda: SimpleMultiObsEnv(random_start=False)] * 2)
    model = AttnA2C("MultiInputPolicy", env, **TINY).learn(32)
    assert type(model.rollout_buffer).__name__ == "DictEpisodeRolloutBuffer"
    assert np.isfinite(evaluate_policy(model, env, n_eval_episodes=1)[0])


def test_cnn_policy() -> None:
    env = DummyVecEnv([lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)])
    model = AttnA2C("CnnPolicy", env, policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=32)), **TINY).learn(16)
    assert model.predict(env.observation_space.sample())[0].shape == ()


def test_gsde_continuous() -> None:
    model = AttnA2C("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), use_sde=True, sde_sample_freq=2, **TINY)
    model.learn(32)
    assert "train/std" in model.logger.name_to_value


# A tiny env for each policy alias, and the features extractor arguments that keep it small.
POLICY_ENVS = {
    "MlpPolicy": (lambda: IdentityEnvMultiDiscrete(dim=3, ep_length=10), {}),
    "CnnPolicy": (lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), dict(features_dim=16)),
    "MultiInputPolicy": (lambda: SimpleMultiObsEnv(random_start=False), dict(cnn_output_dim=16)),
}


@pytest.mark.parametrize("policy", list(POLICY_ENVS))
@pytest.mark.parametrize("algo", [AttnA2C, AttnPPO])
def test_load_with_the_policy_kwargs_it_was_built_with(tmp_path, algo: type, policy: str) -> None:
    make_env, extractor_kwargs = POLICY_ENVS[policy]
    env = DummyVecEnv([make_env])
    policy_kwargs = dict(net_arch=dict(pi=[8], vf=[8]), features_extractor_kwargs=extractor_kwargs)
    given = copy.deepcopy(policy_kwargs)
    extra = dict(batch_size=4) if algo is AttnPPO else {}
    model = algo(policy, env, policy_kwargs=policy_kwargs, **TINY, **extra).learn(8)
    model.save(tmp_path / "model.zip")
    assert policy_kwargs == given  # the user's dict is left as it was
    assert load_from_zip_file(tmp_path / "model.zip")[0]["policy_kwargs"] == given
    obs = np.stack([env.observation_space.sample() for _ in range(3)]) if policy != "MultiInputPolicy" else None
    for kwargs in (policy_kwargs, copy.deepcopy(given)):  # the same dict, or an equal one
        loaded = algo.load(tmp_path / "model.zip", env=env, policy_kwargs=kwargs)
        assert type(loaded.policy.optimizer) is type(model.policy.optimizer)
        for p, q in zip(loaded.policy.state_dict().values(), model.policy.state_dict().values(), strict=True):
            assert th.equal(p, q)
        if obs is not None:
            assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
        loaded.learn(8)
    with pytest.raises(ValueError, match="policy kwargs do not equal"):  # as SB3: other policy_kwargs are refused
        algo.load(tmp_path / "model.zip", env=env, policy_kwargs={**given, "net_arch": dict(pi=[4], vf=[4])})


def outcome(algo: type, **kwargs: Any) -> str:
    """What happens to a user who builds ``algo`` on CartPole with ``kwargs`` and trains it for 16 steps:
    "rejects" (at construction), "fails" (in learn), "warns" (at construction, then trains) or "accepts"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = algo("MlpPolicy", "CartPole-v1", device="cpu", seed=0, **kwargs)
        except (AssertionError, ValueError, ZeroDivisionError):
            return "rejects"
    try:
        model.learn(16)
    except (ValueError, RuntimeError, TypeError, UnboundLocalError):
        return "fails"
    return "warns" if any(issubclass(w.category, UserWarning) for w in caught) else "accepts"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(n_steps=8, batch_size=4), "accepts"),
        (dict(n_steps=1), "rejects"),  # a one-step rollout with advantage normalisation
        (dict(n_steps=8, batch_size=1), "rejects"),  # a one-step minibatch with advantage normalisation
        (dict(n_steps=8, batch_size=1, normalize_advantage=False), "accepts"),
        (dict(n_steps=1, batch_size=1, normalize_advantage=False), "accepts"),
        (dict(n_steps=8, batch_size=0, normalize_advantage=False), "rejects"),
        (dict(n_steps=8, batch_size=3), "warns"),  # batch_size does not divide n_steps * n_envs
        (dict(n_steps=8, batch_size=4, clip_range_vf=0.0), "rejects"),
        (dict(n_steps=8, batch_size=4, clip_range_vf=0.1), "accepts"),
        (dict(n_steps=8, batch_size=4, use_sde=True), "rejects"),  # gSDE on Discrete actions
    ],
)
def test_ppo_validates_as_ppo(kwargs: dict, expected: str) -> None:
    assert outcome(PPO, **kwargs) == expected
    assert outcome(AttnPPO, **kwargs, context_len=4, d_model=16) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(n_steps=8), "accepts"),
        (dict(n_steps=1), "accepts"),
        (dict(n_steps=8, normalize_advantage=True), "accepts"),
        (dict(n_steps=8, use_sde=True), "rejects"),
        (dict(n_steps=8, use_rms_prop=False, rms_prop_eps=1e-3), "accepts"),
    ],
)
def test_a2c_validates_as_a2c(kwargs: dict, expected: str) -> None:
    assert outcome(A2C, **kwargs) == expected
    assert outcome(AttnA2C, **kwargs, context_len=4, d_model=16) == expected


@pytest.mark.parametrize(
    ("sb3_algo", "algo", "kwargs", "match"),
    [
        (A2C, AttnA2C, dict(n_steps=0), "n_steps must be an integer >= 1"),
        (A2C, AttnA2C, dict(n_steps=1, normalize_advantage=True), r"normalize_advantage=True needs .* n_steps=1 and n_envs=1"),
        (PPO, AttnPPO, dict(n_steps=8, batch_size=8, n_epochs=0), "n_epochs must be an integer >= 1"),
        (PPO, AttnPPO, dict(n_steps=8, batch_size=4.0), "batch_size must be an integer >= 1"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # SB3's, on its way to failing
def test_rejects_what_sb3_accepts_but_cannot_train(sb3_algo: type, algo: type, kwargs: dict, match: str) -> None:
    # Deliberate difference: SB3 builds these and then fails inside learn(); we refuse them at construction.
    assert outcome(sb3_algo, **kwargs) == "fails"
    with pytest.raises(ValueError, match=match):
        algo("MlpPolicy", "CartPole-v1", **kwargs)


PAIRS = [(A2C, AttnA2C), (PPO, AttnPPO)]


def small(algo: type, env, **kwargs: Any):
    """A tiny model of ``algo``, SB3's or ours, with the same SB3 arguments."""
    args: dict[str, Any] = dict(n_steps=8, seed=0)
    if algo in (PPO, AttnPPO):
        args.update(batch_size=8)
    if algo in (AttnA2C, AttnPPO):
        args.update(context_len=4, d_model=16)
    return algo("MlpPolicy", env, **{**args, **kwargs})


def same_parameters(a, b) -> bool:
    return all(th.equal(p, q) for p, q in zip(a.policy.state_dict().values(), b.policy.state_dict().values(), strict=True))


@pytest.mark.parametrize("algo", [algo for pair in PAIRS for algo in pair])
def test_save_load_variants(tmp_path, algo: type) -> None:
    # SB3's save/load: paths as str or pathlib, file-like objects, custom_objects, overriding kwargs, devices.
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = small(algo, env).learn(32)
    obs = env.reset()
    expected = model.predict(obs, deterministic=True)[0]
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    model.save(str(tmp_path / "as_str"))
    model.save(tmp_path / "as_path.zip", exclude=["ent_coef"])
    assert "ent_coef" not in load_from_zip_file(tmp_path / "as_path.zip")[0]
    for source in (buffer, str(tmp_path / "as_str.zip"), tmp_path / "as_path.zip"):
        loaded = algo.load(source, env=env, device="auto")
        assert loaded.device == get_device("auto") and same_parameters(loaded, model)
        assert np.array_equal(loaded.predict(obs, deterministic=True)[0], expected)
    changed = algo.load(tmp_path / "as_path.zip", env=env, learning_rate=2.0, custom_objects={"gamma": 0.5})
    assert (changed.learning_rate, changed.gamma, changed.rollout_buffer.gamma) == (2.0, 0.5, 0.5)
    changed.learn(16)
    assert changed.policy.optimizer.param_groups[0]["lr"] == 2.0


@pytest.mark.parametrize("algo", [algo for pair in PAIRS for algo in pair])
def test_get_and_set_parameters(tmp_path, algo: type) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    source = small(algo, env).learn(16)
    source.save(tmp_path / "source.zip")
    params = source.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    for given in (tmp_path / "source.zip", params):
        target = small(algo, env, seed=1)
        assert not same_parameters(target, source)
        target.set_parameters(given)
        assert same_parameters(target, source)
    with pytest.raises(ValueError, match="invalid object name"):
        target.set_parameters({**params, "not_a_module": {}}, exact_match=False)
    with pytest.raises(ValueError, match="Names of parameters do not match"):
        target.set_parameters({"policy": params["policy"]})
    with pytest.raises(RuntimeError):  # a tensor left out of the policy's state dict
        target.set_parameters({"policy": dict(list(params["policy"].items())[:-1])}, exact_match=True)
    target.set_parameters({"policy": params["policy"]}, exact_match=False)  # the policy alone
    target.learn(16)


@pytest.mark.parametrize("algo", [algo for pair in PAIRS for algo in pair])
def test_set_env_as_sb3(tmp_path, algo: type) -> None:
    # SB3's test_set_env: same n_envs only (AssertionError otherwise); load() takes another n_envs.
    model = small(algo, make_vec_env("CartPole-v1", n_envs=2, seed=0)).learn(32)
    model.set_env(make_vec_env("CartPole-v1", n_envs=2, seed=1))
    assert model._last_obs is None
    model.learn(32)
    model.set_env(model.get_env(), force_reset=False)
    assert model._last_obs is not None
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 64
    with pytest.raises(AssertionError, match="number of environments"):
        model.set_env(make_vec_env("CartPole-v1", n_envs=3))
    model.save(tmp_path / "model.zip")
    three = algo.load(tmp_path / "model.zip", env=make_vec_env("CartPole-v1", n_envs=3, seed=2)).learn(48)
    assert three.n_envs == three.rollout_buffer.n_envs == 3 and three.num_timesteps == 48
    # A model loaded without an env predicts; given an env later, it trains.
    without_env = algo.load(tmp_path / "model.zip")
    assert without_env.get_env() is None
    assert without_env.predict(np.zeros(4, np.float32))[0].shape == ()
    without_env.set_env(make_vec_env("CartPole-v1", n_envs=2, seed=3))
    without_env.learn(16)


@pytest.mark.parametrize("policy", list(POLICY_ENVS))
@pytest.mark.parametrize("actor_context", [False, True])
def test_predict_single_observation_and_policy_save_load(tmp_path, policy: str, actor_context: bool) -> None:
    make_env, extractor_kwargs = POLICY_ENVS[policy]
    env = DummyVecEnv([make_env])
    model = AttnPPO(
        policy, env, actor_context=actor_context, policy_kwargs=dict(features_extractor_kwargs=extractor_kwargs),
        **{**TINY, "batch_size": 4},
    )  # fmt: skip
    # As SB3's test_save_load_policy: random parameters, so identical predictions mean identical policies.
    model.policy.load_state_dict({k: th.rand_like(v) for k, v in model.policy.state_dict().items()})
    single = env.observation_space.sample()  # one unbatched observation (a dict of them for MultiInputPolicy)
    action, state = model.predict(single, deterministic=True)
    assert action.shape == env.action_space.shape and env.action_space.contains(action)
    assert (state is None) != actor_context
    model.policy.save(tmp_path / "policy.pth")
    for policy_class in (type(model.policy), AttnActorCriticPolicy):
        loaded = policy_class.load(tmp_path / "policy.pth")
        for p, q in zip(loaded.state_dict().values(), model.policy.state_dict().values(), strict=True):
            assert th.equal(p, q)
        state_a = state_b = None
        for _ in range(3):  # with actor context, the state carries the episode through the calls
            a, state_a = model.predict(single, state=state_a, deterministic=True)
            b, state_b = loaded.predict(single, state=state_b, deterministic=True)
            assert np.array_equal(a, b)


@pytest.mark.parametrize(("sb3_algo", "algo"), PAIRS)
def test_recommends_cpu_on_gpu_as_sb3(sb3_algo: type, algo: type) -> None:
    # A2C and PPO warn when an MlpPolicy runs on the GPU (their small networks are faster on the CPU); so do we.
    for cls in (sb3_algo, algo):
        model = small(cls, "CartPole-v1")
        model.device = th.device("cuda")
        with pytest.warns(UserWarning, match="primarily intended to run on the CPU"):
            model._maybe_recommend_cpu()
    cnn = algo("CnnPolicy", FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), context_len=4, d_model=16)
    cnn.device = th.device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnn._maybe_recommend_cpu()  # a CNN policy is fine on the GPU


def test_loads_v0_1_save_with_its_optimizer() -> None:
    # 0.1.0 stored its policy_kwargs merged with the arguments it added and did not save use_rms_prop: an AttnA2C
    # built with Adam must load with Adam (tests/data/make_v0_1_a2c_adam.py wrote it with 0.1.0).
    path = Path(__file__).parent / "data" / "attn_a2c_adam_v0_1.zip"
    model = AttnA2C.load(path, env=make_vec_env("CartPole-v1", n_envs=2, seed=0))
    assert type(model.policy.optimizer) is th.optim.Adam
    assert model.policy.optimizer.state_dict()["state"]  # its saved Adam state, restored
    model.learn(20)

"""The RLlib plugin (sb3_attn_ac.rllib): argument and space errors as AttnPPO's, the module's state as predict's
cache, RLlib's batched training path against the step-by-step and whole-episode values, the auxiliary losses in
the learner, checkpoints, and training with two env runners on a local Ray instance."""

import copy
import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
import torch as th
from torch import nn

ray = pytest.importorskip("ray")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402
from ray.rllib.algorithms.algorithm import Algorithm  # noqa: E402
from ray.rllib.core import DEFAULT_MODULE_ID  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner  # noqa: E402
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME  # noqa: E402
from ray.rllib.utils.postprocessing.zero_padding import unpad_data_if_necessary  # noqa: E402

from sb3_attn_ac import AttnPPO  # noqa: E402
from sb3_attn_ac.rllib import AttnPPOConfig, AttnPPOTorchRLModule, attn_ppo_config  # noqa: E402
from sb3_attn_ac.rllib.checks import ROLLOUT_ARGS  # noqa: E402
from sb3_attn_ac.rllib.config import ATTENTION_ARGS  # noqa: E402

# Small and fast: two layers (windows stack), a window shorter than the sequences and the rollout fragments.
SMALL = dict(context_len=4, n_layers=2, d_model=16, policy_kwargs=dict(net_arch=dict(pi=[16], vf=[])))


def small_config(env_id: str | type = "CartPole-v1", **kwargs) -> AttnPPOConfig:
    """A tiny config: sequences of 5 steps, fragments of 12 steps in each of 2 envs per runner; seeded, so what the
    episodes do (how many end inside a rollout, how many run across several) is the same in every run."""
    return (
        attn_ppo_config(**{**SMALL, "max_seq_len": 5, **kwargs})
        .environment(env_id)
        .debugging(seed=0)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=12)
        .training(train_batch_size_per_learner=48, minibatch_size=24, num_epochs=1)
    )


def sample_rounds(runner: SingleAgentEnvRunner, n_rounds: int) -> tuple[list[list], dict[str, np.ndarray]]:
    """``n_rounds`` samples of episode chunks, and every episode's observations from its first step on."""
    rounds, observations = [], {}
    for _ in range(n_rounds):
        chunks = runner.sample(num_timesteps=24, random_actions=False)
        for chunk in chunks:
            new = np.asarray(chunk.get_observations())
            earlier = observations.get(chunk.id_, new[:0])
            observations[chunk.id_] = np.concatenate([earlier[: chunk.t_started], new])
        rounds.append(chunks)
    return rounds, observations


def learner_batch(learner, chunks: list) -> dict:
    """RLlib's learner connector over episode chunks (it appends each chunk's bootstrap step, cuts and pads
    sequences, adds STATE_IN, GAE): the batch the loss sees."""
    batch = learner._learner_connector(
        rl_module=learner.module, batch={}, episodes=chunks, shared_data={}, metrics=learner.metrics
    )
    return batch[DEFAULT_MODULE_ID]


# ------------------------------------------------------------------------------------------------------
# Arguments and errors (no Ray)
def test_the_base_package_does_not_import_ray() -> None:
    code = "import sys, sb3_attn_ac; assert 'ray' not in sys.modules, 'sb3_attn_ac imports ray'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_attention_arguments_have_attn_ppos_names_and_defaults() -> None:
    signature = inspect.signature(AttnPPO).parameters
    names = list(signature)
    attention = [n for n in names[names.index("device") + 1 :] if n not in ("_init_setup_model", *ROLLOUT_ARGS)]
    config = AttnPPOConfig()
    for name in attention:  # every attention argument of AttnPPO, with its default
        assert getattr(config, name) == signature[name].default, name
    assert set(ATTENTION_ARGS) == {*attention, "policy_kwargs", "max_seq_len"}
    assert attn_ppo_config(context_len=8, actor_context=True).model_config["context_len"] == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(context_len=0),
        dict(n_layers=0),
        dict(n_heads=0),
        dict(d_model=5),
        dict(dropout=1.0),
        dict(key_encoder="target"),
        dict(key_momentum=1.0),
        dict(position_encoding="rotary"),
        dict(ct_coef=-0.1),
        dict(ct_temperature=0.0),
        dict(mask_ratio=1.0),
        dict(next_state_coef=-1.0),
        dict(rtg_coef=-1.0),
        dict(q_att_loss_coef=-1.0),
        dict(actor_context="True"),
        dict(start_bias="True"),
        dict(start_bias=True, position_encoding="absolute"),
        dict(local_window=0),
        dict(prev_action_encoding="scaled"),
        dict(actor_value_coef=-1.0),
        dict(actor_value_coef=0.5, actor_context=True),
    ],
)
def test_bad_arguments_raise_attn_ppos_errors(kwargs) -> None:
    with pytest.raises(ValueError) as sb3_error:
        AttnPPO("MlpPolicy", "CartPole-v1", **kwargs)
    with pytest.raises(ValueError, match=re.escape(str(sb3_error.value))):
        attn_ppo_config(**kwargs)


def test_options_rllib_cannot_run_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="context_len in policy_kwargs"):
        attn_ppo_config(policy_kwargs=dict(context_len=4))
    with pytest.raises(ValueError, match="shared_transformer=False is not supported on RLlib"):
        attn_ppo_config(actor_context=True, shared_transformer=False)
    with pytest.raises(ValueError, match="prev_action=True is not supported on RLlib"):
        attn_ppo_config(prev_action=True)
    with pytest.raises(ValueError, match="prev_obs=True is not supported on RLlib"):
        attn_ppo_config(prev_obs=True)
    with pytest.raises(ValueError, match="n_episodes: AttnPPO's rollout options"):
        attn_ppo_config(n_episodes=4)
    with pytest.raises(ValueError, match="max_seq_len must be an integer >= 1"):
        attn_ppo_config(max_seq_len=0)
    with pytest.raises(TypeError, match="contxt_len"):
        attn_ppo_config(contxt_len=4)


def test_unsupported_spaces_fail_before_ray_starts() -> None:
    was_running = ray.is_initialized()
    box = spaces.Box(-1.0, 1.0, (3,))
    tuple_actions = spaces.Tuple([spaces.Discrete(2), spaces.Discrete(3)])
    with pytest.raises(ValueError) as sb3_error:
        AttnPPO("MlpPolicy", "Pendulum-v1", q_att_coef=1.0)
    config = attn_ppo_config(q_att_coef=1.0).environment("Pendulum-v1")  # spaces of an env made in validate()
    with pytest.raises(ValueError, match=re.escape(str(sb3_error.value))):
        config.build_algo()
    config = attn_ppo_config().environment(observation_space=box, action_space=tuple_actions)
    with pytest.raises(ValueError, match="action_space must be one of Box, Discrete, MultiDiscrete, MultiBinary"):
        config.validate()
    config = attn_ppo_config().environment(observation_space=box, action_space=spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="action_space MultiBinary is not supported on RLlib"):
        config.build_algo()
    # Settings RLlib's own model_config overrides are checked too.
    config = attn_ppo_config().environment("CartPole-v1").rl_module(model_config={"n_heads": 3})
    with pytest.raises(ValueError, match="d_model must be a positive multiple of n_heads"):
        config.build_algo()
    assert ray.is_initialized() == was_running


# ------------------------------------------------------------------------------------------------------
# The module and the learner, without Ray
def test_state_is_predicts_cache_and_actions_are_predicts() -> None:
    config = attn_ppo_config(**SMALL, actor_context=True)
    # 15-step episodes: restarts mid-way whatever the random policy does (a policy that kept the pole up for all 40
    # steps left this test without a restart for some initialisations).
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync", max_episode_steps=15)
    module = AttnPPOTorchRLModule(
        observation_space=env.single_observation_space, action_space=env.single_action_space, model_config=config.model_config
    )
    initial = {name: th.as_tensor(x)[None].repeat_interleave(2, 0) for name, x in module.get_initial_state().items()}
    state, sb3_state, starts = initial, None, np.ones(2, dtype=bool)
    obs, _ = env.reset(seed=0)
    n_starts = 0
    for _ in range(40):
        # RLlib starts every new episode from the initial state; predict resets where episode_start is True.
        start_rows = th.as_tensor(starts)
        state = {name: th.where(start_rows.view(-1, *[1] * (x.dim() - 1)), initial[name], x) for name, x in state.items()}
        with th.no_grad():
            out = module.forward_inference({Columns.OBS: th.as_tensor(obs)[:, None], Columns.STATE_IN: state})
        actions, sb3_state = module.policy.predict(obs, sb3_state, starts, deterministic=True)
        state = out[Columns.STATE_OUT]
        keys, values, valid, timesteps = sb3_state  # predict's layout: (n_layers, n_envs, ...), (1, n_envs, ...)
        np.testing.assert_array_equal(state["valid"].numpy(), valid[0])
        slots = valid[0].astype(bool)  # what an empty slot holds is never read (predict keeps stale keys there)
        for name, expected in [("keys", keys), ("values", values)]:
            # (n_envs, n_layers, H, K - 1, d) and predict's (n_layers, n_envs, H, K - 1, d), as (n_envs, K - 1, ...)
            actual = state[name].numpy().transpose(0, 3, 1, 2, 4)[slots]
            np.testing.assert_allclose(actual, expected.transpose(1, 3, 0, 2, 4)[slots], atol=1e-6)
        np.testing.assert_array_equal(state["timesteps"].numpy(), timesteps[0])
        np.testing.assert_array_equal(out[Columns.ACTION_DIST_INPUTS][:, 0].argmax(-1).numpy(), actions)
        obs, _, terminated, truncated, _ = env.step(actions)
        starts = terminated | truncated
        n_starts += int(starts.sum())
    assert n_starts > 0  # episodes ended and restarted mid-way


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("CartPole-v1", dict(actor_context=False)),
        ("CartPole-v1", dict(actor_context=True)),
        ("CartPole-v1", dict(actor_context=True, start_bias=True)),  # the first step's slot while acting
        ("CartPole-v1", dict(actor_context=True, start_bias=True, local_window=2)),  # beyond 2 steps: the first only
        ("CartPole-v1", dict(actor_context=True, position_encoding="alibi")),  # nonzero offset biases from the start
        ("Pendulum-v1", dict(actor_context=True)),  # Box actions: mean and log std
        ("FrozenLake-v1", dict(actor_context=True)),  # Discrete observations, one-hot in the module; short episodes
    ],
)
def test_training_values_equal_step_by_step_and_whole_episode_values(env_id, kwargs) -> None:
    config = small_config(env_id, **kwargs)
    runner = SingleAgentEnvRunner(config=config)
    for block in runner.module.policy.transformer.blocks:  # zero at init: make the start bias matter
        if block.attn.start_bias_raw is not None:
            th.nn.init.normal_(block.attn.start_bias_raw, std=0.3)
    learner = config.build_learner(env=runner.env)
    module = learner.module[DEFAULT_MODULE_ID]
    module.set_state(runner.module.get_state())
    rounds, observations = sample_rounds(runner, 4)
    carried = long_chunks = 0
    # Episodes that began after the first round: the one before them in the same env ended mid-rollout.
    later_episodes = sum(chunk.t_started == 0 for chunks in rounds[1:] for chunk in chunks)
    for chunks in rounds:
        carried += sum(chunk.t_started > 0 for chunk in chunks)
        long_chunks += sum(len(chunk) > 5 for chunk in chunks)
        batch = learner_batch(learner, chunks)
        lengths = [len(chunk) for chunk in chunks]  # each with the bootstrap step RLlib appended
        with th.no_grad():
            values = unpad_data_if_necessary(lengths, module.compute_values(batch).numpy())
            dist_inputs = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
        # The critic's batched pass over each whole episode so far (no cache, no chunks: the SB3 side's path).
        expected = []
        for chunk in chunks:
            episode_values = module.policy.trajectory_values(observations[chunk.id_.rsplit("_", 1)[0]]).numpy()
            expected.append(episode_values[chunk.t_started : chunk.t_started + len(chunk)])
        np.testing.assert_allclose(values, np.concatenate(expected), atol=1e-5)
        # The log-probabilities' inputs equal those recorded while acting (with actor context they read the cache).
        mask = batch[Columns.LOSS_MASK].bool()
        np.testing.assert_allclose(dist_inputs[mask].numpy(), batch[Columns.ACTION_DIST_INPUTS][mask].numpy(), atol=1e-5)
    assert long_chunks > 0  # episodes cut into several sequences
    assert later_episodes > 0 or env_id == "Pendulum-v1"  # episodes ended and others began (Pendulum's last 200 steps)
    assert carried > 0 or env_id == "FrozenLake-v1"  # context carried across rollouts (FrozenLake's episodes are short)


def test_step_by_step_values_equal_batched_values() -> None:
    config = small_config(actor_context=True)
    runner = SingleAgentEnvRunner(config=config)
    learner = config.build_learner(env=runner.env)
    module = learner.module[DEFAULT_MODULE_ID]
    module.set_state(runner.module.get_state())
    rounds, observations = sample_rounds(runner, 3)
    chunks = rounds[-1]
    batch = learner_batch(learner, chunks)
    with th.no_grad():
        values = unpad_data_if_necessary([len(c) for c in chunks], module.compute_values(batch).numpy())
        expected = []
        for chunk in chunks:  # one step at a time from the episode's start, carrying the state
            state = {name: th.as_tensor(x)[None] for name, x in module.get_initial_state().items()}
            episode = []
            for obs in observations[chunk.id_.rsplit("_", 1)[0]]:
                step = {Columns.OBS: th.as_tensor(obs)[None, None], Columns.STATE_IN: state}
                episode.append(float(module.compute_values(step)[0, 0]))
                state = module.forward_inference(step)[Columns.STATE_OUT]
            expected.extend(episode[chunk.t_started : chunk.t_started + len(chunk)])
    np.testing.assert_allclose(values, expected, atol=1e-5)


def test_auxiliary_losses_are_added_with_their_weights_and_logged() -> None:
    losses = {}
    runner = learner = None
    for ct_coef in [0.1, 1.0, 0.0]:
        # Half the steps masked: of ~20 steps whose next context_len rewards lie inside their 5-step sequence (the
        # reward-to-go targets), 15% masking would leave none masked in about 4% of the samples.
        config = small_config(ct_coef=ct_coef, next_state_coef=0.5, rtg_coef=0.5, q_att_coef=1.0, mask_ratio=0.5)
        if runner is None:
            runner = SingleAgentEnvRunner(config=config)
            chunks = sample_rounds(runner, 2)[0][-1]
        learner = config.build_learner(env=runner.env)
        module = learner.module[DEFAULT_MODULE_ID]
        module.set_state(runner.module.get_state())
        batch = learner_batch(learner, copy.deepcopy(chunks))
        th.manual_seed(0)  # the same masked positions for every weight
        loss = learner.compute_loss_for_module(
            module_id=DEFAULT_MODULE_ID,
            config=learner.config.get_config_for_module(DEFAULT_MODULE_ID),
            batch=batch,
            fwd_out=module.forward_train(batch),
        )
        logged = {name: float(learner.metrics.peek((DEFAULT_MODULE_ID, name), default=np.nan)) for name in AUX_NAMES}
        losses[ct_coef] = (loss.item(), logged)
    (loss_01, logged_01), (loss_1, logged_1), (loss_0, logged_0) = losses[0.1], losses[1.0], losses[0.0]
    for name in AUX_NAMES:
        assert np.isfinite(logged_01[name]) and logged_01[name] > 0, name
    assert logged_01["contrastive_loss"] == pytest.approx(logged_1["contrastive_loss"], rel=1e-5)
    assert loss_1 - loss_01 == pytest.approx(0.9 * logged_01["contrastive_loss"], rel=1e-4)
    assert np.isnan(logged_0["contrastive_loss"])  # off: neither computed nor logged
    assert loss_01 - loss_0 == pytest.approx(0.1 * logged_01["contrastive_loss"], rel=1e-3)


AUX_NAMES = ("contrastive_loss", "next_state_loss", "rtg_loss", "q_att_loss")


def test_update_trains_and_steps_the_momentum_key_encoder_after_each_optimizer_step() -> None:
    config = small_config()
    runner = SingleAgentEnvRunner(config=config)
    learner = config.build_learner(env=runner.env)
    policy = learner.module[DEFAULT_MODULE_ID].policy
    weights = [p.detach().clone() for p in policy.parameters()]
    results = learner.update(episodes=runner.sample(num_timesteps=48, random_actions=False), timesteps={})
    assert np.isfinite(results[DEFAULT_MODULE_ID]["contrastive_loss"].peek())
    assert all(not p.requires_grad for p in policy.key_net.parameters())
    assert sum(not th.equal(w, p) for w, p in zip(weights, policy.parameters(), strict=True)) > 0
    # One more optimizer step without gradients: only the EMA step moves the keys, k <- m k + (1 - m) online.
    keys = [p.detach().clone() for p in policy.key_net.parameters()]
    learner.apply_gradients({})
    m = config.key_momentum
    for old, online, new in zip(keys, policy.token_embedding.parameters(), policy.key_net.parameters(), strict=True):
        th.testing.assert_close(new, m * old + (1 - m) * online)


class DictCartPole(gym.ObservationWrapper):
    """CartPole with its observation as a Dict of two Boxes."""

    def __init__(self, env_config: dict | None = None) -> None:
        super().__init__(gym.make("CartPole-v1"))
        low, high = self.env.observation_space.low, self.env.observation_space.high
        self.observation_space = spaces.Dict({"cart": spaces.Box(low[:2], high[:2]), "pole": spaces.Box(low[2:], high[2:])})

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"cart": observation[:2], "pole": observation[2:]}


@pytest.mark.parametrize("env_id", [DictCartPole, "MountainCarContinuous-v0"])
def test_dict_observations_and_box_actions_train(env_id) -> None:
    config = small_config(env_id, actor_context=True, next_state_coef=0.5)
    runner = SingleAgentEnvRunner(config=config)
    learner = config.build_learner(env=runner.env)
    results = learner.update(episodes=runner.sample(num_timesteps=48, random_actions=False), timesteps={})
    for name in ["policy_loss", "vf_loss", "contrastive_loss", "next_state_loss"]:
        assert np.isfinite(results[DEFAULT_MODULE_ID][name].peek()), name


# ------------------------------------------------------------------------------------------------------
# On a local Ray instance
@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_checkpoint_round_trip_gives_identical_actions_and_values(local_ray, tmp_path) -> None:
    policy_kwargs = dict(net_arch=dict(pi=[16], vf=[]), activation_fn=nn.ReLU)  # a class in the saved config
    algo = small_config(actor_context=True, policy_kwargs=policy_kwargs).build_algo()
    algo.train()
    algo.save_to_path(str(tmp_path))
    restored = Algorithm.from_checkpoint(str(tmp_path))
    try:
        assert isinstance(restored.config, AttnPPOConfig) and restored.config.context_len == 4
        module, restored_module = algo.get_module(), restored.get_module()
        obs = th.as_tensor(np.random.default_rng(0).normal(size=(3, 7, 4)), dtype=th.float32)
        state = {name: th.as_tensor(x)[None].repeat_interleave(3, 0) for name, x in module.get_initial_state().items()}
        batch = {Columns.OBS: obs, Columns.STATE_IN: state}
        with th.no_grad():
            out, restored_out = module.forward_inference(batch), restored_module.forward_inference(batch)
            assert th.equal(module.compute_values(batch), restored_module.compute_values(batch))
        assert th.equal(out[Columns.ACTION_DIST_INPUTS], restored_out[Columns.ACTION_DIST_INPUTS])
        for name in out[Columns.STATE_OUT]:
            assert th.equal(out[Columns.STATE_OUT][name], restored_out[Columns.STATE_OUT][name])
        assert not th.equal(out[Columns.ACTION_DIST_INPUTS][:, 0], out[Columns.ACTION_DIST_INPUTS][:, -1])
    finally:
        algo.stop()
        restored.stop()


def test_one_iteration_with_two_env_runners(local_ray) -> None:
    config = small_config().env_runners(num_env_runners=2).training(train_batch_size_per_learner=96)
    algo = config.build_algo()
    try:
        assert algo.env_runner_group.num_healthy_remote_workers() == 2
        result = algo.train()
        assert result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME] >= 96
        learner_results = result[LEARNER_RESULTS][DEFAULT_MODULE_ID]
        assert np.isfinite(learner_results["contrastive_loss"]) and learner_results["contrastive_loss"] > 0
        assert "next_state_loss" not in learner_results  # heads off by default
    finally:
        algo.stop()

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_attn_ac import AttnA2C, EpisodeRolloutBuffer


class RolloutRecorder(BaseCallback):
    """Keeps each rollout's observations, episode starts, values and (bootstrapped) rewards, and terminal obs."""

    def __init__(self) -> None:
        super().__init__()
        self.obs, self.starts, self.values, self.rewards, self.terminal = [], [], [], [], []
        self.actions, self.log_probs = [], []
        self.step = 0

    def _on_step(self) -> bool:
        for env_idx, (done, info) in enumerate(zip(self.locals["dones"], self.locals["infos"], strict=True)):
            if done:
                self.terminal.append(
                    (self.step, env_idx, info["terminal_observation"], info.get("TimeLimit.truncated", False))
                )
        self.step += 1
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        for name, data in [
            ("obs", buffer.observations),
            ("starts", buffer.episode_starts),
            ("values", buffer.values),
            ("rewards", buffer.rewards),
            ("actions", buffer.actions),
            ("log_probs", buffer.log_probs),
        ]:
            getattr(self, name).append(data.copy())

    def stream(self, name: str) -> np.ndarray:
        return np.concatenate(getattr(self, name))


def frozen_model(n_envs: int = 3, max_steps: int = 20, **kwargs) -> AttnA2C:
    """Fixed parameters (learning rate 0) so values computed at different times must agree."""
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0, env_kwargs=dict(max_episode_steps=max_steps))
    args = dict(n_steps=7, seed=0, context_len=4, n_layers=2, d_model=16, learning_rate=0.0)
    return AttnA2C("MlpPolicy", env, **{**args, **kwargs})


@pytest.mark.parametrize(
    ("ct_coef", "actor_context", "q_att_coef", "shared_transformer", "prev_action", "window"),
    [
        (0.0, False, 0.0, True, False, {}),
        (0.1, False, 0.0, True, False, {}),
        (0.1, True, 0.0, True, False, {}),
        (0.1, True, 0.0, False, False, {}),
        (0.1, False, 3.0, True, False, {}),
        (0.1, True, 0.0, True, True, {}),
        (0.1, True, 0.0, False, True, {}),
        # A local window's short prefix: the episode's first step, then 2 * (2 - 1) steps (2 * 9 without it); the
        # first step is read up to 9 steps back, across the 7-step rollouts.
        (0.1, True, 0.0, False, True, dict(context_len=10, local_window=2, start_bias=True)),
        # The previous step's features in the token, carried across rollouts (and across the local window's gap).
        (0.1, True, 0.0, False, False, dict(prev_obs=True)),
        (0.1, True, 0.0, True, True, dict(prev_obs=True, context_len=10, local_window=2, start_bias=True)),
        (0.1, True, 0.0, False, True, dict(actor_reads_critic=True, prev_obs=True, context_len=10, local_window=2)),
    ],
)
def test_rollout_values_equal_trajectory_values(
    ct_coef: float,
    actor_context: bool,
    q_att_coef: float,
    shared_transformer: bool,
    prev_action: bool,
    window: dict,
    visible_context,
) -> None:
    # Episodes (time limit 20) cross rollout boundaries (7 steps) and a second learn() call.
    model = frozen_model(
        ct_coef=ct_coef,
        actor_context=actor_context,
        q_att_coef=q_att_coef,
        shared_transformer=shared_transformer,
        prev_action=prev_action,
        **window,
    )
    if q_att_coef:
        th.nn.init.normal_(model.policy.q_head.weight)  # Q_att must visibly shape the acting distribution
    visible_context(model)
    recorder = RolloutRecorder()
    model.learn(3 * 7 * 6, callback=recorder)
    model.learn(3 * 7 * 4, callback=recorder, reset_num_timesteps=False)
    obs, starts, values = recorder.stream("obs"), recorder.stream("starts"), recorder.stream("values")
    all_actions = recorder.stream("actions")
    assert len(obs) == 70 and starts[1:].any()
    for env_idx in range(3):
        taken = all_actions[:, env_idx] if prev_action else None
        expected = model.policy.trajectory_values(obs[:, env_idx], starts[:, env_idx], taken).numpy()
        np.testing.assert_allclose(values[:, env_idx], expected, atol=1e-5)
        # Acting-time log-probabilities equal those of the whole stream (with actor context, incremental
        # acting through the key/value cache must match the batched pass).
        distribution = model.policy.trajectory_distribution(obs[:, env_idx], starts[:, env_idx], taken)
        actions = th.as_tensor(all_actions[:, env_idx, 0])
        expected = distribution.log_prob(actions).numpy()
        np.testing.assert_allclose(recorder.stream("log_probs")[:, env_idx], expected, atol=1e-5)


def test_timeout_bootstraps_from_terminal_value_with_context() -> None:
    model = frozen_model(n_envs=2, max_steps=9, gamma=0.9)
    recorder = RolloutRecorder()
    model.learn(2 * 7 * 8, callback=recorder)
    obs, starts, rewards = recorder.stream("obs"), recorder.stream("starts"), recorder.stream("rewards")
    n_truncated = n_terminated = 0
    for step, env_idx, terminal_obs, truncated in recorder.terminal:
        if step >= len(obs):
            continue
        if not truncated:
            assert rewards[step, env_idx] == 1.0  # terminated: no bootstrap
            n_terminated += 1
            continue
        first = step - int(np.argmax(starts[step::-1, env_idx]))  # the episode's first step
        episode = np.concatenate([obs[first : step + 1, env_idx], terminal_obs[None]])
        v_terminal = model.policy.trajectory_values(episode)[-1].item()
        v_alone = model.policy.trajectory_values(terminal_obs[None])[0].item()
        assert rewards[step, env_idx] == pytest.approx(1.0 + 0.9 * v_terminal, abs=1e-5)
        assert abs(v_terminal - v_alone) > 1e-4  # the context changed the bootstrap value
        n_truncated += 1
    assert n_truncated >= 4


def test_contrastive_loss_logged_only_when_on() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = AttnA2C("MlpPolicy", env, seed=0, ct_coef=0.5, bert_masking=True).learn(40)
    assert "train/contrastive_loss" in model.logger.name_to_value
    assert {"train/value_loss", "train/policy_loss", "train/entropy_loss"} <= set(model.logger.name_to_value)
    model = AttnA2C("MlpPolicy", env, seed=0, ct_coef=0.0).learn(40)
    assert "train/contrastive_loss" not in model.logger.name_to_value


def test_contrastive_loss_trains_the_attention_parameters() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = AttnA2C("MlpPolicy", env, seed=0, vf_coef=0.0, ct_coef=1.0, key_encoder="shared", n_steps=20)
    before = model.policy.mask_embedding.detach().clone()
    model.learn(40)
    assert not th.equal(before, model.policy.mask_embedding)  # only the contrastive loss reaches it


def test_dropout_recomputes_values_in_training_mode() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = AttnA2C("MlpPolicy", env, seed=0, dropout=0.2)
    assert not model._keep_value_graph()
    model.learn(30)
    assert model.policy.training  # the update ran in training mode


def test_a2c_defaults_and_rms_prop() -> None:
    model = AttnA2C("MlpPolicy", "CartPole-v1")
    assert (model.n_steps, model.gamma, model.gae_lambda, model.ent_coef, model.vf_coef) == (5, 0.99, 1.0, 0.0, 0.5)
    assert model.learning_rate == 7e-4 and model.max_grad_norm == 0.5 and not model.normalize_advantage
    assert isinstance(model.policy.optimizer, th.optim.RMSprop)
    assert model.policy.optimizer.defaults["eps"] == 1e-5
    assert isinstance(AttnA2C("MlpPolicy", "CartPole-v1", use_rms_prop=False).policy.optimizer, th.optim.Adam)
    assert isinstance(model.rollout_buffer, EpisodeRolloutBuffer)
    assert model.rollout_buffer.prefix_len == model.n_layers * (model.context_len - 1)


def test_custom_rollout_buffer_class() -> None:
    class MyBuffer(EpisodeRolloutBuffer):
        pass

    model = AttnA2C("MlpPolicy", "CartPole-v1", n_steps=4, rollout_buffer_class=MyBuffer, rollout_buffer_kwargs={}).learn(8)
    assert type(model.rollout_buffer) is MyBuffer


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(context_len=0), "context_len must be an integer >= 1"),
        (dict(d_model=30, n_heads=4), "d_model must be a positive multiple of n_heads"),
        (dict(mask_ratio=1.5), r"mask_ratio must be in the open interval \(0, 1\)"),
        (dict(ct_temperature=0), "ct_temperature must be > 0"),
        (dict(ct_coef=-1), "ct_coef must be >= 0"),
        (dict(key_encoder="target"), "key_encoder must be one of"),
        (dict(position_encoding="rope"), r"position_encoding must be one of \('relative', 'alibi', 'absolute'\)"),
        (dict(prev_action="False"), "prev_action must be True or False, got 'False'"),  # a string from a config file
        (dict(prev_obs=1), "prev_obs must be True or False, got 1"),
        (dict(actor_context=1), "actor_context must be True or False, got 1"),
        (dict(actor_value_coef=-1.0), r"actor_value_coef must be >= 0"),
        (
            dict(actor_value_coef=0.5, actor_context=True),
            r"actor_value_coef > 0 .* needs actor_context=True and shared_transformer=False, got actor_context=True, "
            r"shared_transformer=True",
        ),
        (dict(policy_kwargs=dict(actor_value_head=True)), r"actor_value_head in policy_kwargs: .* with actor_value_coef"),
        (dict(prev_action_encoding="scaled"), r"prev_action_encoding must be one of \('bounded', 'raw'\), got 'scaled'"),
        (dict(start_bias=True, position_encoding="absolute"), 'start_bias=True needs position_encoding="relative" or "alibi"'),
        (dict(local_window=17), r"local_window must be None \(the whole window\) or an integer in \[1, context_len=16\]"),
        (dict(local_window=2.0), r"local_window must be None .* got 2.0"),
        (dict(q_att_coef=1.0, actor_context=True, shared_transformer=False), "q_att_coef > 0 needs shared_transformer=True"),
        (dict(policy_kwargs=dict(context_len=8)), r"context_len in policy_kwargs: pass the attention arguments to AttnA2C"),
        (dict(policy_kwargs=dict(rtg_head=True)), r"rtg_head in policy_kwargs: .* with next_state_coef / rtg_coef"),
        (
            dict(rollout_buffer_class=__import__("stable_baselines3").common.buffers.RolloutBuffer),
            "rollout_buffer_class must be EpisodeRolloutBuffer",
        ),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttnA2C("MlpPolicy", "CartPole-v1", **kwargs)


def test_bad_policy_and_space() -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy

    with pytest.raises(ValueError, match="policy must be one of"):
        AttnA2C(ActorCriticPolicy, "CartPole-v1")
    with pytest.raises(ValueError, match="Policy"):
        AttnA2C("LstmPolicy", "CartPole-v1")

    class TupleActionEnv(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Discrete(2)])

    with pytest.raises(ValueError, match="action_space must be one of Box, Discrete, MultiDiscrete, MultiBinary"):
        AttnA2C("MlpPolicy", TupleActionEnv())

    class FixedActionEnv(gym.Env):  # the second action dimension is pinned: nothing to scale it by
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 0.0]))

    with pytest.raises(ValueError, match=r"prev_action_encoding='bounded' .* must be finite with high > low; got Box"):
        AttnA2C("MlpPolicy", FixedActionEnv(), actor_context=True, prev_action=True)
    AttnA2C("MlpPolicy", FixedActionEnv(), actor_context=True, prev_action=True, prev_action_encoding="raw")


def test_learns_cartpole() -> None:
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = AttnA2C("MlpPolicy", env, seed=0).learn(50_000)
    mean_return, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=1), n_eval_episodes=10)
    # Random play scores about 22. With SB3's A2C defaults and 50k steps, seeds 0-5 end at 138-500 with AttnA2C and
    # 277-500 with A2C (2026-12-07): a learner, not yet a solver, so the bar sits below every seed's; a float-level
    # change of the code moves which seed lands where (the 500 bar belongs to benchmarks/report.py).
    assert mean_return >= 100


def test_actor_value_head_is_trained_by_a2c() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = AttnA2C("MlpPolicy", env, n_steps=8, actor_context=True, shared_transformer=False, actor_value_coef=0.5, seed=0)
    before = model.policy.actor_value_net.weight.detach().clone()
    model.learn(32)
    assert model.logger.name_to_value["train/actor_value_loss"] > 0
    assert not th.equal(model.policy.actor_value_net.weight, before)

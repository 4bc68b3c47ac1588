"""The design notes' optional pieces: Q_att action preferences."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import ConstantSchedule

from sb3_attn_ac import AttnA2C, AttnActorCriticPolicy, AttnPPO


def test_q_att_preferences_argmax_and_softmax() -> None:
    th.manual_seed(0)
    obs_space = spaces.Box(-1, 1, (3,), np.float32)
    policy = AttnActorCriticPolicy(
        obs_space, spaces.Discrete(4), ConstantSchedule(1e-3), context_len=4, d_model=8, q_att_coef=2.0
    )
    obs = np.random.default_rng(0).uniform(-1, 1, (6, 3)).astype(np.float32)
    _, hidden, _ = policy._stream(obs, None, None)
    with th.no_grad():
        features = policy.extract_features(th.as_tensor(obs), policy.pi_features_extractor)
        logits = policy.action_net(policy.mlp_extractor.forward_actor(features))
        preferences = logits + 2.0 * policy.q_att(hidden)
        distribution = policy.trajectory_distribution(obs)
    assert th.allclose(distribution.distribution.probs, th.softmax(preferences, -1), atol=1e-6)
    assert th.equal(distribution.get_actions(deterministic=True), preferences.argmax(-1))
    # Q_att moves the choice: with a large beta the argmax of Q_att wins.
    policy.q_att_coef = 1e4
    assert th.equal(policy.trajectory_distribution(obs).get_actions(deterministic=True), policy.q_att(hidden).argmax(-1))


@pytest.mark.parametrize("algo", [AttnA2C, AttnPPO])
def test_q_att_needs_discrete_actions(algo) -> None:
    with pytest.raises(ValueError, match=r"q_att_coef > 0 needs a Discrete action space"):
        algo("MlpPolicy", "Pendulum-v1", q_att_coef=1.0)
    with pytest.raises(ValueError, match=r"q_att_coef must be >= 0"):
        algo("MlpPolicy", "CartPole-v1", q_att_coef=-1.0)
    with pytest.raises(ValueError, match=r"q_att_loss_coef must be >= 0"):
        algo("MlpPolicy", "CartPole-v1", q_att_coef=1.0, q_att_loss_coef=-1.0)


@pytest.mark.parametrize("algo", [AttnA2C, AttnPPO])
def test_q_att_is_trained_by_its_regression_only(algo) -> None:
    kwargs = dict(n_steps=16, context_len=4, d_model=16, seed=0, q_att_coef=1.0)
    if algo is AttnPPO:
        kwargs.update(batch_size=32, n_epochs=2)
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    frozen = algo("MlpPolicy", env, q_att_loss_coef=0.0, **kwargs)
    before = frozen.policy.q_head.weight.detach().clone()
    frozen.learn(64)
    assert th.equal(before, frozen.policy.q_head.weight)  # detached in the policy loss
    model = algo("MlpPolicy", env, q_att_loss_coef=1.0, **kwargs).learn(64)
    assert not th.equal(before, model.policy.q_head.weight)
    assert model.logger.name_to_value["train/q_att_loss"] > 0
    _, state = model.predict(env.reset())  # acting reads the transformer: predict carries the context
    assert state is not None and state[0].shape[1] == 2


def test_next_state_head_never_predicts_across_an_episode_boundary() -> None:
    from sb3_attn_ac.common.attention.type_aliases import MaskedPass
    from sb3_attn_ac.common.torch_layers import Band, TokenMeta

    policy = AttnActorCriticPolicy(
        spaces.Box(-1, 1, (2,), np.float32), spaces.Discrete(2), ConstantSchedule(1e-3), context_len=4, d_model=8,
        next_state_head=True, rtg_head=True,
    )  # fmt: skip
    # One stream: episode A = steps 0..2, episode B = steps 3..5; features 1 in A, 100 in B.
    features = th.tensor([[1.0, 1.0, 1.0, 100.0, 100.0, 100.0]])[..., None].expand(1, 6, 2)
    meta = TokenMeta(th.tensor([[0, 1, 2, 0, 1, 2]]), th.tensor([[0, 0, 0, 1, 1, 1]]), th.ones(1, 6, dtype=th.bool))
    selected = th.tensor([[True, True, True, False, False, False]])  # masked: all of A, including its last step
    masked = MaskedPass(th.zeros(1, 6, 8), features, th.zeros(1, 6, 8), selected, meta, Band(meta, 4))
    with th.no_grad():  # predict 1 everywhere: exact for next states inside A, far off for A's last step -> B
        policy.next_state_net.weight.zero_()
        policy.next_state_net.bias.fill_(1.0)
        policy.rtg_net.weight.zero_()
        policy.rtg_net.bias.fill_(0.0)
    rewards = th.ones(1, 6)
    next_loss, rtg_loss = policy.masked_prediction_losses(masked, rewards, th.ones(1, 6, dtype=th.bool), gamma=1.0)
    assert next_loss.item() == 0.0  # step 2 (A's last) has no next state: not B's first step
    assert rtg_loss.item() == pytest.approx((3**2 + 2**2 + 1**2) / 3)  # reward-to-go within A: 3, 2, 1


@pytest.mark.parametrize("algo", [AttnA2C, AttnPPO])
def test_prediction_heads_train_and_log(algo) -> None:
    kwargs = dict(n_steps=16, context_len=4, d_model=16, seed=0, ct_coef=0.0, next_state_coef=1.0, rtg_coef=1.0)
    if algo is AttnPPO:
        kwargs.update(batch_size=32, n_epochs=2)
    model = algo("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), **kwargs)
    before = model.policy.rtg_net.weight.detach().clone()
    model.learn(64)
    logged = model.logger.name_to_value
    assert logged["train/next_state_loss"] > 0 and logged["train/rtg_loss"] > 0
    assert "train/contrastive_loss" not in logged  # ct_coef = 0: only the heads use the masked pass
    assert not th.equal(before, model.policy.rtg_net.weight)
    assert AttnA2C("MlpPolicy", "CartPole-v1").policy.rtg_net is None  # off by default
    with pytest.raises(ValueError, match="rtg_coef must be >= 0"):
        algo("MlpPolicy", "CartPole-v1", rtg_coef=-1.0)

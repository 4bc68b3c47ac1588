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
    _, hidden = policy._stream(obs, None)
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

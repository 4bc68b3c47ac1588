import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.utils import ConstantSchedule

from sb3_attn_ac import AttnActorCriticCnnPolicy, AttnActorCriticPolicy, AttnMultiInputActorCriticPolicy

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
K = 8


def make_policy(**kwargs) -> AttnActorCriticPolicy:
    th.manual_seed(0)
    args = dict(context_len=K, n_layers=1, d_model=16, n_heads=2)
    return AttnActorCriticPolicy(OBS, spaces.Discrete(2), ConstantSchedule(1e-3), **{**args, **kwargs}).eval()


@pytest.fixture()
def stream() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (30, 3)).astype(np.float32)
    starts = np.zeros(30, dtype=bool)
    starts[[0, 20]] = True
    return obs, starts


def changed(a: th.Tensor, b: th.Tensor) -> np.ndarray:
    return ~np.isclose(a.numpy(), b.numpy(), atol=1e-6)


def test_causality(stream) -> None:
    policy, (obs, starts) = make_policy(n_layers=2), stream
    v = policy.trajectory_values(obs, starts)
    obs2 = obs.copy()
    obs2[12] += 0.5
    diff = changed(v, policy.trajectory_values(obs2, starts))
    assert not diff[:12].any()
    assert diff[12]


def test_episode_isolation(stream) -> None:
    policy, (obs, starts) = make_policy(n_layers=2), stream
    v = policy.trajectory_values(obs, starts)
    obs2 = obs.copy()
    obs2[17] += 0.5  # last steps of the first episode
    diff = changed(v, policy.trajectory_values(obs2, starts))
    assert diff[17]
    assert not diff[20:].any()


def test_context_is_used_within_the_window(stream) -> None:
    policy, (obs, starts) = make_policy(), stream
    v = policy.trajectory_values(obs, starts)
    obs2 = obs.copy()
    obs2[2] += 0.5
    diff = changed(v, policy.trajectory_values(obs2, starts))
    assert diff[2 : 2 + K].all()  # steps 3 .. K+1 see step 2
    assert not diff[2 + K :].any()  # one layer: nothing beyond its window


def test_timestep_position_matters(stream) -> None:
    policy, (obs, _) = make_policy(), stream
    v_start = policy.trajectory_values(obs[:1])
    v_late = policy.trajectory_values(obs[:6])[-1]  # obs[5] at step 5 of its episode
    v_first = policy.trajectory_values(obs[5:6])  # obs[5] as the first step
    assert v_start.shape == (1,)
    assert not th.isclose(v_late, v_first[0])


def test_predict_values_is_first_step_value(stream) -> None:
    policy, (obs, _) = make_policy(), stream
    with th.no_grad():
        values = policy.predict_values(th.as_tensor(obs[:4]))
    assert values.shape == (4, 1)
    for i in range(4):
        assert th.isclose(values[i, 0], policy.trajectory_values(obs[i : i + 1])[0], atol=1e-6)
    actions, values, log_prob = policy(th.as_tensor(obs[:4]))
    assert actions.shape == (4,) and values.shape == (4, 1) and log_prob.shape == (4,)
    with th.no_grad():  # SB3's evaluate_actions: the same values and log-probabilities
        values2, log_prob2, entropy = policy.evaluate_actions(th.as_tensor(obs[:4]), actions)
    assert th.allclose(values2, values) and th.allclose(log_prob2, log_prob) and entropy.shape == (4,)


def test_standalone_save_load(tmp_path, stream) -> None:
    policy, (obs, starts) = make_policy(n_layers=2, key_encoder="shared", dropout=0.1, share_features_extractor=False), stream
    policy.save(tmp_path / "policy.pth")
    loaded = AttnActorCriticPolicy.load(tmp_path / "policy.pth").eval()
    for name in ["context_len", "n_layers", "n_heads", "d_model", "dropout", "key_encoder", "share_features_extractor"]:
        assert getattr(loaded, name) == getattr(policy, name), name
    assert th.allclose(loaded.trajectory_values(obs, starts), policy.trajectory_values(obs, starts))
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0])


def test_default_net_arch_and_non_shared_features() -> None:
    policy = make_policy()
    assert policy.net_arch == dict(pi=[64, 64], vf=[])
    assert policy.mlp_extractor.latent_dim_vf == 16  # the value head reads the transformer
    policy = make_policy(net_arch=dict(pi=[8], vf=[5]), share_features_extractor=False)
    assert policy.mlp_extractor.latent_dim_pi == 8 and policy.mlp_extractor.latent_dim_vf == 5
    assert policy.vf_features_extractor is not policy.pi_features_extractor


def test_momentum_key_encoder_is_an_ema_copy() -> None:
    policy = make_policy(key_momentum=0.5)
    assert th.equal(policy.key_net.weight, policy.token_embedding.weight)
    assert not policy.key_net.weight.requires_grad
    before = policy.key_net.weight.clone()
    with th.no_grad():
        policy.token_embedding.weight.add_(1.0)
    policy.update_key_encoder()
    assert th.allclose(policy.key_net.weight, 0.5 * before + 0.5 * policy.token_embedding.weight)
    assert make_policy(key_encoder="shared").key_net is None


def test_cnn_and_multi_input_policies() -> None:
    image = spaces.Box(0, 255, (3, 36, 36), np.uint8)  # channel-first, as SB3's VecTransposeImage gives
    cnn = AttnActorCriticCnnPolicy(image, spaces.Discrete(3), ConstantSchedule(1e-3), context_len=4, d_model=16)
    obs = np.random.default_rng(0).integers(0, 255, (5, 3, 36, 36), dtype=np.uint8)
    assert cnn.trajectory_values(obs).shape == (5,)
    dict_space = spaces.Dict({"a": OBS, "b": spaces.Discrete(4)})
    multi = AttnMultiInputActorCriticPolicy(dict_space, spaces.Discrete(2), ConstantSchedule(1e-3), context_len=4, d_model=16)
    obs = {"a": np.zeros((6, 3), np.float32), "b": np.arange(6) % 4}
    assert multi.trajectory_values(obs).shape == (6,)


@pytest.mark.parametrize(
    ("obs_space", "action_space", "match"),
    [
        (OBS, spaces.Tuple([spaces.Discrete(2)]), "action_space must be one of Box, Discrete, MultiDiscrete, MultiBinary"),
        (spaces.Tuple([OBS]), spaces.Discrete(2), "observation_space must be one of"),
        (spaces.Dict({"a": spaces.Tuple([OBS])}), spaces.Discrete(2), "observation_space must be one of"),
    ],
)
def test_unsupported_spaces(obs_space, action_space, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttnActorCriticPolicy(obs_space, action_space, ConstantSchedule(1e-3))


def test_separate_actor_transformer(stream) -> None:
    """With shared_transformer=False the actor reads a transformer of its own: acting runs it (the critic's
    parameters do not move the actions), the critic's alone gives the values, and both see context."""
    policy, (obs, starts) = make_policy(actor_context=True, shared_transformer=False), stream
    assert policy.actor_encoder is not None
    assert {id(p) for p in policy.actor_encoder.parameters()}.isdisjoint(id(p) for p in policy.transformer.parameters())
    values, logits = policy.trajectory_values(obs, starts), policy.trajectory_distribution(obs, starts).distribution.logits
    with th.no_grad():
        for p in policy.transformer.parameters():
            p.add_(0.5)
    assert changed(values, policy.trajectory_values(obs, starts)).all()
    np.testing.assert_allclose(policy.trajectory_distribution(obs, starts).distribution.logits, logits, atol=1e-6)
    with th.no_grad():
        for p in policy.actor_encoder.parameters():
            p.add_(0.5)
    assert changed(logits, policy.trajectory_distribution(obs, starts).distribution.logits).any()


@pytest.mark.parametrize("encoding", ["bounded", "raw"])
def test_box_previous_action_is_clipped_and_scaled(encoding: str) -> None:
    # Box [-2, 2]: "bounded" embeds what the env applied, scaled to [-1, 1]; "raw" (0.3.1) the sample itself.
    action_space = spaces.Box(-2.0, 2.0, (1,))
    policy = AttnActorCriticPolicy(spaces.Box(-1, 1, (3,)), action_space, ConstantSchedule(1e-3), actor_context=True,
                                   prev_action=True, shared_transformer=False, prev_action_encoding=encoding)  # fmt: skip
    encoder = policy.actor_encoder
    prev_actions = th.tensor([[-5.0], [-2.0], [1.0], [2.0], [3.0], [3.0]])
    timesteps = th.tensor([1, 1, 1, 1, 1, 0])
    tokens = policy._action_tokens(encoder, prev_actions, timesteps)
    weight = encoder.action_embedding.weight[:, 0]
    scale = 0.5 if encoding == "bounded" else 1.0
    wanted = [-2.0, -2.0, 1.0, 2.0, 2.0, 0.0] if encoding == "bounded" else [-5.0, -2.0, 1.0, 2.0, 3.0, 0.0]
    expected = scale * th.tensor(wanted)[:, None] * weight  # nothing at an episode's first step
    th.testing.assert_close(tokens, expected)


def test_prev_obs_stays_inside_its_episode_and_hidden_in_the_masked_copy(stream) -> None:
    # context_len=1: a step attends to itself only, so what it reads of another step comes through prev_obs alone.
    policy, (obs, starts) = make_policy(prev_obs=True, context_len=1), stream
    th.nn.init.normal_(policy.prev_obs_embedding.weight)
    v = policy.trajectory_values(obs, starts)
    obs2 = obs.copy()
    obs2[[12, 19]] += 0.5  # step 19 is the first episode's last
    diff = changed(v, policy.trajectory_values(obs2, starts))
    assert diff.nonzero()[0].tolist() == [12, 13, 19]  # each step and the next of its episode
    # The masked copy: a replaced step's features reach neither its own row nor the next one.
    meta = policy._stream_meta(30, starts)
    with th.no_grad():
        th.manual_seed(1)
        hidden, _, masked = policy.stream_forward(th.as_tensor(obs), meta, mask_ratio=0.3)
        selected = masked.selected[0].numpy()
        t = int(np.flatnonzero(selected[:-1] & ~selected[1:] & ~starts[1:])[0])
        obs3 = obs.copy()
        obs3[t] += 0.5
        th.manual_seed(1)
        hidden3, _, masked3 = policy.stream_forward(th.as_tensor(obs3), meta, mask_ratio=0.3)
    assert th.equal(masked3.selected, masked.selected)
    assert th.equal(masked3.hidden[0, t : t + 2], masked.hidden[0, t : t + 2])
    assert changed(hidden3[0, t + 1], hidden[0, t + 1]).any()  # the causal rows still read it

import math

import pytest
import torch as th

from sb3_attn_ac.common.utils import (
    check_attention_args,
    check_contrastive_args,
    masked_contrastive_loss,
    reward_to_go,
    select_masked,
)


def test_masked_contrastive_loss_hand_computed() -> None:
    # One masked query over three candidate keys; its own key is the first.
    q = th.tensor([[1.0, 0.0]])
    k = th.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]])
    positive = th.tensor([0])
    allowed = th.ones(1, 3, dtype=th.bool)
    omega = 0.5
    # logits: [1, 0, 0.6] / 0.5 = [2, 0, 1.2]
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(1.2)))
    assert masked_contrastive_loss(q, k, positive, allowed, omega).item() == pytest.approx(expected, rel=1e-6)

    # A key outside the window (episode boundary / padding) leaves the softmax.
    allowed[0, 1] = False
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
    assert masked_contrastive_loss(q, k, positive, allowed, omega).item() == pytest.approx(expected, rel=1e-6)

    # Mean over the masked positions: a second query whose own key is the second one.
    q = th.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = k.expand(2, 3, 2)
    l0 = -math.log(math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(1.2)))
    l1 = -math.log(math.exp(2.0) / (1 + math.exp(2.0) + math.exp(1.6)))
    loss = masked_contrastive_loss(q, k, th.tensor([0, 1]), th.ones(2, 3, dtype=th.bool), omega)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_masked_contrastive_loss_nothing_masked_is_zero() -> None:
    q = th.zeros(0, 4, requires_grad=True)
    loss = masked_contrastive_loss(q, th.zeros(0, 5, 4), th.zeros(0, dtype=th.long), th.zeros(0, 5, dtype=th.bool), 0.1)
    assert loss.item() == 0.0
    loss.backward()


def test_select_masked_only_valid_and_ratio() -> None:
    valid = th.ones(64, 64, dtype=th.bool)
    valid[:, 32:] = False
    sel = select_masked(valid, 0.25, th.Generator().manual_seed(0))
    assert not sel[:, 32:].any()
    assert sel[:, :32].float().mean().item() == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(context_len=0), "context_len must be an integer >= 1"),
        (dict(n_layers=0), "n_layers"),
        (dict(n_heads=0), "n_heads"),
        (dict(d_model=30, n_heads=4), "d_model must be a positive multiple of n_heads"),
        (dict(dropout=1.0), "dropout"),
        (dict(key_encoder="ema"), r"key_encoder must be one of \('momentum', 'shared'\)"),
        (dict(key_momentum=1.0), "key_momentum"),
        (dict(position_encoding="rotary"), r"position_encoding must be one of \('relative', 'alibi', 'absolute'\)"),
    ],
)
def test_check_attention_args(kwargs: dict, match: str) -> None:
    args = dict(context_len=4, n_layers=1, n_heads=2, d_model=8, dropout=0.0, key_encoder="momentum", key_momentum=0.9)
    args["position_encoding"] = "relative"
    check_attention_args(**args)
    with pytest.raises(ValueError, match=match):
        check_attention_args(**{**args, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ct_coef=-0.1), r"ct_coef must be >= 0"),
        (dict(ct_temperature=0.0), r"ct_temperature must be > 0"),
        (dict(mask_ratio=0.0), r"mask_ratio must be in the open interval \(0, 1\)"),
        (dict(mask_ratio=1.0), r"mask_ratio must be in the open interval \(0, 1\)"),
    ],
)
def test_check_contrastive_args(kwargs: dict, match: str) -> None:
    args = dict(ct_coef=0.1, ct_temperature=0.1, mask_ratio=0.15)
    check_contrastive_args(**args)
    with pytest.raises(ValueError, match=match):
        check_contrastive_args(**{**args, **kwargs})


def test_reward_to_go_stops_at_episode_ends_and_unknown_rewards() -> None:
    rewards = th.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    known = th.tensor([[True, True, True, True, True, False]])  # the last reward is not known yet
    episodes = th.tensor([[0, 0, 0, 1, 1, 1]])  # a new episode starts at step 3
    targets, complete = reward_to_go(rewards, known, episodes, gamma=0.5, horizon=2)
    assert targets.tolist() == [[1 + 0.5 * 2, 2 + 0.5 * 3, 3.0, 4 + 0.5 * 5, 5 + 0.5 * 6, 6.0]]
    assert complete.tolist() == [[True, True, True, True, False, False]]
    targets, complete = reward_to_go(rewards, known, episodes, gamma=1.0, horizon=4)
    assert targets.tolist()[0][:3] == [6.0, 5.0, 3.0]  # never across the boundary at step 3

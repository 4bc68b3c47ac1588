"""Losses, masking and argument checks shared by the attention algorithms."""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from torch.nn import functional as F

KEY_ENCODERS = ("momentum", "shared")
POSITION_ENCODINGS = ("relative", "alibi", "absolute")
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def masked_contrastive_loss(
    queries: th.Tensor, keys: th.Tensor, positive: th.Tensor, allowed: th.Tensor, temperature: float
) -> th.Tensor:
    """InfoNCE at the masked positions ("leave one out", BERT-like), averaged over them:

        L_ct = 1 / N * sum_i -log( exp(q_i . k_i+ / omega) / sum_j exp(q_i . k_j / omega) )

    where j runs over the candidate keys allowed for query i (its trajectory window) and ``k_i+`` is the key of
    its own state.

    :param queries: (N, D) one query per masked position
    :param keys: (N, S, D) each query's candidate keys
    :param positive: (N,) index in ``S`` of each query's own key
    :param allowed: (N, S) which keys enter each query's softmax (must include the positive)
    :param temperature: omega > 0
    :return: scalar loss (0 when N == 0)
    """
    if len(queries) == 0:
        return queries.sum() * 0.0
    logits = th.bmm(keys, queries.unsqueeze(-1)).squeeze(-1) / temperature  # (N, S)
    return F.cross_entropy(logits.masked_fill(~allowed, float("-inf")), positive)


def reward_to_go(
    rewards: th.Tensor, known: th.Tensor, episode_ids: th.Tensor, gamma: float, horizon: int
) -> tuple[th.Tensor, th.Tensor]:
    """Discounted reward-to-go over a window: R_t = sum_{k < horizon} gamma^k r_{t+k}, over the steps t+k of
    t's episode only, and whether every one of those rewards is known (the target is complete).

    :param rewards: (B, L) per-token rewards
    :param known: (B, L) whether each reward is known
    :param episode_ids: (B, L) episode of each token
    :param gamma: discount factor
    :param horizon: window length
    :return: (B, L) targets and (B, L) completeness
    """
    pad = (0, horizon - 1)
    window = lambda x, fill: F.pad(x, pad, value=fill).unfold(1, horizon, 1)  # noqa: E731  (B, L, horizon)
    same = window(episode_ids, -1) == episode_ids[..., None]
    discounts = gamma ** th.arange(horizon, device=rewards.device, dtype=rewards.dtype)
    targets = (window(rewards, 0.0) * same * discounts).sum(-1)
    complete = ~(same & (window(known.float(), 0.0) == 0)).any(-1)
    return targets, complete


def fast_adam_kwargs() -> dict[str, bool]:
    """Adam's fastest step implementation available: ``fused`` (CPU support from torch 2.4), else ``foreach``."""
    major, minor = (int(x) for x in th.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {"foreach": True}


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy), and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_n_steps(n_steps: int, n_episodes: int | None) -> None:
    """Raise a ValueError for rollouts of fewer than one step per env (unused with N-trajectory rollouts)."""
    if n_episodes is None and (not is_integer(n_steps) or n_steps < 1):
        raise ValueError(f"n_steps must be an integer >= 1 (steps per env in each rollout), got {n_steps!r}")


def check_advantage_normalization(normalize_advantage: bool, n_steps: int, n_envs: int, n_episodes: int | None) -> None:
    """Raise a ValueError where advantages would be normalised over rollouts of one step (as PPO does; A2C
    accepts them and its first update turns the parameters into NaN: the std of one value is undefined).

    :param normalize_advantage: whether advantages are normalised
    :param n_steps: steps per env in each rollout
    :param n_envs: number of envs
    :param n_episodes: N-trajectory rollouts (their length varies: not checked)
    """
    if normalize_advantage and n_episodes is None and n_steps * n_envs < 2:
        raise ValueError(
            "normalize_advantage=True needs rollouts of n_steps * n_envs >= 2 steps (the std of one advantage is "
            f"undefined), got n_steps={n_steps} and n_envs={n_envs}"
        )


def select_masked(valid: th.Tensor, mask_ratio: float, generator: th.Generator | None = None) -> th.Tensor:
    """Choose the positions to mask: each valid position with probability ``mask_ratio``.

    :param valid: (B, T) bool
    :param mask_ratio: probability in (0, 1)
    :param generator: torch random generator (None: the global one)
    :return: (B, T) bool
    """
    return (th.rand(valid.shape, device=valid.device, generator=generator) < mask_ratio) & valid


def check_attention_args(
    context_len: int,
    n_layers: int,
    n_heads: int,
    d_model: int,
    dropout: float,
    key_encoder: str,
    key_momentum: float,
    position_encoding: str,
    start_bias: bool = False,
    local_window: int | None = None,
) -> None:
    """Raise a ValueError naming the argument and its accepted values for a bad architecture argument."""
    if not isinstance(context_len, int) or context_len < 1:
        raise ValueError(f"context_len must be an integer >= 1, got {context_len!r}")
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be an integer >= 1, got {n_layers!r}")
    if not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be an integer >= 1, got {n_heads!r}")
    if not isinstance(d_model, int) or d_model < 1 or d_model % n_heads != 0:
        raise ValueError(f"d_model must be a positive multiple of n_heads, got d_model={d_model!r}, n_heads={n_heads!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if key_encoder not in KEY_ENCODERS:
        raise ValueError(f"key_encoder must be one of {KEY_ENCODERS}, got {key_encoder!r}")
    if not 0.0 <= key_momentum < 1.0:
        raise ValueError(f"key_momentum must be in [0, 1), got {key_momentum!r}")
    if position_encoding not in POSITION_ENCODINGS:
        raise ValueError(f"position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}")
    if start_bias and position_encoding == "absolute":
        raise ValueError(
            f'start_bias=True needs position_encoding="relative" or "alibi", got position_encoding={position_encoding!r}'
        )
    if local_window is not None and (
        not isinstance(local_window, int) or isinstance(local_window, bool) or not 1 <= local_window <= context_len
    ):
        raise ValueError(
            f"local_window must be None (the whole window) or an integer in [1, context_len={context_len!r}], "
            f"got {local_window!r}"
        )


PREV_ACTION_ENCODINGS = ("bounded", "raw")


def check_prev_action_encoding(
    prev_action_encoding: str, prev_action: bool = False, action_space: spaces.Space | None = None
) -> None:
    """Raise a ValueError naming the argument and its accepted values for a bad ``prev_action_encoding``, or for
    ``"bounded"`` with the previous action on a Box action space without finite bounds (high > low).

    :param prev_action_encoding: one of :data:`PREV_ACTION_ENCODINGS`
    :param prev_action: whether tokens embed the previous action
    :param action_space: the action space (None: check the value only)
    """
    if prev_action_encoding not in PREV_ACTION_ENCODINGS:
        raise ValueError(f"prev_action_encoding must be one of {PREV_ACTION_ENCODINGS}, got {prev_action_encoding!r}")
    bounded = prev_action and prev_action_encoding == "bounded"
    if (
        bounded
        and isinstance(action_space, spaces.Box)
        and not (action_space.is_bounded("both") and bool(np.all(action_space.high > action_space.low)))
    ):
        raise ValueError(
            "prev_action_encoding='bounded' scales the previous action by the action space's bounds, which must be "
            f"finite with high > low; got {action_space} (use prev_action_encoding='raw')"
        )


def check_flags(**flags: Any) -> None:
    """Raise a ValueError naming the argument for an on/off argument that is not a bool (a string such as
    ``"False"`` from a config file would otherwise count as on).

    :param flags: argument name -> value
    """
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")


def check_contrastive_args(ct_coef: float, ct_temperature: float, mask_ratio: float) -> None:
    """Raise a ValueError naming the argument and its accepted values for a bad contrastive-loss argument."""
    if ct_coef < 0:
        raise ValueError(f"ct_coef must be >= 0 (0 turns the contrastive loss off), got {ct_coef!r}")
    if ct_temperature <= 0:
        raise ValueError(f"ct_temperature must be > 0, got {ct_temperature!r}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in the open interval (0, 1), got {mask_ratio!r}")


def check_loss_coefs(q_att_loss_coef: float, next_state_coef: float, rtg_coef: float, actor_value_coef: float) -> None:
    """Raise a ValueError naming the argument for a negative weight of an auxiliary loss."""
    coefs = dict(
        q_att_loss_coef=q_att_loss_coef, next_state_coef=next_state_coef, rtg_coef=rtg_coef, actor_value_coef=actor_value_coef
    )
    for name, value in coefs.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (0 turns the term off), got {value!r}")


def check_policy_kwargs(policy_kwargs: dict | None, reserved: tuple[str, ...], owner: str) -> None:
    """Raise a ValueError for attention arguments passed in ``policy_kwargs`` (the algorithm sets them itself).

    :param policy_kwargs: the user's policy arguments
    :param reserved: the policy arguments the algorithm sets
    :param owner: what takes the attention arguments directly (named in the message)
    """
    clash = sorted(set(policy_kwargs or {}) & {*reserved, "next_state_head", "rtg_head", "actor_value_head"})
    if clash:
        raise ValueError(
            f"{', '.join(clash)} in policy_kwargs: pass the attention arguments to {owner}(...) "
            "directly (the prediction heads with next_state_coef / rtg_coef, the actor's value head with actor_value_coef)"
        )


def check_rollout_args(n_episodes: int | None, max_rollout_steps: int) -> None:
    """Raise a ValueError naming the argument for a bad N-trajectory rollout argument."""
    if n_episodes is not None and (not isinstance(n_episodes, int) or isinstance(n_episodes, bool) or n_episodes < 1):
        raise ValueError(f"n_episodes must be None (rollouts of n_steps) or an integer >= 1, got {n_episodes!r}")
    if not isinstance(max_rollout_steps, int) or isinstance(max_rollout_steps, bool) or max_rollout_steps < 1:
        raise ValueError(f"max_rollout_steps must be an integer >= 1, got {max_rollout_steps!r}")


def check_actor_value(actor_value_coef: float, actor_context: bool, shared_transformer: bool) -> None:
    """Raise a ValueError naming the argument for a positive ``actor_value_coef`` without an actor transformer of
    its own (``actor_context=True, shared_transformer=False``) for its value head to train (its sign:
    :func:`check_loss_coefs`)."""
    if actor_value_coef > 0 and not (actor_context and not shared_transformer):
        raise ValueError(
            "actor_value_coef > 0 trains a value head on the actor's own transformer: it needs actor_context=True and "
            f"shared_transformer=False, got actor_context={actor_context!r}, shared_transformer={shared_transformer!r}"
        )


def check_actor_reads_critic(actor_reads_critic: bool, actor_context: bool, shared_transformer: bool) -> None:
    """Raise a ValueError naming the argument for ``actor_reads_critic`` without an actor transformer of its own
    (``actor_context=True, shared_transformer=False``; a shared one is the critic's already)."""
    if actor_reads_critic and not (actor_context and not shared_transformer):
        raise ValueError(
            "actor_reads_critic=True gives an actor with a transformer of its own the critic's output too: it needs "
            f"actor_context=True and shared_transformer=False, got actor_context={actor_context!r}, "
            f"shared_transformer={shared_transformer!r}"
        )


def check_q_att(q_att_coef: float, action_space: spaces.Space, separate_actor: bool = False) -> None:
    """Raise a ValueError for a negative Q_att coefficient, or a positive one without Discrete actions or with an
    actor transformer of its own (``separate_actor``: acting would then need both transformers)."""
    if q_att_coef < 0:
        raise ValueError(f"q_att_coef must be >= 0 (0 turns Q_att off), got {q_att_coef!r}")
    if q_att_coef > 0 and not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"q_att_coef > 0 needs a Discrete action space (Q_att scores each action), got {action_space}")
    if q_att_coef > 0 and separate_actor:
        raise ValueError(
            "q_att_coef > 0 needs shared_transformer=True with actor_context (Q_att reads the transformer acting runs)"
        )


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise a ValueError for spaces the attention policies do not support."""
    names = ", ".join(s.__name__ for s in SUPPORTED_ACTION_SPACES)
    if not isinstance(action_space, SUPPORTED_ACTION_SPACES):
        raise ValueError(f"action_space must be one of {names}, got {action_space}")
    names = ", ".join(s.__name__ for s in SUPPORTED_OBSERVATION_SPACES)
    leaves = observation_space.spaces.values() if isinstance(observation_space, spaces.Dict) else [observation_space]
    for leaf in leaves:
        if not isinstance(leaf, SUPPORTED_OBSERVATION_SPACES):
            raise ValueError(f"observation_space must be one of {names} or a Dict of them, got {observation_space}")

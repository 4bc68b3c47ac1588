"""Named tuples passed between the episode buffer, the policy and the algorithms."""

from typing import NamedTuple

import numpy as np
import torch as th

from sb3_attn_ac.common.torch_layers import Band, TokenMeta


class EpisodeStreams(NamedTuple):
    """One rollout laid out as one token stream per env, for a single batched critic pass ("Method 2").

    Columns ``[0, n_prefix)`` hold the carried prefix (earlier steps of the running episodes); then come the
    rollout's steps in order, the terminal observation of each truncated episode right after its last step,
    and finally the observation that follows the rollout (for bootstrapping)::

        env 0: | p p p p p p | s0 s1 s2 T s3 s4 | s5 | .     (T: terminal obs after the time limit at s2)
        env 1: | p p p p p p | s0 s1 s2 s3 s4   | s5 | . .   (.: padding, invalid)
                 prefix        rollout            last

    :param observations: table of every observation the streams use, (N, *obs_shape) (or a dict of them)
    :param prev_actions: (N, action_dim) the action before each row of ``observations`` (as the buffer stores
        actions; arbitrary at an episode's first step)
    :param index: (E, L) row of ``observations`` for each token
    :param meta: (E, L) token metadata
    :param n_prefix: P, number of prefix columns
    :param keeps_first_step: the context before a step is a local window's: the episode's first step in its
        first column, then the last ``n_prefix - 1`` steps (:attr:`EpisodeBufferMixin.keep_first_step
        <sb3_attn_ac.common.attention.buffers.EpisodeBufferMixin>`)
    :param step_cols: (T, E) column of rollout step t of env e
    :param terminal_cols: (n_term,) column of each terminal observation
    :param terminal_envs: (n_term,) its env
    :param terminal_steps: (n_term,) the rollout step it ends
    :param last_cols: (E,) column of the observation that follows the rollout
    :param rewards: (E, L) each step's reward (0 for terminal observations and padding)
    :param reward_known: (E, L) False where the reward is not known yet (the last observation) and for padding
    """

    observations: th.Tensor | dict[str, th.Tensor]
    prev_actions: th.Tensor
    index: th.Tensor
    meta: TokenMeta
    n_prefix: int
    keeps_first_step: bool
    step_cols: th.Tensor
    terminal_cols: th.Tensor
    terminal_envs: th.Tensor
    terminal_steps: np.ndarray
    last_cols: th.Tensor
    rewards: th.Tensor
    reward_known: th.Tensor


class MaskedPass(NamedTuple):
    """The masked copy of the streams run beside the value pass, for the contrastive loss.

    :param hidden: (E, L, D) transformer output of the masked streams (attending both ways)
    :param features: (E, L, F) critic features of the (unmasked) states, for the keys
    :param tokens: (E, L, D) their token embeddings (keys of the ``"shared"`` encoder)
    :param selected: (E, L) masked positions M_i
    :param meta: (E, L) the tokens' metadata
    :param band: the attention layout; rows ``E:`` of ``band.allowed`` are the masked rows' windows
    """

    hidden: th.Tensor
    features: th.Tensor
    tokens: th.Tensor
    selected: th.Tensor
    meta: TokenMeta
    band: Band


class StreamValues(NamedTuple):
    """Output of the critic over :class:`EpisodeStreams` (tensors carry gradients when enabled).

    :param values: (T, E) V(s_t) of every rollout step
    :param terminal_values: (n_term,) V of each truncated episode's terminal observation, with its context
    :param last_values: (E,) V of the observation that follows the rollout
    :param hidden: (T, E, D) the critic's transformer outputs at the rollout steps
    :param actor_hidden: (T, E, D) the actor's (its input with actor_context; ``hidden`` itself when shared)
    :param masked: the masked pass, when one was asked for
    """

    values: th.Tensor
    terminal_values: th.Tensor
    last_values: th.Tensor
    hidden: th.Tensor
    actor_hidden: th.Tensor
    masked: MaskedPass | None


class StreamSegments(NamedTuple):
    """A rollout's streams cut into segments for minibatches: each row is ``context`` columns of context (the
    receptive field, not in the loss) followed by ``length`` columns of which the rollout steps are trained::

        | context (earlier steps) | segment: s s T s s s |    (T: terminal obs, context only)

    :param index: (n_seg, context + length) row of the streams' observation table for each token
    :param meta: (n_seg, context + length) token metadata (out-of-range columns invalid)
    :param steps: (n_seg, context + length) time-major index t * E + e of the rollout step trained at each
        token, -1 for context, terminal observations, the last observation and padding
    :param rewards: (n_seg, context + length) rewards of the tokens (see :class:`EpisodeStreams`)
    :param reward_known: (n_seg, context + length) whether they are known
    """

    index: th.Tensor
    meta: TokenMeta
    steps: th.Tensor
    rewards: th.Tensor
    reward_known: th.Tensor

"""Named tuples passed between the episode buffer, the policy and the algorithms."""

from typing import NamedTuple

import numpy as np
import torch as th

from sb3_attn_ac.common.torch_layers import TokenMeta


class EpisodeStreams(NamedTuple):
    """One rollout laid out as one token stream per env, for a single batched critic pass ("Method 2").

    Columns ``[0, n_prefix)`` hold the carried prefix (earlier steps of the running episodes, computed without
    gradient); the rest holds the rollout's steps in order, the terminal observation of each truncated episode
    right after its last step, and finally the observation that follows the rollout (for bootstrapping)::

        env 0: | p p p p p p | s0 s1 s2 T s3 s4 | s5 | .     (T: terminal obs after the time limit at s2)
        env 1: | p p p p p p | s0 s1 s2 s3 s4   | s5 | . .   (padding: invalid)
                 prefix        rollout            last

    :param observations: table of every observation the streams use, (N, *obs_shape) (or a dict of them);
        its first ``n_prefix_rows`` rows are the prefix's
    :param n_prefix_rows: number of prefix rows in ``observations``
    :param index: (E, L) row of ``observations`` for each token
    :param meta: (E, L) token metadata
    :param n_prefix: P, number of prefix columns
    :param step_cols: (T, E) column (counted after the prefix) of rollout step t of env e
    :param terminal_cols: (n_term,) column (after the prefix) of each terminal observation
    :param terminal_envs: (n_term,) its env
    :param terminal_steps: (n_term,) the rollout step it ends
    :param last_cols: (E,) column (after the prefix) of the observation that follows the rollout
    """

    observations: th.Tensor | dict[str, th.Tensor]
    n_prefix_rows: int
    index: th.Tensor
    meta: TokenMeta
    n_prefix: int
    step_cols: th.Tensor
    terminal_cols: th.Tensor
    terminal_envs: th.Tensor
    terminal_steps: np.ndarray
    last_cols: th.Tensor


class StreamValues(NamedTuple):
    """Output of the critic over :class:`EpisodeStreams` (all tensors may carry gradients).

    :param values: (T, E) V(s_t) of every rollout step
    :param terminal_values: (n_term,) V of each truncated episode's terminal observation, with its context
    :param last_values: (E,) V of the observation that follows the rollout
    :param features: (E, L - P, F) critic features of the non-prefix tokens (for the masked pass)
    :param tokens: (E, L - P, D) their token embeddings, before positions
    :param meta: (E, L - P) their metadata
    """

    values: th.Tensor
    terminal_values: th.Tensor
    last_values: th.Tensor
    features: th.Tensor
    tokens: th.Tensor
    meta: TokenMeta

"""Rollout buffers that keep whole episodes: the running episode's earlier steps are carried across rollouts."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.utils import explained_variance

from sb3_attn_ac.common.attention.type_aliases import EpisodeStreams, StreamSegments
from sb3_attn_ac.common.torch_layers import TokenMeta

Obs = np.ndarray | dict[str, np.ndarray]


def tree_map(fn: Callable[..., Any], *trees: Any) -> Any:
    """Apply ``fn`` to arrays, or leaf-wise to dicts of arrays (Dict observation spaces)."""
    if isinstance(trees[0], dict):
        return {key: fn(*(tree[key] for tree in trees)) for key in trees[0]}
    return fn(*trees)


def take(observations: Any, rows: th.Tensor) -> Any:
    """Rows of a tensor of observations, or of each tensor of a dict of them."""
    return tree_map(lambda o: o[rows], observations)


def last_rows(before: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The last ``n`` rows of ``before`` followed by ``rows`` (a copy)."""
    joined = np.concatenate([before, rows])
    return joined[len(joined) - n :].copy()


class EpisodeBufferMixin:
    """The episode-keeping part of :class:`EpisodeRolloutBuffer` and :class:`DictEpisodeRolloutBuffer`.

    Besides SB3's rollout data it stores each step's index within its episode and previous action (the env's
    last action, whatever episode it belonged to: the policy ignores it at an episode's first step), the terminal
    observations of truncated episodes, the observation after the rollout, and a prefix of the last
    ``prefix_len`` steps before the rollout (the critic's receptive field), so :meth:`streams` can give every
    step exactly the context it had while acting.

    With ``carry_unfinished`` (N-trajectory rollouts, ``n_episodes``) the update trains only on the episodes
    that ended (:attr:`trained`); each env's unfinished episode stays in the buffer, whole, as the first rows
    of the next rollout (right-aligned: rows before it are padding, :attr:`valid_rows` False), so it is
    trained once it has ended. Returns are then Monte-Carlo returns (see :meth:`compute_returns_and_advantage`).

    With ``keep_first_step`` (a local window's context, :func:`~sb3_attn_ac.common.torch_layers.stream_prefix_len`)
    the prefix's first row holds the first step of its last row's episode wherever that lies before the other
    rows (beyond the local window a layer reads only that step), and the other rows the last ``prefix_len - 1``
    steps; where the first step is among them, the first row is simply the step before them.

    :param prefix_len: steps of context kept before the first row
        (:func:`~sb3_attn_ac.common.torch_layers.stream_prefix_len`)
    :param carry_unfinished: keep unfinished episodes for the next rollout instead of training on them
    :param keep_first_step: the prefix's first row keeps the episode's first step (see above)
    """

    # Provided by SB3's buffers.
    buffer_size: int
    n_envs: int
    pos: int
    device: th.device
    observation_space: spaces.Space
    observations: Obs
    episode_starts: np.ndarray
    obs_shape: Any
    # What an unfinished episode carries into the next rollout (values, returns and advantages are recomputed).
    _CARRIED = ("observations", "actions", "prev_actions", "rewards", "episode_starts", "log_probs", "timesteps")

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        prefix_len: int = 0,
        carry_unfinished: bool = False,
        keep_first_step: bool = False,
    ) -> None:
        if prefix_len < 0:
            raise ValueError(f"prefix_len must be >= 0, got {prefix_len}")
        if keep_first_step and prefix_len < 1:
            raise ValueError(f"keep_first_step=True needs prefix_len >= 1, got {prefix_len}")
        self.prefix_len = prefix_len
        self.carry_unfinished = carry_unfinished
        self.keep_first_step = keep_first_step
        self._carry: tuple[np.ndarray, dict[str, Any]] | None = None  # valid rows and data of unfinished episodes
        self._next_prefix: tuple[Obs, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._next_timestep = np.zeros(n_envs, dtype=np.int64)
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)  # type: ignore[call-arg]
        self.last_actions = np.zeros((n_envs, self.action_dim), dtype=np.float32)  # each env's latest action

    def reset(self) -> None:
        """Start a new rollout: the prefix becomes the tail of the previous one, or with ``carry_unfinished`` the
        unfinished episodes become its first rows (see :meth:`finish_rollout`)."""
        super().reset()  # type: ignore[misc]
        self.timesteps = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self.prev_actions = np.zeros((self.buffer_size, self.n_envs, self.action_dim), dtype=np.float32)
        self.valid_rows = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.trained = np.zeros((0, self.n_envs), dtype=bool)  # set by finish_rollout()
        self.terminal_steps: list[int] = []
        self.terminal_envs: list[int] = []
        self.terminal_observations: list[Obs] = []
        if self._next_prefix is None:  # nothing before the first rollout
            P = self.prefix_len
            self._next_prefix = (
                tree_map(lambda o: np.zeros((P, *o.shape[1:]), dtype=o.dtype), self.observations),
                np.zeros((P, self.n_envs), dtype=np.int64),
                np.zeros((P, self.n_envs), dtype=np.float32),
                np.zeros((P, self.n_envs), dtype=bool),
                np.zeros((P, self.n_envs), dtype=np.float32),
                np.zeros((P, self.n_envs, self.action_dim), dtype=np.float32),
            )
        (
            self.prefix_observations,
            self.prefix_timesteps,
            self.prefix_episode_starts,
            self.prefix_valid,
            self.prefix_rewards,
            self.prefix_prev_actions,
        ) = self._next_prefix
        self.last_observations: Obs | None = None
        self.last_episode_starts: np.ndarray | None = None
        if self._carry is not None:
            valid, data = self._carry
            self.pos = len(valid)
            self.full = self.pos == self.buffer_size
            self.valid_rows[: self.pos] = valid
            for name, rows in data.items():
                tree_map(lambda array, carried: np.copyto(array[: len(carried)], carried), getattr(self, name), rows)
            self._carry = None

    def discard_unfinished(self, envs: np.ndarray) -> None:
        """Forget the carried steps of ``envs`` (their env was reset, so their episode will never end).

        :param envs: (n_envs,) bool
        """
        self.valid_rows[: self.pos, np.asarray(envs, dtype=bool)] = False

    def add(
        self,
        obs: Obs,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
    ) -> None:
        """Add one step for every env (as SB3's ``add``); its index within the episode is tracked here."""
        timestep = self.next_timesteps(episode_start)
        self.timesteps[self.pos] = timestep
        self.valid_rows[self.pos] = True
        self._next_timestep = timestep + 1
        self.prev_actions[self.pos] = self.last_actions
        self.last_actions = np.asarray(action, dtype=np.float32).reshape(self.n_envs, self.action_dim)
        super().add(obs, action, reward, episode_start, value, log_prob)  # type: ignore[misc]

    def flat_tensor(self, array: np.ndarray) -> th.Tensor:
        """A (T, E, ...) rollout array as a (T * E, ...) tensor, time-major: row t * n_envs + e."""
        return th.as_tensor(array[: self.pos].reshape(-1, *array.shape[2:]), device=self.device)

    def flat_actions(self) -> th.Tensor:
        """The rollout's actions, time-major, as the action distributions take them (long indices for Discrete)."""
        actions = self.flat_tensor(self.actions.astype(np.float32))  # type: ignore[attr-defined]
        return actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else actions  # type: ignore[attr-defined]

    def explained_variance(self) -> float:
        """SB3's explained variance of the stored values for the returns, over the trained steps."""
        T = self.pos
        return float(explained_variance(self.values[:T][self.trained], self.returns[:T][self.trained]))  # type: ignore[attr-defined]

    def next_timesteps(self, episode_starts: np.ndarray) -> np.ndarray:
        """Index within its episode of each env's current observation (0 where ``episode_starts``)."""
        return np.where(np.asarray(episode_starts, dtype=bool), 0, self._next_timestep)

    def context_stream(self) -> tuple[th.Tensor | dict[str, th.Tensor], TokenMeta, th.Tensor]:
        """The ``prefix_len`` steps before the next row (the acting context at the start of a rollout: the prefix,
        or the end of a carried unfinished episode) as streams: (E * P, *obs_shape) observations, row-major,
        (E, P) metadata and (E * P, action_dim) previous actions."""
        E, P = self.n_envs, self.prefix_len
        context = self._prefix_after(self.pos)
        observations = tree_map(
            lambda o: th.as_tensor(o.swapaxes(0, 1).reshape(E * P, *o.shape[2:]), device=self.device),
            tree_map(context, self.prefix_observations, self.observations),
        )
        meta = TokenMeta(
            th.as_tensor(context(self.prefix_timesteps, self.timesteps).T, device=self.device),
            th.as_tensor(np.cumsum(context(self.prefix_episode_starts, self.episode_starts).T, axis=1), device=self.device),
            th.as_tensor(context(self.prefix_valid, self.valid_rows).T, device=self.device),
        )
        prev_actions = context(self.prefix_prev_actions, self.prev_actions).swapaxes(0, 1).reshape(E * P, self.action_dim)
        return observations, meta, th.as_tensor(prev_actions, device=self.device)

    def _prefix_after(self, T: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """The function that gives a field's ``prefix_len`` context rows after the prefix and the rollout's first
        ``T`` rows: their last rows, or with ``keep_first_step`` the episode's first step and the last
        ``prefix_len - 1`` (see the class)."""
        P = self.prefix_len
        if not self.keep_first_step:
            return lambda prefix, rows: last_rows(prefix, rows[:T], P)
        starts = np.concatenate(
            [self.prefix_valid & (self.prefix_timesteps == 0), self.valid_rows[:T] & (self.timesteps[:T] == 0)]
        )  # (P + T, E): first steps of episodes
        J = len(starts)
        latest = J - 1 - np.argmax(starts[::-1], axis=0)  # each env's last first step (its running episode's)
        index = np.broadcast_to(np.arange(J - P, J)[:, None], (P, self.n_envs)).copy()
        index[0] = np.where(starts.any(axis=0) & (latest < J - P), latest, J - P)
        env = np.arange(self.n_envs)
        return lambda prefix, rows: np.concatenate([prefix, rows[:T]])[index, env]

    def add_terminal(self, env_idx: int, terminal_obs: Obs) -> None:
        """Record the terminal observation of env ``env_idx``'s episode truncated at the step just added.

        Its value, computed with the episode's context, bootstraps the step's reward.
        """
        self.terminal_steps.append(self.pos - 1)
        self.terminal_envs.append(env_idx)
        self.terminal_observations.append(
            tree_map(lambda o, shape: np.asarray(o).reshape(shape), terminal_obs, self.obs_shape)
        )

    def finish_rollout(self, last_obs: Obs, last_episode_starts: np.ndarray) -> None:
        """Close the rollout (also one cut short by a callback): store the observation that follows it and
        compute the prefix the next rollout will carry.

        :param last_obs: the observation after the last step, one per env
        :param last_episode_starts: whether it starts a new episode
        """
        T = self.pos
        self.last_observations = tree_map(
            lambda o, shape: np.asarray(o).reshape((self.n_envs, *shape)), last_obs, self.obs_shape
        )
        self.last_episode_starts = np.asarray(last_episode_starts, dtype=bool)
        self._next_timestep = np.where(self.last_episode_starts, 0, self._next_timestep)
        if self.carry_unfinished:
            self._carry_unfinished()
            return
        self.trained = self.valid_rows[:T].copy()
        tail = self._prefix_after(T)
        self._next_prefix = (
            tree_map(tail, self.prefix_observations, self.observations),
            tail(self.prefix_timesteps, self.timesteps),
            tail(self.prefix_episode_starts, self.episode_starts),
            tail(self.prefix_valid, self.valid_rows),
            tail(self.prefix_rewards, self.rewards),  # before any time-limit bootstrap is added to them
            tail(self.prefix_prev_actions, self.prev_actions),
        )

    def _carry_unfinished(self) -> None:
        """Mark the ended episodes as :attr:`trained` and keep each env's unfinished one for the next rollout."""
        assert self.last_episode_starts is not None
        T = self.pos
        starts = np.concatenate([self.episode_starts[:T].astype(bool), self.last_episode_starts[None]])  # (T + 1, E)
        # Each env's unfinished episode begins at its last episode start (row T: the rollout ended an episode).
        begins = T - np.argmax(starts[::-1], axis=0)
        begins = np.where(starts.any(axis=0), begins, 0)
        rows = np.arange(T)[:, None]
        self.trained = self.valid_rows[:T] & (rows < begins)
        lengths = T - begins
        C = int(lengths.max())
        # Right-aligned: env e's unfinished steps fill rows [C - lengths[e], C) of the next rollout.
        dst_t, dst_e = np.nonzero(np.arange(C)[:, None] >= C - lengths)
        src_t = begins[dst_e] + dst_t - (C - lengths[dst_e])

        def carried(array: np.ndarray) -> np.ndarray:
            out = np.zeros((C, *array.shape[1:]), dtype=array.dtype)
            out[dst_t, dst_e] = array[src_t, dst_e]
            return out

        valid = carried(self.valid_rows)
        self._carry = (valid, {name: tree_map(carried, getattr(self, name)) for name in self._CARRIED})
        self._next_prefix = None  # the carried rows are the context: nothing before them is needed

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """GAE advantages over the rollout's rows; the returns are SB3's TD(lambda) ones (advantages + values),
        or with ``carry_unfinished`` the Monte-Carlo discounted returns ``R_t = sum_k gamma^k r_{t+k}`` of the
        ended episodes (time-limit truncations bootstrapped by the reward, see :meth:`add_terminal`); the
        unfinished episodes' rows are not trained.

        :param last_values: (n_envs,) value of the observation after the rollout
        :param dones: whether that observation starts a new episode
        """
        if not self.carry_unfinished:
            super().compute_returns_and_advantage(last_values, dones)  # type: ignore[misc]
            return
        T = self.pos
        next_values = last_values.clone().cpu().numpy().flatten()
        next_non_terminal = 1.0 - np.asarray(dones, dtype=np.float32)
        advantage = np.zeros(self.n_envs, dtype=np.float32)
        discounted = np.zeros(self.n_envs, dtype=np.float32)
        for t in reversed(range(T)):
            delta = self.rewards[t] + self.gamma * next_values * next_non_terminal - self.values[t]
            advantage = delta + self.gamma * self.gae_lambda * next_non_terminal * advantage
            discounted = self.rewards[t] + self.gamma * next_non_terminal * discounted
            self.advantages[t], self.returns[t] = advantage, discounted
            next_values, next_non_terminal = self.values[t], 1.0 - self.episode_starts[t]

    def streams(self) -> EpisodeStreams:
        """Lay the rollout out as one stream per env (see :class:`EpisodeStreams`); call after :meth:`finish_rollout`."""
        assert self.last_observations is not None and self.last_episode_starts is not None, "call finish_rollout() first"
        T, P, E = self.pos, self.prefix_len, self.n_envs
        n_term = len(self.terminal_steps)
        term_t = np.asarray(self.terminal_steps, dtype=np.int64)
        term_e = np.asarray(self.terminal_envs, dtype=np.int64)
        truncated = np.zeros((T, E), dtype=np.int64)
        truncated[term_t, term_e] = 1
        # A step's column moves right by one for every terminal observation inserted before it in its env.
        step_cols = P + np.arange(T)[:, None] + np.cumsum(truncated, axis=0) - truncated  # (T, E)
        term_cols = step_cols[term_t, term_e] + 1
        last_cols = P + T + truncated.sum(axis=0)  # (E,)
        L = int(last_cols.max()) + 1

        index = np.zeros((E, L), dtype=np.int64)
        timesteps = np.zeros((E, L), dtype=np.int64)
        starts = np.zeros((E, L), dtype=np.int64)
        valid = np.zeros((E, L), dtype=bool)
        rewards = np.zeros((E, L), dtype=np.float32)  # terminal observations and padding: 0
        known = np.zeros((E, L), dtype=bool)  # whether a column's reward is known (not the last observation's)
        env = np.arange(E)
        # Table rows: prefix (P * E), rollout (T * E), terminal observations (n_term), last observations (E).
        index[:, :P] = (np.arange(P)[:, None] * E + env).T
        timesteps[:, :P] = self.prefix_timesteps.T
        starts[:, :P] = self.prefix_episode_starts.T
        valid[:, :P] = self.prefix_valid.T
        rewards[:, :P], known[:, :P] = self.prefix_rewards.T, self.prefix_valid.T
        rows, cols = np.broadcast_to(env, (T, E)), step_cols
        index[rows, cols] = P * E + np.arange(T)[:, None] * E + env
        timesteps[rows, cols] = self.timesteps[:T]
        starts[rows, cols] = self.episode_starts[:T]
        valid[rows, cols] = self.valid_rows[:T]
        rewards[rows, cols], known[rows, cols] = self.rewards[:T], self.valid_rows[:T]
        index[term_e, term_cols] = P * E + T * E + np.arange(n_term)
        timesteps[term_e, term_cols] = self.timesteps[term_t, term_e] + 1
        valid[term_e, term_cols] = known[term_e, term_cols] = True  # the episode ends there: nothing follows
        index[env, last_cols] = P * E + T * E + n_term + env
        timesteps[env, last_cols] = self._next_timestep
        starts[env, last_cols] = self.last_episode_starts
        valid[env, last_cols] = True

        def table(prefix: np.ndarray, rollout: np.ndarray, last: np.ndarray, *terminal: np.ndarray) -> th.Tensor:
            parts = [prefix.reshape(-1, *prefix.shape[2:]), rollout[:T].reshape(-1, *rollout.shape[2:])]
            if terminal:
                parts.append(np.stack(terminal).astype(rollout.dtype))
            return th.as_tensor(np.concatenate([*parts, last.astype(rollout.dtype)]), device=self.device)

        observations = tree_map(
            table, self.prefix_observations, self.observations, self.last_observations, *self.terminal_observations
        )
        # A terminal observation follows its step's action; the last observation follows each env's last action.
        prev_actions = table(self.prefix_prev_actions, self.prev_actions, self.last_actions, *self.actions[term_t, term_e])  # type: ignore[attr-defined]
        to_torch = lambda a: th.as_tensor(a, device=self.device)  # noqa: E731
        meta = TokenMeta(to_torch(timesteps), to_torch(np.cumsum(starts, axis=1)), to_torch(valid))
        return EpisodeStreams(
            observations=observations,
            prev_actions=prev_actions,
            index=to_torch(index),
            meta=meta,
            n_prefix=P,
            keeps_first_step=self.keep_first_step,
            step_cols=to_torch(step_cols),
            terminal_cols=to_torch(term_cols),
            terminal_envs=to_torch(term_e),
            terminal_steps=term_t,
            last_cols=to_torch(last_cols),
            rewards=to_torch(rewards),
            reward_known=to_torch(known),
        )


def segment_streams(streams: EpisodeStreams, length: int, trained: th.Tensor | None = None) -> StreamSegments:
    """Cut each env's stream after the prefix into segments of ``length`` columns, each preceded by the
    ``n_prefix`` columns before it as context (with ``keeps_first_step``, the first of them replaced by the
    episode's first step where that lies further back), so every trained rollout step is trained exactly once per
    epoch with exactly the context it had while acting. Segments with no trained step are dropped.

    :param streams: a rollout's streams
    :param length: columns per segment
    :param trained: (T * E,) time-major, which rollout steps are trained (None: all)
    """
    E, L = streams.index.shape
    T = streams.step_cols.shape[0]
    C = streams.n_prefix
    device = streams.index.device
    steps_at = th.full((E, L), -1, dtype=th.long, device=device)
    flat = th.arange(T * E, device=device)
    if trained is not None:
        flat = th.where(trained, flat, -1)
    steps_at[th.arange(E, device=device)[None, :], streams.step_cols] = flat.view(T, E)
    first = th.arange(C, L, length, device=device)  # (S,) first column of each segment
    cols = first[:, None] + th.arange(-C, length, device=device)  # (S, C + length)
    inside = (cols < L)[None].expand(E, -1, -1)  # (E, S, C + length)
    cols = cols.clamp(max=L - 1)[None].expand(E, -1, -1)
    if streams.keeps_first_step:  # the first context column: the last first step at or before it
        starts = streams.meta.valid & (streams.meta.timesteps == 0)  # (E, L)
        latest = th.where(starts, th.arange(L, device=device), -1).cummax(dim=1).values  # (E, L)
        before = latest.gather(1, cols[..., 0])  # (E, S)
        cols = cols.clone()
        cols[..., 0] = th.where(before >= 0, before, cols[..., 0])
    gather = lambda x: th.gather(x[:, None].expand(-1, cols.shape[1], -1), 2, cols)  # noqa: E731
    steps = th.where(inside, gather(steps_at), -1)
    steps[..., :C] = -1  # the context is not trained here: it belongs to the previous segment (or rollout)
    meta = TokenMeta(gather(streams.meta.timesteps), gather(streams.meta.episode_ids), gather(streams.meta.valid) & inside)
    keep = (steps >= 0).any(dim=-1).flatten()  # (E * S,)
    flat = lambda x: x.flatten(0, 1)[keep]  # noqa: E731
    return StreamSegments(
        flat(gather(streams.index)),
        TokenMeta(*(flat(m) for m in meta)),
        flat(steps),
        flat(gather(streams.rewards)),
        flat(gather(streams.reward_known) & inside),
    )


class EpisodeRolloutBuffer(EpisodeBufferMixin, RolloutBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.RolloutBuffer` that keeps whole episodes (see
    :class:`EpisodeBufferMixin`).

    :param buffer_size: steps per env per rollout (n_steps)
    :param observation_space: observation space
    :param action_space: action space
    :param device: torch device
    :param gae_lambda: GAE lambda
    :param gamma: discount factor
    :param n_envs: number of envs
    :param prefix_len: steps carried across rollouts (the critic's receptive field)
    """


class DictEpisodeRolloutBuffer(EpisodeBufferMixin, DictRolloutBuffer):
    """:class:`EpisodeRolloutBuffer` for Dict observation spaces (same parameters)."""

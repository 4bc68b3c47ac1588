import numpy as np
import torch as th
from gymnasium import spaces

from sb3_attn_ac import DictEpisodeRolloutBuffer, EpisodeRolloutBuffer

OBS = spaces.Box(-np.inf, np.inf, (1,), np.float32)
ACT = spaces.Discrete(2)


def fill(buffer, values: np.ndarray, starts: np.ndarray) -> None:
    """Add T steps for E envs; the observation of step t in env e is values[t, e]."""
    for t in range(len(values)):
        obs = values[t][:, None] if not isinstance(buffer, DictEpisodeRolloutBuffer) else {"x": values[t][:, None]}
        zeros = np.zeros(buffer.n_envs)
        buffer.add(obs, zeros, zeros, starts[t], th.zeros(buffer.n_envs), th.zeros(buffer.n_envs))


def test_streams_layout_prefix_terminal_and_last() -> None:
    buffer = EpisodeRolloutBuffer(3, OBS, ACT, n_envs=2, prefix_len=2)
    # Rollout 1: env 0 steps 10, 11, 12 (episode starts at 10); env 1 steps 20, 21, 22, new episode at 22.
    fill(buffer, np.array([[10, 20], [11, 21], [12, 22]], np.float32), np.array([[1, 1], [0, 0], [0, 1]], np.float32))
    buffer.add_terminal(1, np.array([99.0], np.float32))  # env 1: the episode started at 22 hits its time limit
    buffer.finish_rollout(np.array([[13], [23]], np.float32), np.array([False, True]))
    s = buffer.streams()
    obs = s.observations[:, 0]
    tokens = [[obs[i].item() if v else None for i, v in zip(s.index[e], s.meta.valid[e], strict=True)] for e in range(2)]
    assert s.n_prefix == 2
    assert tokens[0] == [None, None, 10, 11, 12, 13, None]  # no prefix before the first rollout; padding at the end
    assert tokens[1] == [None, None, 20, 21, 22, 99, 23]  # terminal obs right after the step it ends
    assert s.step_cols.tolist() == [[2, 2], [3, 3], [4, 4]]
    assert s.terminal_cols.tolist() == [5] and s.terminal_envs.tolist() == [1] and s.terminal_steps.tolist() == [2]
    assert s.last_cols.tolist() == [5, 6]
    assert s.meta.timesteps[1, 2:7].tolist() == [0, 1, 0, 1, 0]
    ep = s.meta.episode_ids[1]
    assert ep[3] != ep[4] and ep[4] == ep[5] and ep[5] != ep[6]

    # Rollout 2 carries the last two steps of rollout 1 as its prefix, with their timesteps.
    buffer.reset()
    fill(buffer, np.array([[13, 23], [14, 24], [15, 25]], np.float32), np.array([[0, 1], [0, 0], [0, 0]], np.float32))
    buffer.finish_rollout(np.array([[16], [26]], np.float32), np.array([True, False]))
    s = buffer.streams()
    obs = s.observations[:, 0]
    assert [obs[i].item() for i in s.index[0, :6]] == [11, 12, 13, 14, 15, 16]
    assert s.meta.timesteps[0, :6].tolist() == [1, 2, 3, 4, 5, 0]  # the last obs starts a new episode
    assert [obs[i].item() for i in s.index[1, :6]] == [21, 22, 23, 24, 25, 26]  # terminal obs are not carried
    assert s.meta.timesteps[1, :6].tolist() == [1, 0, 0, 1, 2, 3]
    assert s.meta.valid[:, :2].all()


def test_dict_buffer_shares_the_layout() -> None:
    buffer = DictEpisodeRolloutBuffer(2, spaces.Dict({"x": OBS}), ACT, n_envs=1, prefix_len=1)
    fill(buffer, np.array([[1], [2]], np.float32), np.array([[1], [0]], np.float32))
    buffer.add_terminal(0, {"x": np.array([7.0], np.float32)})
    buffer.finish_rollout({"x": np.array([[3.0]], np.float32)}, np.array([True]))
    s = buffer.streams()
    assert [s.observations["x"][i, 0].item() for i in s.index[0, 1:]] == [1, 2, 7, 3]
    buffer.reset()
    assert buffer.prefix_observations["x"][:, 0, 0].tolist() == [2.0]


def test_short_rollout_and_zero_prefix() -> None:
    buffer = EpisodeRolloutBuffer(4, OBS, ACT, n_envs=1, prefix_len=0)
    fill(buffer, np.array([[1], [2]], np.float32), np.array([[1], [0]], np.float32))  # cut short at 2 of 4 steps
    buffer.finish_rollout(np.array([[3.0]], np.float32), np.array([False]))
    s = buffer.streams()
    assert s.index.shape == (1, 3) and s.step_cols[:, 0].tolist() == [0, 1]
    buffer.reset()
    assert buffer.prefix_observations.shape == (0, 1, 1)


def test_keep_first_step_carries_the_episode_start_before_the_last_steps() -> None:
    buffer = EpisodeRolloutBuffer(4, OBS, ACT, n_envs=2, prefix_len=3, keep_first_step=True)
    # env 0: one episode from step 10 on; env 1: a new episode at its third step (22), inside the last two.
    fill(buffer, np.array([[10, 20], [11, 21], [12, 22], [13, 23]], np.float32), np.array([[1, 1], [0, 0], [0, 1], [0, 0]]))
    buffer.finish_rollout(np.array([[14], [24]], np.float32), np.array([False, False]))
    buffer.reset()
    assert buffer.prefix_observations[:, :, 0].T.tolist() == [[10, 12, 13], [21, 22, 23]]
    assert buffer.prefix_timesteps.T.tolist() == [[0, 2, 3], [1, 0, 1]]
    # One rollout later the start of env 0's episode (now 7 steps back) is still the first row; env 1's moves in.
    fill(buffer, np.array([[14, 24], [15, 25], [16, 26], [17, 27]], np.float32), np.zeros((4, 2)))
    buffer.finish_rollout(np.array([[18], [28]], np.float32), np.array([False, False]))
    s = buffer.streams()
    assert s.keeps_first_step and s.n_prefix == 3
    assert [s.observations[i, 0].item() for i in s.index[0, :7]] == [10, 12, 13, 14, 15, 16, 17]
    buffer.reset()
    assert buffer.prefix_observations[:, :, 0].T.tolist() == [[10, 16, 17], [22, 26, 27]]
    assert buffer.prefix_timesteps.T.tolist() == [[0, 6, 7], [0, 4, 5]]

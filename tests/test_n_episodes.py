"""N-trajectory rollouts (``n_episodes``): whole episodes per update, unfinished ones carried intact."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_attn_ac import AttnA2C, AttnPPO

GAMMA = 0.9


class EpisodeIdEnv(gym.Env):
    """Observes (episode id, step); reward 1 per step; episode ``k`` of env ``index`` lasts ``lengths[k % n]``."""

    def __init__(self, index: int, lengths: tuple[int, ...]) -> None:
        self.index, self.lengths, self.count = index, lengths, -1
        self.observation_space = spaces.Box(0.0, 1e4, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        return np.array([self.uid, self.t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.count += 1
        self.uid, self.t = 100 * self.index + self.count, 0
        self.length = self.lengths[self.count % len(self.lengths)]
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        info = {"uid": self.uid, "length": self.length}
        self.t += 1
        return self._obs(), 1.0, self.t >= self.length, False, info


def id_env(lengths: list[tuple[int, ...]]) -> DummyVecEnv:
    return DummyVecEnv([lambda i=i: EpisodeIdEnv(i, lengths[i]) for i in range(len(lengths))])


class EpisodeLedger(BaseCallback):
    """Checks every rollout: the trained rows are exactly the episodes that ended during it, each whole."""

    def __init__(self, n_episodes: int) -> None:
        super().__init__()
        self.n_episodes = n_episodes
        self.ended: dict[int, int] = {}  # uid -> length, since the last rollout end
        self.trained_uids: list[int] = []
        self.n_calls_steps = 0

    def _on_step(self) -> bool:
        self.n_calls_steps += self.training_env.num_envs
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                self.ended[info["uid"]] = info["length"]
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        T = buffer.pos
        assert len(self.ended) >= self.n_episodes
        trained: dict[int, list[int]] = {}
        for t, e in zip(*np.nonzero(buffer.trained), strict=True):
            uid, step = buffer.observations[t, e].astype(int)
            trained.setdefault(uid, []).append(step)
            length = self.ended.get(uid)
            assert length is not None, f"episode {uid} trained before it ended"
            expected = (1 - GAMMA ** (length - step)) / (1 - GAMMA)  # Monte-Carlo: sum_k gamma^k r_{t+k}
            assert buffer.returns[t, e] == pytest.approx(expected, rel=1e-5)
        assert {uid: sorted(steps) for uid, steps in trained.items()} == {
            uid: list(range(length)) for uid, length in self.ended.items()
        }
        assert not set(trained) & set(self.trained_uids), "an episode was trained twice"
        self.trained_uids += list(trained)
        # Valid rows that are not trained belong to each env's one unfinished episode, at the end of its rows.
        for e in range(buffer.n_envs):
            rest = np.nonzero(buffer.valid_rows[:T, e] & ~buffer.trained[:, e])[0]
            assert len(np.unique(buffer.observations[rest, e, 0])) <= 1
            assert not len(rest) or rest[-1] == T - 1
        self.ended = {}


@pytest.mark.parametrize(("algo", "actor_context"), [(AttnA2C, False), (AttnA2C, True), (AttnPPO, True)])
def test_rollouts_train_every_ended_episode_whole_once(algo: type, actor_context: bool) -> None:
    lengths = [(3, 11, 5), (17, 2), (7,)]  # episodes cross rollouts, several end on one step
    extra = dict(batch_size=16, n_epochs=2) if algo is AttnPPO else {}
    model = algo("MlpPolicy", id_env(lengths), n_episodes=4, gamma=GAMMA, context_len=4, d_model=16, seed=0,
                 actor_context=actor_context, **extra)  # fmt: skip
    ledger = EpisodeLedger(n_episodes=4)
    model.learn(300, callback=ledger, progress_bar=True)
    assert model.num_timesteps == ledger.n_calls_steps >= 300  # real env steps, not n_steps * n_envs
    n_trained = len(ledger.trained_uids)
    # A new learn() resets the envs: the abandoned unfinished episodes must not be trained.
    model.learn(200, callback=ledger, reset_num_timesteps=True)
    assert len(ledger.trained_uids) > n_trained
    assert model.logger.name_to_value["train/value_loss"] > 0


@pytest.mark.parametrize(("algo", "prev_action"), [(AttnA2C, False), (AttnPPO, False), (AttnPPO, True)])
def test_frozen_model_replays_carried_episodes_exactly(algo: type, prev_action: bool) -> None:
    # Learning rate 0: acting-time log-probs and rollout values of every trained episode, including the steps
    # carried over from earlier rollouts, equal a fresh pass over the whole episode.
    extra = dict(batch_size=16, n_epochs=1) if algo is AttnPPO else {}
    model = algo("MlpPolicy", id_env([(9, 4), (13,), (6, 21)]), n_episodes=3, learning_rate=0.0, context_len=4,
                 n_layers=2, d_model=16, seed=0, actor_context=True, prev_action=prev_action, **extra)  # fmt: skip
    if prev_action:
        th.nn.init.normal_(model.policy.action_embedding.weight)  # the previous action must visibly matter
    checked = []

    class Replay(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buffer = self.model.rollout_buffer
            for e in range(buffer.n_envs):
                rows = np.nonzero(buffer.trained[:, e])[0]
                for uid in np.unique(buffer.observations[rows, e, 0]):
                    episode = rows[buffer.observations[rows, e, 0] == uid]
                    obs = buffer.observations[episode, e]
                    actions = buffer.actions[episode, e] if prev_action else None
                    values = self.model.policy.trajectory_values(obs, actions=actions).numpy()
                    np.testing.assert_allclose(buffer.values[episode, e], values, atol=1e-5)
                    distribution = self.model.policy.trajectory_distribution(obs, actions=actions)
                    log_probs = distribution.log_prob(th.as_tensor(buffer.actions[episode, e, 0])).numpy()
                    np.testing.assert_allclose(buffer.log_probs[episode, e], log_probs, atol=1e-5)
                    checked.append(len(episode))

    model.learn(250, callback=Replay())
    assert max(checked) == 21  # the longest episode spans several rollouts
    if algo is AttnPPO:
        assert model.logger.name_to_value["train/approx_kl"] < 1e-6


def test_episode_longer_than_max_rollout_steps_is_an_error() -> None:
    model = AttnA2C("MlpPolicy", id_env([(50,), (50,)]), n_episodes=1, max_rollout_steps=20, seed=0)
    with pytest.raises(RuntimeError, match=r"max_rollout_steps=20"):
        model.learn(200)


def test_full_rollout_trains_what_ended_with_a_warning() -> None:
    model = AttnA2C("MlpPolicy", id_env([(3,), (25,)]), n_episodes=50, max_rollout_steps=30, gamma=GAMMA, seed=0)
    ledger = EpisodeLedger(n_episodes=1)
    with pytest.warns(UserWarning, match=r"max_rollout_steps=30 steps per env with 11 of n_episodes=50"):
        model.learn(60, callback=ledger)
    assert len(ledger.trained_uids) == 11  # 10 short episodes and the long one


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_episodes=0), "n_episodes must be None"),
        (dict(n_episodes=2.5), "n_episodes must be None"),
        (dict(n_episodes=True), "n_episodes must be None"),
        (dict(n_episodes=2, max_rollout_steps=0), "max_rollout_steps must be an integer >= 1"),
    ],
)
@pytest.mark.parametrize("algo", [AttnA2C, AttnPPO])
def test_bad_rollout_arguments(algo: type, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        algo("MlpPolicy", "CartPole-v1", **kwargs)


def test_save_load_keeps_episode_rollouts(tmp_path) -> None:
    kwargs = dict(n_episodes=2, max_rollout_steps=64, batch_size=8, n_epochs=1, gamma=GAMMA, seed=0)
    model = AttnPPO("MlpPolicy", id_env([(5, 8)]), **kwargs)
    model.learn(40)
    model.save(tmp_path / "model")
    loaded = AttnPPO.load(tmp_path / "model", env=id_env([(5, 8)]))
    assert (loaded.n_episodes, loaded.max_rollout_steps, loaded.rollout_buffer.buffer_size) == (2, 64, 64)
    ledger = EpisodeLedger(n_episodes=2)
    loaded.learn(40, callback=ledger)
    assert len(ledger.trained_uids) >= 2

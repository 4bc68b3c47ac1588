"""What trained AttnPPO models play on POPGym's HigherLowerEasy: for each model, the share of "higher" guesses per
card rank and the mean return over fresh decks, beside the memoryless rule's return on the same decks (guess
higher below the middle rank, lower from it on; the middle rank is an expected-value tie either way).

A model that plays the rule gains nothing from memory; two such models differ only on the middle rank, so their
final 10-episode evaluations differ by which decks hold it (README "POPGym memory tasks").

    python benchmarks/higher_lower_policy.py --logs logs/popgym --seeds 0 1 2 3 4

``--logs`` is the ``--logs`` folder of ``popgym_tasks.py``: the final model of seed s is
``<logs>/seed<s>/ppo_attn/popgym-HigherLowerEasy-v0_1/popgym-HigherLowerEasy-v0.zip``.
"""

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import popgym  # noqa: F401  (registers the popgym-... envs)
import torch as th
from gymnasium.wrappers import FlattenObservation

from sb3_attn_ac import AttnPPO

ENV_ID = "popgym-HigherLowerEasy-v0"
N_RANKS = 13
DECK_SIZE = 4 * N_RANKS  # Easy: one deck; a guess earns +-1 / DECK_SIZE
MIDDLE = N_RANKS // 2  # rank index 6 of 0-12


def play(model: Any, n_episodes: int, first_seed: int) -> tuple[np.ndarray, float, float]:
    """Deterministic episodes on decks ``first_seed``, ``first_seed + 1``, ...

    :param model: what plays: SB3's ``predict(observation, state, episode_start, deterministic)`` (an AttnPPO)
    :param n_episodes: decks to play
    :param first_seed: the first deck's seed
    :return: (13, 2) counts of each action (0: higher, 1: lower) per card rank, the model's mean return and the
        memoryless rule's mean return on the same decks
    """
    env = FlattenObservation(gym.make(ENV_ID))
    counts = np.zeros((N_RANKS, 2))
    returns, rule_returns = [], []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=first_seed + episode)
        state, start, done, total, rule_total = None, True, False, 0.0, 0.0
        while not done:
            action, state = model.predict(obs[None], state=state, episode_start=np.array([start]), deterministic=True)
            card = int(np.argmax(obs))
            counts[card, int(action[0])] += 1
            obs, reward, terminated, truncated, _ = env.step(int(action[0]))
            total += float(reward)
            following = int(np.argmax(obs))
            if following != card:  # the rule's reward on the same deck (a push earns 0)
                rule_total += (1.0 if (following > card) == (card < MIDDLE) else -1.0) / DECK_SIZE
            start, done = False, terminated or truncated
        returns.append(total)
        rule_returns.append(rule_total)
    env.close()
    return counts, float(np.mean(returns)), float(np.mean(rule_returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--deck-seed", type=int, default=1000, help="first deck's seed (not an evaluation deck)")
    args = parser.parse_args()
    th.set_num_threads(1)
    print(f"{ENV_ID}, {args.episodes} decks from seed {args.deck_seed}; P(higher) per rank 0-12")
    for seed in args.seeds:
        path = args.logs / f"seed{seed}" / "ppo_attn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip"
        counts, mean, rule_mean = play(AttnPPO.load(path, device="cpu"), args.episodes, args.deck_seed)
        higher = counts[:, 0] / counts.sum(axis=1).clip(min=1)
        print(f"seed {seed}: return {mean:.3f}, rule {rule_mean:.3f}, P(higher) {np.array2string(higher, precision=2)}")


if __name__ == "__main__":
    main()

"""Where trained AttnPPO models lose on PendulumNoVel-v1: each final model plays many deterministic episodes, and
the script prints the return distribution (a 10-episode evaluation draws from it) and the worst episodes with their
start state and how they went.

A swing-up from near rest at the bottom is the hard start: the script tells, for each episode, the first step the
pole is upright (|theta| < 0.3 rad), the share of the last 50 steps upright, and the mean |velocity| and |torque| of
those steps. A *stall* is a pole held still off the bottom by the full torque (|velocity| < 0.5, |torque| near 2,
not upright): gravity balances 2 N m at |theta| = pi - asin(2 / 5), about 2.73 rad, and a policy that keeps
pushing toward the top never swings back to gain energy. A *swing* never gets upright while it moves; *late* gets
upright after step 100.

    python benchmarks/pendulum_failures.py logs/ablations/ppo_attn/default --seeds 103 104 105 106 107

The run folder of seed s is rl-zoo3's ``<logs>/seed<s>/ppo_attn/PendulumNoVel-v1_<N>`` (the newest N), holding the
model and its VecNormalize statistics; ``report.py`` and ``ablations.py`` write that layout.
"""

import argparse
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import numpy as np
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)

ENV_ID = "PendulumNoVel-v1"
UPRIGHT = 0.3  # rad
MAX_TORQUE = 2.0


def episodes(run: Path, n_episodes: int, seed: int) -> np.ndarray:
    """Play ``n_episodes`` deterministic episodes with the final model of ``run``.

    :param run: rl-zoo3's run folder
    :param n_episodes: episodes to play
    :param seed: the env's seed (start states)
    :return: (n_episodes, 7): return, start angle, start velocity, first upright step (-1: never), share of the
        last 50 steps upright, their mean |velocity| and mean |torque| (clipped to the env's bounds)
    """
    env, model = report.final_model(run, ENV_ID, seed)
    pendulum = env.venv.envs[0].unwrapped
    obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
    rows = []
    for _ in range(n_episodes):
        angle0, velocity0 = pendulum.state
        angles, velocities, torques, done = [], [], [], False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, _, start, infos = env.step(action)
            angle, velocity = pendulum.state
            angles.append(angle)
            velocities.append(velocity)
            torques.append(float(np.clip(action[0, 0], -MAX_TORQUE, MAX_TORQUE)))
            done = bool(start[0])
        upright = np.abs((np.array(angles) + np.pi) % (2 * np.pi) - np.pi) < UPRIGHT
        rows.append([
            infos[0]["episode"]["r"], (angle0 + np.pi) % (2 * np.pi) - np.pi, velocity0,
            int(np.argmax(upright)) if upright.any() else -1, upright[-50:].mean(),
            np.abs(velocities[-50:]).mean(), np.abs(torques[-50:]).mean(),
        ])  # fmt: skip
    return np.array(rows)


def kind(row: np.ndarray) -> str:
    """How an episode went: ``stall``, ``swing``, ``late`` or ``up`` (module docstring)."""
    _, _, _, first_up, upright, velocity, torque = row
    if upright < 0.5:
        return "stall" if velocity < 0.5 and torque > 0.9 * MAX_TORQUE else "swing"
    return "late" if first_up > 100 else "up"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, help="the folder holding seed<s>/ppo_attn/PendulumNoVel-v1_<N>")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--env-seed", type=int, default=12345, help="seed of the evaluation env (start states)")
    parser.add_argument("--worst", type=int, default=5, help="worst episodes listed per model")
    args = parser.parse_args()
    print(f"# {args.episodes} deterministic episodes per model, env seed {args.env_seed}")
    for seed, run in zip(args.seeds, report.seed_runs(args.logs, args.seeds, ENV_ID), strict=True):
        rows = episodes(run, args.episodes, args.env_seed)
        returns = rows[:, 0]
        tens = returns[: len(returns) // 10 * 10].reshape(-1, 10).mean(axis=1)
        kinds = [kind(row) for row in rows]
        counts = ", ".join(f"{name} {kinds.count(name)}" for name in ("up", "late", "swing", "stall"))
        print(f"seed {seed}: mean {returns.mean():.1f}, median {np.median(returns):.1f}, 10th percentile "
              f"{np.percentile(returns, 10):.0f}, worst {returns.min():.0f}; consecutive 10-episode means "
              f"{tens.min():.0f} to {tens.max():.0f} (std {tens.std():.0f}); episodes: {counts}")  # fmt: skip
        for row, name in sorted(zip(rows.tolist(), kinds, strict=True), key=lambda pair: pair[0][0])[: args.worst]:
            ret, angle0, velocity0, first_up, upright, velocity, torque = row
            print(f"    {ret:8.1f}  start angle {angle0:+.2f} velocity {velocity0:+.2f}  first upright step "
                  f"{first_up:4.0f}  last 50 steps: upright {upright:.2f}, |velocity| {velocity:.2f}, "
                  f"|torque| {torque:.2f}  {name}")  # fmt: skip


if __name__ == "__main__":
    main()

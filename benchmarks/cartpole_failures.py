"""How trained AttnPPO models end their CartPoleNoVel-v1 episodes: each final model plays deterministic episodes,
and the script tells, for each, its length and what ended it: the time limit (500 steps), the cart leaving the track
(|x| > 2.4) or the pole falling (|theta| > 12 degrees), with the mean cart position and velocity over the episode and
the share of pushes to the right (a policy that balances the pole while the cart drifts at a steady velocity leaves
the track with the pole up; about 1% more pushes one way than the other is such a drift), and the critic's value
(``trajectory_values``, in VecNormalize's reward scale) at the episode's first and last step: a critic that knows the
track ends gives the last step of a lost episode about one step's reward, not the value of the centre.

    python benchmarks/cartpole_failures.py logs/report --seeds 0 1

The run folder of seed s is rl-zoo3's ``<logs>/seed<s>/ppo_attn/CartPoleNoVel-v1_<N>`` (the newest N), holding the
model and its VecNormalize statistics; ``report.py`` and ``ablations.py`` write that layout.
"""

import argparse
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import numpy as np
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_attn_ac import AttnPPO

ENV_ID = "CartPoleNoVel-v1"


def episodes(run: Path, n_episodes: int, seed: int) -> list[tuple[int, str, float, float, float, float, float]]:
    """Play ``n_episodes`` deterministic episodes with the final model of ``run``.

    :param run: rl-zoo3's run folder
    :param n_episodes: episodes to play
    :param seed: the env's seed (start states)
    :return: per episode: length, what ended it (``time``, ``track``, ``pole``), mean cart position and velocity,
        share of pushes to the right, the critic's value at the first and the last step
    """
    env = VecNormalize.load(str(run / ENV_ID / "vecnormalize.pkl"), make_vec_env(ENV_ID, n_envs=1, seed=seed))
    env.training, env.norm_reward = False, False
    model = AttnPPO.load(run / f"{ENV_ID}.zip", env=env, device="cpu")
    cartpole = env.venv.envs[0].unwrapped
    obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
    rows = []
    for _ in range(n_episodes):
        states, observations, actions, done = [], [], [], False
        while not done:
            states.append(np.array(cartpole.state))  # (x, x_dot, theta, theta_dot) the action is chosen in
            observations.append(obs[0])
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, _, start, infos = env.step(action)
            actions.append(int(action[0]))
            done = bool(start[0])
        length = len(states)
        x_end = env.unnormalize_obs(infos[0]["terminal_observation"])[0]  # NoVel observes (x, theta)
        end = "time" if infos[0].get("TimeLimit.truncated") else "track" if abs(x_end) > cartpole.x_threshold else "pole"
        x, velocity = np.mean(states, axis=0)[:2]
        values = model.policy.trajectory_values(np.array(observations), actions=np.array(actions))
        rows.append((length, end, float(x), float(velocity), float(np.mean(actions)), float(values[0]), float(values[-1])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, help="the folder holding seed<s>/ppo_attn/CartPoleNoVel-v1_<N>")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--env-seed", type=int, default=12345, help="seed of the evaluation env (start states)")
    args = parser.parse_args()
    print(f"# {args.episodes} deterministic episodes per model, env seed {args.env_seed}")
    for seed in args.seeds:
        run = report.latest_run(args.logs / f"seed{seed}", ENV_ID, "ppo_attn")
        if run is None:
            raise SystemExit(f"no run folder {args.logs}/seed{seed}/ppo_attn/{ENV_ID}_<N>")
        rows = episodes(run, args.episodes, args.env_seed)
        ends = [row[1] for row in rows]
        counts = ", ".join(f"{name} {ends.count(name)}" for name in ("time", "track", "pole"))
        right = np.mean([row[4] for row in rows])
        print(f"seed {seed}: mean length {np.mean([r[0] for r in rows]):.0f}; ended by {counts}; pushes right {right:.3f}")
        for length, end, x, velocity, right, first, last in rows:
            print(f"    {length:3d} steps  {end:5s}  mean cart position {x:+.2f}  mean cart velocity {velocity:+.2f}  "
                  f"pushes right {right:.3f}  value first {first:.2f} last {last:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

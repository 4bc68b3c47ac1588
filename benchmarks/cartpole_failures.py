"""How trained AttnPPO models end their CartPoleNoVel-v1 episodes: each final model plays deterministic episodes,
and the script tells, for each, its length and what ended it: the time limit (500 steps), the cart leaving the track
(|x| > 2.4) or the pole falling (|theta| > 12 degrees), with the mean cart position and velocity over the episode and
the share of pushes to the right (a policy that balances the pole while the cart drifts at a steady velocity leaves
the track with the pole up; about 1% more pushes one way than the other is such a drift), and the critic's value
(``trajectory_values``, in VecNormalize's reward scale) at the episode's first and last step: a critic that knows the
track ends gives the last step of a lost episode about one step's reward, not the value of the centre. ``--cross``
also runs every listed seed's critic over the first listed seed's episodes (the same raw observations, each model's
own VecNormalize statistics): whether the critics of models that hold see that seed's drift coming.

``--margin`` instead measures how far each model is from failing: the mean length of its deterministic episodes
under the run's VecNormalize statistics and under four shifts of the cart position's statistics (its std times 0.8
and 1.25, its mean moved by -0.2 and +0.2 std), about what the running statistics move in the last half of a run
(and a change of the network's inputs of the size its last updates make). A model that holds the cart only on a knife
edge loses episodes under some shift; the smallest of the five is its margin, a finer measure than the final return
(which is 500 for most seeds).

    python benchmarks/cartpole_failures.py logs/report --seeds 0 1
    python benchmarks/cartpole_failures.py logs/report --seeds 0 1 2 3 4 --cross
    python benchmarks/cartpole_failures.py logs/collapse/ppo_attn/default --seeds 100 101 102 --margin --episodes 5

The run folder of seed s is rl-zoo3's ``<logs>/seed<s>/ppo_attn/CartPoleNoVel-v1_<N>`` (the newest N), holding the
model and its VecNormalize statistics; ``report.py`` and ``ablations.py`` write that layout.
"""

import argparse
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import numpy as np
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_attn_ac import AttnPPO

ENV_ID = "CartPoleNoVel-v1"


Row = tuple[int, str, float, float, float, float, float]
Stream = tuple[np.ndarray, np.ndarray]


def episodes(run: Path, n_episodes: int, seed: int) -> tuple[list[Row], list[Stream]]:
    """Play ``n_episodes`` deterministic episodes with the final model of ``run``.

    :param run: rl-zoo3's run folder
    :param n_episodes: episodes to play
    :param seed: the env's seed (start states)
    :return: per episode: length, what ended it (``time``, ``track``, ``pole``), mean cart position and velocity,
        share of pushes to the right, the critic's value at the first and the last step; and each episode's raw
        (unnormalised) observations and actions
    """
    env, model = report.final_model(run, ENV_ID, seed)
    cartpole = env.venv.envs[0].unwrapped
    obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
    rows, streams = [], []
    for _ in range(n_episodes):
        states, observations, actions, done = [], [], [], False
        while not done:
            states.append(np.array(cartpole.state))  # (x, x_dot, theta, theta_dot) the action is chosen in
            observations.append(env.get_original_obs()[0])
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, _, start, infos = env.step(action)
            actions.append(int(action[0]))
            done = bool(start[0])
        length = len(states)
        x_end = env.unnormalize_obs(infos[0]["terminal_observation"])[0]  # NoVel observes (x, theta)
        end = "time" if infos[0].get("TimeLimit.truncated") else "track" if abs(x_end) > cartpole.x_threshold else "pole"
        x, velocity = np.mean(states, axis=0)[:2]
        stream = (np.array(observations), np.array(actions))
        values = critic_values(env, model, stream)
        rows.append((length, end, float(x), float(velocity), float(np.mean(actions)), float(values[0]), float(values[-1])))
        streams.append(stream)
    return rows, streams


def critic_values(env: VecNormalize, model: AttnPPO, stream: Stream) -> np.ndarray:
    """The critic's values (``trajectory_values``) over one episode's raw observations and actions, normalised with
    ``env``'s statistics."""
    observations, actions = stream
    return model.policy.trajectory_values(env.normalize_obs(observations), actions=actions).numpy()


# Shifts of the cart position's normalisation statistics (name, std factor, mean shift in stds) for --margin.
SHIFTS = (("run's", 1.0, 0.0), ("std x0.8", 0.8, 0.0), ("std x1.25", 1.25, 0.0), ("mean -0.2 std", 1.0, -0.2),
          ("mean +0.2 std", 1.0, 0.2))  # fmt: skip


def margin(run: Path, n_episodes: int, seed: int) -> list[float]:
    """Mean length of ``n_episodes`` deterministic episodes of the final model of ``run`` under each of ``SHIFTS``
    (the same start states for each).

    :param run: rl-zoo3's run folder
    :param n_episodes: episodes per shift
    :param seed: the env's seed (start states)
    """
    env, model = report.final_model(run, ENV_ID, seed)
    var, mean = env.obs_rms.var.copy(), env.obs_rms.mean.copy()
    out = []
    for _, factor, shift in SHIFTS:
        env.obs_rms.var, env.obs_rms.mean = var.copy(), mean.copy()
        env.obs_rms.var[0] *= factor**2
        env.obs_rms.mean[0] += shift * np.sqrt(var[0])
        env.seed(seed)
        env.reset()
        out.append(float(evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=True)[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, help="the folder holding seed<s>/ppo_attn/CartPoleNoVel-v1_<N>")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--env-seed", type=int, default=12345, help="seed of the evaluation env (start states)")
    parser.add_argument("--cross", action="store_true", help="every seed's critic over the first seed's episodes")
    parser.add_argument("--margin", action="store_true", help="episode lengths under shifted cart-position statistics")
    args = parser.parse_args()
    runs = report.seed_runs(args.logs, args.seeds, ENV_ID)
    if args.margin:
        print(
            f"# {args.logs}: mean length of {args.episodes} deterministic episodes (env seed {args.env_seed}) under the "
            f"cart position's statistics: {', '.join(name for name, _, _ in SHIFTS)}; margin = the smallest"
        )
        margins = []
        for seed, run in zip(args.seeds, runs, strict=True):
            lengths = margin(run, args.episodes, args.env_seed)
            margins.append(min(lengths))
            print(f"seed {seed}: {' '.join(f'{x:3.0f}' for x in lengths)}  margin {min(lengths):3.0f}", flush=True)
        low = sum(m < 450 for m in margins)
        print(f"seeds with margin < 450: {low} of {len(margins)}; mean margin {np.mean(margins):.0f}")
        return
    print(f"# {args.episodes} deterministic episodes per model, env seed {args.env_seed}")
    first_streams = None
    for seed, run in zip(args.seeds, runs, strict=True):
        rows, streams = episodes(run, args.episodes, args.env_seed)
        first_streams = first_streams or streams
        ends = [row[1] for row in rows]
        counts = ", ".join(f"{name} {ends.count(name)}" for name in ("time", "track", "pole"))
        right = np.mean([row[4] for row in rows])
        print(f"seed {seed}: mean length {np.mean([r[0] for r in rows]):.0f}; ended by {counts}; pushes right {right:.3f}")
        for length, end, x, velocity, right, first, last in rows:
            print(f"    {length:3d} steps  {end:5s}  mean cart position {x:+.2f}  mean cart velocity {velocity:+.2f}  "
                  f"pushes right {right:.3f}  value first {first:.2f} last {last:.2f}")  # fmt: skip

    if args.cross:
        print(f"# every seed's critic over seed {args.seeds[0]}'s first 3 episodes: value at the first, middle, last step")
        for seed, run in zip(args.seeds, runs, strict=True):
            env, model = report.final_model(run, ENV_ID, args.env_seed)
            parts = []
            for stream in first_streams[:3]:
                values = critic_values(env, model, stream)
                parts.append(f"{len(values)} steps: {values[0]:.2f}, {values[len(values) // 2]:.2f}, {values[-1]:.2f}")
            print(f"seed {seed}'s critic: " + "; ".join(parts))


if __name__ == "__main__":
    main()

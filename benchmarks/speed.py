"""AttnA2C vs A2C on CartPole-v1 (8 envs, default arguments, contrastive loss on), side by side in one process.

Prints and saves (a) the training FPS ratio over alternating pairs of runs, with the per-update time breakdown,
and (b) the training wall-clock time each needs to reach a mean evaluation return of 475 (median over seeds;
evaluation time is excluded).

    python benchmarks/speed.py                      # full run (several minutes)
    python benchmarks/speed.py --pairs 2 --seeds 0  # quick look
    python benchmarks/speed.py --device cuda --n-envs 128 --context-len 128 --skip-threshold \
        --out benchmarks/results/speed_cuda.json    # GPU section: both algorithms on the GPU
"""

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import common
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_attn_ac import AttnA2C

ALGOS = {"A2C": A2C, "AttnA2C": AttnA2C}
ENV_ID = "CartPole-v1"
EVAL_EVERY = 2_500  # timesteps between evaluations in the time-to-threshold runs


class Timers:
    """Wraps a model's methods to accumulate their wall time (the update breakdown)."""

    def __init__(self, model, names: list[str]) -> None:
        self.total: dict[str, float] = defaultdict(float)
        for name in names:
            method = getattr(model, name)

            def timed(*args, _method=method, _name=name, **kwargs):
                start = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    self.total[_name] += time.perf_counter() - start

            setattr(model, name, timed)


def make_model(name: str, n_envs: int, seed: int, device: str, context_len: int) -> A2C | AttnA2C:
    """A2C or AttnA2C with default arguments (AttnA2C with ``context_len``) on ``n_envs`` CartPole envs."""
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    extra = dict(context_len=context_len) if name == "AttnA2C" else {}
    return ALGOS[name]("MlpPolicy", env, seed=seed, device=device, **extra)


def fps_pairs(pairs: int, steps: int, n_envs: int, device: str, context_len: int) -> list[dict]:
    """Alternate A2C and AttnA2C runs of ``steps`` timesteps; FPS and per-update breakdown of each."""
    results = []
    for pair in range(-1, pairs):  # pair -1 warms up (imports, allocator) and is not kept
        row = {}
        for name in ALGOS:
            model = make_model(name, n_envs, pair + 1, device, context_len)
            parts = ["collect_rollouts", "train"] + (["_compute_rollout_values"] if name == "AttnA2C" else [])
            timers = Timers(model, parts)
            start = time.perf_counter()
            model.learn(steps)
            elapsed = time.perf_counter() - start
            updates = steps // (n_envs * model.n_steps)
            row[name] = {
                "fps": steps / elapsed,
                "ms_per_update": {k: 1e3 * v / updates for k, v in timers.total.items()},
            }
        if pair >= 0:
            row["ratio"] = row["AttnA2C"]["fps"] / row["A2C"]["fps"]
            results.append(row)
            fps = ", ".join(f"{name} {row[name]['fps']:.0f} fps" for name in ALGOS)
            print(f"pair {pair}: {fps}, ratio {row['ratio']:.3f}")
    return results


class TimeToThreshold(BaseCallback):
    """Evaluates every ``eval_freq`` calls and stops at ``threshold``; keeps training time without evaluations."""

    def __init__(self, threshold: float, eval_freq: int, n_episodes: int, seed: int) -> None:
        super().__init__()
        self.threshold, self.eval_freq, self.n_episodes = threshold, eval_freq, n_episodes
        self.eval_env = make_vec_env(ENV_ID, n_envs=1, seed=1000 + seed)
        self.eval_time = 0.0
        self.reached: tuple[int, float] | None = None
        self.curve: list[tuple[int, float]] = []

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq:
            return True
        t = time.perf_counter()
        mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes)
        self.eval_time += time.perf_counter() - t
        self.curve.append((self.num_timesteps, float(mean)))
        if mean >= self.threshold:
            self.reached = (self.num_timesteps, time.perf_counter() - self.start - self.eval_time)
            return False
        return True


def time_to_threshold(
    seeds: list[int], budget: int, threshold: float, n_envs: int, device: str, context_len: int
) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {name: [] for name in ALGOS}
    for seed in seeds:
        for name in ALGOS:
            model = make_model(name, n_envs, seed, device, context_len)
            callback = TimeToThreshold(threshold, eval_freq=max(1, EVAL_EVERY // n_envs), n_episodes=10, seed=seed)
            model.learn(budget, callback=callback)
            steps, seconds = callback.reached or (None, None)
            results[name].append({"seed": seed, "steps": steps, "seconds": seconds, "curve": callback.curve})
            print(f"seed {seed} {name}: reached {threshold} at {steps} steps after {seconds and round(seconds, 1)} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="alternating A2C/AttnA2C runs for the FPS ratio")
    parser.add_argument("--steps", type=int, default=20_000, help="timesteps per FPS run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for the time to threshold")
    parser.add_argument("--budget", type=int, default=300_000, help="max timesteps per time-to-threshold run")
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--skip-threshold", action="store_true", help="only measure the FPS ratio")
    parser.add_argument("--device", default="cpu", help="torch device of both algorithms (cpu, cuda)")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--context-len", type=int, default=16, help="AttnA2C's context_len")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    args = parser.parse_args()

    pairs = fps_pairs(args.pairs, args.steps, args.n_envs, args.device, args.context_len)
    ratio = statistics.median(row["ratio"] for row in pairs)
    summary: dict = {"fps_ratio_median": ratio, "fps_pairs": pairs}
    print(f"\n(a) training FPS ratio AttnA2C / A2C (median of {args.pairs} pairs): {ratio:.3f}")
    for name in ALGOS:
        parts = {k: statistics.median(row[name]["ms_per_update"][k] for row in pairs) for k in pairs[0][name]["ms_per_update"]}
        print(f"    {name:8s} ms per update: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    print("    (AttnA2C's collect_rollouts includes _compute_rollout_values: the critic's pass over the streams)")

    if not args.skip_threshold:
        runs = time_to_threshold(args.seeds, args.budget, args.threshold, args.n_envs, args.device, args.context_len)
        summary["time_to_threshold"] = runs
        print(f"\n(b) training time to a mean evaluation return of {args.threshold:.0f} (median over seeds {args.seeds}):")
        for name, rows in runs.items():
            seconds = [r["seconds"] if r["seconds"] is not None else float("inf") for r in rows]
            steps = [r["steps"] if r["steps"] is not None else float("inf") for r in rows]
            summary[f"{name}_median_seconds"] = statistics.median(seconds)
            summary[f"{name}_median_steps"] = statistics.median(steps)
            median_s, median_steps = statistics.median(seconds), statistics.median(steps)
            print(f"    {name:8s} {median_s:7.1f} s  ({median_steps:.0f} steps)  per seed: {[round(x, 2) for x in seconds]}")

    summary["config"] = {
        "env": ENV_ID,
        "n_envs": args.n_envs,
        "device": args.device,
        "context_len": args.context_len,
        "steps_per_fps_run": args.steps,
        "seeds": args.seeds,
        "budget": args.budget,
        "threshold": args.threshold,
        "eval": f"10 deterministic episodes every {EVAL_EVERY} steps",
    }
    summary["environment"] = common.environment(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, default=float))
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()

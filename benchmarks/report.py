"""Learning-curve report: each algorithm trained through rl-zoo3 (``attn-zoo train``) with its own rl-zoo3
hyperparameters, evaluated every 10% of its budget, then aggregated over seeds with the interquartile mean and
stratified bootstrap 95% confidence intervals (``rliable``), as PNG curves and final-score bars
(``<out name>_<env>.png``: ``report_<env>.png`` for the default ``--out``).

Hyperparameters: ours from ``hyperparams/``, the baselines' from rl-zoo3's own files (``a2c``, ``ppo``,
``ppo_lstm`` = RecurrentPPO). A baseline without an entry for a NoVel env uses its entry for the fully observed
env with observation normalisation (A2C and PPO have no NoVel entries); one without an entry for a fully
observed env uses its NoVel entry if any (RecurrentPPO on CartPole-v1: its tuned CartPoleNoVel-v1 settings),
else rl-zoo3's ``default``. An env version without an entry takes the newest older version's (RecurrentPPO on
LunarLanderNoVel-v3: its tuned LunarLanderNoVel-v2 entry). ``--budget`` trains every run for that many timesteps
instead of its entry's ``n_timesteps`` (a budget the machine affords: rows record it).
Runs are resumable: every finished (algo, env, seed) is one JSON line in ``--out`` and is skipped next time while
its hyperparameter entry is unchanged; rows count only for the gymnasium version that ran them, and our algorithms'
only for the package version that ran them (``--gymnasium`` / ``--version`` show older ones).

    python benchmarks/report.py --envs CartPole-v1 --algos a2c a2c_attn ppo ppo_attn --seeds 0 1 2 3 4
    python benchmarks/report.py --aggregate-only
"""

import argparse
import functools
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import common  # one torch thread; must come first
import gymnasium as gym
import matplotlib
import numpy as np
import yaml
from rliable import library as rly
from rliable import metrics
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import sb3_attn_ac
from sb3_attn_ac import AttnPPO, zoo

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).parent / "results"
ZOO_HYPERPARAMS = Path(zoo.__file__).parent / "hyperparams"
# Returns whose first reach the report states (steps to the first evaluation at or above it).
REACH = {"CartPole-v1": 475, "CartPoleNoVel-v1": 475}
NAMES = {"a2c": "A2C", "a2c_attn": "AttnA2C", "ppo": "PPO", "ppo_attn": "AttnPPO", "ppo_lstm": "RecurrentPPO"}


@functools.cache
def constructor_defaults(algo: str) -> Mapping[str, inspect.Parameter]:
    """The arguments of algorithm ``algo``'s class (ours or one of rl-zoo3's), with their defaults."""
    from rl_zoo3.utils import ALGOS

    return inspect.signature({**ALGOS, **zoo.ALGOS}[algo]).parameters


def hyperparams(algo: str, env_id: str) -> dict:
    """The rl-zoo3 entry an algorithm uses for an env (see the module docstring)."""
    import rl_zoo3

    directory = ZOO_HYPERPARAMS if algo in zoo.ALGOS else Path(rl_zoo3.__file__).parent / "hyperparams"
    entries = yaml.load((directory / f"{algo}.yml").read_text(), Loader=yaml.UnsafeLoader)  # rl-zoo3's own format
    if env_id in entries:
        return dict(entries[env_id])
    name, version = env_id.rsplit("-v", 1)
    older = next((f"{name}-v{v}" for v in range(int(version) - 1, -1, -1) if f"{name}-v{v}" in entries), None)
    if older is not None:
        return dict(entries[older])
    if "NoVel" in env_id and env_id.replace("NoVel", "") in entries:
        return {**entries[env_id.replace("NoVel", "")], "normalize": True}
    if f"{name}NoVel-v{version}" in entries:  # RecurrentPPO's only CartPole entry is its tuned NoVel one
        return dict(entries[f"{name}NoVel-v{version}"])
    return dict(entries["default"])


def train(
    algo: str,
    env_id: str,
    seed: int,
    logs: Path,
    entry: dict,
    evaluations: int = 10,
    gym_packages: tuple[str, ...] = (),
    eval_episodes: int = 10,
) -> dict:
    """One run through attn-zoo with the hyperparameter ``entry``, evaluating ``eval_episodes`` deterministic
    episodes ``evaluations`` times (every 10% of the budget by default; 1: at the end only); ``gym_packages`` are
    imported first (they register the env)."""
    budget = int(float(entry["n_timesteps"]))
    conf = logs / f"{algo}_{env_id}.yml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(yaml.dump({env_id: entry}))
    folder = logs / f"seed{seed}"
    command = [sys.executable, "-m", "sb3_attn_ac.zoo", "train", "--algo", algo, "--env", env_id, "--seed", str(seed),
               "-f", str(folder), "-conf", str(conf), "--eval-freq", str(budget // evaluations),
               "--eval-episodes", str(eval_episodes), "--n-eval-envs", "1", "--verbose", "0"]  # fmt: skip
    if gym_packages:
        command += ["--gym-packages", *gym_packages]
    start = time.perf_counter()
    # The benchmarks' folder on the path: entries may name its modules (``popgym_wrappers``) as env wrappers.
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}, capture_output=True)
    wall = time.perf_counter() - start
    run = latest_run(folder, env_id, algo)
    if run is None:
        raise FileNotFoundError(f"attn-zoo wrote no run folder {folder}/{algo}/{env_id}_<N>")
    evaluations = np.load(run / "evaluations.npz")
    return {
        "algo": algo,
        "env": env_id,
        "seed": seed,
        "budget": budget,
        "timesteps": evaluations["timesteps"].tolist(),
        "eval_mean": evaluations["results"].mean(axis=1).tolist(),
        "eval_episodes": eval_episodes,
        "wall_s": wall,
        "hyperparams": config(entry),
        "environment": common.environment(),
    }


def latest_run(folder: Path, env_id: str, algo: str = "*") -> Path | None:
    """The newest of rl-zoo3's run folders ``<folder>/<algo>/<env_id>_<N>`` (highest N; ``algo`` may be a glob
    pattern), or None if there is none."""
    runs = folder.glob(f"{algo}/{env_id}_*")
    return max(runs, key=lambda p: int(p.name.rsplit("_", 1)[1]), default=None)


def seed_runs(logs: Path, seeds: list[int], env_id: str, algo: str = "ppo_attn") -> list[Path]:
    """The newest run folder of each seed, ``<logs>/seed<s>/<algo>/<env_id>_<N>`` (the layout :func:`train` writes);
    exits naming the first seed that has none."""
    runs = []
    for seed in seeds:
        run = latest_run(logs / f"seed{seed}", env_id, algo)
        if run is None:
            raise SystemExit(f"no run folder {logs}/seed{seed}/{algo}/{env_id}_<N>")
        runs.append(run)
    return runs


def frozen_statistics(path: Path, env_id: str, seed: int) -> VecNormalize:
    """Saved VecNormalize statistics over one ``env_id`` env seeded ``seed``, frozen, rewards as the env gives them
    (as an evaluation uses them).

    :param path: the statistics' pickle (rl-zoo3's ``vecnormalize.pkl``, or a checkpoint's)
    :param env_id: the env
    :param seed: the env's seed (start states)
    """
    env = VecNormalize.load(str(path), make_vec_env(env_id, n_envs=1, seed=seed))
    env.training, env.norm_reward = False, False
    return env


def final_model(run: Path, env_id: str, seed: int) -> tuple[VecNormalize, AttnPPO]:
    """The final AttnPPO model of rl-zoo3's run folder ``run`` on one ``env_id`` env seeded ``seed``, behind the run's
    VecNormalize statistics (:func:`frozen_statistics`)."""
    env = frozen_statistics(run / env_id / "vecnormalize.pkl", env_id, seed)
    return env, AttnPPO.load(run / f"{env_id}.zip", env=env, device="cpu")


def _estimates(scores: np.ndarray, func: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """rliable's point estimate and 95% stratified bootstrap interval (2,000 resamples) of ``func``, reproducibly:
    rliable 1.2 resamples from numpy's global generator (its ``random_state`` argument does not reach the
    resampling), so the global generator is seeded before each call.

    :param scores: (runs, tasks, ...) scores
    :param func: the aggregate, mapping scores to a 1-d array
    :return: the point estimates and the (2, len) lower and upper bounds
    """
    np.random.seed(0)
    point, interval = rly.get_interval_estimates({"scores": scores}, func, reps=2000)
    return point["scores"], interval["scores"]


def first_reach(timesteps: list[int], returns: list[float], level: float) -> str:
    """The timestep of the first evaluation at or above ``level`` ("-" if none)."""
    return next((f"{t:.0e}" for t, x in zip(timesteps, returns, strict=True) if x >= level), "-")


def holds(returns: list[float]) -> bool:
    """Whether every evaluation in the last 20% of a curve is within 10% of the curve's best (no collapse)."""
    best = max(returns)
    return min(returns[-max(1, len(returns) // 5) :]) >= best - 0.1 * abs(best)


def read_rows(path: Path) -> list[dict]:
    """The JSON lines of a results file (none if it does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_row(path: Path, row: dict) -> None:
    """Add ``row`` to the results file ``path`` as one JSON line (as :func:`read_rows` reads them)."""
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def record_run(path: Path, row: dict, label: str, decimals: int = 1) -> None:
    """:func:`append_row` for a training run, and print its final evaluation and wall time after ``label``."""
    append_row(path, row)
    print(f"{label}: final {row['eval_mean'][-1]:.{decimals}f} ({row['wall_s']:.0f} s)", flush=True)


def linear_start(value: object) -> float | None:
    """The initial value of rl-zoo3's linear schedule ``lin_<initial value>``; None for anything else."""
    text = str(value)
    return float(text[4:]) if text.startswith("lin_") else None


def config(entry: dict) -> dict[str, str]:
    """A hyperparameter entry as rows record it."""
    return {k: str(v) for k, v in entry.items()}


def ran_under(rows: list[dict], version: str, gymnasium: str = gym.__version__) -> list[dict]:
    """The rows that ran with ``gymnasium`` (the same seed gives another run under another gymnasium), of our
    algorithms only those that ``version`` of the package ran."""
    return [
        r
        for r in rows
        if r["environment"]["gymnasium"] == gymnasium
        and (r["algo"] not in zoo.ALGOS or r["environment"]["sb3-attn-ac"] == version)
    ]


def current(rows: list[dict], version: str, gymnasium: str = gym.__version__) -> list[dict]:
    """The rows :func:`ran_under` ``version`` and ``gymnasium``; of several runs of one (algorithm, env, seed), the
    last (a run with a changed hyperparameter entry supersedes the older one)."""
    return list({(r["algo"], r["env"], r["seed"]): r for r in ran_under(rows, version, gymnasium)}.values())


def aggregate(rows: list[dict], out_dir: Path, prefix: str = "report", decimals: int = 0) -> str:
    """IQM and 95% stratified bootstrap CIs per env and algorithm; writes one PNG per env (``prefix_<env>.png``);
    returns a markdown table (with each seed's first evaluation at the env's :data:`REACH` level, how many
    seeds' curves :func:`holds`, and the mean wall time of a run: training and evaluations), returns written with
    ``decimals`` decimals (POPGym's lie in [-1, 1])."""
    lines = [
        "| env | algorithm | seeds | budget | final IQM [95% CI] | final mean per seed | first >= REACH, per seed "
        "| seeds holding | wall time per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for env_id in dict.fromkeys(r["env"] for r in rows):
        env_rows = [r for r in rows if r["env"] == env_id]
        fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
        finals, labels = [], []
        for algo in dict.fromkeys(r["algo"] for r in env_rows):
            runs = sorted((r for r in env_rows if r["algo"] == algo), key=lambda r: r["seed"])
            n = min(len(r["eval_mean"]) for r in runs)
            scores = np.array([r["eval_mean"][:n] for r in runs])[:, None, :]  # (runs, tasks=1, evaluations)
            steps = np.array(runs[0]["timesteps"][:n])
            iqm = lambda x: np.array([metrics.aggregate_iqm(x[..., i]) for i in range(x.shape[-1])])  # noqa: E731
            point, interval = _estimates(scores, iqm)
            if n > 1:  # runs evaluated only at the end have no curve
                curves.plot(steps, point, label=NAMES.get(algo, algo))
                curves.fill_between(steps, interval[0], interval[1], alpha=0.2)
            final = scores[:, :, -1]
            fp, fi = _estimates(final, lambda x: np.array([metrics.aggregate_iqm(x)]))
            finals.append((fp[0], fi[:, 0]))
            labels.append(NAMES.get(algo, algo))
            per_seed = ", ".join(f"{x:.{decimals}f}" for x in final[:, 0])
            reach = "-"
            if env_id in REACH and n > 1:
                reach = f"{REACH[env_id]}: " + ", ".join(
                    first_reach(r["timesteps"], r["eval_mean"], REACH[env_id]) for r in runs
                )
            held = f"{sum(holds(r['eval_mean'][:n]) for r in runs)}/{len(runs)}" if n > 1 else "-"
            walls = [r["wall_s"] for r in runs if "wall_s" in r]
            wall = f"{np.mean(walls):.0f} s" if walls else "-"
            lines.append(f"| {env_id} | {NAMES.get(algo, algo)} | {len(runs)} | {runs[0]['budget']:.0e} "
                         f"| {fp[0]:.{decimals}f} [{fi[0, 0]:.{decimals}f}, {fi[1, 0]:.{decimals}f}] | {per_seed} "
                         f"| {reach} | {held} | {wall} |")  # fmt: skip
        curves.set_xlabel("timesteps")
        curves.set_ylabel("evaluation return (IQM over seeds, 95% CI)")
        curves.set_title(env_id)
        curves.legend()
        points = np.array([f[0] for f in finals])
        errors = np.abs(np.array([f[1] for f in finals]).T - points)
        bars.barh(labels, points, xerr=errors, color="tab:blue", alpha=0.7)
        bars.set_xlabel("final evaluation return (IQM, 95% CI)")
        fig.tight_layout()
        fig.savefig(out_dir / f"{prefix}_{env_id}.png", dpi=100)
        plt.close(fig)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["a2c_attn", "ppo_attn", "a2c", "ppo", "ppo_lstm"])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "CartPoleNoVel-v1", "PendulumNoVel-v1"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget", type=float, help="timesteps per run instead of the entries' n_timesteps")
    parser.add_argument("--logs", type=Path, default=Path("logs/report"))
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "report.jsonl")
    parser.add_argument("--version", default=sb3_attn_ac.__version__, help="aggregate our algorithms' rows of this version")
    parser.add_argument("--gymnasium", default=gym.__version__, help="aggregate the rows run with this gymnasium version")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    rows = read_rows(args.out)
    rows = current(rows, args.version, args.gymnasium)  # older versions' rows stay in the file as history
    if not args.aggregate_only:
        done = {(r["algo"], r["env"], r["seed"], json.dumps(r["hyperparams"], sort_keys=True)) for r in rows}
        for env_id in args.envs:
            for algo in args.algos:
                for seed in args.seeds:
                    entry = hyperparams(algo, env_id)
                    if args.budget:
                        entry["n_timesteps"] = args.budget
                    if (algo, env_id, seed, json.dumps(config(entry), sort_keys=True)) in done:
                        continue
                    row = train(algo, env_id, seed, args.logs, entry)
                    rows = current([*rows, row], args.version, args.gymnasium)
                    record_run(args.out, row, f"{algo} {env_id} seed {seed}")
    print(aggregate(rows, args.out.parent, prefix=args.out.stem))  # plots <out name>_<env>.png


if __name__ == "__main__":
    main()

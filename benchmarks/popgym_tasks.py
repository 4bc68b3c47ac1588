"""POPGym (Morad et al., ICLR 2023) memory tasks: AttnPPO with actor context against RecurrentPPO (sb3-contrib,
LSTM) and PPO, trained through rl-zoo3 (``attn-zoo train --gym-packages popgym``) exactly as ``report.py`` does,
with the same PPO settings for all three: 8 envs, n_steps 128, batch 256, 4 epochs, learning rate 3e-4, gamma
0.99, GAE lambda 0.95, net_arch pi=[64], vf=[64]. RecurrentPPO keeps its policy's defaults otherwise (an LSTM of
256 units, a separate critic LSTM); AttnPPO keeps the package defaults. Tuple observations (Autoencode) are
flattened (``gymnasium.wrappers.FlattenObservation``; Discrete ones are one-hot either way). With
``--observations popgym`` every algorithm's observations also hold the previous action and a first-step flag, as
POPGym's own baselines train (``popgym_wrappers.PreviousActionAntialias``).

Evaluation: 10 deterministic episodes every 10% of the budget; POPGym's returns lie in [-1, 1]. Aggregation (IQM
with stratified bootstrap 95% CIs, curves, per-seed finals, wall time) as ``report.py``.
Resumable: every finished (algo, env, seed) is one JSON line in ``--out``.

    python benchmarks/popgym_tasks.py --seeds 0 1 2 --budget 2e5
    python benchmarks/popgym_tasks.py --aggregate-only
    python benchmarks/popgym_tasks.py --algos ppo_attn --attn-args prev_action=True --seeds 100 101 102
    python benchmarks/popgym_tasks.py --algos ppo_attn --attn-args shared_transformer=False context_len=64 \
        start_bias=True position_encoding=alibi --seeds 0 1 2 3 4 --budget 1e5

    python benchmarks/popgym_tasks.py --algos ppo_attn --tuned --seeds 0 1 2 3 4 --budget 1e5 --tasks RepeatFirstEasy

Plots: ``<out name>_<env>.png`` (``<out name>_popgym_observations_<env>.png`` with ``--observations popgym``,
``<out name>_tuned_<env>.png`` with ``--tuned``). ``--attn-args`` changes AttnPPO's arguments (a variant to compare
on tuning seeds); ``--tuned`` trains AttnPPO with its own entry per task (``hyperparams/ppo_attn.yml``: the memory
arguments chosen on tuning seeds, the shared PPO settings unchanged). A run counts for the command's
entries only if it ran with exactly their hyperparameters (budget and arguments included).
"""

import argparse
from pathlib import Path
from typing import Any

import common  # one torch thread; must come first  # noqa: F401
import gymnasium as gym
import report
import yaml

import sb3_attn_ac

TASKS = [
    "RepeatFirstEasy",
    "RepeatPreviousEasy",
    "AutoencodeEasy",
    "HigherLowerEasy",
    "NoisyPositionOnlyCartPoleEasy",
    "PositionOnlyPendulumEasy",
    "MineSweeperEasy",
]
SHARED = dict(
    n_envs=8,
    n_steps=128,
    batch_size=256,
    n_epochs=4,
    learning_rate=3e-4,
    gamma=0.99,
    gae_lambda=0.95,
)
FLATTEN = "gymnasium.wrappers.FlattenObservation"
# What each observation holds (--observations): the env's own, or also POPGym's baselines' previous action and
# first-step flag (``popgym_wrappers``), then flattened either way.
WRAPPERS = {"plain": FLATTEN, "popgym": ["popgym_wrappers.PreviousActionAntialias", FLATTEN]}
ENTRIES = {
    "ppo_attn": dict(policy="MlpPolicy", actor_context=True, policy_kwargs="dict(net_arch=dict(pi=[64], vf=[64]))"),
    "ppo_lstm": dict(policy="MlpLstmPolicy", policy_kwargs="dict(net_arch=dict(pi=[64], vf=[64]))"),
    "ppo": dict(policy="MlpPolicy", policy_kwargs="dict(net_arch=dict(pi=[64], vf=[64]))"),
}


def entry(algo: str, observations: str, budget: float, attn_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rl-zoo3 entry ``algo`` trains with here: the shared PPO settings, the observation wrappers, the
    algorithm's policy and (AttnPPO) ``attn_args`` over its arguments.

    :param algo: ``ppo_attn``, ``ppo_lstm`` or ``ppo``
    :param observations: a key of :data:`WRAPPERS`
    :param budget: timesteps per run
    :param attn_args: AttnPPO arguments (ignored for the others)
    """
    extra = (attn_args or {}) if algo == "ppo_attn" else {}
    return {**SHARED, "env_wrapper": WRAPPERS[observations], **ENTRIES[algo], "n_timesteps": budget, **extra}


def tuned(env_id: str, budget: float) -> dict[str, Any]:
    """AttnPPO's own rl-zoo3 entry for a POPGym task (``hyperparams/ppo_attn.yml``: its memory arguments chosen
    on tuning seeds), at ``budget``. It must keep every setting the three algorithms share here, so the comparison
    stays like for like.

    :param env_id: a ``popgym-<task>-v0`` id with an entry of its own
    :param budget: timesteps per run
    """
    own = report.hyperparams("ppo_attn", env_id)
    shared = report.config(entry("ppo_attn", "plain", budget))
    differs = sorted(k for k, v in shared.items() if k != "n_timesteps" and str(own.get(k)) != v)
    if differs:  # also where the yml has no entry for the env (report.hyperparams then gives "default")
        raise SystemExit(f"--tuned: hyperparams/ppo_attn.yml has no {env_id} entry with the shared settings ({differs})")
    return {**own, "n_timesteps": budget}


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as entry items, each value read as a yml entry reads it (``64`` an int, ``True`` a
    bool)."""
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise SystemExit(f"--attn-args takes KEY=VALUE pairs, got {bad}")
    return {key: yaml.safe_load(value) for key, value in (p.split("=", 1) for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--algos", nargs="+", default=list(ENTRIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=2e5, help="timesteps per run")
    parser.add_argument("--observations", choices=list(WRAPPERS), default="plain",
                        help="popgym: every observation also holds the previous action and a first-step flag, as in "
                        "POPGym's baselines, for every algorithm")  # fmt: skip
    parser.add_argument("--attn-args", nargs="+", default=[], help="AttnPPO arguments over the script's, KEY=VALUE")
    parser.add_argument(
        "--tuned", action="store_true", help="AttnPPO trains with its entry per task (hyperparams/ppo_attn.yml)"
    )
    parser.add_argument("--logs", type=Path, default=Path("logs/popgym"))
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--version", default=sb3_attn_ac.__version__, help="aggregate our algorithms' rows of this version")
    parser.add_argument("--gymnasium", default=gym.__version__, help="aggregate the rows run with this gymnasium version")
    parser.add_argument("--out", type=Path, default=report.RESULTS / "popgym.jsonl")
    args = parser.parse_args()

    if args.tuned and (args.attn_args or args.observations != "plain"):
        parser.error("--tuned: the per-task entries are for plain observations and take no --attn-args")
    attn_args = parse_args(args.attn_args)
    entries = {}  # (algo, env id) -> entry
    for task in args.tasks:
        env_id = f"popgym-{task}-v0"
        for algo in args.algos:
            if args.tuned and algo == "ppo_attn":
                entries[algo, env_id] = tuned(env_id, args.budget)
            else:
                entries[algo, env_id] = entry(algo, args.observations, args.budget, attn_args)
    # A run belongs to these entries if it ran with exactly their hyperparameters (a changed entry runs again).
    rows = report.ran_under(report.read_rows(args.out), args.version, args.gymnasium)
    rows = [r for r in rows if r["hyperparams"] == report.config(entries.get((r["algo"], r["env"]), {}))]
    if not args.aggregate_only:
        done = {(r["algo"], r["env"], r["seed"]) for r in rows}
        for (algo, env_id), hyperparams in entries.items():
            for seed in args.seeds:
                if (algo, env_id, seed) in done:
                    continue
                row = report.train(algo, env_id, seed, args.logs, hyperparams, gym_packages=("popgym",))
                rows.append(row)
                report.record_run(args.out, row, f"{algo} {env_id} seed {seed}", decimals=2)
    label = "own entry per task" if args.tuned else " ".join(args.attn_args)
    rows = [{**r, "algo": f"AttnPPO {label}"} if r["algo"] == "ppo_attn" and label else r for r in rows]
    rows = [r for r in rows if r["seed"] in args.seeds]  # the tasks' rows only: entries are per (algo, task)
    prefix = args.out.stem if args.observations == "plain" else f"{args.out.stem}_{args.observations}_observations"
    prefix += "_tuned" if args.tuned else ""
    print(report.aggregate(rows, args.out.parent, prefix=prefix, decimals=2))


if __name__ == "__main__":
    main()

"""An Optuna study through rl-zoo3 (``attn-zoo train -optimize``): several workers on one shared study (an Optuna
journal file), each its own process with its own env seed (tuning seeds, never the report's 0-4; the models
themselves are not seeded, as rl-zoo3 does), then the study's search space and every trial written to
``--out`` as JSON with the budget, seeds, versions and hardware.

The search space is ``attn-zoo``'s: rl-zoo3's PPO (or A2C) sampler plus the attention arguments
(``sb3_attn_ac.zoo.sample_attention_params``); the zoo entry's other hyperparameters stay fixed. Each trial trains
for ``--budget`` steps and is evaluated ``--evaluations`` times (``--eval-episodes`` deterministic episodes); its
value is the last evaluation's mean return, and rl-zoo3's median pruner stops trials below the median early.
Resumable: running the command again adds trials to the same study (``--storage``).

    python benchmarks/optimize.py --algo ppo_attn --env PendulumNoVel-v1 --trials-per-worker 10
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common
import optuna
import report


def export(study: optuna.Study, meta: dict) -> dict:
    """The study as JSON-ready data: ``meta``, the search space (each parameter's Optuna distribution), every trial
    (number, state, value, parameters, rl-zoo3's derived values such as ``gamma``, duration) and the five best
    completed trials."""
    space: dict[str, str] = {}
    for trial in study.trials:
        for name, distribution in trial.distributions.items():
            space[name] = optuna.distributions.distribution_to_json(distribution)
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "user_attrs": t.user_attrs,
            "duration_s": t.duration.total_seconds() if t.duration else None,
        }
        for t in study.trials
    ]
    complete = sorted((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: -t["value"])
    return {**meta, "search_space": space, "n_trials": len(trials), "best": complete[:5], "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["ppo_attn", "a2c_attn"], default="ppo_attn")
    parser.add_argument("--env", default="PendulumNoVel-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101], help="one env seed per worker")
    parser.add_argument("--trials-per-worker", type=int, default=10)
    parser.add_argument("--budget", type=float, help="timesteps per trial (default: the zoo entry's)")
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations per trial (the pruner's checkpoints)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--logs", type=Path, default=Path("logs/optuna"))
    parser.add_argument("--storage", type=Path, help="Optuna journal file (default: <logs>/<algo>_<env>.log)")
    parser.add_argument("--out", type=Path, help="default: results/optuna_<algo>_<env>.json")
    args = parser.parse_args()
    name = f"{args.algo}_{args.env}"
    storage = args.storage or args.logs / f"{name}.log"
    storage.parent.mkdir(parents=True, exist_ok=True)
    entry = report.hyperparams(args.algo, args.env)
    budget = int(args.budget or float(entry["n_timesteps"]))

    start = time.perf_counter()
    workers, logs = [], []
    for seed in args.seeds:
        command = [sys.executable, "-m", "sb3_attn_ac.zoo", "train", "--algo", args.algo, "--env", args.env,
                   "-optimize", "--n-trials", str(args.trials_per_worker), "--storage", str(storage), "--study-name",
                   name, "--seed", str(seed), "-n", str(budget), "--n-evaluations", str(args.evaluations),
                   "--eval-episodes", str(args.eval_episodes), "-f", str(args.logs / f"seed{seed}"),
                   "--verbose", "0"]  # fmt: skip
        logs.append((args.logs / f"{name}_seed{seed}.out").open("w"))
        workers.append(subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=logs[-1], stderr=logs[-1]))
    for worker, log in zip(workers, logs, strict=True):
        worker.wait()
        log.close()
        if worker.returncode != 0:
            raise SystemExit(f"a worker failed (exit {worker.returncode}); see {args.logs}/{name}_seed*.out")
    wall = time.perf_counter() - start

    backend = optuna.storages.journal.JournalFileBackend(str(storage))
    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))
    meta = {"algo": args.algo, "env": args.env, "seeds": args.seeds, "workers": len(args.seeds), "budget": budget,
            "evaluations": args.evaluations, "eval_episodes": args.eval_episodes, "entry": report.config(entry),
            "wall_s_last_session": wall,
            "environment": common.environment()}  # fmt: skip
    result = export(study, meta)
    out = args.out or report.RESULTS / f"optuna_{name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    for trial in result["best"]:
        print(f"trial {trial['number']}: {trial['value']:.1f} {trial['params']}")
    print(f"{result['n_trials']} trials in {out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()

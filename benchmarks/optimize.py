"""An Optuna study through rl-zoo3 (``attn-zoo train -optimize``): several workers on one shared study (an Optuna
journal file), each its own process with its own env seed (tuning seeds, never the report's 0-4; the models
themselves are not seeded, as rl-zoo3 does), then the study's search space and every trial written to
``--out`` as JSON with the budget, seeds, versions and hardware.

The search space is ``attn-zoo``'s (``--search-space``): ``zoo``, rl-zoo3's PPO (or A2C) sampler plus the attention
arguments (``sb3_attn_ac.zoo.sample_attention_params``), ``attention``, the attention arguments alone, or ``rl``,
the RL settings alone (``sb3_attn_ac.zoo.RL_SPACES``); the zoo entry's other hyperparameters stay fixed. Each
trial trains ``--runs-per-trial`` times (env seeds the worker's seed, seed + 1, ...) for ``--budget`` steps, each
run evaluated ``--evaluations`` times (``--eval-episodes`` deterministic episodes); its value is the mean of the
runs' last evaluations. rl-zoo3's median pruner (``--pruner median``, the default) stops trials below the median
early, on their first run's evaluations; ``--pruner none`` runs every trial to the end. In the ``attention`` and
``rl`` spaces a new study's first trial is the entry's own values, so the entry is measured beside the trials on
the same seeds.
Resumable: running the command again adds trials to the same study (``--storage``).

    python benchmarks/optimize.py --algo ppo_attn --env PendulumNoVel-v1 --trials-per-worker 10
    python benchmarks/optimize.py --env PendulumNoVel-v1 --search-space attention --runs-per-trial 3 \\
        --seeds 100 110 --trials-per-worker 10 --name attention3
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

from sb3_attn_ac import zoo


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


def study_name(algo: str, env_id: str, suffix: str | None = None) -> str:
    """The study's name, ``<algo>_<env>[_<suffix>]`` (its journal is ``<name>.log``, its export
    ``results/optuna_<name>.json``).

    :param algo: ``ppo_attn`` or ``a2c_attn``
    :param env_id: the study's env
    :param suffix: ``--name``, to keep several studies of one (algo, env)
    """
    return f"{algo}_{env_id}" + (f"_{suffix}" if suffix else "")


def entry_params(search_space: str, algo: str, entry: dict) -> dict:
    """The entry's own values of a search space's parameters (the algorithm's defaults where it sets none).

    :param search_space: ``attention`` or ``rl``
    :param algo: ``ppo_attn`` or ``a2c_attn``
    :param entry: the algorithm's zoo entry
    """
    space = zoo.ATTENTION_SPACE if search_space == "attention" else zoo.RL_SPACES[algo]
    values = {**{k: p.default for k, p in report.constructor_defaults(algo).items()}, **entry}
    if search_space == "rl":  # an entry's "lin_<value>" is the space's learning rate and schedule
        values = zoo.rl_params(values)
    params = {k: values[k] for k in space}
    outside = {k: v for k, v in params.items() if v not in space[k]}
    if outside:
        raise SystemExit(f"the entry's {outside} lie outside the {search_space} search space {space}")
    return params


def enqueue_entry(storage: Path, name: str, algo: str, entry: dict, search_space: str = "attention") -> None:
    """Make a new study's first trial the entry's own values of the search space's parameters, so the study
    measures the entry beside its trials, on the same seeds.

    :param storage: the study's Optuna journal file
    :param name: study name
    :param algo: ``ppo_attn`` or ``a2c_attn``
    :param entry: the algorithm's zoo entry for the study's env
    :param search_space: ``attention`` or ``rl``
    """
    backend = optuna.storages.journal.JournalFileBackend(str(storage))
    study = optuna.create_study(
        storage=optuna.storages.JournalStorage(backend), study_name=name, direction="maximize", load_if_exists=True
    )
    if not study.trials:
        study.enqueue_trial(entry_params(search_space, algo, entry))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["ppo_attn", "a2c_attn"], default="ppo_attn")
    parser.add_argument("--env", default="PendulumNoVel-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101], help="one env seed per worker")
    parser.add_argument("--trials-per-worker", type=int, default=10)
    parser.add_argument("--runs-per-trial", type=int, default=1, help="seeds per trial (see attn-zoo's --runs-per-trial)")
    parser.add_argument("--search-space", choices=zoo.SEARCH_SPACES, default="zoo")
    parser.add_argument("--name", help="study name suffix: the study is <algo>_<env>[_<name>]")
    parser.add_argument("--budget", type=float, help="timesteps per trial (default: the zoo entry's)")
    parser.add_argument("--pruner", choices=["median", "none"], default="median", help="rl-zoo3's --pruner")
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations per trial (the pruner's checkpoints)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--logs", type=Path, default=Path("logs/optuna"))
    parser.add_argument("--storage", type=Path, help="Optuna journal file (default: <logs>/<algo>_<env>.log)")
    parser.add_argument("--out", type=Path, help="default: results/optuna_<algo>_<env>.json")
    args = parser.parse_args()
    name = study_name(args.algo, args.env, args.name)
    storage = args.storage or args.logs / f"{name}.log"
    storage.parent.mkdir(parents=True, exist_ok=True)
    entry = report.hyperparams(args.algo, args.env)
    budget = int(args.budget or float(entry["n_timesteps"]))
    if args.search_space != "zoo":
        enqueue_entry(storage, name, args.algo, entry, args.search_space)

    start = time.perf_counter()
    workers, logs = [], []
    for seed in args.seeds:
        command = [sys.executable, "-m", "sb3_attn_ac.zoo", "train", "--algo", args.algo, "--env", args.env,
                   "-optimize", "--n-trials", str(args.trials_per_worker), "--storage", str(storage), "--study-name",
                   name, "--seed", str(seed), "-n", str(budget), "--n-evaluations", str(args.evaluations),
                   "--eval-episodes", str(args.eval_episodes), "-f", str(args.logs / f"{name}_seed{seed}"),
                   "--runs-per-trial", str(args.runs_per_trial), "--search-space", args.search_space,
                   "--pruner", args.pruner, "--verbose", "0"]  # fmt: skip
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
            "space": args.search_space, "runs_per_trial": args.runs_per_trial, "pruner": args.pruner,
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

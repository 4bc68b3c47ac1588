"""RLlib PPO with the attention module (sb3_attn_ac.rllib, actor context on) against RLlib PPO with its own LSTM
(``use_lstm``) on CartPoleNoVel-v1 (rl-zoo3: velocities hidden) and POPGym's RepeatPreviousEasy, same budget and
the same PPO settings for both: those of RLlib's own LSTM example on a velocity-less CartPole
(``ray/rllib/examples/connectors/prev_actions_prev_rewards.py``: lr 3e-4, 6 epochs, train batch 4000,
vf_loss_coeff 0.01, LSTM max_seq_len 20 behind a linear 32-unit layer), minibatches of 128, one env runner with
8 envs. Our module keeps the package defaults (context 16, 1 layer, d_model 32, ct_coef 0.1).

Evaluation: 10 deterministic episodes (``explore=False``) every 10% of the budget on the local env runner.
Resumable: every finished (algo, env, seed) is one JSON line in ``--out``, with hyperparameters, versions and wall
time; aggregation (IQM, bootstrap CIs, curves) as ``report.py``.

``--throughput`` measures env steps per second with 1, 2 and 4 env runners on this machine, of whole training
iterations (sampling, then the update on one learner) and of sampling alone (one JSON line per count and algorithm
in ``--throughput-out``).

    python benchmarks/rllib.py --seeds 0 1 2
    python benchmarks/rllib.py --throughput
    python benchmarks/rllib.py --aggregate-only
"""

import argparse
import os
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path

import common  # one torch thread; must come first
import gymnasium as gym
import numpy as np
import ray
import report
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MEAN,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)
from ray.tune.registry import register_env

from sb3_attn_ac.rllib import attn_ppo_config, register_gym_env


def make_popgym_env(env_config: dict, env_id: str) -> gym.Env:
    """A POPGym env, observations flattened (one-hot, as float32: RLlib's own encoders take floats), in any process."""
    import popgym  # noqa: F401  (registers its envs)

    return gym.wrappers.DtypeObservation(gym.wrappers.FlattenObservation(gym.make(env_id, **dict(env_config))), np.float32)


def register(env_id: str) -> None:
    """Register ``env_id`` with RLlib so that every env runner makes it."""
    if env_id.startswith("popgym-"):
        register_env(env_id, partial(make_popgym_env, env_id=env_id))
    else:  # rl-zoo3's NoVel envs
        register_gym_env(env_id, imports=["rl_zoo3.import_envs"])


BUDGET = {"CartPoleNoVel-v1": 2e5, "popgym-RepeatPreviousEasy-v0": 2e5}
PPO = dict(lr=3e-4, num_epochs=6, train_batch_size_per_learner=4000, minibatch_size=128, vf_loss_coeff=0.01)
LSTM_MODEL = dict(use_lstm=True, max_seq_len=20, fcnet_hiddens=[32], fcnet_activation="linear")
ALGOS = ("rllib_attn_ppo", "rllib_ppo_lstm")


def make_config(algo: str, env_id: str, n_env_runners: int = 1, seed: int = 0) -> PPOConfig:
    """The PPO config of ``algo`` (our module with actor context, or RLlib's LSTM) on ``env_id``."""
    if algo == "rllib_attn_ppo":
        config = attn_ppo_config(actor_context=True)
    else:
        config = PPOConfig().rl_module(model_config=DefaultModelConfig(**LSTM_MODEL))
    return (
        config.environment(env_id)
        .env_runners(num_env_runners=n_env_runners, num_envs_per_env_runner=8, create_env_on_local_worker=True)
        .training(**PPO)
        .evaluation(
            evaluation_num_env_runners=0,
            evaluation_duration=10,
            evaluation_duration_unit="episodes",
            evaluation_config=PPOConfig.overrides(explore=False),
        )
        .debugging(seed=seed)
    )


def hyperparams(algo: str) -> dict[str, str]:
    """The settings a row records."""
    model = {"actor_context": True} if algo == "rllib_attn_ppo" else LSTM_MODEL
    return report.config({**PPO, **model, "num_envs_per_env_runner": 8})


def versions() -> dict:
    """Machine and versions, with Ray's."""
    return {**common.environment(), "ray": version("ray")}


def run(algo: str, env_id: str, seed: int, budget: int, evaluations: int = 10) -> dict:
    """Train until ``budget`` env steps, evaluating every ``budget / evaluations`` steps; one result row."""
    algo_obj = make_config(algo, env_id, seed=seed).build_algo()
    timesteps, eval_mean, steps, next_eval = [], [], 0, budget / evaluations
    start = time.perf_counter()
    try:
        while steps < budget:
            steps = algo_obj.train()[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
            if steps >= next_eval or steps >= budget:
                result = algo_obj.evaluate()
                timesteps.append(int(steps))
                eval_mean.append(float(result[ENV_RUNNER_RESULTS][EPISODE_RETURN_MEAN]))
                next_eval += budget / evaluations
                print(f"  {algo} {env_id} seed {seed}: {steps} steps, evaluation {eval_mean[-1]:.2f}", flush=True)
    finally:
        algo_obj.stop()
    return {
        "algo": algo,
        "env": env_id,
        "seed": seed,
        "budget": budget,
        "timesteps": timesteps,
        "eval_mean": eval_mean,
        "eval_episodes": 10,
        "wall_s": time.perf_counter() - start,
        "hyperparams": hyperparams(algo),
        "environment": versions(),
    }


def throughput(algo: str, env_id: str, n_env_runners: int, iterations: int) -> dict:
    """Env steps per second with ``n_env_runners``: of whole training iterations (sampling, then the update on one
    learner; after one warm-up iteration), and of sampling alone (every env runner sampling 2,000 steps at once)."""
    algo_obj = make_config(algo, env_id, n_env_runners).build_algo()
    try:
        first = algo_obj.train()[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
        start = time.perf_counter()
        for _ in range(iterations):
            last = algo_obj.train()[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
        wall = time.perf_counter() - start
        start = time.perf_counter()
        chunks = algo_obj.env_runner_group.foreach_env_runner(
            lambda runner: sum(len(e) for e in runner.sample(num_timesteps=2000, random_actions=False)),
            local_env_runner=False,
        )
        sampling = sum(chunks) / (time.perf_counter() - start)
    finally:
        algo_obj.stop()
    return {
        "algo": algo,
        "env": env_id,
        "env_runners": n_env_runners,
        "iterations": iterations,
        "env_steps": int(last - first),
        "wall_s": wall,
        "env_steps_per_s": (last - first) / wall,
        "sampling_env_steps_per_s": sampling,
        "hyperparams": hyperparams(algo),
        "environment": versions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(BUDGET))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, help="env steps per run (default: per env, BUDGET)")
    parser.add_argument("--evaluations", type=int, default=10)
    parser.add_argument("--out", type=Path, default=report.RESULTS / "rllib.jsonl")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--throughput", action="store_true", help="env steps/s with 1, 2 and 4 env runners")
    parser.add_argument("--env-runners", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per throughput measurement")
    parser.add_argument("--throughput-out", type=Path, default=report.RESULTS / "rllib_throughput.jsonl")
    args = parser.parse_args()

    if not args.aggregate_only:
        # Logical CPUs for every env runner and the driver, even where that oversubscribes the cores.
        n_cpus = max(os.cpu_count() or 1, max(args.env_runners) + 1)
        ray.init(num_cpus=n_cpus, include_dashboard=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        for env_id in args.envs:
            register(env_id)
    if args.throughput:
        for n in args.env_runners:
            for algo in args.algos:
                row = throughput(algo, args.envs[0], n, args.iterations)
                report.append_row(args.throughput_out, row)
                print(
                    f"{algo} {row['env']} {n} env runner(s): {row['env_steps_per_s']:.0f} env steps/s (sampling "
                    f"alone {row['sampling_env_steps_per_s']:.0f})",
                    flush=True,
                )
        return
    rows = list({(r["algo"], r["env"], r["seed"]): r for r in report.read_rows(args.out)}.values())
    if not args.aggregate_only:
        done = {(r["algo"], r["env"], r["seed"]) for r in rows}
        for env_id in args.envs:
            budget = int(args.budget or BUDGET[env_id])
            for algo in args.algos:
                for seed in args.seeds:
                    if (algo, env_id, seed) in done:
                        continue
                    row = run(algo, env_id, seed, budget, args.evaluations)
                    rows.append(row)
                    report.record_run(args.out, row, f"{algo} {env_id} seed {seed}", decimals=2)
    popgym = any(r["env"].startswith("popgym-") for r in rows)
    print(report.aggregate(rows, args.out.parent, prefix="rllib", decimals=2 if popgym else 0))


if __name__ == "__main__":
    main()

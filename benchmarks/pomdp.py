"""Partially observed tasks (rl-zoo3's NoVel envs: velocities hidden): AttnPPO with actor context against
RecurrentPPO (sb3-contrib, LSTM) and PPO, each with the same rl-zoo3 hyperparameters (RecurrentPPO's tuned
``ppo_lstm.yml`` entries: n_envs, n_steps, batch size, epochs, gamma, GAE lambda, learning rate, clip range,
gSDE, normalisation, net_arch), at 1e5 steps. LunarLanderNoVel-v3 needs Box2D (``pip install -e ".[box2d]"``).

Each (algo, env, seed) run appends one JSON line to ``--out`` (finished runs are skipped, so it resumes):
the mean/std of 20 deterministic evaluation episodes, training FPS, wall time, versions and hardware.
``--fps`` instead measures training FPS of the three algorithms side by side (alternating, short runs).

    python benchmarks/pomdp.py --algos attn_ppo --envs CartPoleNoVel-v1 PendulumNoVel-v1 --seeds 0 1 2
    python benchmarks/pomdp.py --fps
"""

import argparse
import inspect
import json
import statistics
import time
from pathlib import Path

import common  # one torch thread; must come first
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
from rl_zoo3.utils import get_callback_list, linear_schedule
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from sb3_attn_ac import AttnPPO

# rl-zoo3 2.9 ppo_lstm.yml (tuned for RecurrentPPO); the other algorithms reuse them unchanged.
ZOO = {
    "CartPoleNoVel-v1": dict(
        n_envs=8,
        kwargs=dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=linear_schedule(1e-3),
            clip_range=linear_schedule(0.2),
        ),
        policy_kwargs=dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64])),
    ),
    "PendulumNoVel-v1": dict(
        n_envs=4,
        kwargs=dict(
            n_steps=1024,
            batch_size=128,  # RecurrentPPO's default, which the zoo entry keeps
            gae_lambda=0.95,
            gamma=0.9,
            n_epochs=10,
            ent_coef=0.0,
            learning_rate=1e-3,
            clip_range=0.2,
            use_sde=True,
            sde_sample_freq=4,
        ),
        policy_kwargs=dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64])),
    ),
    "MountainCarContinuousNoVel-v0": dict(
        n_envs=8,
        kwargs=dict(
            n_steps=1024,
            batch_size=256,
            gae_lambda=0.9,
            gamma=0.9999,
            n_epochs=10,
            ent_coef=0.00429,
            learning_rate=7.77e-05,
            clip_range=0.1,
            max_grad_norm=5,
            vf_coef=0.19,
            use_sde=True,
            sde_sample_freq=8,
        ),
        policy_kwargs=dict(log_std_init=0.0, ortho_init=False, net_arch=dict(pi=[64], vf=[64])),
        lstm_hidden_size=32,
    ),
    "LunarLanderNoVel-v3": dict(  # the zoo's LunarLanderNoVel-v2 entry; Box2D: pip install -e ".[box2d]"
        n_envs=32,
        kwargs=dict(n_steps=512, batch_size=128, gae_lambda=0.98, gamma=0.999, n_epochs=4, ent_coef=0.01),
        policy_kwargs=dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64])),
    ),
}


def attn_args(env_id: str) -> dict:
    """The arguments of AttnPPO's zoo entry for ``env_id`` that PPO does not take (actor context, the previous
    action, the transformer's).

    :param env_id: one of ``ZOO``'s envs
    """
    ppo = inspect.signature(PPO).parameters
    ours = report.constructor_defaults("ppo_attn")
    return {k: v for k, v in report.hyperparams("ppo_attn", env_id).items() if k in ours and k not in ppo}


def attn_overrides(env_id: str) -> dict:
    """The RL settings AttnPPO's zoo entry changes from the shared ones (README "Ablations"): on CartPoleNoVel-v1
    advantages left unnormalised, on PendulumNoVel-v1 the learning rate annealed and gamma 0.99, GAE lambda 0.9, clip
    range 0.1. They are the PPO arguments of ``hyperparams/ppo_attn.yml``'s entry whose value differs from
    RecurrentPPO's rl-zoo3 entry (from ``ZOO``'s where that entry leaves one to the default), rl-zoo3's
    ``lin_<value>`` as its linear schedule.

    :param env_id: one of ``ZOO``'s envs
    """
    ppo = inspect.signature(PPO).parameters
    theirs = {**ZOO[env_id]["kwargs"], **report.hyperparams("ppo_lstm", env_id)}
    out = {}
    for key, value in report.hyperparams("ppo_attn", env_id).items():
        start = report.linear_start(value)
        if key not in ppo or key in ("policy", "policy_kwargs"):
            continue
        if start is None and theirs.get(key) != value:
            out[key] = value
        elif start is not None and report.linear_start(theirs.get(key)) != start:
            out[key] = linear_schedule(start)
    return out


def make_model(algo: str, env_id: str, seed: int, n_envs: int | None = None):
    spec = ZOO[env_id]
    kwargs, policy_kwargs = dict(spec["kwargs"]), dict(spec["policy_kwargs"])
    if algo == "attn_ppo":
        kwargs.update(attn_overrides(env_id))
    env = VecNormalize(make_vec_env(env_id, n_envs=n_envs or spec["n_envs"], seed=seed), gamma=kwargs["gamma"])
    if algo == "attn_ppo":
        return AttnPPO("MlpPolicy", env, seed=seed, policy_kwargs=policy_kwargs, **kwargs, **attn_args(env_id))
    if algo == "recurrent_ppo":
        lstm = dict(lstm_hidden_size=spec.get("lstm_hidden_size", 64), enable_critic_lstm=True)
        return RecurrentPPO("MlpLstmPolicy", env, seed=seed, policy_kwargs={**policy_kwargs, **lstm}, **kwargs)
    return PPO("MlpPolicy", env, seed=seed, policy_kwargs=policy_kwargs, **kwargs)


def attn_config(env_id: str) -> dict:
    """What a result row records of AttnPPO's settings on ``env_id``."""
    config = {"attn": attn_args(env_id), "attn_overrides": attn_overrides(env_id)}
    return json.loads(json.dumps(config, default=repr))  # schedules by their repr


def train_and_evaluate(algo: str, env_id: str, seed: int, timesteps: int) -> dict:
    model = make_model(algo, env_id, seed)
    # AttnPPO's entry's callbacks as rl-zoo3 builds them (CartPoleNoVel-v1's statistics frozen at half its budget).
    callbacks = get_callback_list(report.hyperparams("ppo_attn", env_id)) if algo == "attn_ppo" else []
    start = time.perf_counter()
    model.learn(timesteps, callback=callbacks)
    wall = time.perf_counter() - start
    env = model.get_env()
    env.training, env.norm_reward = False, False
    mean, std = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)
    return {"algo": algo, "env": env_id, "seed": seed, "timesteps": timesteps, "eval_mean": float(mean),
            "eval_std": float(std), "eval_episodes": 20, "fps": timesteps / wall, "wall_s": wall}  # fmt: skip


def fps_side_by_side(env_id: str, algos: list[str], steps: int, rounds: int) -> dict[str, float]:
    """Median training FPS of each algorithm over alternating short runs of ``steps`` steps (same process, same
    machine load)."""
    fps: dict[str, list[float]] = {a: [] for a in algos}
    for round_ in range(rounds + 1):  # round 0 warms up
        for algo in algos:
            model = make_model(algo, env_id, seed=round_)
            start = time.perf_counter()
            model.learn(steps)
            if round_:
                fps[algo].append(steps / (time.perf_counter() - start))
    return {a: statistics.median(v) for a, v in fps.items()}


def summary(path: Path) -> str:
    """Markdown table of the runs and the latest side-by-side FPS in ``path``."""
    rows = report.read_rows(path)
    runs = [r for r in rows if r.get("kind") == "run"]
    fps = {r["env"]: r["fps"] for r in rows if r.get("kind") == "fps"}  # the latest measurement per env
    lines = ["| env | algorithm | evaluation return per seed | mean | training FPS (side by side) | FPS vs RecurrentPPO |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for env_id in dict.fromkeys(r["env"] for r in runs):
        for algo in dict.fromkeys(r["algo"] for r in runs if r["env"] == env_id):
            mine = sorted((r for r in runs if r["env"] == env_id and r["algo"] == algo), key=lambda r: r["seed"])
            returns = [r["eval_mean"] for r in mine]
            speed = fps.get(env_id, {}).get(algo)
            ratio = speed / fps[env_id]["recurrent_ppo"] if speed and "recurrent_ppo" in fps.get(env_id, {}) else None
            per_seed = ", ".join(f"{x:.0f}" for x in returns)
            seeds = ", ".join(str(r["seed"]) for r in mine)
            lines.append(
                f"| {env_id} | {algo} | {per_seed} (seeds {seeds}) | {statistics.mean(returns):.0f} "
                f"| {speed and round(speed)} | {ratio and f'{ratio:.1f}x'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["attn_ppo", "recurrent_ppo", "ppo"])
    parser.add_argument(
        "--envs", nargs="+", choices=list(ZOO), help="default: every env with --fps, else CartPoleNoVel-v1 PendulumNoVel-v1"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--fps", action="store_true", help="only measure training FPS side by side")
    parser.add_argument("--fps-steps", type=int, default=8192, help="steps per FPS run (at least two rollouts)")
    parser.add_argument("--summary", action="store_true", help="print the results table from --out and exit")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pomdp.jsonl")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.summary:
        print(summary(args.out))
        return

    envs = args.envs or (list(ZOO) if args.fps else ["CartPoleNoVel-v1", "PendulumNoVel-v1"])
    if args.fps:
        for env_id in envs:
            steps = max(args.fps_steps, 2 * ZOO[env_id]["n_envs"] * ZOO[env_id]["kwargs"]["n_steps"])  # 2 rollouts
            fps = fps_side_by_side(env_id, args.algos, steps, rounds=3)
            row = {"kind": "fps", "env": env_id, "steps": steps, "fps": fps, "attn_config": attn_config(env_id),
                   "environment": common.environment()}  # fmt: skip
            print(json.dumps(row))
            report.append_row(args.out, row)
        return

    rows = report.read_rows(args.out)
    done = {(r["algo"], r["env"], r["seed"], r["timesteps"]) for r in rows if r.get("kind") == "run"}
    for env_id in envs:
        for algo in args.algos:
            for seed in args.seeds:
                if (algo, env_id, seed, args.timesteps) in done:
                    continue
                row = {"kind": "run", **train_and_evaluate(algo, env_id, seed, args.timesteps)}
                row["config"] = attn_config(env_id) if algo == "attn_ppo" else {}
                row["environment"] = common.environment()
                print(json.dumps({k: v for k, v in row.items() if k != "environment"}), flush=True)
                report.append_row(args.out, row)


if __name__ == "__main__":
    main()

"""Ablations of AttnPPO (or, with ``--algo a2c_attn``, AttnA2C) on the partially observed tasks: each variant changes
one thing in the algorithm's rl-zoo3 entry (``hyperparams/ppo_attn.yml``, ``a2c_attn.yml``) and is trained and
evaluated exactly as ``report.py`` does (``attn-zoo train``) with the same final evaluation (10 deterministic
episodes at the end of the budget; no intermediate evaluations, which do not change training). The ``default``
variant is the entry unchanged, run in the same script with the same seeds.

Variants: the position encoding of sb3-attn-ac 0.1 (``position_encoding=absolute``: a sinusoidal embedding of the
episode step instead of per-head offset biases and a start embedding); RecurrentPPO's tuned learning rate ("constant
learning rate": 3e-4 on CartPoleNoVel, 1e-3 on PendulumNoVel, where the entries now anneal ``lin_1e-3``); an actor
transformer of its own or the critic's and the previous action in every token or not (``shared_transformer``,
``prev_action``, each flipped from the entry's); PPO's update size (``target_kl=0.02``, half or twice the entry's
``n_epochs``, twice its learning rate, a quarter of its ``n_steps``), an entropy bonus (``ent_coef=0.01``) and
advantages left unnormalised (``normalize_advantage=False``); the contrastive loss off (``ct_coef=0``); a context-free
critic and actor (``context_len=1``) or a short window (``context_len=4``); the last two observations stacked in each token
(``frame_stack=2``); a deeper or wider transformer (``n_layers=2``, ``d_model=64``); a second hidden layer in the
actor's MLP (``pi=[64, 64]`` where the entry has RecurrentPPO's ``pi=[64]``); the issue-6 options: Q_att action
preferences (``q_att_coef=1``, Discrete actions only), the masked next-state and reward-to-go heads
(``next_state_coef=rtg_coef=0.1``), N-trajectory rollouts (``n_episodes=n_envs``), and raw observations where the
entry normalises them (``raw observations``: VecNormalize scales the returns only) or its statistics frozen after half
the budget (``freeze normalization at half``, ``sb3_attn_ac.callbacks.FreezeNormalization``). Resumable: every finished run is
a JSON line in ``--out`` with its hyperparameters, package version and commit; a variant's run is the row of the
installed version and gymnasium with the same env, seed and hyperparameters (whatever the variant was called when it
ran; a hyperparameter set to the algorithm's default counts as left out), so a changed entry runs again (``--version`` /
``--gymnasium`` show other versions' rows: the same seed gives another run under another gymnasium).

    python benchmarks/ablations.py --seeds 0 1 2
    python benchmarks/ablations.py --variants default position_encoding=absolute --seeds 100 101 102
    python benchmarks/ablations.py --aggregate-only
    python benchmarks/ablations.py --envs PendulumNoVel-v1 --optuna-trials 11 8 --seeds 102 103 104
    python benchmarks/ablations.py --envs LunarLanderNoVel-v3 --budget 2e5 --variants default prev_action=True

``--budget`` trains every run for that many timesteps instead of the entry's ``n_timesteps`` (rows record it).
A variant named ``KEY=VALUE`` that the list above does not hold sets that hyperparameter (``gamma=0.98``; several,
space-separated, in one variant: ``"n_epochs=20 gamma=0.99"``).
``--eval-episodes`` sets the size of the final evaluation (rows record it, and a run counts only for its size): a
10-episode mean of a near-solved swing-up moves by about 50 with the start states it draws, more than the
differences the PendulumNoVel variants make (``pendulum_failures.py``). ``--algo ppo_lstm`` (``ppo``, ``a2c``) runs
RecurrentPPO's (PPO's, A2C's) own rl-zoo3 entry the same way, ``default`` and ``KEY=VALUE`` variants only: a baseline
measured with the same evaluation.

    python benchmarks/ablations.py --envs PendulumNoVel-v1 --seeds 103 104 105 106 107 --variants default \
        gamma=0.98 --eval-episodes 100 --out benchmarks/results/pendulum_eval100.jsonl
    python benchmarks/ablations.py --algo ppo_lstm --envs PendulumNoVel-v1 --seeds 103 104 105 106 107 \
        --variants default --eval-episodes 100 --out benchmarks/results/pendulum_eval100.jsonl

``--optuna-trials`` adds, as variants named ``optuna trial <N>``, trials of the study that ``optimize.py`` exported
(``results/optuna_<algo>_<env>[_<--optuna-study>].json``): the trial's hyperparameters as rl-zoo3's ``-optimize``
trained it (its sampled values over the entry; in rl-zoo3's search space the sampler's ``policy_kwargs`` replace the
entry's).

    python benchmarks/ablations.py --envs PendulumNoVel-v1 --optuna-study attention3 --optuna-trials 5 --seeds 103 104
"""

import argparse
import json
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import gymnasium as gym
import optimize
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
import yaml
from gymnasium import spaces

import sb3_attn_ac
from sb3_attn_ac import zoo

DEFAULT_LEARNING_RATE = {"ppo_attn": 3e-4, "a2c_attn": 7e-4}  # PPO's and A2C's
BASELINES = ("ppo_lstm", "ppo", "a2c")  # rl-zoo3's own entries: the default and KEY=VALUE variants only


def run_key(
    algo: str, env_id: str, seed: int, hyperparams: dict[str, str], eval_episodes: int = 10
) -> tuple[str, int, str, int]:
    """What identifies a run: env, seed, the hyperparameters as rows record them (:func:`canonical`), less those set
    to the algorithm's own default (an entry that spells out a default trains exactly as one that leaves it out), and
    the number of final evaluation episodes."""
    defaults = report.constructor_defaults(algo)
    kept = {k: canonical(v) for k, v in hyperparams.items() if k not in defaults or str(defaults[k].default) != v}
    return env_id, seed, json.dumps(kept, sort_keys=True), eval_episodes


def canonical(value: str) -> str:
    """One spelling of a recorded hyperparameter: rl-zoo3's linear schedule with the value as Python writes the float
    (``lin_7e-4`` and ``lin_0.0007`` are one schedule)."""
    start = report.linear_start(value)
    return value if start is None else f"lin_{start}"


def doubled(learning_rate: float | str) -> float | str:
    """Twice a learning rate of an entry, constant or rl-zoo3's linear schedule."""
    start = report.linear_start(learning_rate)
    return 2 * float(learning_rate) if start is None else f"lin_{2 * start}"


def variants(entry: dict, env_id: str, algo: str = "ppo_attn") -> dict[str, dict]:
    """Each ablation's hyperparameter overrides of ``algo``'s entry for ``env_id`` (Q_att only for Discrete
    actions; PPO's update-size variants only for AttnPPO)."""
    normalize_advantage = str(entry.get("normalize_advantage", algo == "ppo_attn")) == "True"
    learning_rate = entry.get("learning_rate", DEFAULT_LEARNING_RATE[algo])
    shared = str(entry.get("shared_transformer", True)) == "True"
    normalized = str(entry.get("normalize")) == "True"
    out = {
        "default": {},
        "position_encoding=absolute": dict(position_encoding="absolute"),
        f"shared_transformer={not shared}": dict(shared_transformer=not shared),
        f"prev_action={not entry.get('prev_action', False)}": dict(prev_action=not entry.get("prev_action", False)),
        "ent_coef=0.01": dict(ent_coef=0.01),
        # Advantages normalised or not: once every episode reaches the time limit the advantages are near zero, and
        # per-minibatch normalisation scales that noise up to unit size.
        f"normalize_advantage={not normalize_advantage}": dict(normalize_advantage=not normalize_advantage),
        # A constant learning rate annealed linearly to 0 over the budget (rl-zoo3's lin_ schedule):
        "annealed learning rate": dict(
            learning_rate=None if report.linear_start(learning_rate) is not None else f"lin_{learning_rate}"
        ),
        "learning rate doubled": dict(learning_rate=doubled(learning_rate)),
        "ct_coef=0": dict(ct_coef=0.0),
        "context_len=1": dict(context_len=1),
        # A short window: PendulumNoVel's velocity is the last step's angle difference (semi-implicit Euler).
        "context_len=4": dict(context_len=4),
        # The last two observations in every token (rl-zoo3's VecFrameStack): the velocity without memory.
        "frame_stack=2": dict(frame_stack=2),
        # Capacity: PendulumNoVel's velocity is a product of consecutive steps' (cos, sin), not a difference.
        "n_layers=2": dict(n_layers=2),
        "d_model=64": dict(d_model=64),
        # The actor's capacity: RecurrentPPO's actor reads an LSTM of 256 units, ours the step's features and the
        # d_model-wide transformer output through one hidden layer.
        "actor net_arch pi=[64, 64]": dict(
            policy_kwargs=entry["policy_kwargs"].replace("pi=[64]", "pi=[64, 64]")
            if "pi=[64]" in entry.get("policy_kwargs", "")
            else None
        ),
        "next_state_coef=rtg_coef=0.1": dict(next_state_coef=0.1, rtg_coef=0.1),
        # Observations as the env gives them, returns still scaled (rl-zoo3's normalize kwargs): VecNormalize's
        # running statistics of a position follow where the policy keeps it, and keep moving after the learning
        # rate has annealed to 0.
        "raw observations": dict(normalize="{'norm_obs': False, 'norm_reward': True}" if normalized else None),
        # Or statistics that stop moving halfway through the budget.
        "freeze normalization at half": dict(
            callback=[{"sb3_attn_ac.callbacks.FreezeNormalization": {"after_steps": int(float(entry["n_timesteps"])) // 2}}]
            if normalized
            else None
        ),
        "n_episodes=n_envs": dict(n_episodes=int(entry["n_envs"])),
    }
    if algo == "ppo_attn":
        n_epochs = int(entry.get("n_epochs", 10))  # PPO's default
        out.update({
            # 0.2.0's entries before the NoVel learning rates were annealed (lin_1e-3):
            "constant learning rate": dict(learning_rate={"CartPoleNoVel-v1": 3e-4, "PendulumNoVel-v1": 1e-3}.get(env_id)),
            # PPO's update size after the task is solved (the NoVel entries' 20 epochs on 256 samples):
            "target_kl=0.02": dict(target_kl=0.02),
            "n_epochs halved": dict(n_epochs=n_epochs // 2),
            "n_epochs doubled": dict(n_epochs=n_epochs * 2),
            # Fresher data at the same number of gradient steps: a quarter of the entry's steps per rollout, four
            # times as many updates (PendulumNoVel's 4 x 1024 steps give 24 rollouts in 1e5 steps).
            "n_steps quartered": dict(n_steps=int(entry.get("n_steps", 2048)) // 4),
        })  # fmt: skip
    if isinstance(gym.make(env_id).action_space, spaces.Discrete):
        out["q_att_coef=1"] = dict(q_att_coef=1.0)
    return {name: overrides for name, overrides in out.items() if None not in overrides.values()}


def setting(name: str) -> dict[str, object]:
    """The overrides a variant named ``KEY=VALUE [KEY=VALUE ...]`` that :func:`variants` does not list makes (each
    VALUE read as YAML, as an entry's values are: ``gamma=0.98``, ``"n_epochs=20 clip_range=0.1"``).

    :param name: the variant's name
    """
    out = {}
    for part in name.split():
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"--variants: {name!r} is neither a listed variant nor KEY=VALUE [KEY=VALUE ...]")
        out[key] = yaml.safe_load(value)
    return out


def requested(names: list[str], here: dict[str, dict], elsewhere: set[str]) -> dict[str, dict]:
    """The overrides of the variants ``names`` on one env: a listed variant's, or a ``KEY=VALUE`` one's
    (:func:`setting`); a variant listed for another env of the run but not this one (Q_att on Box actions) is skipped.

    :param names: the requested variants' names
    :param here: :func:`variants` of this env
    :param elsewhere: the names :func:`variants` lists for any env of the run
    """
    return {name: here[name] if name in here else setting(name) for name in names if name in here or name not in elsewhere}


def optuna_variants(study: Path, numbers: list[int]) -> dict[str, dict]:
    """The hyperparameter overrides of trials ``numbers`` of an exported study, as ``attn-zoo -optimize`` set them
    over the entry (the study's search space's converter of sampled values; ``policy_kwargs`` written as an entry
    writes them).

    :param study: JSON file written by ``benchmarks/optimize.py``
    :param numbers: trial numbers
    """
    if not numbers:
        return {}
    exported = json.loads(study.read_text())
    trials = {t["number"]: t for t in exported["trials"]}
    missing = sorted(set(numbers) - set(trials))
    if missing:
        raise SystemExit(f"--optuna-trials: {missing} not in {study} (trials {min(trials)}-{max(trials)})")
    convert = zoo.converter(exported.get("space", "zoo"))  # studies before --search-space sampled rl-zoo3's
    out = {}
    for number in numbers:
        hyperparams = convert(trials[number]["params"])
        if "policy_kwargs" in hyperparams:
            policy_kwargs = hyperparams.pop("policy_kwargs")
            net_arch, activation = policy_kwargs["net_arch"], policy_kwargs["activation_fn"].__name__
            hyperparams["policy_kwargs"] = f"dict(net_arch={net_arch}, activation_fn=nn.{activation})"
        out[f"optuna trial {number}"] = hyperparams
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=[*zoo.ALGOS, *BASELINES], default="ppo_attn")
    parser.add_argument("--envs", nargs="+", default=["CartPoleNoVel-v1", "PendulumNoVel-v1"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", help="run only these variants (default: all); 'KEY=VALUE ...': other settings of the entry"
    )
    parser.add_argument("--optuna-trials", type=int, nargs="+", default=[], help="add these trials of the env's study")
    parser.add_argument("--optuna-study", help="the study's name suffix (optimize.py --name)")
    parser.add_argument("--budget", type=float, help="timesteps per run instead of the entries' n_timesteps")
    parser.add_argument("--eval-episodes", type=int, default=10, help="deterministic episodes of the final evaluation")
    parser.add_argument("--logs", type=Path, default=Path("logs/ablations"))
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--version", default=sb3_attn_ac.__version__, help="aggregate the rows of this package version")
    parser.add_argument("--gymnasium", default=gym.__version__, help="aggregate the rows run with this gymnasium version")
    parser.add_argument("--out", type=Path, default=report.RESULTS / "ablations.jsonl")
    args = parser.parse_args()

    rows = report.read_rows(args.out)
    algo = args.algo
    runs = {
        run_key(algo, r["env"], r["seed"], r["hyperparams"], r["eval_episodes"]): r
        for r in report.ran_under(rows, args.version, args.gymnasium)
        if r["algo"] == algo
    }
    entries = {env_id: report.hyperparams(algo, env_id) for env_id in args.envs}
    listed = {e: variants(entry, e, algo) if algo in zoo.ALGOS else {"default": {}} for e, entry in entries.items()}
    elsewhere = set().union(*listed.values())
    labelled = []
    for env_id, entry in entries.items():
        if args.budget:
            entry["n_timesteps"] = args.budget
        study = report.RESULTS / f"optuna_{optimize.study_name(algo, env_id, args.optuna_study)}.json"
        trials = optuna_variants(study, args.optuna_trials)
        chosen = requested(args.variants, listed[env_id], elsewhere) if args.variants else listed[env_id]
        for name, overrides in {**chosen, **trials}.items():
            for seed in args.seeds:
                hyperparams = {**entry, **overrides}
                row = runs.get(run_key(algo, env_id, seed, report.config(hyperparams), args.eval_episodes))
                if row is None and not args.aggregate_only:
                    logs = args.logs / algo / name.replace("=", "_").replace(" ", "_")
                    row = {"variant": name, **report.train(
                        algo, env_id, seed, logs, hyperparams, evaluations=1, eval_episodes=args.eval_episodes
                    )}  # fmt: skip
                    report.record_run(args.out, row, f"{algo} {name} {env_id} seed {seed}")
                if row is not None:
                    labelled.append({**row, "algo": f"{report.NAMES[algo]} {name}"})
    print(report.aggregate(labelled, args.out.parent, prefix=f"{args.out.stem}_{algo}"))  # plots <out name>_<algo>_<env>.png


if __name__ == "__main__":
    main()

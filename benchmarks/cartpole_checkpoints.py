"""Whether a late CartPoleNoVel-v1 collapse is in the network or in VecNormalize's running statistics: one AttnPPO run
through ``attn-zoo train`` (the entry of ``hyperparams/ppo_attn.yml``, with ``--variant`` overrides as
``ablations.py`` takes them) saving the model and its VecNormalize statistics every ``--every`` steps, then every
listed checkpoint's model plays deterministic episodes behind every listed checkpoint's statistics (frozen). A
collapse that follows the statistics (the late models hold behind earlier statistics and fail behind their own)
comes from the inputs moving under a network whose learning rate has annealed to 0, not from its last updates.

    python benchmarks/cartpole_checkpoints.py --seed 130 --models 70000 80000 90000 100000 \
        --stats 60000 80000 90000 100000

The run is kept in ``--logs``/seed<s> (trained only if absent); the statistics' cart-position mean and std are
printed beside the table.
"""

import argparse
from pathlib import Path
from typing import Any

import common  # one torch thread; must come first  # noqa: F401
import numpy as np
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
import stable_baselines3.common.callbacks as sb3_callbacks
import yaml
from ablations import setting
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_attn_ac import AttnPPO, zoo

ENV_ID = "CartPoleNoVel-v1"


def train(folder: Path, seed: int, entry: dict, every: int) -> Path:
    """Train one run of ``entry`` with checkpoints (model and VecNormalize statistics) every ``every`` steps; returns
    rl-zoo3's run folder. rl-zoo3 builds SB3's CheckpointCallback without its ``save_vecnormalize`` flag, so the
    flag's default is switched on for this process.

    :param folder: rl-zoo3's log folder (``-f``)
    :param seed: the run's seed
    :param entry: the hyperparameters
    :param every: steps between checkpoints (all envs together)
    """
    checkpoint_init = sb3_callbacks.CheckpointCallback.__init__

    def init(self: sb3_callbacks.CheckpointCallback, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_vecnormalize", True)
        checkpoint_init(self, *args, **kwargs)

    sb3_callbacks.CheckpointCallback.__init__ = init
    conf = folder / f"ppo_attn_{ENV_ID}.yml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(yaml.dump({ENV_ID: entry}))
    budget = str(int(float(entry["n_timesteps"])))
    zoo.main(["train", "--algo", "ppo_attn", "--env", ENV_ID, "--seed", str(seed), "-f", str(folder), "-conf", str(conf),
              "--eval-freq", budget, "--n-eval-envs", "1", "--verbose", "0", "--save-freq", str(every)])  # fmt: skip
    return report.latest_run(folder, ENV_ID, "ppo_attn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--variant", default="", help="KEY=VALUE [KEY=VALUE ...] overrides of the entry")
    parser.add_argument("--every", type=int, default=5000, help="steps between checkpoints")
    parser.add_argument("--models", type=int, nargs="+", required=True, help="checkpoints (steps) whose model plays")
    parser.add_argument("--stats", type=int, nargs="+", required=True, help="checkpoints (steps) whose statistics it uses")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--env-seed", type=int, default=12345, help="seed of the evaluation env (start states)")
    parser.add_argument("--logs", type=Path, default=Path("logs/checkpoints"))
    args = parser.parse_args()
    entry = {**report.hyperparams("ppo_attn", ENV_ID), **(setting(args.variant) if args.variant else {})}
    folder = args.logs / (args.variant.replace("=", "_").replace(" ", "_") or "default") / f"seed{args.seed}"
    run = report.latest_run(folder, ENV_ID, "ppo_attn") or train(folder, args.seed, entry, args.every)
    envs = {
        steps: report.frozen_statistics(run / f"rl_model_vecnormalize_{steps}_steps.pkl", ENV_ID, args.env_seed)
        for steps in args.stats
    }
    print(f"# seed {args.seed}, {args.variant or 'the entry'}: mean length of {args.episodes} deterministic episodes "
          f"(env seed {args.env_seed}), each checkpoint's model behind each checkpoint's statistics")  # fmt: skip
    for steps, env in envs.items():
        x_mean, x_std = env.obs_rms.mean[0], np.sqrt(env.obs_rms.var[0])
        print(f"statistics at {steps}: cart position mean {x_mean:+.3f}, std {x_std:.3f}")
    print("model \\ statistics " + " ".join(f"{steps:>7d}" for steps in args.stats))
    for steps in args.models:
        model = AttnPPO.load(run / f"rl_model_{steps}_steps.zip", device="cpu")
        lengths = []
        for env in envs.values():
            env.seed(args.env_seed)
            env.reset()
            lengths.append(evaluate_policy(model, env, n_eval_episodes=args.episodes, deterministic=True)[0])
        print(f"{steps:>18d} " + " ".join(f"{length:7.0f}" for length in lengths), flush=True)


if __name__ == "__main__":
    main()

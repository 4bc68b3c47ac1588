"""One AttnPPO (or, with ``--algo a2c_attn``, AttnA2C) run through rl-zoo3 exactly as ``report.py`` trains it, with SB3's
train statistics of every update (``train/approx_kl``, ``clip_fraction``, ``entropy_loss``, ``value_loss``,
``explained_variance``, ``contrastive_loss``, ...) and each head's offset biases (offsets 0-4, and the mean of the rest)
written to a CSV (``progress.csv`` in ``--logs``), and the scale of each rollout's advantages before PPO normalises
them, to see *why* a run fails: what the heads attend to, when the policy turns deterministic, whether an update jumped.
The callback only reads, so the run is the report's run (same seed, same result); evaluations every 10% of the budget as
the report's.

    python benchmarks/diagnose.py --env CartPoleNoVel-v1 --seed 101
    python benchmarks/diagnose.py --env CartPoleNoVel-v1 --seed 100 --set prev_action=false
    python benchmarks/diagnose.py --env CartPoleNoVel-v1 --seed 101 --set normalize_advantage=false
    python benchmarks/diagnose.py --algo a2c_attn --env CartPoleNoVel-v1 --seed 101
"""

import argparse
import os
import sys
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import pandas as pd
import report
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure


class TrainStatistics(BaseCallback):
    """Send SB3's logger to a CSV in ``$DIAGNOSE_DIR`` and record the offset biases after every rollout."""

    def _on_training_start(self) -> None:
        self.model.set_logger(configure(os.environ["DIAGNOSE_DIR"], ["csv"]))

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # The rollout's advantages before PPO normalises them per minibatch (SB3 computes them before this call):
        # their scale against the returns' tells how much signal the normalised ones carry.
        buffer = self.model.rollout_buffer
        self.logger.record("adv/std", float(buffer.advantages.std()))
        self.logger.record("adv/abs_mean", float(abs(buffer.advantages).mean()))
        self.logger.record("adv/return_std", float(buffer.returns.std()))
        K = self.model.context_len
        for layer, block in enumerate(self.model.policy.transformer.blocks):
            bias = block.attn.offset_bias
            if bias is None:  # position_encoding="absolute"
                continue
            causal = bias[:, K - 1 :].detach().cpu()  # (H, K): offsets 0 .. K - 1
            for head, row in enumerate(causal):
                for offset in range(min(5, K)):
                    self.logger.record(f"bias/l{layer}h{head}o{offset}", float(row[offset]))
                if K > 5:
                    self.logger.record(f"bias/l{layer}h{head}rest", float(row[5:].mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["ppo_attn", "a2c_attn"], default="ppo_attn")
    parser.add_argument("--env", default="CartPoleNoVel-v1")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], help="entry overrides, name=yaml-value")
    parser.add_argument("--logs", type=Path, default=Path("logs/diagnose"))
    args = parser.parse_args()
    entry = report.hyperparams(args.algo, args.env)
    for override in args.set:
        name, value = override.split("=", 1)
        entry[name] = yaml.safe_load(value)
    entry["callback"] = "diagnose.TrainStatistics"
    folder = args.logs / f"{args.env}_seed{args.seed}"
    os.environ["DIAGNOSE_DIR"] = str(folder.resolve())
    here = str(Path(__file__).parent.resolve())  # the zoo subprocess imports this module for the callback
    os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    row = report.train(args.algo, args.env, args.seed, folder, entry)
    print(f"evaluations every 10%: {[round(x) for x in row['eval_mean']]}", file=sys.stderr)
    table = pd.read_csv(folder / "progress.csv")
    table = table.ffill()[table["train/value_loss"].notna()]  # one row per update (biases: the rollout before it)
    columns = ["time/total_timesteps", "rollout/ep_rew_mean", "train/approx_kl", "train/entropy_loss", "train/value_loss",
               "train/explained_variance", "adv/std", "adv/return_std"]  # fmt: skip
    columns = [c for c in columns if c in table] + [c for c in table if c.startswith("bias/")]  # A2C has no approx_kl
    print(table[columns].iloc[:: max(1, len(table) // 20)].round(3).to_string())


if __name__ == "__main__":
    main()

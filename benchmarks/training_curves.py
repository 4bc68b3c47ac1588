"""Training curves of finished runs from their Monitor files: the mean return of the training episodes that ended in
each tenth of the budget, per run, and whether the curve holds (``report.holds``: every point of the last 20% within
10% of the curve's best). The ablations evaluate only at the end; a collapse and recovery between (AttnA2C pushing
one way, then learning again) shows here. Reads the folders ``report.train`` writes (``<logs>/<variant>/seed<N>/
<algo>/<env>_<run>``, the latest run of each seed).

    python benchmarks/training_curves.py logs/ablations/a2c_attn --env CartPoleNoVel-v1 --budget 5e5
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import report


def training_curve(run: Path, budget: int, points: int = 10) -> list[float]:
    """Mean return of the training episodes of ``run`` (all its envs' Monitor files) ending in each of ``points``
    equal parts of the budget (NaN where none ended)."""
    episodes = pd.concat(pd.read_csv(f, skiprows=1) for f in sorted(run.glob("*.monitor.csv"))).sort_values("t")
    ends = episodes["l"].cumsum().to_numpy()  # env steps of all envs at each episode's end (approximately: by time)
    part = np.minimum((ends - 1) * points // budget, points - 1)  # a part holds the steps (i * budget / points, ...]
    return [float(episodes["r"][part == i].mean()) if (part == i).any() else float("nan") for i in range(points)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, help="a folder of variants (ablations.py's --logs / algo)")
    parser.add_argument("--env", required=True)
    parser.add_argument("--budget", type=float, required=True, help="the runs' timesteps")
    args = parser.parse_args()
    print("| variant | seed | mean training return per tenth of the budget | holds |")
    print("| --- | --- | --- | --- |")
    for variant in sorted(p for p in args.logs.iterdir() if p.is_dir()):
        for seed_dir in sorted(variant.glob("seed*"), key=lambda p: int(p.name[4:])):
            run = report.latest_run(seed_dir, args.env)
            if run is None:
                continue
            curve = training_curve(run, int(args.budget))
            if any(np.isnan(curve)):  # an unfinished run
                continue
            points = ", ".join(f"{x:.0f}" for x in curve)
            print(f"| {variant.name} | {seed_dir.name[4:]} | {points} | {'yes' if report.holds(curve) else 'no'} |")


if __name__ == "__main__":
    main()

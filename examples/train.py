"""The main job: train AttnA2C on a task, evaluate it, and plot its learning curve.

python examples/train.py                          # CartPole-v1, 50k steps, 8 envs
python examples/train.py --env Acrobot-v1 --timesteps 100000
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_attn_ac import AttnA2C

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# One thread: on small machines torch's thread pool makes tiny networks tens of times slower.
th.set_num_threads(1)


class LearningCurve(BaseCallback):
    """Records training episode returns and a deterministic evaluation every ``eval_freq`` timesteps."""

    def __init__(self, eval_env, eval_freq: int, n_eval_episodes: int = 5) -> None:
        super().__init__()
        self.eval_env, self.eval_freq, self.n_eval_episodes = eval_env, eval_freq, n_eval_episodes
        self.episodes: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float, float]] = []
        self.next_eval = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.episodes.append((self.num_timesteps, info["episode"]["r"]))
        if self.num_timesteps >= self.next_eval:
            mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_eval_episodes)
            self.evals.append((self.num_timesteps, mean, std))
            self.next_eval += self.eval_freq
        return True


def plot(curve: LearningCurve, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if curve.episodes:
        steps, returns = np.array(curve.episodes).T
        window = max(1, len(returns) // 50)
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(steps, returns, ".", alpha=0.15, color="tab:blue", label="training episodes")
        ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"training (mean of {window})")
    steps, mean, std = np.array(curve.evals).T
    ax.plot(steps, mean, "o-", color="tab:orange", label="evaluation (deterministic)")
    ax.fill_between(steps, mean - std, mean + std, color="tab:orange", alpha=0.2)
    ax.set_xlabel("timesteps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 1000)
    model = AttnA2C("MlpPolicy", env, seed=args.seed)
    curve = LearningCurve(eval_env, eval_freq=max(args.timesteps // 10, 1))
    model.learn(args.timesteps, callback=curve, progress_bar=not args.no_progress)

    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes)
    curve.evals.append((model.num_timesteps, mean, std))
    model.save(args.out / f"attn_a2c_{args.env}")
    figure = args.out / "learning_curve.png"
    plot(curve, f"AttnA2C on {args.env} (seed {args.seed})", figure)
    print(f"AttnA2C on {args.env}: {args.timesteps} timesteps, seed {args.seed}")
    print(f"evaluation over {args.eval_episodes} deterministic episodes: {mean:.1f} ± {std:.1f}")
    print(f"learning curve: {figure}; model: {args.out / f'attn_a2c_{args.env}.zip'}")


if __name__ == "__main__":
    main()

"""Drop-in: SB3 code written for A2C, with AttnA2C in its place (CartPole-v1, 20k steps, ~5 s)."""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_attn_ac import AttnA2C

th.set_num_threads(1)  # tiny networks: one thread is fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--out", default="outputs/quickstart_attn_a2c")
    args = parser.parse_args()

    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = AttnA2C("MlpPolicy", env, seed=0, verbose=0)  # was: A2C("MlpPolicy", env, ...)
    model.learn(total_timesteps=args.timesteps, progress_bar=False)
    model.save(args.out)
    model = AttnA2C.load(args.out, env=env)
    mean, std = evaluate_policy(model, env, n_eval_episodes=10)
    print(f"AttnA2C on CartPole-v1 after {args.timesteps} steps: {mean:.1f} ± {std:.1f}")


if __name__ == "__main__":
    main()

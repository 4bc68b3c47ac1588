"""rl-zoo3 with our algorithms from Python: the same as ``attn-zoo train ...`` then ``attn-zoo enjoy ...``
(a short AttnA2C run on CartPole-v1 with our hyperparameter file, saved in rl-zoo3's layout)."""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from sb3_attn_ac import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--logs", default="outputs/zoo_logs")
    args = parser.parse_args()
    zoo.main(["train", "--algo", "a2c_attn", "--env", "CartPole-v1", "-n", str(args.timesteps), "-f", args.logs,
              "--eval-freq", "-1", "--seed", "0"])  # fmt: skip
    zoo.main(["enjoy", "--algo", "a2c_attn", "--env", "CartPole-v1", "-f", args.logs, "--no-render", "-n", "1000"])


if __name__ == "__main__":
    main()

"""Memory for the actor: AttnPPO with ``actor_context=True`` on CartPoleNoVel-v1 (velocities hidden), then a
user loop that carries the context in ``state`` exactly as with RecurrentPPO (30k steps, under a minute)."""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_attn_ac import AttnPPO

th.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=30_000)
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()

    env = make_vec_env("CartPoleNoVel-v1", n_envs=8, seed=0)
    # rl-zoo3's tuned RecurrentPPO settings for this task (learning rate 3e-4), the actor reading the episode.
    policy_kwargs = dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))
    model = AttnPPO(
        "MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, learning_rate=3e-4,
        actor_context=True, seed=0, policy_kwargs=policy_kwargs,
    )  # fmt: skip
    model.learn(args.timesteps)

    # The predict loop of a recurrent policy: state=None at the start, then the returned state, and
    # episode_start wherever an episode begins (it resets that env's context).
    eval_env = make_vec_env("CartPoleNoVel-v1", n_envs=1, seed=1)
    obs, state, episode_start = eval_env.reset(), None, np.ones(1, dtype=bool)
    returns, current = [], 0.0
    while len(returns) < args.episodes:
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        obs, reward, episode_start, _ = eval_env.step(action)
        current += float(reward[0])
        if episode_start[0]:
            returns.append(current)
            current = 0.0
    keys = state[0]
    print(f"context state: keys {keys.shape} (n_layers, n_envs, heads, context_len - 1, head width)")
    print(f"AttnPPO (actor context) on CartPoleNoVel-v1 after {args.timesteps} steps: returns {returns}")


if __name__ == "__main__":
    main()

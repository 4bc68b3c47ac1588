"""Where does the transformer look? Trains a small AttnPPO with actor context on CartPoleNoVel-v1 (or loads
``--model``), plays one episode and renders every layer's attention weights (heads x steps) as a PNG."""

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib
import numpy as np
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_attn_ac import AttnPPO

matplotlib.use("Agg")
import matplotlib.pyplot as plt

th.set_num_threads(1)


def play_episode(model: AttnPPO, env_id: str, max_steps: int) -> np.ndarray:
    env = make_vec_env(env_id, n_envs=1, seed=3)
    obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
    observations = []
    for _ in range(max_steps):
        observations.append(obs[0])
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        obs, _, start, _ = env.step(action)
        if start[0]:
            break
    return np.array(observations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="CartPoleNoVel-v1")
    parser.add_argument("--model", type=Path, help="a saved AttnA2C/AttnPPO .zip (default: train a small one)")
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=60, help="episode steps to show")
    parser.add_argument("--out", type=Path, default=Path("outputs/attention_map.png"))
    args = parser.parse_args()

    if args.model is not None:
        model = AttnPPO.load(args.model)
    else:
        env = make_vec_env(args.env, n_envs=8, seed=0)
        model = AttnPPO("MlpPolicy", env, n_steps=32, batch_size=256, n_epochs=10, learning_rate=3e-4, actor_context=True,
                        context_len=8, n_heads=2, seed=0)  # fmt: skip
        model.learn(args.timesteps)
    observations = play_episode(model, args.env, args.steps)
    weights = model.policy.attention_weights(observations)  # one (heads, T, T) tensor per layer
    layers, heads = len(weights), weights[0].shape[0]
    fig, axes = plt.subplots(layers, heads, figsize=(4 * heads, 4 * layers), squeeze=False)
    for layer, w in enumerate(weights):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(w[head].numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}")
            ax.set_xlabel("attended step")
            ax.set_ylabel("step")
    fig.suptitle(f"Attention over one {args.env} episode ({len(observations)} steps, window {model.context_len})")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"attention map of {len(observations)} steps, {layers} layer(s) x {heads} head(s): {args.out}")


if __name__ == "__main__":
    main()

"""Why CartPoleNoVel needs the previous action: a supervised probe of what observation sequences can tell.

CartPole's Euler step makes the position difference give the *previous* step's velocity; the current one adds
``tau * acceleration``, which depends on the push just applied. So (x, theta) sequences alone leave the velocity
uncertain by the last push's effect, and with the previous action it is a function of the last three steps.

The probe fits, by regression, the (standardised) cart and pole velocities from the (standardised) (x, theta)
sequence of CartPole-v1 episodes (a noisy balancing controller: 80% a PD rule, 20% random pushes; 500 training
and 100 test episodes, windows of 32 steps starting anywhere in an episode), with and without each step's
previous action (+-1, 0 at an episode's first step) in the input, for two sequence models: the package's episode
transformer (``EpisodeEncoder``: token embedding, start embedding, one block of 2 heads with offset biases,
context 16, d_model 32, then a 64-unit ReLU head) and an LSTM of 64 units with the same head. Adam, learning rate
1e-3, batches of 64 windows, 3,000 steps; R^2 on the test windows (their steps >= 2) every 500 steps. An oracle
row fits the same head on the current observation, its difference from the previous one, and (with the action)
the previous action.

    python benchmarks/velocity_probe.py
"""

import argparse
import json
import time
from pathlib import Path

import common  # one torch thread; must come first
import gymnasium as gym
import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_attn_ac.common.torch_layers import Band, EpisodeEncoder, TokenMeta

RESULTS = Path(__file__).parent / "results"
WINDOW = 32


def episodes(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` CartPole-v1 episodes as (T, 5) arrays: the 4 state variables and the previous action (+-1, 0 first)."""
    env = gym.make("CartPole-v1")
    out = []
    for i in range(n):
        obs, _ = env.reset(seed=i)
        rows, done = [np.append(obs, 0.0)], False
        while not done:
            action = int(obs[2] + 0.5 * obs[3] > 0) if rng.random() < 0.8 else int(rng.integers(2))
            obs, _, terminated, truncated, _ = env.step(action)
            rows.append(np.append(obs, 2.0 * action - 1.0))
            done = terminated or truncated
        out.append(np.array(rows, dtype=np.float32))
    return out


def windows(source: list[np.ndarray], n: int, rng: np.random.Generator) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``n`` windows of :data:`WINDOW` steps: (n, W, 5) data, (n, W) episode steps, (n, W) valid."""
    data = np.zeros((n, WINDOW, 5), np.float32)
    steps = np.zeros((n, WINDOW), np.int64)
    valid = np.zeros((n, WINDOW), bool)
    for b in range(n):
        episode = source[rng.integers(len(source))]
        start = int(rng.integers(max(1, len(episode) - WINDOW + 1))) if rng.random() < 0.7 else 0
        part = episode[start : start + WINDOW]
        data[b, : len(part)], steps[b, : len(part)], valid[b, : len(part)] = part, np.arange(start, start + len(part)), True
    return th.as_tensor(data), th.as_tensor(steps), th.as_tensor(valid)


def head(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 2))


class Transformer(nn.Module):
    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.encoder = EpisodeEncoder(inputs, 32, 1, 2, 16, 0.0, relative_positions=True)
        self.head = head(32)

    def forward(self, x: th.Tensor, steps: th.Tensor, valid: th.Tensor) -> th.Tensor:
        meta = TokenMeta(steps, th.zeros_like(steps), valid)
        tokens = self.encoder.token_embedding(x) + self.encoder.positions(steps)
        return self.head(self.encoder.transformer(tokens, Band(meta, 16)))


class LSTM(nn.Module):
    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(inputs, 64, batch_first=True)
        self.head = head(64)

    def forward(self, x: th.Tensor, steps: th.Tensor, valid: th.Tensor) -> th.Tensor:
        return self.head(self.lstm(x)[0])


class Oracle(nn.Module):
    """The current input and its difference from the previous step's, through the same head."""

    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.head = head(2 * inputs)

    def forward(self, x: th.Tensor, steps: th.Tensor, valid: th.Tensor) -> th.Tensor:
        return self.head(th.cat([x, x - F.pad(x, (0, 0, 1, 0))[:, :-1]], dim=-1))


def probe(model_class: type[nn.Module], prev_action: bool, train: list, test: list, steps: int) -> dict:
    th.manual_seed(0)
    rng = np.random.default_rng(1)
    columns = [0, 2, 4] if prev_action else [0, 2]  # x, theta (, previous action); targets: x_dot, theta_dot
    model = model_class(len(columns))
    optimizer = th.optim.Adam(model.parameters(), lr=1e-3)
    test_x, test_steps, test_valid = windows(test, 512, rng)
    scored = test_valid & (th.arange(WINDOW) >= 2)
    r2, start = {}, time.perf_counter()
    for i in range(steps + 1):
        if i % 500 == 0:
            with th.no_grad():
                prediction = model(test_x[..., columns], test_steps, test_valid)
            target = test_x[..., [1, 3]]
            error = ((prediction - target) ** 2)[scored].mean(0)
            r2[i] = (1 - error / target[scored].var(0)).tolist()
        x, x_steps, valid = windows(train, 64, rng)
        loss = (((model(x[..., columns], x_steps, valid) - x[..., [1, 3]]) ** 2).sum(-1) * valid).sum() / valid.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"model": model_class.__name__, "prev_action": prev_action, "r2_xdot_thetadot": r2,
            "wall_s": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS / "velocity_probe.jsonl")
    args = parser.parse_args()
    data = episodes(600, np.random.default_rng(0))
    flat = np.concatenate(data)
    mean, std = flat.mean(0), flat.std(0)
    mean[4], std[4] = 0.0, 1.0  # the action stays +-1
    data = [(episode - mean) / std for episode in data]
    rows = []
    for model_class in (Oracle, Transformer, LSTM):
        for prev_action in (False, True):
            row = {**probe(model_class, prev_action, data[:500], data[500:], args.steps), "environment": common.environment()}
            rows.append(row)
            x_dot, theta_dot = list(row["r2_xdot_thetadot"].values())[-1]
            print(f"{row['model']:12s} prev_action={prev_action!s:5s} R^2 x_dot {x_dot:.3f}, theta_dot {theta_dot:.3f}")
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()

"""Bounded cost, measured: (1) per-step acting time with actor context at steps 10, 100 and 1000 of one long
episode (should stay flat: rolling key/value cache); (2) AttnPPO update time as n_steps * n_envs doubles four
times at fixed context (should grow linearly); (3) peak memory of the transformer over 1,000- and 10,000-step
episodes, no-grad and with a backward pass (should grow linearly).

    python benchmarks/scaling.py
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common  # one torch thread; must come first
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_attn_ac import AttnPPO

ATTN = dict(context_len=16, n_layers=2, d_model=32, n_heads=2)


def acting_time(steps: tuple[int, ...], repeats: int) -> dict[int, float]:
    """Microseconds per incremental acting step (8 envs) around the given positions of one long episode."""
    model = AttnPPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), actor_context=True, n_steps=64, **ATTN)
    policy = model.policy.eval()
    obs = th.randn(max(steps) + 10, 8, 4)
    times: dict[int, list[float]] = {s: [] for s in steps}
    for _ in range(repeats):
        cache = policy.empty_cache(8)
        with th.no_grad():
            for t in range(max(steps) + 5):
                start = time.perf_counter()
                _, _, cache = policy.step(obs[t], th.full((8,), t), cache)
                elapsed = time.perf_counter() - start
                for s in steps:
                    if abs(t - s) < 5:
                        times[s].append(elapsed)
    return {s: 1e6 * statistics.median(v) for s, v in times.items()}


def update_time(sizes: list[int], n_envs: int, repeats: int) -> dict[int, float]:
    """Milliseconds per AttnPPO update (one epoch, 4 minibatches) for n_steps * n_envs = each size."""
    out = {}
    for size in sizes:
        n_steps = size // n_envs
        env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
        model = AttnPPO("MlpPolicy", env, n_steps=n_steps, batch_size=size // 4, n_epochs=1, actor_context=True, **ATTN)
        model.learn(size)  # one rollout and update (warm-up)
        samples = []
        for _ in range(repeats):
            model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_steps)
            start = time.perf_counter()
            model.train()
            samples.append(time.perf_counter() - start)
        out[size] = 1e3 * statistics.median(samples)
    return out


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def peak_memory_child(length: int, backward: bool) -> None:
    """Run in a fresh process (Linux): print the peak resident memory (MiB) one pass over one episode adds."""
    model = AttnPPO("MlpPolicy", "CartPole-v1", n_steps=64, actor_context=True, **ATTN)
    obs = np.random.default_rng(0).normal(size=(length, 4)).astype(np.float32)
    meta = model.policy._stream_meta(length, None)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) to the current RSS
    before = _status_kib("VmRSS:")
    if backward:
        hidden, _, _ = model.policy.stream_forward(th.as_tensor(obs), meta, mask_ratio=0.15)
        model.policy._value_head(hidden).sum().backward()
    else:
        model.policy.trajectory_values(obs)
    print((_status_kib("VmHWM:") - before) / 1024)


def peak_memory(lengths: list[int]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {"no_grad": {}, "forward_backward_with_masked_pass": {}}
    here = str(Path(__file__).parent)
    for key, backward in [("no_grad", False), ("forward_backward_with_masked_pass", True)]:
        for length in lengths:
            code = f"import sys; sys.path.insert(0, {here!r}); import scaling; scaling.peak_memory_child({length}, {backward})"
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            out[key][length] = float(result.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaling.json")
    args = parser.parse_args()

    acting = acting_time((10, 100, 1000), args.repeats)
    print(
        "(1) acting step with context, 8 envs (us), at episode step: " + ", ".join(f"{s}: {v:.0f}" for s, v in acting.items())
    )
    sizes = [512 * 2**i for i in range(5)]
    updates = update_time(sizes, n_envs=8, repeats=args.repeats)
    base = updates[sizes[0]]
    print(
        "(2) AttnPPO update (1 epoch) ms by n_steps * n_envs: "
        + ", ".join(f"{s}: {v:.0f} (x{v / base:.2f})" for s, v in updates.items())
    )
    memory = peak_memory([1_000, 10_000])
    for key, values in memory.items():
        print(
            f"(3) peak memory added, {key} (MiB) by episode length: " + ", ".join(f"{k}: {v:.0f}" for k, v in values.items())
        )
    result = {"acting_us_per_step": acting, "update_ms": updates, "peak_memory_mib": memory, "config": ATTN,
              "environment": common.environment()}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

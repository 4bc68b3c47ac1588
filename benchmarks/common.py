"""Helpers shared by the benchmark scripts: one-thread torch, and the machine/version record."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import platform
import subprocess
from importlib.metadata import version

import torch as th

# One thread: on small machines torch's thread pool makes tiny networks tens of times slower.
th.set_num_threads(1)


def environment() -> dict[str, str | int]:
    """Hardware and versions, written beside every result."""
    cpu = platform.processor() or "unknown"
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "torch_threads": th.get_num_threads(),
        "device": "cpu",
        "python": platform.python_version(),
        **{name: version(name) for name in ["sb3-attn-ac", "stable-baselines3", "torch", "gymnasium", "numpy"]},
    }

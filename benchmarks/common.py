"""Helpers shared by the benchmark scripts: one-thread torch, and the machine/version record."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import platform
import subprocess
from importlib.metadata import version

import torch as th

import sb3_attn_ac

# One thread: on small machines torch's thread pool makes tiny networks tens of times slower.
th.set_num_threads(1)


def environment(device: str = "cpu") -> dict[str, str | int]:
    """Hardware and versions, written beside every result.

    :param device: the torch device the result was measured on (a GPU's name is recorded for ``cuda``)
    """
    cpu = platform.processor() or "unknown"
    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "torch_threads": th.get_num_threads(),
        "device": th.cuda.get_device_name(th.device(device)) if th.device(device).type == "cuda" else "cpu",
        "python": platform.python_version(),
        "sb3-attn-ac": sb3_attn_ac.__version__,  # the imported code's (an editable install's metadata can lag)
        "commit": commit.strip(),
        **{name: version(name) for name in ["stable-baselines3", "torch", "gymnasium", "numpy"]},
    }

"""The main job (``make run``) runs end to end on a tiny budget."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_trains_evaluates_and_plots(tmp_path) -> None:
    cmd = [sys.executable, str(ROOT / "examples" / "train.py"), "--timesteps", "800", "--n-envs", "2"]
    cmd += ["--eval-episodes", "2", "--no-progress", "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    assert "evaluation over 2 deterministic episodes:" in result.stdout
    assert " ± " in result.stdout
    png = tmp_path / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "attn_a2c_CartPole-v1.zip").exists()

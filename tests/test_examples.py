"""The main job (``make run``) and the examples run end to end on tiny budgets."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def run_example(name: str, *args: str, cwd: Path) -> str:
    cmd = [sys.executable, str(ROOT / "examples" / name), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_quickstart(tmp_path) -> None:
    out = run_example("quickstart.py", "--timesteps", "400", "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert "AttnA2C on CartPole-v1 after 400 steps:" in out and (tmp_path / "m.zip").exists()


def test_pomdp_example(tmp_path) -> None:
    out = run_example("pomdp.py", "--timesteps", "512", "--episodes", "2", cwd=tmp_path)
    assert "keys (1, 1, 2, 15, 16)" in out and "returns [" in out


def test_zoo_example(tmp_path) -> None:
    run_example("zoo.py", "--timesteps", "200", "--logs", str(tmp_path / "logs"), cwd=tmp_path)
    assert (tmp_path / "logs" / "a2c_attn" / "CartPole-v1_1" / "CartPole-v1.zip").exists()


def test_attention_map(tmp_path) -> None:
    png = tmp_path / "map.png"
    out = run_example("attention_map.py", "--timesteps", "256", "--steps", "20", "--out", str(png), cwd=tmp_path)
    assert "1 layer(s) x 2 head(s)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rllib_example(tmp_path) -> None:
    pytest.importorskip("ray")
    args = ["--iterations", "1", "--train-batch", "256", "--env-runners", "1", "--out", str(tmp_path / "checkpoint")]
    out = run_example("rllib_cartpole_novel.py", *args, cwd=tmp_path)
    assert re.search(r"iteration 1: \d+ env steps, mean return [\d.]+, contrastive loss \d+\.\d+", out), out
    assert (tmp_path / "checkpoint" / "algorithm_state.pkl").exists()

"""rl-zoo3 integration through our entry point, with the real rl-zoo3 (runs under tmp_path)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from sb3_attn_ac import AttnA2C, AttnPPO, zoo

ROOT = Path(__file__).resolve().parents[1]


def run_zoo(*args: str, cwd: Path) -> str:
    """``python -m sb3_attn_ac.zoo ARGS`` in a fresh process (as a user types it); returns its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sb3_attn_ac.zoo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def saved_config(path: Path) -> dict:
    """rl-zoo3's saved config.yml (an OrderedDict dump, read back as rl-zoo3 does)."""
    return dict(yaml.load(path.read_text(), Loader=yaml.UnsafeLoader))


def train_args(algo: str, env_id: str, logs: Path, *extra: str) -> list[str]:
    return ["train", "--algo", algo, "--env", env_id, "-f", str(logs), "--eval-freq", "-1", "--seed", "0", *extra]


@pytest.mark.parametrize("algo", ["a2c_attn", "ppo_attn"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "CartPoleNoVel-v1"])
def test_train_then_enjoy(tmp_path, algo: str, env_id: str) -> None:
    # Small rollouts so a few hundred steps make several updates (the yml entry itself is used otherwise).
    extra = ["-params", "n_steps:16"] + (["batch_size:32", "n_epochs:2"] if algo == "ppo_attn" else [])
    zoo.main(train_args(algo, env_id, tmp_path, "-n", "256", *extra))
    run = tmp_path / algo / f"{env_id}_1"
    assert (run / f"{env_id}.zip").exists()
    config = saved_config(run / env_id / "config.yml")
    assert config["n_steps"] == 16
    if "NoVel" in env_id:  # our hyperparameter file's entry was used
        assert config["actor_context"] is True and config["normalize"] is True
        assert (run / env_id / "vecnormalize.pkl").exists()
    zoo.main(["enjoy", "--algo", algo, "--env", env_id, "-f", str(tmp_path), "--no-render", "-n", "60"])


def test_popgym_entry_trains_and_enjoys_through_the_zoo(tmp_path) -> None:
    pytest.importorskip("popgym")
    env_id = "popgym-MineSweeperEasy-v0"  # its own entry: previous action, an actor transformer of its own
    args = train_args("ppo_attn", env_id, tmp_path, "-n", "256", "--gym-packages", "popgym")
    run_zoo(*args, "-params", "n_steps:16", "batch_size:32", cwd=tmp_path)
    config = saved_config(tmp_path / "ppo_attn" / f"{env_id}_1" / env_id / "config.yml")
    assert config["prev_action"] is True and config["shared_transformer"] is False and config["n_envs"] == 8
    model = AttnPPO.load(tmp_path / "ppo_attn" / f"{env_id}_1" / f"{env_id}.zip")
    assert model.policy.prev_action and model.policy.actor_encoder is not None
    run_zoo("enjoy", "--algo", "ppo_attn", "--env", env_id, "-f", str(tmp_path), "--no-render", "-n", "40",
            "--gym-packages", "popgym", cwd=tmp_path)  # fmt: skip


def test_console_entry_points_and_subproc_envs(tmp_path) -> None:
    out = run_zoo(*train_args("ppo_attn", "CartPole-v1", tmp_path, "-n", "128", "--vec-env", "subproc"), "-params",
                  "n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1", cwd=tmp_path)  # fmt: skip
    run = tmp_path / "ppo_attn" / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").exists() and "Saving to" in out
    assert saved_config(run / "CartPole-v1" / "args.yml")["vec_env"] == "subproc"
    script = Path(sys.executable).parent / "attn-zoo"
    help_text = subprocess.run([str(script), "train", "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "a2c_attn" in help_text and "ppo_attn" in help_text and "ppo_lstm" in help_text


def test_unknown_env_falls_back_to_default(tmp_path) -> None:
    zoo.main(train_args("a2c_attn", "MountainCar-v0", tmp_path, "-n", "64"))
    config = saved_config(tmp_path / "a2c_attn" / "MountainCar-v0_1" / "MountainCar-v0" / "config.yml")
    assert config == {"n_timesteps": 1e5, "policy": "MlpPolicy"}  # our `default` entry (-n overrides the budget only)


def test_default_config_is_ours_unless_given() -> None:
    argv = zoo.with_default_config(["train", "--algo", "ppo_attn", "--env", "CartPole-v1"])
    assert argv[-2:] == ["--conf-file", str(zoo.HYPERPARAMS_DIR / "ppo_attn.yml")]
    assert zoo.with_default_config(["train", "--algo", "ppo", "--env", "CartPole-v1"])[-1] == "CartPole-v1"
    assert zoo.with_default_config(["train", "--algo", "ppo_attn", "-conf", "x.yml"])[-1] == "x.yml"
    assert zoo.HYPERPARAMS_DIR.resolve() == (ROOT / "hyperparams").resolve()  # one source, two ways in
    zoo.register()
    from rl_zoo3 import ALGOS
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    assert ALGOS["a2c_attn"] is AttnA2C and ALGOS["ppo_attn"] is AttnPPO and "a2c" in ALGOS
    assert HYPERPARAMS_SAMPLER["ppo_attn"] is zoo.sample_ppo_attn_params


def test_every_hyperparameter_entry_builds_a_model() -> None:
    import rl_zoo3.import_envs  # noqa: F401  (NoVel envs)

    for algo, cls in zoo.ALGOS.items():
        entries = yaml.safe_load((zoo.HYPERPARAMS_DIR / f"{algo}.yml").read_text())
        expected = {"default", "atari", "CartPole-v1", "CartPoleNoVel-v1", "PendulumNoVel-v1", "Pendulum-v1", "Acrobot-v1",
                    "LunarLander-v3", "LunarLanderNoVel-v3", "MountainCarContinuousNoVel-v0"}  # fmt: skip
        assert expected <= set(entries), algo
        for env_id in ["CartPoleNoVel-v1", "PendulumNoVel-v1", "Pendulum-v1", "Acrobot-v1"]:
            zoo_only = ("normalize", "n_envs", "n_timesteps", "policy", "callback")  # rl-zoo3's, not the constructor's
            kwargs = {k: v for k, v in entries[env_id].items() if k not in zoo_only}
            kwargs.pop("policy_kwargs", None)
            kwargs = {k: v for k, v in kwargs.items() if not (isinstance(v, str) and v.startswith("lin_"))}
            cls("MlpPolicy", env_id, **kwargs)  # every argument is one the algorithm accepts


def test_optimize_two_trials(tmp_path) -> None:
    zoo.main(train_args("ppo_attn", "CartPole-v1", tmp_path, "-n", "256", "-optimize", "--n-trials", "2", "--n-jobs", "1",
                        "--sampler", "random", "--pruner", "none", "--n-evaluations", "1", "--eval-episodes", "1",
                        "--no-optim-plots", "-params", "n_envs:1"))  # fmt: skip
    reports = list((tmp_path / "ppo_attn").rglob("report_*.pkl")) + list((tmp_path / "ppo_attn").rglob("report_*.csv"))
    assert reports


def test_optimize_trains_each_trial_on_several_seeds_in_the_attention_space(tmp_path) -> None:
    storage = tmp_path / "study.log"
    zoo.main(train_args("ppo_attn", "CartPole-v1", tmp_path, "-n", "128", "-optimize", "--n-trials", "2",
                        "--storage", str(storage), "--study-name", "s", "--sampler", "random", "--pruner", "none",
                        "--n-evaluations", "1", "--eval-episodes", "2", "--no-optim-plots", "--runs-per-trial", "3",
                        "--search-space", "attention", "-params", "n_envs:1", "n_steps:64", "batch_size:64"))  # fmt: skip
    study = optuna.load_study(
        study_name="s", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    assert len(study.trials) == 2
    for trial in study.trials:
        assert set(trial.params) == set(zoo.sample_attention_params(optuna.trial.FixedTrial(trial.params)))
        runs = trial.user_attrs["run_values"]
        assert len(runs) == 3 and trial.value == pytest.approx(sum(runs) / 3)
        assert trial.intermediate_values == {1: runs[0]}  # the pruner sees the first run's evaluation
    zoo.register()  # back to rl-zoo3's search space for the other tests
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    assert HYPERPARAMS_SAMPLER["ppo_attn"] is zoo.sample_ppo_attn_params


def test_optimize_in_the_rl_space_keeps_the_entry_attention_arguments(tmp_path) -> None:
    storage = tmp_path / "study.log"
    conf = tmp_path / "conf.yml"  # an entry with attention arguments of its own, which the rl space must not touch
    conf.write_text("CartPole-v1:\n  n_envs: 1\n  n_timesteps: 128\n  policy: MlpPolicy\n  n_steps: 64\n"
                    "  context_len: 4\n  actor_context: True\n")  # fmt: skip
    zoo.main(train_args("ppo_attn", "CartPole-v1", tmp_path, "-optimize", "--n-trials", "3", "--storage", str(storage),
                        "--study-name", "s", "--sampler", "random", "--pruner", "none", "--n-evaluations", "1",
                        "--eval-episodes", "1", "--no-optim-plots", "--search-space", "rl", "-conf", str(conf)))  # fmt: skip
    study = optuna.load_study(
        study_name="s", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for trial in study.trials:
        assert set(trial.params) == set(zoo.RL_SPACES["ppo_attn"])
    trial = optuna.trial.FixedTrial({**study.trials[0].params, "lr_schedule": "linear", "learning_rate": 1e-3})
    sampled = zoo.rl_sampler("ppo_attn")(trial, 2, 1, {})
    assert "lr_schedule" not in sampled and "context_len" not in sampled
    assert sampled["learning_rate"](1.0) == pytest.approx(1e-3) and sampled["learning_rate"](0.5) == pytest.approx(5e-4)
    assert zoo.converter("rl")(trial.params)["learning_rate"] == "lin_0.001"  # as an entry writes it
    zoo.register()


def test_optimize_flags_are_checked(tmp_path) -> None:
    args = train_args("ppo_attn", "CartPole-v1", tmp_path, "-optimize", "--n-jobs", "2", "--runs-per-trial", "2")
    with pytest.raises(ValueError, match="--runs-per-trial 2 needs --n-jobs 1, got 2"):
        zoo.main(args)
    with pytest.raises(SystemExit):
        zoo.optimize_args(["train", "--runs-per-trial", "0"])
    with pytest.raises(SystemExit):
        zoo.optimize_args(["train", "--search-space", "lstm"])
    with pytest.raises(SystemExit):
        zoo.optimize_args(["enjoy", "--runs-per-trial", "2"])
    ours, rest = zoo.optimize_args(["train", "--algo", "ppo_attn", "--runs-per-trial", "2", "--seed", "3"])
    assert (ours.runs_per_trial, ours.search_space, rest) == (2, "zoo", ["train", "--algo", "ppo_attn", "--seed", "3"])
    with pytest.raises(ValueError, match="search_space must be one of"):
        zoo.register("lstm")


def test_two_workers_share_one_study(tmp_path) -> None:
    storage = tmp_path / "study.log"  # Optuna journal file: several processes on one machine
    args = train_args("a2c_attn", "CartPole-v1", tmp_path / "logs", "-n", "128", "-optimize", "--n-trials", "2",
                      "--storage", str(storage), "--study-name", "shared", "--sampler", "random", "--pruner", "none",
                      "--n-evaluations", "1", "--eval-episodes", "1", "--no-optim-plots", "-params", "n_envs:1")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sb3_attn_ac.zoo", *args]
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    for worker in workers:
        out, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, out[-3000:]
    study = optuna.load_study(
        study_name="shared", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    assert len(study.trials) == 4  # both workers' trials land in the one study
    assert all("context_len" in trial.params for trial in study.trials)

"""The benchmark report's aggregation: interquartile means, reproducible bootstrap intervals, plots."""

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_attn_ac import __version__

ROOT = Path(__file__).resolve().parents[1]


def aggregate(out: Path) -> str:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--aggregate-only", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_aggregate_is_reproducible_iqm_with_plots(tmp_path) -> None:
    finals = [13.0, 57.0, 230.0, 251.0, 310.0, 388.0, 470.0, 612.0, 804.0, 1000.0]  # IQM: mean of the middle 6, 377

    def row(
        algo: str,
        seed: int,
        timesteps: list[int],
        eval_mean: list[float],
        version: str = __version__,
        gym_version: str = gym.__version__,
    ) -> dict:
        return {"algo": algo, "env": "CartPoleNoVel-v1", "seed": seed, "budget": 1000, "timesteps": timesteps,
                "eval_mean": eval_mean, "environment": {"sb3-attn-ac": version, "gymnasium": gym_version}}  # fmt: skip

    rows = [row("ppo_attn", seed, [500, 1000], [0.0, final]) for seed, final in enumerate(finals)]
    rows.append(row("ppo", 0, [1000], [7.0], version="0.0.1"))  # evaluated at the end only: a bar, no curve
    rows.append(row("ppo_attn", 10, [500, 1000], [500.0, 500.0], version="0.0.1"))  # an older release's: left out
    rows.append(row("ppo", 1, [1000], [9.0], gym_version="0.0.1"))  # run under another gymnasium: left out
    rows.append(row("a2c_attn", 0, [250, 500, 750, 1000], [480.0, 500.0, 500.0, 400.0]))  # reaches 475, then drops
    rows.append(row("a2c_attn", 1, [250, 500, 750, 1000], [100.0, 200.0, 460.0, 470.0]))  # never reaches, holds
    rows[-2]["wall_s"], rows[-1]["wall_s"] = 10.2, 19.6  # their mean wall time: 15 s
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    first, second = aggregate(out), aggregate(out)
    assert first == second  # the bootstrap intervals are seeded
    lines = first.splitlines()
    attn = next(line for line in lines if "| AttnPPO |" in line)
    assert attn.startswith("| CartPoleNoVel-v1 | AttnPPO | 10 | 1e+03 | 377 [")
    assert attn.endswith(
        "| 13, 57, 230, 251, 310, 388, 470, 612, 804, 1000 | 475: -, -, -, -, -, -, -, 1e+03, 1e+03, 1e+03 | 10/10 | - |"
    )
    a2c = next(line for line in lines if "| AttnA2C |" in line)
    assert a2c.endswith("| 400, 470 | 475: 2e+02, - | 1/2 | 15 s |")
    low, high = (float(x) for x in attn.split("[")[1].split("]")[0].split(", "))
    assert 13 <= low < 377 < high <= 1000
    assert "| CartPoleNoVel-v1 | PPO | 1 | 1e+03 | 7 [7, 7] | 7 | - | - | - |" in lines
    assert (tmp_path / "rows_CartPoleNoVel-v1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # named after --out


def test_report_entry_lookup_falls_back_to_the_older_env_version_and_the_full_observation_entry() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report

    # rl-zoo3 tuned RecurrentPPO on LunarLanderNoVel-v2 only; v3 takes it (LSTM of 64 units, 32 envs).
    lstm = report.hyperparams("ppo_lstm", "LunarLanderNoVel-v3")
    assert lstm["n_envs"] == 32 and "lstm_hidden_size=64" in lstm["policy_kwargs"]
    # PPO has no NoVel entry: its LunarLander-v3 one, with observation normalisation.
    full = report.hyperparams("ppo", "LunarLander-v3")
    assert report.hyperparams("ppo", "LunarLanderNoVel-v3") == {**full, "normalize": True}
    assert report.hyperparams("ppo_attn", "LunarLanderNoVel-v3")["actor_context"] is True  # our own entry


def test_training_curves_bin_the_monitor_episodes_by_budget_and_tell_a_collapse(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import training_curves

    # Two envs' Monitor files (header line, then r, l, t): 100 steps in all, episodes of 10 steps.
    returns = [10, 10, 30, 30, 50, 50, 50, 50, 5, 5]  # the last two end in the last fifth: a collapse
    for env in range(2):
        lines = ['#{"t_start": 0.0, "env_id": "X"}', "r,l,t"]
        lines += [f"{r},10,{2 * i + env}" for i, r in enumerate(returns) if i % 2 == env]
        (tmp_path / f"{env}.monitor.csv").write_text("\n".join(lines) + "\n")
    curve = training_curves.training_curve(tmp_path, budget=100, points=5)
    assert curve == [10.0, 30.0, 50.0, 50.0, 5.0]
    assert not training_curves.report.holds(curve) and training_curves.report.holds(curve[:4])


def test_optuna_export_keeps_the_search_space_every_trial_and_the_best_first() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import optimize
    import optuna

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        layers = trial.suggest_categorical("n_layers", [1, 2])
        if trial.number == 1:
            raise optuna.TrialPruned()
        return -abs(x - 1e-3) - layers

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=4)
    result = optimize.export(study, {"env": "X"})
    assert result["env"] == "X" and result["n_trials"] == 4
    assert set(result["search_space"]) == {"learning_rate", "n_layers"}
    assert [t["state"] for t in result["trials"]].count("PRUNED") == 1
    values = [t["value"] for t in result["best"]]
    assert len(values) == 3 and values == sorted(values, reverse=True) and values[0] == study.best_value
    json.dumps(result)  # JSON-ready


def test_attention_study_starts_with_the_entry(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import optimize
    import optuna

    storage = tmp_path / "study.log"
    entry = {"n_envs": 4, "actor_context": True, "prev_action": True, "context_len": 8}
    optimize.enqueue_entry(storage, "s", "ppo_attn", entry)
    optimize.enqueue_entry(storage, "s", "ppo_attn", entry)  # resuming adds nothing
    backend = optuna.storages.journal.JournalFileBackend(str(storage))
    (trial,) = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(backend)).trials
    assert trial.system_attrs["fixed_params"] == {
        "context_len": 8, "n_layers": 1, "d_model": 32, "ct_coef": 0.1, "mask_ratio": 0.15, "actor_context": True,
        "prev_action": True, "start_bias": False, "position_encoding": "relative"}  # fmt: skip
    with pytest.raises(SystemExit, match="'context_len': 64} lie outside the attention search space"):
        optimize.enqueue_entry(tmp_path / "other.log", "s", "ppo_attn", {"context_len": 64})


def test_rl_study_starts_with_the_entry_rl_settings() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import optimize

    entry = optimize.report.hyperparams("ppo_attn", "PendulumNoVel-v1")  # lin_1e-3, batch_size 128, gamma 0.99 ...
    params = optimize.entry_params("rl", "ppo_attn", entry)
    assert params == {"batch_size": 128, "n_epochs": 10, "learning_rate": 1e-3, "lr_schedule": "linear",
                      "clip_range": 0.1, "gae_lambda": 0.9, "gamma": 0.99}  # fmt: skip
    assert optimize.zoo.converter("rl")(params)["learning_rate"] == "lin_0.001"
    # An A2C entry that sets nothing has the algorithm's defaults; a constant learning rate stays a number.
    assert optimize.entry_params("rl", "a2c_attn", {"learning_rate": 1e-3})["lr_schedule"] == "constant"
    with pytest.raises(SystemExit, match="'n_steps': 128} lie outside the rl search space"):
        optimize.entry_params("rl", "a2c_attn", {"n_steps": 128})


def test_ablation_variant_of_an_optuna_trial_is_what_rl_zoo3_trained(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablations

    params = {"batch_size_pow": 7, "n_steps_pow": 8, "one_minus_gamma": 0.02, "one_minus_gae_lambda": 0.05,
              "learning_rate": 1e-4, "net_arch": "tiny", "activation_fn": "tanh", "context_len": 8}  # fmt: skip
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"trials": [{"number": 3, "params": params}]}))
    (name, overrides), *_ = ablations.optuna_variants(study, [3]).items()
    assert name == "optuna trial 3"
    policy_kwargs = "dict(net_arch={'pi': [64], 'vf': [64]}, activation_fn=nn.Tanh)"  # as rl-zoo3's "tiny", "tanh"
    assert overrides == {"batch_size": 128, "n_steps": 256, "gamma": 0.98, "gae_lambda": 0.95, "learning_rate": 1e-4,
                         "context_len": 8, "policy_kwargs": policy_kwargs}  # fmt: skip
    with pytest.raises(SystemExit, match="--optuna-trials: \\[4\\] not in"):
        ablations.optuna_variants(study, [3, 4])
    # A study of the attention arguments alone (attn-zoo --search-space attention) stores them as they were trained.
    study.write_text(json.dumps({"space": "attention", "trials": [{"number": 0, "params": {"context_len": 8}}]}))
    assert ablations.optuna_variants(study, [0]) == {"optuna trial 0": {"context_len": 8}}


def test_popgym_runs_count_only_for_the_entries_they_ran_with(tmp_path) -> None:
    def row(algo: str, seed: int, final: float, budget: int = 1000, **attn: str) -> dict:
        shared = {"n_envs": 8, "n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 0.0003, "gamma": 0.99,
                  "gae_lambda": 0.95, "env_wrapper": "gymnasium.wrappers.FlattenObservation"}  # fmt: skip
        entry = {"policy": "MlpPolicy", "policy_kwargs": "dict(net_arch=dict(pi=[64], vf=[64]))"}
        if algo == "ppo_attn":
            entry["actor_context"] = True
        hyperparams = {k: str(v) for k, v in {**shared, **entry, "n_timesteps": float(budget), **attn}.items()}
        return {"algo": algo, "env": "popgym-RepeatFirstEasy-v0", "seed": seed, "budget": budget, "timesteps": [budget],
                "eval_mean": [final], "wall_s": 1.0, "hyperparams": hyperparams,
                "environment": {"sb3-attn-ac": __version__, "gymnasium": gym.__version__}}  # fmt: skip

    out = tmp_path / "popgym_rows.jsonl"
    rows = [row("ppo_attn", s, 0.1 * s) for s in range(3)] + [row("ppo_attn", s, 0.9, prev_action="True") for s in range(3)]
    rows.append(row("ppo", 0, -0.5, budget=2000))  # another budget: not these entries' run
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "popgym_tasks.py"), "--aggregate-only", "--budget", "1e3",
           "--tasks", "RepeatFirstEasy", "--out", str(out)]  # fmt: skip
    default = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert default.returncode == 0, default.stderr[-2000:]
    lines = [line for line in default.stdout.splitlines() if "RepeatFirst" in line]
    assert len(lines) == 1 and "| AttnPPO | 3 |" in lines[0] and "0.00, 0.10, 0.20" in lines[0]  # PPO ran 2e3 steps
    variant = subprocess.run([*cmd, "--attn-args", "prev_action=True"], capture_output=True, text=True, timeout=300)
    lines = [line for line in variant.stdout.splitlines() if "RepeatFirst" in line]
    assert len(lines) == 1 and "| AttnPPO prev_action=True | 3 |" in lines[0] and "0.90, 0.90, 0.90" in lines[0]
    assert (tmp_path / "popgym_rows_popgym-RepeatFirstEasy-v0.png").exists()


def test_popgym_tuned_entries_keep_the_shared_settings_and_their_runs_count(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import popgym_tasks
    import report

    shared = report.config(popgym_tasks.entry("ppo_attn", "plain", 1e3))
    memory = {}
    for task in ["RepeatFirstEasy", "AutoencodeEasy", "HigherLowerEasy", "NoisyPositionOnlyCartPoleEasy",
                 "PositionOnlyPendulumEasy", "MineSweeperEasy"]:  # fmt: skip
        own = report.config(popgym_tasks.tuned(f"popgym-{task}-v0", 1e3))
        assert {k: own[k] for k in shared} == shared  # only AttnPPO's memory arguments differ
        memory[task] = {k: v for k, v in own.items() if k not in shared}
    assert memory["RepeatFirstEasy"] == {"context_len": "64", "local_window": "16", "start_bias": "True", "ct_coef": "0"}
    assert memory["AutoencodeEasy"] == {} and memory["NoisyPositionOnlyCartPoleEasy"] == {"prev_action": "True"}
    with pytest.raises(SystemExit, match="no popgym-RepeatPreviousEasy-v0 entry"):
        popgym_tasks.tuned("popgym-RepeatPreviousEasy-v0", 1e3)

    hyperparams = report.config(popgym_tasks.tuned("popgym-RepeatFirstEasy-v0", 1e3))
    environment = {"sb3-attn-ac": __version__, "gymnasium": gym.__version__}
    run = {"algo": "ppo_attn", "env": "popgym-RepeatFirstEasy-v0", "budget": 1000, "timesteps": [1000],
           "eval_mean": [0.7], "wall_s": 1.0, "hyperparams": hyperparams, "environment": environment}  # fmt: skip
    rows = [{**run, "seed": s} for s in range(3)]
    out = tmp_path / "popgym_rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "popgym_tasks.py"), "--aggregate-only", "--budget", "1e3",
           "--tasks", "RepeatFirstEasy", "--out", str(out)]  # fmt: skip
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "AttnPPO" not in plain.stdout  # not the default entry's runs
    tuned = subprocess.run([*cmd, "--tuned"], capture_output=True, text=True, timeout=300)
    lines = [line for line in tuned.stdout.splitlines() if "RepeatFirst" in line]
    assert len(lines) == 1 and "| AttnPPO own entry per task | 3 |" in lines[0] and "0.70, 0.70, 0.70" in lines[0]
    assert (tmp_path / "popgym_rows_tuned_popgym-RepeatFirstEasy-v0.png").exists()
    wrong = subprocess.run([*cmd, "--tuned", "--attn-args", "prev_action=True"], capture_output=True, text=True)
    assert wrong.returncode != 0 and "--tuned: the per-task entries are for plain observations" in wrong.stderr


def test_popgym_observations_are_popgyms_baseline_wrappers_on_a_made_env() -> None:
    pytest.importorskip("popgym")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import popgym  # noqa: F401  (registers the envs)
    from popgym.wrappers import Antialias, PreviousAction
    from popgym_wrappers import PreviousActionAntialias

    env_id = "popgym-MineSweeperEasy-v0"
    ours = PreviousActionAntialias(gym.make(env_id))  # on gym.make's wrappers, as rl-zoo3 wraps
    theirs = Antialias(PreviousAction(gym.make(env_id).unwrapped))  # POPGym's, on the bare env only
    assert ours.observation_space == theirs.observation_space
    (obs, _), (expected, _) = ours.reset(seed=3), theirs.reset(seed=3)
    assert obs[0] == expected[0] and np.array_equal(obs[1], [0, 0]) and obs[2] == 1  # null action, first step
    for action in ([1, 2], [3, 0], [1, 2]):
        obs, reward, *_ = ours.step(np.array(action))
        expected, expected_reward, *_ = theirs.step(np.array(action))
        assert obs[0] == expected[0] and reward == expected_reward
        assert np.array_equal(obs[1], action) and obs[2] == 0


def diagnosed_run(tmp_path: Path, monkeypatch, rollouts: int, **kwargs):
    """A small AttnPPO (actor context, rollouts of 64 steps, 2 epochs of 2 minibatches) trained for ``rollouts``
    rollouts with diagnose.py's callback logging to ``tmp_path``; returns the model and the callback."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import diagnose

    from sb3_attn_ac import AttnPPO

    monkeypatch.setenv("DIAGNOSE_DIR", str(tmp_path))
    model = AttnPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, actor_context=True, seed=0, **kwargs)
    callback = diagnose.TrainStatistics()
    model.learn(rollouts * 64, callback=callback)
    return model, callback


def test_diagnose_logs_the_gradients_each_head_sends_into_the_shared_transformer(tmp_path, monkeypatch) -> None:
    import pandas as pd

    _, callback = diagnosed_run(tmp_path, monkeypatch, rollouts=3)
    table = pd.read_csv(tmp_path / "progress.csv")
    updates = table[table["train/value_loss"].notna()]
    # Two updates ran before the last rollout ended; each logged a positive norm for both heads.
    assert len(updates) >= 1 and (updates["grad/value_head"] > 0).all() and (updates["grad/actor"] > 0).all()
    assert len(table["grad/actor"].dropna()) == 2
    # The last update's norms wait for a rollout that never came; acting (no gradients) recorded nothing after it.
    assert all(len(norms) == 2 * 2 for norms in callback.grad_norms.values())  # 2 epochs x 2 minibatches


def test_diagnose_logs_how_far_each_part_moved_in_an_update(tmp_path, monkeypatch) -> None:
    model, callback = diagnosed_run(tmp_path, monkeypatch, rollouts=2)
    # The last update ran after the last rollout's snapshot; the next rollout's start would log it.
    policy = model.policy
    actor = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    moved = th.cat([(p.detach() - b).flatten() for p, b in zip(actor, callback._before["actor"], strict=True)])
    lr = policy.optimizer.param_groups[0]["lr"]
    callback._on_rollout_start()
    logged = model.logger.name_to_value
    assert logged["move/actor"] == pytest.approx(float(moved.square().mean().sqrt()) / lr)
    assert logged["move/actor"] > 0 and logged["move/biases"] > 0
    # Every trained parameter is in exactly one part.
    parts = callback.parts
    assert sum(len(ps) for ps in parts.values()) == len([p for p in policy.parameters() if p.requires_grad])
    assert all(logged[f"sqrt_v/{name}"] > 0 for name in parts)


def test_diagnose_logs_both_transformers_biases_and_the_start_bias(tmp_path, monkeypatch) -> None:
    import pandas as pd

    diagnosed_run(tmp_path, monkeypatch, rollouts=2, shared_transformer=False, start_bias=True)
    table = pd.read_csv(tmp_path / "progress.csv")
    for name in ["", "actor_"]:
        assert {f"bias/{name}l0h{h}{what}" for h in (0, 1) for what in ("o0", "rest", "start")} <= set(table)
    # Logged after the rollout that follows the first update: both start biases have moved from zero.
    last = table.ffill().iloc[-1]
    assert last["bias/actor_l0h0start"] != 0.0 and last["bias/l0h0start"] != 0.0


def test_higher_lower_policy_scores_the_memoryless_rule_on_the_same_decks() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import higher_lower_policy

    class RulePlayer:  # plays the memoryless rule the script scores beside the model
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.array([0 if int(np.argmax(obs[0])) < higher_lower_policy.MIDDLE else 1]), state

    counts, mean, rule_mean = higher_lower_policy.play(RulePlayer(), 3, 0)
    assert counts.sum() == 3 * 51  # every guess of the 52-card deck counted
    assert mean == pytest.approx(rule_mean) and mean > 0.3  # its return is the rule's, well above chance (0)
    assert (counts[: higher_lower_policy.MIDDLE, 1] == 0).all() and (counts[higher_lower_policy.MIDDLE :, 0] == 0).all()

    class Contrarian(RulePlayer):  # the opposite guesses lose what the rule wins
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            action, state = super().predict(obs, state)
            return 1 - action, state

    _, contrarian, rule_again = higher_lower_policy.play(Contrarian(), 3, 0)
    assert contrarian == pytest.approx(-rule_again) and rule_again == pytest.approx(rule_mean)


def test_ablation_rows_count_for_their_final_evaluation_size_and_key_value_variants(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report

    entry = report.hyperparams("ppo_attn", "PendulumNoVel-v1")

    def row(final: float, eval_episodes: int, **overrides: object) -> dict:
        return {"algo": "ppo_attn", "env": "PendulumNoVel-v1", "seed": 103, "budget": 100000, "timesteps": [100000],
                "eval_mean": [final], "eval_episodes": eval_episodes, "wall_s": 1.0,
                "hyperparams": report.config({**entry, **overrides}),
                "environment": {"sb3-attn-ac": __version__, "gymnasium": gym.__version__}}  # fmt: skip

    out = tmp_path / "rows.jsonl"
    rows = [row(-150.0, 10), row(-210.0, 100), row(-170.0, 100, gamma=0.98), row(-999.0, 100, gamma=0.97),
            row(-140.0, 100, gamma=0.97, n_epochs=20)]  # fmt: skip
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--aggregate-only", "--envs", "PendulumNoVel-v1",
           "--seeds", "103", "--out", str(out), "--variants", "default", "gamma=0.98"]  # fmt: skip
    result = subprocess.run([*cmd, "--eval-episodes", "100"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "PendulumNoVel" in line]
    assert len(lines) == 2
    assert "AttnPPO default |" in lines[0] and "| -210 |" in lines[0]  # not the 10-episode row
    assert "AttnPPO gamma=0.98 |" in lines[1] and "| -170 |" in lines[1]  # a setting no listed variant makes
    both = subprocess.run([*cmd[:-2], "n_epochs=20 gamma=0.97", "--eval-episodes", "100"], capture_output=True, text=True)
    assert [line for line in both.stdout.splitlines() if "| -140 |" in line], both.stdout + both.stderr[-2000:]
    ten = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert next(line for line in ten.stdout.splitlines() if "PendulumNoVel" in line).count("| -150 |") == 1
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablations

    here = {"default": {}, "ct_coef=0": {"ct_coef": 0.0}}  # a Box-action env's list: no Q_att
    chosen = ablations.requested(["default", "q_att_coef=1", "ct_coef=0", "gamma=0.97"], here, {*here, "q_att_coef=1"})
    assert chosen == {"default": {}, "ct_coef=0": {"ct_coef": 0.0}, "gamma=0.97": {"gamma": 0.97}}
    bad = subprocess.run([*cmd[:-1], "gamma"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "'gamma' is neither a listed variant nor KEY=VALUE" in bad.stderr
    # A baseline's own rl-zoo3 entry, measured the same way.
    lstm = {**rows[1], "algo": "ppo_lstm", "eval_mean": [-230.0],
            "hyperparams": report.config(report.hyperparams("ppo_lstm", "PendulumNoVel-v1"))}  # fmt: skip
    out.write_text(out.read_text() + json.dumps(lstm) + "\n")
    baseline = [*cmd[:2], "--algo", "ppo_lstm", *cmd[2:-1], "--eval-episodes", "100"]
    result = subprocess.run(baseline, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if "PendulumNoVel" in line]
    assert len(lines) == 1 and "RecurrentPPO default |" in lines[0] and "| -230 |" in lines[0], result.stderr[-2000:]


def test_pendulum_failures_replays_the_evaluation_and_names_a_stall(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pendulum_failures
    import rl_zoo3.import_envs  # noqa: F401
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_attn_ac import AttnPPO

    env_id = pendulum_failures.ENV_ID
    run = tmp_path / "seed0" / "ppo_attn" / f"{env_id}_1"  # rl-zoo3's layout
    (run / env_id).mkdir(parents=True)
    env = VecNormalize(make_vec_env(env_id, n_envs=1))
    AttnPPO("MlpPolicy", env, n_steps=64, actor_context=True, prev_action=True, seed=0).save(run / f"{env_id}.zip")
    env.save(str(run / env_id / "vecnormalize.pkl"))
    rows = pendulum_failures.episodes(run, 2, seed=3)
    assert rows.shape == (2, 7)
    # The returns are SB3's evaluate_policy's on the same start states (the same env seed, statistics frozen).
    eval_env = VecNormalize.load(str(run / env_id / "vecnormalize.pkl"), make_vec_env(env_id, n_envs=1, seed=3))
    eval_env.training, eval_env.norm_reward = False, False
    model = AttnPPO.load(run / f"{env_id}.zip", env=eval_env)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=2, deterministic=True, return_episode_rewards=True)
    np.testing.assert_allclose(rows[:, 0], returns, rtol=1e-5)
    assert (np.abs(rows[:, 1]) <= np.pi).all() and ((rows[:, 6] >= 0) & (rows[:, 6] <= 2.0)).all()
    # return, start angle, start velocity, first upright step, upright share, |velocity|, |torque| of the last 50
    assert pendulum_failures.kind(np.array([-1500, 2.7, 0.2, -1, 0.0, 0.2, 2.0])) == "stall"
    assert pendulum_failures.kind(np.array([-1300, 2.6, 0.2, -1, 0.0, 2.0, 1.9])) == "swing"
    assert pendulum_failures.kind(np.array([-600, 2.9, 0.0, 102, 0.98, 0.2, 1.4])) == "late"
    assert pendulum_failures.kind(np.array([-120, 2.9, 0.0, 60, 1.0, 0.1, 1.1])) == "up"


def test_pomdp_attn_ppo_takes_the_rl_settings_its_zoo_entry_changes() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pomdp

    cartpole = pomdp.attn_overrides("CartPoleNoVel-v1")
    assert cartpole == {"n_epochs": 10, "normalize_advantage": False}  # "lin_1e-3" == "lin_0.001"
    pendulum = pomdp.attn_overrides("PendulumNoVel-v1")
    schedule = pendulum.pop("learning_rate")  # lin_1e-3 where RecurrentPPO's entry has a constant 1e-3
    assert (schedule(1.0), schedule(0.5)) == pytest.approx((1e-3, 5e-4))
    assert pendulum == {"gamma": 0.99, "gae_lambda": 0.9, "clip_range": 0.1}  # batch_size 128 is ZOO's already
    model = pomdp.make_model("attn_ppo", "PendulumNoVel-v1", seed=0, n_envs=1)
    assert (model.gamma, model.gae_lambda, model.get_env().gamma) == (0.99, 0.9, 0.99)


def test_pomdp_settings_are_recurrent_ppos_zoo_entries() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pomdp
    import report
    from rl_zoo3.utils import linear_schedule
    from torch import nn

    for env_id, spec in pomdp.ZOO.items():
        entry = report.hyperparams("ppo_lstm", env_id)
        assert spec["n_envs"] == entry["n_envs"], env_id
        for key, value in spec["kwargs"].items():
            expected = entry.get(key, 128 if key == "batch_size" else None)  # RecurrentPPO's default batch size
            start = report.linear_start(expected)
            if start is not None:  # "lin_1e-3" in the yml: the same schedule
                assert value(1.0) == linear_schedule(start)(1.0) and value(0.5) == linear_schedule(start)(0.5), (env_id, key)
            else:
                assert value == expected, (env_id, key)
        assert set(entry) - set(spec["kwargs"]) <= {"normalize", "n_envs", "n_timesteps", "policy", "policy_kwargs"}, env_id
        policy_kwargs = eval(entry["policy_kwargs"], {"nn": nn})  # rl-zoo3 evaluates it the same way
        assert policy_kwargs.pop("lstm_hidden_size") == spec.get("lstm_hidden_size", 64), env_id
        assert policy_kwargs.pop("enable_critic_lstm") is True, env_id
        assert policy_kwargs == spec["policy_kwargs"], env_id


def test_cartpole_margin_evaluates_under_the_runs_statistics_and_four_shifts(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cartpole_failures
    import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_attn_ac import AttnPPO

    env_id = cartpole_failures.ENV_ID
    run = tmp_path / "seed0" / "ppo_attn" / f"{env_id}_1"  # rl-zoo3's layout
    (run / env_id).mkdir(parents=True)
    env = VecNormalize(make_vec_env(env_id, n_envs=2, seed=0))
    model = AttnPPO("MlpPolicy", env, n_steps=32, batch_size=64, actor_context=True, prev_action=True, seed=0)
    model.learn(64)  # statistics that are not the identity
    model.save(run / f"{env_id}.zip")
    env.save(str(run / env_id / "vecnormalize.pkl"))
    lengths = cartpole_failures.margin(run, 3, seed=3)
    assert len(lengths) == len(cartpole_failures.SHIFTS) == 5
    # The first is SB3's evaluate_policy under the run's own statistics (frozen), on the same start states.
    eval_env = VecNormalize.load(str(run / env_id / "vecnormalize.pkl"), make_vec_env(env_id, n_envs=1, seed=3))
    eval_env.training, eval_env.norm_reward = False, False
    mean, _ = evaluate_policy(
        AttnPPO.load(run / f"{env_id}.zip", env=eval_env), eval_env, n_eval_episodes=3, deterministic=True
    )
    assert lengths[0] == pytest.approx(mean)
    assert all(1 <= length <= 500 for length in lengths)


def test_attention_offsets_reads_the_acting_transformers_lag(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import attention_offsets
    import rl_zoo3.import_envs  # noqa: F401
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_attn_ac import AttnPPO

    env_id = "PendulumNoVel-v1"
    run = tmp_path / "seed0" / "ppo_attn" / f"{env_id}_1"  # rl-zoo3's layout
    (run / env_id).mkdir(parents=True)
    env = VecNormalize(make_vec_env(env_id, n_envs=1))
    model = AttnPPO("MlpPolicy", env, n_steps=64, actor_context=True, prev_action=True, shared_transformer=False,
                    context_len=8, local_window=4, n_layers=2, seed=0)  # fmt: skip
    with th.no_grad():  # the actor's first layer looks one step back, the critic's (not acting) at the step itself
        model.policy.actor_encoder.transformer.blocks[0].attn.offset_bias_raw[:, 8] = 10.0  # offset 1: index K
        model.policy.transformer.blocks[0].attn.offset_bias_raw[:, 7] = 10.0
    model.save(run / f"{env_id}.zip")
    env.save(str(run / env_id / "vecnormalize.pkl"))
    mean_return, summary = attention_offsets.attention_summary(run, env_id, 1, seed=3)
    assert summary.shape == (2, 2, 3) and mean_return < 0
    assert (summary[0, :, 1] > 0.99).all()  # lag 1 in the actor's first layer
    assert (summary[1, :, 1] < 0.9).all() and (summary[..., 2] >= 0).all()  # first step seen from steps 4-7

"""rl-zoo3 entry point: registers AttnA2C (``a2c_attn``) and AttnPPO (``ppo_attn``), their hyperparameter
files and Optuna samplers, then runs rl-zoo3's command line.

rl-zoo3 takes ``--algo`` choices from ``rl_zoo3.utils.ALGOS`` when it parses its arguments, and imports
``--gym-packages`` only after, so our algorithms must be registered first: use this entry point instead of
``python -m rl_zoo3.train``. Every rl-zoo3 flag keeps its meaning; for our algorithms the default ``-conf`` is
our ``hyperparams/<algo>.yml``.

    attn-zoo train --algo ppo_attn --env CartPoleNoVel-v1
    attn-zoo enjoy --algo ppo_attn --env CartPoleNoVel-v1 -f logs/ --no-render
    python -m sb3_attn_ac.zoo train --algo a2c_attn --env CartPole-v1 -optimize --n-trials 20
"""

import sys
from pathlib import Path
from typing import Any

from sb3_attn_ac.a2c_attn import AttnA2C
from sb3_attn_ac.ppo_attn import AttnPPO

ALGOS = {"a2c_attn": AttnA2C, "ppo_attn": AttnPPO}
HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
COMMANDS = ("train", "enjoy", "plot_train", "plot_from_file", "all_plots")


def sample_attention_params(trial: Any) -> dict[str, Any]:
    """Optuna search space of the attention arguments (shared by both algorithms)."""
    return {
        "context_len": trial.suggest_categorical("context_len", [4, 8, 16, 32]),
        "n_layers": trial.suggest_categorical("n_layers", [1, 2]),
        "d_model": trial.suggest_categorical("d_model", [16, 32, 64]),
        "ct_coef": trial.suggest_categorical("ct_coef", [0.0, 0.01, 0.1, 0.5]),
        "mask_ratio": trial.suggest_categorical("mask_ratio", [0.15, 0.25]),
        "actor_context": trial.suggest_categorical("actor_context", [False, True]),
        "prev_action": trial.suggest_categorical("prev_action", [False, True]),
        "start_bias": trial.suggest_categorical("start_bias", [False, True]),
        "position_encoding": trial.suggest_categorical("position_encoding", ["relative", "alibi"]),
    }


def sample_a2c_attn_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """rl-zoo3's A2C search space plus the attention arguments."""
    from rl_zoo3.hyperparams_opt import sample_a2c_params

    return {**sample_a2c_params(trial, n_actions, n_envs, additional_args), **sample_attention_params(trial)}


def sample_ppo_attn_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """rl-zoo3's PPO search space plus the attention arguments."""
    from rl_zoo3.hyperparams_opt import sample_ppo_params

    return {**sample_ppo_params(trial, n_actions, n_envs, additional_args), **sample_attention_params(trial)}


def register() -> None:
    """Add our algorithms and samplers to rl-zoo3's tables (idempotent)."""
    from rl_zoo3 import hyperparams_opt, utils

    utils.ALGOS.update(ALGOS)  # rl_zoo3.ALGOS is this same dict
    hyperparams_opt.HYPERPARAMS_SAMPLER.update(a2c_attn=sample_a2c_attn_params, ppo_attn=sample_ppo_attn_params)
    # Trials stored in a study are converted back to hyperparameters as rl-zoo3's on-policy ones.
    converter = hyperparams_opt.convert_onpolicy_params
    hyperparams_opt.HYPERPARAMS_CONVERTER.update(a2c_attn=converter, ppo_attn=converter)


def with_default_config(argv: list[str]) -> list[str]:
    """Append ``--conf-file`` with our hyperparameter file to a ``train`` command for our algorithms that
    names none.

    :param argv: command line after the program name, e.g. ``["train", "--algo", "ppo_attn", ...]``
    """
    if not argv or argv[0] != "train" or {"-conf", "--conf-file"} & set(argv):
        return argv
    algo = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--algo"), None)
    if algo not in ALGOS:
        return argv
    return [*argv, "--conf-file", str(HYPERPARAMS_DIR / f"{algo}.yml")]


def main(argv: list[str] | None = None) -> None:
    """Run an rl-zoo3 command (``train``, ``enjoy``, ``plot_train``, ``plot_from_file``, ``all_plots``).

    :param argv: command line after the program name (default: ``sys.argv[1:]``)
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"usage: attn-zoo {{{','.join(COMMANDS)}}} [rl-zoo3 arguments]\n\n{__doc__}")
    register()
    from rl_zoo3.cli import main as zoo_main

    sys.argv = [sys.argv[0], *with_default_config(argv)]
    zoo_main()


if __name__ == "__main__":
    main()

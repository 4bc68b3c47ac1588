"""rl-zoo3 entry point: registers AttnA2C (``a2c_attn``) and AttnPPO (``ppo_attn``), their hyperparameter
files and Optuna samplers, then runs rl-zoo3's command line.

rl-zoo3 takes ``--algo`` choices from ``rl_zoo3.utils.ALGOS`` when it parses its arguments, and imports
``--gym-packages`` only after, so our algorithms must be registered first: use this entry point instead of
``python -m rl_zoo3.train``. Every rl-zoo3 flag keeps its meaning; for our algorithms the default ``-conf`` is
our ``hyperparams/<algo>.yml``.

``train -optimize`` takes two flags of ours, for tasks where one run says little about a trial:

- ``--runs-per-trial N`` (default 1, rl-zoo3's behaviour): each trial trains N times, with env seeds ``--seed``,
  ``--seed`` + 1, ...; its value is the mean of the N runs' last evaluations (each run's in the trial's user
  attribute ``run_values``). rl-zoo3's pruner sees the first run's evaluations only; later runs are not pruned.
- ``--search-space {zoo,attention,rl}`` (default ``zoo``): ``zoo`` samples rl-zoo3's PPO / A2C space plus the
  attention arguments; ``attention`` samples the attention arguments only, the entry's other settings fixed;
  ``rl`` samples the RL settings only (``RL_SPACES``: a grid around the zoo's tuned values, gamma down to 0.9),
  the entry's attention arguments fixed.

    attn-zoo train --algo ppo_attn --env CartPoleNoVel-v1
    attn-zoo enjoy --algo ppo_attn --env CartPoleNoVel-v1 -f logs/ --no-render
    python -m sb3_attn_ac.zoo train --algo a2c_attn --env CartPole-v1 -optimize --n-trials 20
    attn-zoo train --algo ppo_attn --env PendulumNoVel-v1 -optimize --n-trials 20 --runs-per-trial 3 \\
        --search-space attention
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sb3_attn_ac.a2c_attn import AttnA2C
from sb3_attn_ac.ppo_attn import AttnPPO

ALGOS = {"a2c_attn": AttnA2C, "ppo_attn": AttnPPO}
HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
COMMANDS = ("train", "enjoy", "plot_train", "plot_from_file", "all_plots")
SEARCH_SPACES = ("zoo", "attention", "rl")


ATTENTION_SPACE: dict[str, list] = {
    "context_len": [4, 8, 16, 32],
    "n_layers": [1, 2],
    "d_model": [16, 32, 64],
    "ct_coef": [0.0, 0.01, 0.1, 0.5],
    "mask_ratio": [0.15, 0.25],
    "actor_context": [False, True],
    "prev_action": [False, True],
    "start_bias": [False, True],
    "position_encoding": ["relative", "alibi"],
}


# The RL settings ``--search-space rl`` samples. ``lr_schedule`` "linear" anneals ``learning_rate`` to 0 (an entry's
# "lin_<value>"). rl-zoo3's own samplers keep gamma >= 0.97 (Pendulum's tuned entries use 0.9) and draw n_steps
# and the network, which the entries here fix.
RL_SPACES: dict[str, dict[str, list]] = {
    "ppo_attn": {
        "batch_size": [32, 64, 128, 256],
        "n_epochs": [5, 10, 20],
        "learning_rate": [3e-4, 1e-3, 3e-3],
        "lr_schedule": ["constant", "linear"],
        "clip_range": [0.1, 0.2, 0.3],
        "gae_lambda": [0.9, 0.95, 0.98],
        "gamma": [0.9, 0.95, 0.98, 0.99],
    },
    "a2c_attn": {
        "n_steps": [5, 8, 16, 32],
        "learning_rate": [3e-4, 7e-4, 1e-3, 3e-3],
        "lr_schedule": ["constant", "linear"],
        "gae_lambda": [0.9, 0.95, 1.0],
        "gamma": [0.9, 0.95, 0.98, 0.99],
        "ent_coef": [0.0, 0.01],
    },
}


def rl_hyperparams(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled RL settings as a zoo entry writes them: ``lr_schedule`` folded into ``learning_rate``
    ("lin_<value>" where it is linear).

    :param params: values of ``RL_SPACES``' parameters
    """
    hyperparams = {k: v for k, v in params.items() if k != "lr_schedule"}
    if params.get("lr_schedule") == "linear":
        hyperparams["learning_rate"] = f"lin_{params['learning_rate']}"
    return hyperparams


def rl_params(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`rl_hyperparams`: an entry's ``learning_rate`` as the space's ``learning_rate`` and
    ``lr_schedule`` ("lin_<value>" is linear, a number constant); the other hyperparameters as they are.

    :param hyperparams: a zoo entry's hyperparameters (with ``learning_rate``)
    """
    rate = hyperparams["learning_rate"]
    linear = isinstance(rate, str) and rate.startswith("lin_")
    return {
        **hyperparams,
        "learning_rate": float(rate.removeprefix("lin_")) if linear else rate,
        "lr_schedule": "linear" if linear else "constant",
    }


def rl_sampler(algo: str) -> Callable[..., dict[str, Any]]:
    """rl-zoo3 sampler of ``RL_SPACES[algo]`` (``--search-space rl``): the entry's attention arguments stay.

    :param algo: ``ppo_attn`` or ``a2c_attn``
    """

    def sample_rl_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        from rl_zoo3.utils import linear_schedule

        params = {name: trial.suggest_categorical(name, choices) for name, choices in RL_SPACES[algo].items()}
        hyperparams = rl_hyperparams(params)
        if params["lr_schedule"] == "linear":
            hyperparams["learning_rate"] = linear_schedule(params["learning_rate"])
        return hyperparams

    return sample_rl_params


def sample_attention_params(trial: Any) -> dict[str, Any]:
    """Optuna search space of the attention arguments (shared by both algorithms): ``ATTENTION_SPACE``'s choices."""
    return {name: trial.suggest_categorical(name, choices) for name, choices in ATTENTION_SPACE.items()}


def sample_a2c_attn_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """rl-zoo3's A2C search space plus the attention arguments."""
    from rl_zoo3.hyperparams_opt import sample_a2c_params

    return {**sample_a2c_params(trial, n_actions, n_envs, additional_args), **sample_attention_params(trial)}


def sample_ppo_attn_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """rl-zoo3's PPO search space plus the attention arguments."""
    from rl_zoo3.hyperparams_opt import sample_ppo_params

    return {**sample_ppo_params(trial, n_actions, n_envs, additional_args), **sample_attention_params(trial)}


def sample_attention_only(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """The attention arguments alone (``--search-space attention``): the entry's RL settings stay."""
    return sample_attention_params(trial)


def converter(search_space: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The function turning a stored trial's parameters back into hyperparameters (rl-zoo3's on-policy converter
    for the ``zoo`` space, :func:`rl_hyperparams` for ``rl``; the ``attention`` space samples hyperparameters as
    they are).

    :param search_space: one of ``SEARCH_SPACES``
    """
    from rl_zoo3.hyperparams_opt import convert_onpolicy_params

    return {"zoo": convert_onpolicy_params, "rl": rl_hyperparams}.get(search_space, dict)


def register(search_space: str = "zoo") -> None:
    """Add our algorithms and samplers to rl-zoo3's tables (idempotent).

    :param search_space: Optuna search space of our algorithms, one of ``SEARCH_SPACES``
    """
    from rl_zoo3 import hyperparams_opt, utils

    if search_space not in SEARCH_SPACES:
        raise ValueError(f"search_space must be one of {SEARCH_SPACES}, got {search_space!r}")
    utils.ALGOS.update(ALGOS)  # rl_zoo3.ALGOS is this same dict
    if search_space == "zoo":
        samplers = dict(a2c_attn=sample_a2c_attn_params, ppo_attn=sample_ppo_attn_params)
    elif search_space == "rl":
        samplers = {algo: rl_sampler(algo) for algo in ALGOS}
    else:
        samplers = dict(a2c_attn=sample_attention_only, ppo_attn=sample_attention_only)
    hyperparams_opt.HYPERPARAMS_SAMPLER.update(samplers)
    # Trials stored in a study are converted back to hyperparameters (rl-zoo3's ``--trial-id``).
    hyperparams_opt.HYPERPARAMS_CONVERTER.update(a2c_attn=converter(search_space), ppo_attn=converter(search_space))


class _LaterRun:
    """A trial as its second and later runs see it: the same sampled values (Optuna returns a parameter's value
    again when it is suggested again), without reporting evaluations or pruning (the first run did both)."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def report(self, value: float, step: int) -> None:
        """Ignore: the pruner's intermediate values are the first run's."""

    def should_prune(self) -> bool:
        return False


def experiment_manager(runs_per_trial: int) -> type:
    """rl-zoo3's ``ExperimentManager`` whose Optuna objective trains each trial ``runs_per_trial`` times (env seeds
    ``seed``, ``seed`` + 1, ...) and returns the mean of the runs' last evaluations.

    :param runs_per_trial: runs per trial (>= 1)
    """
    from rl_zoo3.exp_manager import ExperimentManager

    class MultiRunExperimentManager(ExperimentManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if runs_per_trial > 1 and self.n_jobs > 1:  # the runs of a trial set the env seed in turn
                raise ValueError(
                    f"--runs-per-trial {runs_per_trial} needs --n-jobs 1, got {self.n_jobs}: run several workers on"
                    " one --storage instead (benchmarks/optimize.py)"
                )

        def objective(self, trial: Any) -> float:
            seed, values = self.seed, []
            try:
                for run in range(runs_per_trial):
                    self.seed = seed + run
                    values.append(float(super().objective(trial if run == 0 else _LaterRun(trial))))
                    trial.set_user_attr("run_values", values)
            finally:
                self.seed = seed
            return float(np.mean(values))

    return MultiRunExperimentManager


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
    ours, argv = optimize_args(argv)
    register(ours.search_space)
    import rl_zoo3.train
    from rl_zoo3.cli import main as zoo_main

    # rl-zoo3's train() builds the ExperimentManager it imported; ours runs each trial several times.
    rl_zoo3.train.ExperimentManager = experiment_manager(ours.runs_per_trial)
    sys.argv = [sys.argv[0], *with_default_config(argv)]
    zoo_main()


def optimize_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split our ``-optimize`` flags (``--runs-per-trial``, ``--search-space``) from rl-zoo3's arguments.

    :param argv: command line after the program name
    :return: our flags, and the arguments for rl-zoo3
    """
    parser = argparse.ArgumentParser(prog=f"attn-zoo {argv[0]}", add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-per-trial", type=int, default=1)
    parser.add_argument("--search-space", choices=SEARCH_SPACES, default="zoo")
    ours, rest = parser.parse_known_args(argv[1:])
    if ours.runs_per_trial < 1:
        parser.error(f"--runs-per-trial must be >= 1, got {ours.runs_per_trial}")
    if argv[0] != "train" and rest != argv[1:]:
        parser.error("--runs-per-trial and --search-space belong to `train -optimize`")
    return ours, [argv[0], *rest]


if __name__ == "__main__":
    main()

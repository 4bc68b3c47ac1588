"""Argument and space checks of the RLlib plugin: the SB3 side's checks, plus what only RLlib cannot do."""

from typing import Any

from gymnasium import spaces

from sb3_attn_ac.common.attention.on_policy import POLICY_ARGS
from sb3_attn_ac.common.utils import (
    check_actor_reads_critic,
    check_actor_value,
    check_attention_args,
    check_contrastive_args,
    check_flags,
    check_loss_coefs,
    check_policy_kwargs,
    check_prev_action_encoding,
    check_q_att,
    check_spaces,
)

# AttnPPO's rollout options: RLlib's env runners and batch settings take their place.
ROLLOUT_ARGS = ("n_episodes", "max_rollout_steps")


def check_attention_config(args: dict[str, Any]) -> None:
    """Raise AttnPPO's ValueError for a bad attention argument, and one naming what RLlib cannot run.

    :param args: the attention arguments (``context_len`` ... ``shared_transformer``, ``policy_kwargs``)
    """
    unsupported = sorted(set(args) & set(ROLLOUT_ARGS))
    if unsupported:
        raise ValueError(
            f"{', '.join(unsupported)}: AttnPPO's rollout options do not apply on RLlib; set rollouts with "
            "RLlib's own config (.env_runners(rollout_fragment_length=..., batch_mode=...), .training(train_batch_size=...))"
        )
    check_attention_args(
        args["context_len"],
        args["n_layers"],
        args["n_heads"],
        args["d_model"],
        args["dropout"],
        args["key_encoder"],
        args["key_momentum"],
        args["position_encoding"],
        args["start_bias"],
        args["local_window"],
    )
    flags = (
        "bert_masking",
        "actor_context",
        "shared_transformer",
        "actor_reads_critic",
        "prev_action",
        "prev_obs",
        "start_bias",
    )
    check_flags(**{name: args[name] for name in flags})
    check_prev_action_encoding(args["prev_action_encoding"])
    check_contrastive_args(args["ct_coef"], args["ct_temperature"], args["mask_ratio"])
    check_loss_coefs(args["q_att_loss_coef"], args["next_state_coef"], args["rtg_coef"], args["actor_value_coef"])
    check_actor_value(args["actor_value_coef"], args["actor_context"], args["shared_transformer"])
    check_actor_reads_critic(args["actor_reads_critic"], args["actor_context"], args["shared_transformer"])
    check_policy_kwargs(args["policy_kwargs"], POLICY_ARGS, "attn_ppo_config")
    if args["actor_context"] and not args["shared_transformer"]:
        raise ValueError(
            "shared_transformer=False is not supported on RLlib: the module's state would have to carry the actor's "
            "and the critic's key/value caches; use shared_transformer=True (the default)"
        )
    if args["prev_action"]:
        raise ValueError(
            "prev_action=True is not supported on RLlib yet: RLlib's module computes the action distribution before the "
            "action is sampled, so its state cannot carry it; RLlib's PrevActionsPrevRewards connector adds previous "
            "actions to the observations instead"
        )
    if args["prev_obs"]:
        raise ValueError(
            "prev_obs=True is not supported on RLlib yet: the module's state and its training sequences do not carry "
            "the previous step's features; use prev_obs=False (the default)"
        )
    if not isinstance(args["max_seq_len"], int) or args["max_seq_len"] < 1:
        raise ValueError(f"max_seq_len must be an integer >= 1, got {args['max_seq_len']!r}")


def check_rllib_spaces(observation_space: spaces.Space, action_space: spaces.Space, q_att_coef: float = 0.0) -> None:
    """Raise a ValueError for spaces the attention policy does not support (as AttnPPO), or RLlib's action
    distributions do not cover (MultiBinary; Box actions of more than one dimension).

    :param observation_space: the module's observation space
    :param action_space: its action space
    :param q_att_coef: beta of Q_att (needs Discrete actions)
    """
    check_spaces(observation_space, action_space)
    check_q_att(q_att_coef, action_space)
    if isinstance(action_space, spaces.MultiBinary):
        raise ValueError(
            f"action_space MultiBinary is not supported on RLlib (it has no MultiBinary action distribution), got "
            f"{action_space}; use Discrete, MultiDiscrete or a one-dimensional Box"
        )
    if isinstance(action_space, (spaces.Box, spaces.MultiDiscrete)) and len(action_space.shape) != 1:
        raise ValueError(f"action_space must be one-dimensional on RLlib, got {action_space}")

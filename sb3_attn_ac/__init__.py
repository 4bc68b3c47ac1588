"""Attention-assisted actor-critic for Stable-Baselines3."""

from sb3_attn_ac.a2c_attn import AttnA2C
from sb3_attn_ac.common.attention import (
    AttnActorCriticCnnPolicy,
    AttnActorCriticPolicy,
    AttnMultiInputActorCriticPolicy,
    DictEpisodeRolloutBuffer,
    EpisodeRolloutBuffer,
)
from sb3_attn_ac.ppo_attn import AttnPPO
from sb3_attn_ac.version import __version__

__all__ = [
    "AttnA2C",
    "AttnActorCriticCnnPolicy",
    "AttnActorCriticPolicy",
    "AttnMultiInputActorCriticPolicy",
    "AttnPPO",
    "DictEpisodeRolloutBuffer",
    "EpisodeRolloutBuffer",
    "__version__",
]

from sb3_attn_ac.common.attention.buffers import DictEpisodeRolloutBuffer, EpisodeRolloutBuffer
from sb3_attn_ac.common.attention.policies import (
    AttnActorCriticCnnPolicy,
    AttnActorCriticPolicy,
    AttnMultiInputActorCriticPolicy,
)

__all__ = [
    "AttnActorCriticCnnPolicy",
    "AttnActorCriticPolicy",
    "AttnMultiInputActorCriticPolicy",
    "DictEpisodeRolloutBuffer",
    "EpisodeRolloutBuffer",
]

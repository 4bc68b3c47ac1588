"""Policy aliases for AttnPPO (as SB3's ``ppo/policies.py``)."""

from sb3_attn_ac.common.attention.policies import (
    AttnActorCriticCnnPolicy,
    AttnActorCriticPolicy,
    AttnMultiInputActorCriticPolicy,
)

MlpPolicy = AttnActorCriticPolicy
CnnPolicy = AttnActorCriticCnnPolicy
MultiInputPolicy = AttnMultiInputActorCriticPolicy

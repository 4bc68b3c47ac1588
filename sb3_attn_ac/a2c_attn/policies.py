"""Policy aliases for AttnA2C (as SB3's ``a2c/policies.py``)."""

from sb3_attn_ac.common.attention.policies import (
    AttnActorCriticCnnPolicy,
    AttnActorCriticPolicy,
    AttnMultiInputActorCriticPolicy,
)

MlpPolicy = AttnActorCriticPolicy
CnnPolicy = AttnActorCriticCnnPolicy
MultiInputPolicy = AttnMultiInputActorCriticPolicy

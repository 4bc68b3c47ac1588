from sb3_attn_ac.ppo_attn.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_attn_ac.ppo_attn.ppo_attn import AttnPPO

__all__ = ["AttnPPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

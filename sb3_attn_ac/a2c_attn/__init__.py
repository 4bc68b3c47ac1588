from sb3_attn_ac.a2c_attn.a2c_attn import AttnA2C
from sb3_attn_ac.a2c_attn.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["AttnA2C", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

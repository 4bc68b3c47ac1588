"""The attention actor-critic on RLlib's new API stack (``pip install "sb3-attn-ac[rllib]"``).

``attn_ppo_config(**attention_args)`` returns RLlib's PPOConfig with :class:`AttnPPOTorchRLModule` (the episode
transformer of the SB3 side as the critic, its rolling key/value cache as the module's state) and
:class:`AttnPPOTorchLearner` (PPO's loss + ``ct_coef`` * masked-contrastive loss); combine it with RLlib's
builder (``.environment()``, ``.env_runners()``, ``.learners()``, ``.training()``). :func:`register_gym_env` makes
envs that an import registers with gymnasium (rl-zoo3's NoVel envs, POPGym) in every env runner.
"""

from sb3_attn_ac.rllib.config import AttnPPOConfig, attn_ppo_config
from sb3_attn_ac.rllib.envs import register_gym_env
from sb3_attn_ac.rllib.learner import AttnPPOTorchLearner
from sb3_attn_ac.rllib.rl_module import AttnPPOTorchRLModule

__all__ = ["AttnPPOConfig", "AttnPPOTorchLearner", "AttnPPOTorchRLModule", "attn_ppo_config", "register_gym_env"]

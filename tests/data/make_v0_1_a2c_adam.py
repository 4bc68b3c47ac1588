"""Writes the sb3-attn-ac 0.1.0 AttnA2C save with Adam (use_rms_prop=False) that tests/test_sb3_compat.py loads
(run once with 0.1.0, commit 756b37e):

    python tests/data/make_v0_1_a2c_adam.py

0.1.0 stored the policy arguments it added (attention arguments, optimizer) in ``policy_kwargs`` and did not save
``use_rms_prop``. Tiny network, a few steps: only the format matters.
"""

from pathlib import Path

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_attn_ac import AttnA2C

if __name__ == "__main__":
    th.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = AttnA2C("MlpPolicy", env, use_rms_prop=False, context_len=4, d_model=8, seed=0,
                    policy_kwargs=dict(net_arch=dict(pi=[8], vf=[])))  # fmt: skip
    model.learn(40)
    model.save(Path(__file__).parent / "attn_a2c_adam_v0_1.zip")

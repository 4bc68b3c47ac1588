"""Writes the sb3-attn-ac 0.3.1 saves that tests/test_compat_v0_3_1.py loads (run once with 0.3.1, commit e23b8a4):

    python tests/data/make_v0_3_1_models.py

An AttnPPO model on a Box action space whose actor transformer embeds the previous action as 0.3.1 did (raw, not
clipped or scaled), with its deterministic actions on fixed observations, and its policy saved alone. Tiny
networks, a few hundred steps: only the format matters.
"""

from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_attn_ac import AttnPPO

HERE = Path(__file__).parent

if __name__ == "__main__":
    th.set_num_threads(1)
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = AttnPPO("MlpPolicy", env, n_steps=16, batch_size=32, n_epochs=1, context_len=4, d_model=8, seed=0,
                    actor_context=True, prev_action=True, shared_transformer=False,
                    policy_kwargs=dict(net_arch=dict(pi=[8], vf=[8])))  # fmt: skip
    model.learn(64)
    with th.no_grad():  # actions inside the bounds, and a previous action that visibly matters
        model.policy.action_net.bias.fill_(1.0)
        model.policy.actor_encoder.action_embedding.weight.mul_(20)
    observations = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    actions, state, starts = [], None, np.array([True])
    for obs in observations:
        action, state = model.predict(obs[None], state=state, episode_start=starts, deterministic=True)
        actions.append(action[0])
        starts = np.array([False])
    model.save(HERE / "attn_ppo_v0_3_1_prev_action.zip")
    model.policy.save(HERE / "attn_ppo_v0_3_1_prev_action_policy.pt")
    np.savez(HERE / "attn_ppo_v0_3_1_prev_action_outputs.npz", observations=observations, actions=np.array(actions))
    print(np.array(actions).ravel())

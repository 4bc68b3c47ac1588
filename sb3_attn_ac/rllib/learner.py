"""RLlib's PPO learner with the attention actor-critic's auxiliary losses added to PPO's loss."""

from collections.abc import Sequence
from typing import Any

import torch as th
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.typing import ModuleID, ParamDict
from torch.nn import functional as F

from sb3_attn_ac.rllib.rl_module import AttnPPOTorchRLModule


class AttnPPOTorchLearner(PPOTorchLearner):
    """:class:`~ray.rllib.algorithms.ppo.torch.ppo_torch_learner.PPOTorchLearner` whose loss is

        L = L_PPO + ct_coef * L_ct + next_state_coef * L_next + rtg_coef * L_rtg + q_att_loss_coef * L_Q

    each auxiliary term computed only when its coefficient is on (L_Q with ``q_att_coef > 0``), padded steps
    masked out of all of them. Each is logged in the learner results under its name (``contrastive_loss``,
    ``next_state_loss``, ``rtg_loss``, ``q_att_loss``), beside PPO's. The momentum key encoder takes one EMA
    step after each optimizer step.
    """

    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: PPOConfig, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> th.Tensor:
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        module = self.module[module_id].unwrapped()
        if not isinstance(module, AttnPPOTorchRLModule):
            return loss
        weights = {"contrastive_loss": config.ct_coef, "next_state_loss": config.next_state_coef, "rtg_loss": config.rtg_coef}
        losses = {}
        if max(weights.values()) > 0:
            ct_temperature = config.ct_temperature if config.ct_coef > 0 else None
            losses = module.masked_losses(batch, config.mask_ratio, config.bert_masking, ct_temperature, config.gamma)
        if module.policy.q_head is not None:
            # Q_att(s_t, a_t) regressed on the value targets (TD(lambda) returns) of the taken actions, padding
            # and RLlib's appended bootstrap steps left out (the module is stateful: the batch has a loss mask).
            mask = batch[Columns.LOSS_MASK].bool()
            q_att = module.policy.q_att(fwd_out[Columns.EMBEDDINGS])  # (B, T, n_actions)
            q_taken = q_att.gather(-1, batch[Columns.ACTIONS].long()[..., None]).squeeze(-1)
            losses["q_att_loss"] = F.mse_loss(q_taken[mask], batch[Postprocessing.VALUE_TARGETS][mask])
            weights["q_att_loss"] = config.q_att_loss_coef
        for name, value in losses.items():
            loss = loss + weights[name] * value
        if losses:
            self.metrics.log_dict({name: value.detach() for name, value in losses.items()}, key=module_id, window=1)
        return loss

    def get_parameters(self, module: RLModule) -> Sequence[th.nn.Parameter]:
        # The momentum key encoder (and any part no loss reads) takes no gradient step.
        return [p for p in module.parameters() if p.requires_grad]

    def apply_gradients(self, gradients_dict: ParamDict) -> None:
        super().apply_gradients(gradients_dict)
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            if isinstance(module, AttnPPOTorchRLModule):
                module.policy.update_key_encoder()

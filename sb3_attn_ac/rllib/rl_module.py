"""The attention actor-critic as an RLlib RLModule (new API stack): the SB3 policy's parts, RLlib's interfaces.

The module holds an :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy` (features extractor,
actor MLP, the sliding-window episode transformer, value head, contrastive and masked-prediction heads) and
exposes it through RLlib's stateful-module contract, as RLlib's LSTM modules do:

- the state is the transformer's rolling key/value cache, exactly what ``predict(state)`` keeps on the SB3 side
  (keys and values of the last ``context_len - 1`` steps of every layer, which slots hold steps of the running
  episode, and the episode step of the next observation), with the batch axis first as RLlib wants it;
- a forward pass over (B, T) sequences starts from ``STATE_IN``: every step attends to the cached steps and the
  sequence's earlier ones (one batched pass over both), so training values and log-probabilities equal acting-time
  ones for the same parameters, and ``STATE_OUT`` is the cache after each sequence's last (unpadded) step.

RLlib cuts episodes into ``max_seq_len`` sequences and gives each the state at its first step (its previous
chunk's last ``STATE_OUT``, recorded while acting): the transformer's window then reaches back across sequence and
rollout boundaries, never into another episode (a new episode starts from :meth:`get_initial_state`).
"""

from typing import Any

import numpy as np
import torch as th
import tree
from gymnasium import spaces
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.catalog import Catalog
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import FloatSchedule

from sb3_attn_ac.common.attention.on_policy import POLICY_ARGS
from sb3_attn_ac.common.attention.policies import AttnActorCriticPolicy
from sb3_attn_ac.common.torch_layers import KVCache, TokenMeta
from sb3_attn_ac.rllib.checks import check_rllib_spaces


class AttnPPOTorchRLModule(TorchRLModule, ValueFunctionAPI):
    """RLlib module whose critic (and with ``actor_context`` actor) reads the episode through the transformer.

    ``model_config`` holds the attention arguments of :class:`~sb3_attn_ac.AttnPPO` (``context_len`` ...
    ``shared_transformer``, ``next_state_coef`` / ``rtg_coef`` to build the prediction heads), ``policy_kwargs``
    for the policy (``net_arch``, ``activation_fn``, features extractor, ...) and RLlib's ``max_seq_len``;
    :class:`~sb3_attn_ac.rllib.AttnPPOConfig` fills it in.
    """

    policy: AttnActorCriticPolicy

    def setup(self) -> None:
        config = self.model_config
        check_rllib_spaces(self.observation_space, self.action_space, config["q_att_coef"])
        policy_kwargs = dict(config.get("policy_kwargs") or {})
        if isinstance(self.observation_space, spaces.Dict):  # SB3's MultiInputPolicy: one extractor per key
            policy_kwargs.setdefault("features_extractor_class", CombinedExtractor)
        # RLlib's Learner owns the optimizer: the policy's own (built by SB3, lr 0) is never stepped.
        self.policy = AttnActorCriticPolicy(
            self.observation_space,
            self.action_space,
            FloatSchedule(0.0),
            **policy_kwargs,
            **{name: config[name] for name in POLICY_ARGS},
            next_state_head=config["next_state_coef"] > 0,
            rtg_head=config["rtg_coef"] > 0,
        )
        # RLlib's learner steps every parameter that requires a gradient: parts no loss reads get none.
        if max(config["ct_coef"], config["next_state_coef"], config["rtg_coef"]) == 0:
            self.policy.mask_embedding.requires_grad_(False)
        if config["ct_coef"] == 0:
            self.policy.query_head.requires_grad_(False)
        self.action_dist_cls = Catalog._get_dist_cls_from_action_space(self.action_space, framework="torch")

    def get_initial_state(self) -> dict[str, np.ndarray]:
        """One env's empty cache: keys and values ``(n_layers, n_heads, context_len - 1, d_model / n_heads)``,
        valid slots ``(context_len - 1,)`` (0/1) and the episode step of the next observation (0)."""
        cache = self.policy.empty_cache(1)
        return {
            "keys": cache.keys[:, 0].cpu().numpy(),
            "values": cache.values[:, 0].cpu().numpy(),
            "valid": cache.valid[0].float().cpu().numpy(),
            "timesteps": np.zeros((), dtype=np.int64),
        }

    # ----------------------------------------------------------------------------------------------------
    # Forward passes
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden, state_out = self.episode_pass(batch)
        return {Columns.ACTION_DIST_INPUTS: self._action_dist_inputs(batch, hidden), Columns.STATE_OUT: state_out}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden, state_out = self.episode_pass(batch)
        return {
            Columns.ACTION_DIST_INPUTS: self._action_dist_inputs(batch, hidden),
            Columns.STATE_OUT: state_out,
            Columns.EMBEDDINGS: hidden,
        }

    def compute_values(self, batch: dict[str, Any], embeddings: th.Tensor | None = None) -> th.Tensor:
        """V(s_t) of every step of the (B, T) sequences, each with its episode's earlier steps as context.

        :param batch: observations (B, T, ...) and ``STATE_IN``
        :param embeddings: the transformer's outputs (B, T, D) when :meth:`forward_train` computed them
        :return: (B, T) values
        """
        hidden = self.episode_pass(batch)[0] if embeddings is None else embeddings
        return self.policy._value_head(hidden)

    def episode_pass(self, batch: dict[str, Any]) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """The transformer over (B, T) sequences that continue the episodes of ``STATE_IN``: every step attends to
        the cached steps and the sequence's earlier ones, as it did while acting. Acting (T = 1) runs the
        incremental step of the SB3 side's ``predict``; training sequences run in one batched pass over the cached
        steps and the sequence (:meth:`EpisodeTransformer.forward_from_cache
        <sb3_attn_ac.common.torch_layers.EpisodeTransformer.forward_from_cache>`).

        :param batch: observations (B, T, ...), ``STATE_IN`` and, for zero-padded sequences, ``SEQ_LENS`` (B,)
        :return: the transformer's outputs (B, T, D) and the state after each sequence's last (unpadded) step
        """
        state = batch[Columns.STATE_IN]
        B, T = self._batch_shape(batch)
        start = state["timesteps"].long()  # (B,)
        columns = th.arange(T, device=start.device)
        tokens = self.policy._tokens(self.policy, self._flat_obs(batch), start[:, None] + columns)  # (B, T, D)
        # KVCache keeps layers first: (B, n_layers, H, K - 1, d) -> (n_layers, B, H, K - 1, d)
        cache = KVCache(state["keys"].transpose(0, 1), state["values"].transpose(0, 1), state["valid"].bool())
        lengths = batch.get(Columns.SEQ_LENS)
        lengths = th.full((B,), T, device=start.device) if lengths is None else lengths.long()
        if T == 1:
            hidden, cache = self.policy.transformer.step(tokens[:, 0], cache, start)
            hidden = hidden[:, None]
        else:
            hidden, cache = self._sequence_pass(tokens, start, cache, lengths)
        state_out = {
            "keys": cache.keys.transpose(0, 1),
            "values": cache.values.transpose(0, 1),
            "valid": cache.valid.float(),
            "timesteps": start + lengths,
        }
        return hidden, state_out

    def _sequence_pass(
        self, tokens: th.Tensor, start: th.Tensor, cache: KVCache, lengths: th.Tensor
    ) -> tuple[th.Tensor, KVCache]:
        """The batched pass over the K - 1 cached steps and T new tokens (zero padding after ``lengths``)::

            columns   | cached K - 1 steps | new tokens 0 ... lengths - 1 | padding |
            valid     |    cache.valid     |            True              |  False  |
            timesteps | start - K + 1 ...  |  start ...                                 (all one episode)

        :param tokens: (B, T, D) the new tokens
        :param start: (B,) episode step of each row's first new token
        :param cache: the K - 1 steps before them
        :param lengths: (B,) unpadded length of each row
        :return: (B, T, D) outputs and the cache after each row's last unpadded step
        """
        B, T, _ = tokens.shape
        n = self.policy.context_len - 1
        columns = th.arange(n + T, device=start.device)
        new_valid = columns[:T] < lengths[:, None]  # (B, T)
        meta = TokenMeta(
            start[:, None] - n + columns,  # (B, n + T)
            th.zeros(B, n + T, dtype=th.long, device=start.device),
            th.cat([cache.valid, new_valid], dim=1),
        )
        hidden, keys, values = self.policy.transformer.forward_from_cache(tokens, self.policy.transformer.band(meta), cache)
        # After a row's last step its window holds columns lengths ... lengths + n - 1 of the n + T.
        window = lengths[:, None] + th.arange(n, device=start.device)  # (B, n)
        L, _, H, _, d = keys.shape
        index = window[None, :, None, :, None].expand(L, B, H, n, d)
        return hidden, KVCache(keys.gather(3, index), values.gather(3, index), meta.valid.gather(1, window))

    def _batch_shape(self, batch: dict[str, Any]) -> tuple[int, int]:
        """(B, T) of the batch's observations."""
        first = tree.flatten(batch[Columns.OBS])[0]
        return first.shape[0], first.shape[1]

    def _flat_obs(self, batch: dict[str, Any]) -> PyTorchObs:
        """The (B, T, ...) observations as (B * T, ...), row-major (a dict of them for Dict spaces)."""
        return tree.map_structure(lambda x: x.reshape(-1, *x.shape[2:]), batch[Columns.OBS])

    def _action_dist_inputs(self, batch: dict[str, Any], hidden: th.Tensor) -> th.Tensor:
        """The inputs of RLlib's action distribution (B, T, n) from the policy's distribution at each step."""
        B, T, D = hidden.shape
        distribution = self.policy.action_distribution(self._flat_obs(batch), hidden.reshape(B * T, D))
        return rllib_dist_inputs(distribution, self.policy).view(B, T, -1)

    # ----------------------------------------------------------------------------------------------------
    # Auxiliary losses
    def masked_losses(
        self,
        batch: dict[str, Any],
        mask_ratio: float,
        bert_masking: bool,
        ct_temperature: float | None,
        gamma: float,
    ) -> dict[str, th.Tensor]:
        """The masked pass over the batch's sequences and the losses read from it, by name:
        ``contrastive_loss`` (unless ``ct_temperature`` is None) and the prediction heads' ``next_state_loss`` /
        ``rtg_loss`` (when built). Padded steps are never masked, never keys and never targets; the masked
        tokens attend both ways within their sequence.

        :param batch: a training batch: observations (B, T, ...), ``STATE_IN``, ``SEQ_LENS``, rewards, loss mask
        :param mask_ratio: fraction of the steps masked
        :param bert_masking: BERT's 80/10/10 replacement instead of always the mask embedding
        :param ct_temperature: omega of the contrastive loss (None: not computed)
        :param gamma: discount of the reward-to-go targets
        """
        B, T = self._batch_shape(batch)
        device = batch[Columns.STATE_IN]["timesteps"].device
        columns = th.arange(T, device=device)
        lengths = batch.get(Columns.SEQ_LENS)
        valid = th.ones(B, T, dtype=th.bool, device=device) if lengths is None else columns < lengths[:, None]
        meta = TokenMeta(
            batch[Columns.STATE_IN]["timesteps"].long()[:, None] + columns,
            th.zeros(B, T, dtype=th.long, device=device),  # one episode per row
            valid,
        )
        _, _, masked = self.policy.stream_forward(self._flat_obs(batch), meta, mask_ratio, bert_masking)
        assert masked is not None
        losses = {}
        if ct_temperature is not None:
            losses["contrastive_loss"] = self.policy.contrastive_loss(masked, ct_temperature)
        # The step RLlib appends after each chunk (its bootstrap observation) has no real reward: not a target.
        reward_known = valid if Columns.LOSS_MASK not in batch else batch[Columns.LOSS_MASK].bool()
        rewards = batch[Columns.REWARDS].float() if Columns.REWARDS in batch else th.zeros(B, T, device=device)
        next_state_loss, rtg_loss = self.policy.masked_prediction_losses(masked, rewards, reward_known, gamma)
        if next_state_loss is not None:
            losses["next_state_loss"] = next_state_loss
        if rtg_loss is not None:
            losses["rtg_loss"] = rtg_loss
        return losses


def rllib_dist_inputs(distribution: Distribution, policy: AttnActorCriticPolicy) -> th.Tensor:
    """The (N, n) inputs RLlib's distribution for the same action space takes: logits (concatenated per
    sub-action for MultiDiscrete), or mean and log std for Box.

    :param distribution: the policy's SB3 distribution over N actions
    :param policy: the policy (its state-independent ``log_std`` for Box actions)
    """
    if isinstance(distribution, CategoricalDistribution):
        return distribution.distribution.logits
    if isinstance(distribution, MultiCategoricalDistribution):
        return th.cat([d.logits for d in distribution.distribution], dim=-1)
    if isinstance(distribution, DiagGaussianDistribution):
        mean = distribution.distribution.mean
        return th.cat([mean, policy.log_std.expand_as(mean)], dim=-1)
    raise ValueError(f"no RLlib action distribution for {type(distribution).__name__}")  # check_rllib_spaces excludes it

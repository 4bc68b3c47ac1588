"""AttnPPO: PPO whose critic (and optionally actor) reads the episode through a transformer."""

import warnings
from typing import Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule
from torch.nn import functional as F

from sb3_attn_ac.common.attention.buffers import segment_streams, take
from sb3_attn_ac.common.attention.on_policy import AttnOnPolicyAlgorithm
from sb3_attn_ac.common.attention.policies import AttnActorCriticPolicy
from sb3_attn_ac.common.torch_layers import TokenMeta
from sb3_attn_ac.common.utils import check_advantage_normalization, fast_adam_kwargs, is_integer

SelfAttnPPO = TypeVar("SelfAttnPPO", bound="AttnPPO")


class AttnPPO(AttnOnPolicyAlgorithm):
    """Proximal Policy Optimization with the attention critic and masked-contrastive loss of AttnA2C.

    Minibatches keep whole-episode context: each env's rollout stream is cut into segments, and a segment is
    evaluated together with the ``n_layers * (context_len - 1)`` steps before it, so every sampled step sees
    exactly the context it had while acting, and an epoch costs time linear in ``n_steps * n_envs``. As in PPO,
    an epoch has ``ceil(n_steps * n_envs / batch_size)`` minibatches, here of whole segments drawn at random;
    segments are as long as that allows, and at least ``max(16, 2 * n_layers * (context_len - 1))`` steps.
    Arguments up to ``device`` are PPO's, in the same order with the same defaults.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, or an AttnActorCriticPolicy subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size (in steps)
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter, it can be a function of the current progress remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current
        progress remaining (from 1 to 0). None: no clipping of the value function.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param rollout_buffer_class: Rollout buffer class to use (an EpisodeRolloutBuffer subclass). None: automatic.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation.
    :param target_kl: Limit the KL divergence between updates (early stop of the epochs), None: no limit
    :param stats_window_size: Window size for the rollout logging (episodes)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param context_len: K, each attention layer's window: the step itself and K - 1 earlier steps of its episode
    :param n_layers: transformer blocks; the transformer sees ``n_layers * (context_len - 1)`` earlier steps
    :param n_heads: attention heads (must divide ``d_model``)
    :param d_model: token width
    :param dropout: dropout in the transformer
    :param ct_coef: lambda, weight of the masked-contrastive loss (0: not computed)
    :param ct_temperature: omega, temperature of the contrastive softmax
    :param mask_ratio: fraction of positions masked in the contrastive pass, in (0, 1)
    :param key_encoder: ``"momentum"`` (EMA copy of the token embedding, no gradient) or ``"shared"``
    :param key_momentum: EMA coefficient of the momentum key encoder
    :param bert_masking: BERT's 80/10/10 replacement (mask / random token / unchanged) instead of always masking
    :param actor_context: the actor also reads the transformer's output at each step (the episode so far), for
        partially observed tasks; ``predict`` then carries the context in ``state`` (as RecurrentPPO)
    :param q_att_coef: beta (Discrete actions): the actor's preferences become logits + beta * Q_att(s_t, .),
        Q_att a head on the transformer's output (0: off). Acting then reads the transformer, as with actor_context
    :param q_att_loss_coef: weight of Q_att's regression on the returns of the taken actions (logged as
        ``train/q_att_loss``)
    :param next_state_coef: weight of a head predicting, at each masked position, the next step's features
        (``train/next_state_loss``; 0: off)
    :param rtg_coef: weight of a head predicting, at each masked position, the discounted reward-to-go over the
        next ``context_len`` steps of the episode (``train/rtg_loss``; 0: off)
    :param actor_value_coef: weight of a value head on the actor's own transformer (``actor_context=True``,
        ``shared_transformer=False``), regressed on the value targets and read by nothing else
        (``train/actor_value_loss``; 0: off): the value loss's dense signal then also shapes what the actor's
        transformer reads (on PendulumNoVel a head on the step before, which the policy loss alone rarely grows)
    :param n_episodes: N-trajectory rollouts: each rollout runs until N episodes have ended across the envs and
        the update trains on those whole episodes, with Monte-Carlo discounted returns as value targets (and GAE
        with ``gae_lambda`` as advantages: R - V at 1); unfinished episodes are kept whole for the next rollout.
        ``n_steps`` is then unused. None (default): rollouts of ``n_steps`` as in SB3
    :param max_rollout_steps: with ``n_episodes``, the most steps per env a rollout holds (unfinished episodes
        included), which bounds memory; reaching it stops the rollout with a warning, or with an error when no
        episode has ended
    :param position_encoding: ``"relative"`` (default): each attention head learns a bias per offset in its window
        and each episode's first step carries a learned embedding; ``"alibi"``: the same, with the offset biases
        starting as ALiBi's recency slopes instead of zero (for long windows, see
        :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`); ``"absolute"``: a sinusoidal
        embedding of the step's index in its episode (sb3-attn-ac 0.1; its saved models load with it)
    :param shared_transformer: with ``actor_context``, the actor reads the critic's transformer (True) or its own
        (False: value-loss steps never move the actor's inputs, as RecurrentPPO's separate critic LSTM)
    :param actor_reads_critic: with ``shared_transformer=False``, the actor also reads the critic's transformer
        output through a stopped gradient (see :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`);
        acting then runs both transformers
    :param prev_action: each token also embeds the previous step's action (see
        :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`); ``predict`` then carries each
        env's last action in ``state``
    :param prev_action_encoding: ``"bounded"`` (default): a Box action enters the token clipped to the action
        space's bounds and scaled to [-1, 1]; ``"raw"``: unclipped, as sb3-attn-ac 0.3.1 (see
        :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`)
    :param prev_obs: each token also embeds the previous step's features, so two consecutive steps (a velocity
        from two positions) need no attention head (see
        :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`); ``predict`` then carries each
        env's last features in ``state``
    :param start_bias: each attention head also learns a bias for its episode's first step (see
        :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`; needs ``position_encoding``
        ``"relative"`` or ``"alibi"``)
    :param local_window: None, or w <= ``context_len``: beyond the last w steps each layer attends only to the
        episode's first step (see :class:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy`)
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    def __init__(
        self,
        policy: str | type[AttnActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        context_len: int = 16,
        n_layers: int = 1,
        n_heads: int = 2,
        d_model: int = 32,
        dropout: float = 0.0,
        ct_coef: float = 0.1,
        ct_temperature: float = 0.1,
        mask_ratio: float = 0.15,
        key_encoder: str = "momentum",
        key_momentum: float = 0.95,
        bert_masking: bool = False,
        actor_context: bool = False,
        q_att_coef: float = 0.0,
        q_att_loss_coef: float = 0.5,
        next_state_coef: float = 0.0,
        rtg_coef: float = 0.0,
        actor_value_coef: float = 0.0,
        n_episodes: int | None = None,
        max_rollout_steps: int = 4096,
        position_encoding: str = "relative",
        shared_transformer: bool = True,
        actor_reads_critic: bool = False,
        prev_action: bool = False,
        prev_action_encoding: str = "bounded",
        prev_obs: bool = False,
        start_bias: bool = False,
        local_window: int | None = None,
        _init_setup_model: bool = True,
    ) -> None:
        # PPO's checks (its assertions and warning), as ValueErrors naming the argument, plus n_epochs >= 1.
        if not is_integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if normalize_advantage and batch_size < 2:
            raise ValueError(
                "batch_size must be >= 2 with normalize_advantage=True (advantages are normalised per minibatch), "
                f"got {batch_size!r}"
            )
        if not is_integer(n_epochs) or n_epochs < 1:
            raise ValueError(f"n_epochs must be an integer >= 1, got {n_epochs!r}")
        if isinstance(clip_range_vf, (float, int)) and clip_range_vf <= 0:
            raise ValueError(f"clip_range_vf must be > 0 (None turns value clipping off), got {clip_range_vf!r}")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            context_len=context_len,
            n_layers=n_layers,
            n_heads=n_heads,
            d_model=d_model,
            dropout=dropout,
            ct_coef=ct_coef,
            ct_temperature=ct_temperature,
            mask_ratio=mask_ratio,
            key_encoder=key_encoder,
            key_momentum=key_momentum,
            bert_masking=bert_masking,
            actor_context=actor_context,
            q_att_coef=q_att_coef,
            q_att_loss_coef=q_att_loss_coef,
            next_state_coef=next_state_coef,
            rtg_coef=rtg_coef,
            actor_value_coef=actor_value_coef,
            n_episodes=n_episodes,
            max_rollout_steps=max_rollout_steps,
            position_encoding=position_encoding,
            shared_transformer=shared_transformer,
            actor_reads_critic=actor_reads_critic,
            prev_action=prev_action,
            prev_action_encoding=prev_action_encoding,
            prev_obs=prev_obs,
            start_bias=start_bias,
            local_window=local_window,
        )
        if self.env is not None:
            check_advantage_normalization(normalize_advantage, n_steps, self.n_envs, n_episodes)
            rollout_size = self.n_envs * n_steps
            if n_episodes is None and rollout_size % batch_size > 0:
                warnings.warn(
                    f"batch_size={batch_size} does not divide n_steps * n_envs = {rollout_size} (n_steps={n_steps}, "
                    f"n_envs={self.n_envs}): the ceil({rollout_size} / {batch_size}) minibatches of each epoch (of "
                    "whole segments) are then smaller than batch_size. We recommend a batch_size that is a factor of "
                    "n_steps * n_envs.",
                    stacklevel=2,
                )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        if _init_setup_model:
            self._setup_model()

    def _optimizer_defaults(self) -> dict[str, Any]:
        # SB3's Adam (eps=1e-5) with fused or multi-tensor steps: per-parameter loops dominate the update of small
        # networks on CPU (fused: 3x faster than foreach here, on CPU from torch 2.4).
        if "optimizer_class" in self.policy_kwargs or "optimizer_kwargs" in self.policy_kwargs:
            return {}
        return dict(optimizer_kwargs=dict(eps=1e-5, **fast_adam_kwargs()))

    def _setup_model(self) -> None:
        super()._setup_model()
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def segment_len(self, stream_len: int, n_minibatches: int, n_context: int) -> int:
        """Columns per minibatch segment: long enough that each env's stream gives one segment per minibatch,
        and at least twice the context that precedes it (and 16), to bound that overhead.

        :param stream_len: columns of each env's stream after the carried prefix
        :param n_minibatches: minibatches per epoch
        :param n_context: columns of context before each segment (the streams' prefix: the receptive field, or a
            local window's shorter one)
        """
        per_env = -(-n_minibatches // self.n_envs)
        return max(16, 2 * n_context, -(-stream_len // per_env))

    def train(self) -> None:
        """Update policy using the currently gathered rollout buffer (n_epochs over segment minibatches)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        buffer, streams = self.rollout_buffer, self._rollout_streams
        assert streams is not None, "collect a rollout first"
        trained = buffer.flat_tensor(buffer.trained)
        n_minibatches = -(-int(buffer.trained.sum()) // self.batch_size)  # as PPO: ceil(steps / batch)
        segment_len = self.segment_len(streams.index.shape[1] - streams.n_prefix, n_minibatches, streams.n_prefix)
        segments = segment_streams(streams, segment_len, None if buffer.trained.all() else trained)
        n_segments = len(segments.index)
        n_minibatches = min(n_minibatches, n_segments)
        mask_ratio = self._masked_ratio
        band = self.policy.stream_band(segments.meta, masked=mask_ratio is not None)  # built once, sliced per minibatch
        # Rollout data flattened time-major (index t * n_envs + e, as segments.steps).
        actions = buffer.flat_actions()
        old_log_prob, old_values = buffer.flat_tensor(buffer.log_probs), buffer.flat_tensor(buffer.values)
        advantages_all, returns_all = buffer.flat_tensor(buffer.advantages), buffer.flat_tensor(buffer.returns)

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        aux_logs: dict[str, list[float]] = {}
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rows in th.randperm(n_segments, device=self.device).tensor_split(n_minibatches):
                index, steps = segments.index[rows], segments.steps[rows]
                meta = TokenMeta(*(m[rows] for m in segments.meta))
                observations, prev_actions = take(streams.observations, index.flatten()), streams.prev_actions[index.flatten()]
                band_rows = rows if mask_ratio is None else th.cat([rows, rows + n_segments])
                hidden, actor_hidden, masked = self.policy.stream_forward(
                    observations, meta, mask_ratio, self.bert_masking, band.select(band_rows), prev_actions
                )
                trained = steps >= 0  # (n, C + S)
                idx = steps[trained]
                step_obs = take(observations, trained.flatten())
                distribution = self.policy.action_distribution(step_obs, actor_hidden[trained])
                log_prob = distribution.log_prob(actions[idx])
                entropy = distribution.entropy()
                values = self.policy._value_head(hidden[trained])

                advantages = advantages_all[idx]
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = th.exp(log_prob - old_log_prob[idx])
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                values_pred = values
                if clip_range_vf is not None:
                    values_pred = old_values[idx] + th.clamp(values - old_values[idx], -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(returns_all[idx], values_pred)
                value_losses.append(value_loss.item())
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                aux_term, logs = self._auxiliary_terms(
                    masked,
                    segments.rewards[rows],
                    segments.reward_known[rows],
                    hidden[trained],
                    actor_hidden[trained],
                    actions[idx],
                    returns_all[idx],
                )
                if aux_term is not None:
                    loss = loss + aux_term
                for name, value in logs.items():
                    aux_logs.setdefault(name, []).append(value)

                with th.no_grad():
                    log_ratio = log_prob - old_log_prob[idx]
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm, foreach=True)
                self.policy.optimizer.step()
                self.policy.update_key_encoder()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = buffer.explained_variance()
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        for name, values in aux_logs.items():
            self.logger.record(f"train/{name}", np.mean(values))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfAttnPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "AttnPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfAttnPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

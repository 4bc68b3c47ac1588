"""AttnA2C: A2C whose critic is a transformer over the episode, plus a masked-contrastive loss."""

from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from torch.nn import functional as F

from sb3_attn_ac.common.attention.buffers import tree_map
from sb3_attn_ac.common.attention.on_policy import AttnOnPolicyAlgorithm
from sb3_attn_ac.common.attention.policies import AttnActorCriticPolicy
from sb3_attn_ac.common.utils import check_advantage_normalization

SelfAttnA2C = TypeVar("SelfAttnA2C", bound="AttnA2C")


class AttnA2C(AttnOnPolicyAlgorithm):
    """Attention-assisted Advantage Actor-Critic: a drop-in :class:`~stable_baselines3.A2C`.

    The actor is A2C's MLP; the critic reads the current episode's earlier steps through a sliding-window
    causal transformer; the loss is A2C's plus ``ct_coef`` times a BERT-like masked-contrastive loss.
    Arguments up to ``device`` are A2C's, in the same order with the same defaults.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, or an AttnActorCriticPolicy subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. batch size is n_steps * n_env where n_env is number of environment copies running in parallel)
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator.
        Equivalent to classic advantage when set to 1.
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param rms_prop_eps: RMSProp epsilon. It stabilizes square root computation in denominator of RMSProp update
    :param use_rms_prop: Whether to use RMSprop (default) or Adam as optimizer
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use (an EpisodeRolloutBuffer subclass).
        If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param context_len: K, each attention layer's window: the step itself and K - 1 earlier steps of its episode
    :param n_layers: transformer blocks; the critic sees ``n_layers * (context_len - 1)`` earlier steps
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
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = False,
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
        self.normalize_advantage = normalize_advantage
        self.rms_prop_eps = rms_prop_eps
        self.use_rms_prop = use_rms_prop
        if _init_setup_model:
            self._setup_model()

    def _optimizer_defaults(self) -> dict[str, Any]:
        # As A2C: RMSprop (the original implementation) unless an optimizer class is given; multi-tensor (foreach)
        # steps, because per-parameter loops dominate the update of small networks on CPU.
        if not self.use_rms_prop or "optimizer_class" in self.policy_kwargs:
            return {}
        return dict(
            optimizer_class=th.optim.RMSprop,
            optimizer_kwargs=dict(alpha=0.99, eps=self.rms_prop_eps, weight_decay=0, foreach=True),
        )

    def _keep_value_graph(self) -> bool:
        # A2C takes one gradient step per rollout: the rollout's critic pass serves both the advantages
        # (detached) and the value loss, unless dropout makes the training-mode pass differ.
        return self.dropout == 0.0

    def train(self) -> None:
        """Update policy using the currently gathered rollout buffer (one gradient step over whole data)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer = self.rollout_buffer
        out = self._rollout_critic()

        # Time-major (T, E) data flattened to T * E, the order of out.values.reshape(-1); only the trained steps
        # (with n_episodes, those of the episodes that ended).
        trained = None if buffer.trained.all() else buffer.flat_tensor(buffer.trained)
        select = (lambda x: x) if trained is None else (lambda x: x[trained])
        observations = tree_map(lambda o: select(buffer.flat_tensor(o)), buffer.observations)
        actions = select(buffer.flat_actions())
        flat = lambda x: select(x.reshape(-1, x.shape[-1]))  # noqa: E731  (T, E, D) -> (trained steps, D)
        hidden = flat(out.hidden)
        actor_hidden = flat(out.actor_hidden)
        distribution = self.policy.action_distribution(observations, actor_hidden)
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()
        values = select(out.values.reshape(-1))
        advantages, returns = select(buffer.flat_tensor(buffer.advantages)), select(buffer.flat_tensor(buffer.returns))
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        policy_loss = -(advantages * log_prob).mean()
        value_loss = F.mse_loss(returns, values)
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
        assert self._rollout_streams is not None
        streams = self._rollout_streams
        aux_term, aux_logs = self._auxiliary_terms(
            out.masked, streams.rewards, streams.reward_known, hidden, actor_hidden, actions, returns
        )
        if aux_term is not None:
            loss = loss + aux_term

        self.policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm, foreach=True)
        self.policy.optimizer.step()
        self.policy.update_key_encoder()

        explained_var = buffer.explained_variance()
        self._n_updates += 1
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        for name, value in aux_logs.items():
            self.logger.record(f"train/{name}", value)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    def learn(
        self: SelfAttnA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "AttnA2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfAttnA2C:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

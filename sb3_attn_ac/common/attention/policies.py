"""Actor-critic policies whose critic is a transformer over the current episode."""

import copy
from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim, get_flattened_obs_dim, preprocess_obs
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn
from torch.nn import functional as F

from sb3_attn_ac.common.attention.buffers import take
from sb3_attn_ac.common.attention.type_aliases import EpisodeStreams, MaskedPass, StreamValues
from sb3_attn_ac.common.torch_layers import (
    Band,
    EpisodeEncoder,
    EpisodeStartEmbedding,
    EpisodeTransformer,
    KVCache,
    SinusoidalPositions,
    TokenMeta,
    previous_steps,
    stream_prefix_len,
)
from sb3_attn_ac.common.utils import (
    check_actor_reads_critic,
    check_attention_args,
    check_flags,
    check_prev_action_encoding,
    check_q_att,
    check_spaces,
    masked_contrastive_loss,
    reward_to_go,
    select_masked,
)

# What earlier releases built and saved no argument for: a save without these arguments was made with these values
# (position_encoding and shared_transformer: 0.1; prev_action_encoding: 0.3.1 and before).
UNSAVED_ARGS = {"position_encoding": "absolute", "shared_transformer": True, "prev_action_encoding": "raw"}


def batch_len(obs: PyTorchObs) -> int:
    """Number of observations in a batch (of a tensor, or of a dict of tensors)."""
    return len(next(iter(obs.values())) if isinstance(obs, dict) else obs)


class AttnActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy with SB3's MLP actor and a transformer critic over the episode so far.

    The actor is SB3's: features extractor, ``net_arch["pi"]`` MLP, action distribution. The critic embeds
    each step's features as a token, runs a causal transformer whose layers attend to the last ``context_len``
    steps of the same episode (each head with a learned bias per offset; the first step of an episode carries a
    learned start embedding), and reads V(s_t) from the output at t through the ``net_arch["vf"]`` MLP and a
    linear head.

    Parameters up to ``optimizer_kwargs`` are those of
    :class:`~stable_baselines3.common.policies.ActorCriticPolicy`.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the policy and value networks; the value MLP reads the transformer's
        output. Default: ``dict(pi=[64, 64], vf=[])`` (``[]`` with NatureCNN)
    :param activation_fn: Activation function
    :param ortho_init: Whether to use or not orthogonal initialization (the transformer keeps GPT-2's init; the
        value head gets gain 0.01 instead of SB3's 1)
    :param use_sde: Whether to use State Dependent Exploration or not
    :param log_std_init: Initial value for the log standard deviation
    :param full_std: Whether to use (n_features x n_actions) parameters for the std instead of only
        (n_features,) when using gSDE
    :param use_expln: Use ``expln()`` function instead of ``exp()`` to ensure a positive standard deviation
    :param squash_output: Whether to squash the output using a tanh function (gSDE only)
    :param features_extractor_class: Features extractor to use.
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor.
    :param share_features_extractor: If True, the features extractor is shared between the policy and value networks.
    :param normalize_images: Whether to normalize images or not, dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer
    :param context_len: K, the attention window of each layer (the step itself and K - 1 earlier steps)
    :param n_layers: transformer blocks; the receptive field is ``n_layers * (context_len - 1)`` steps
    :param n_heads: attention heads (must divide ``d_model``)
    :param d_model: token width
    :param dropout: dropout in the transformer (off while acting and computing rollout values)
    :param key_encoder: keys of the contrastive loss: ``"momentum"`` (an EMA copy of the token embedding,
        no gradient, as CURL / M-CURL) or ``"shared"`` (the online token embedding)
    :param key_momentum: EMA coefficient m of the momentum key encoder: k <- m * k + (1 - m) * online
    :param actor_context: the actor also reads the transformer's output at step t (concatenated to the step's
        features), so it can use the episode's earlier steps (partially observed tasks). Actor and critic share
        the transformer. Acting is then incremental (a rolling key/value cache per env and layer) and
        :meth:`predict` carries it in ``state``.
    :param q_att_coef: beta >= 0 (Discrete actions only): the actor's action preferences become
        ``logits + beta * Q_att(s_t, .)``, where Q_att is a head on the transformer's output at t (detached in
        the policy; trained by regression on returns, see the algorithms' ``q_att_loss_coef``). Deterministic
        actions take the argmax of that sum, sampling its softmax. Like ``actor_context`` it needs the
        transformer while acting (same incremental path and ``predict`` state).
    :param next_state_head: a head predicting, at masked positions, the next step's features
    :param rtg_head: a head predicting, at masked positions, the discounted reward-to-go within the window
    :param actor_value_head: (``actor_context`` with ``shared_transformer=False``) a value head on the actor's own
        transformer, trained by regression on the value targets (the algorithms' ``actor_value_coef``) and read by
        nothing else: the critic's dense signal also shapes what the actor's transformer attends to
    :param position_encoding: ``"relative"``: a learned attention bias per head and offset in the window, and a
        learned embedding of each episode's first step; ``"alibi"``: the same, with the offset biases starting as
        ALiBi's linear recency penalty (head h of H: -2^(-8 (h + 1) / H) per step back; two heads: 1/16 and
        1/256) instead of zero: in a long window (``context_len`` 64) the steep head then starts on the last
        steps, as a short window would, while the flat one still averages and ``start_bias`` still reaches the
        first step; ``"absolute"``: a sinusoidal embedding of the step's index in its episode added to its token
        (sb3-attn-ac 0.1, which its saved models use)
    :param shared_transformer: with ``actor_context``, whether the actor reads the critic's transformer (one
        transformer, shaped by both losses) or its own (as RecurrentPPO's separate critic LSTM: value-loss steps
        then never move the actor's inputs). Acting runs only the actor's either way (unless
        ``actor_reads_critic``); Q_att needs it shared
    :param actor_reads_critic: (``actor_context`` with ``shared_transformer=False``) the actor also reads the
        critic's transformer output at t, through a stopped gradient: what the value loss makes the critic find (a
        head on the step before, where two steps give a velocity) reaches the actor, while the policy gradient
        moves only the actor's own transformer (which keeps what only the policy needs, as a cue the critic has no
        reason to carry). Acting then runs both transformers; the cache holds the actor's layers, then the critic's
    :param prev_action: each token also embeds the action taken at the step before (one-hot for discrete
        actions; nothing at an episode's first step), as RLlib's ``use_n_prev_actions``: where the last action
        moved the hidden state (a push changes CartPole's velocity), it is what makes that state recoverable
        from the observations. Acting then carries each env's last action (:meth:`predict` in ``state``), and
        the stream methods take the actions
    :param prev_action_encoding: how a Box action enters the token with ``prev_action``: ``"bounded"`` (default)
        clipped to the action space's bounds and scaled to [-1, 1], the action the env applied; ``"raw"``: the
        sample as the buffer stores it, unclipped (sb3-attn-ac 0.3.1 and before, whose saved models load with it).
        A Gaussian sample beyond the bounds tells the env nothing more than the bound, but an actor transformer of
        its own that read it failed PendulumNoVel's entry (mean -746 raw against -231 bounded on three tuning
        seeds, README "Ablations"). Discrete actions are one-hot either way
    :param prev_obs: each token also embeds the previous step's features (the transformer's token of step t
        reads step t - 1's as well; nothing at an episode's first step), as a stack of the last two frames would, or
        RWKV's token shift: what two consecutive steps give at once (a velocity from two positions) then needs no
        attention head to be learned first. An actor transformer of its own learns that head from the policy
        gradient too slowly (README "Ablations"). Acting then carries each env's last features in the cache
        (:meth:`predict` in ``state``)
    :param start_bias: (``position_encoding="relative"`` or ``"alibi"``) each head also learns a bias for its episode's first
        step, stored scaled as the offset biases: where the first step is what matters (a cue shown once at the
        start), a head learns to read it from anywhere in the window as fast as it learns an offset. Pair it with
        a ``context_len`` that covers the steps that must recall it
    :param local_window: None, or w <= ``context_len``: each layer attends to the last w steps of the episode and,
        beyond them, only to the episode's first step while it is inside ``context_len`` (as the attention sinks
        of StreamingLLM, Xiao et al., 2024): a short window for the steps around t and the first step (a cue shown
        once at the start) read from up to ``context_len - 1`` steps away. The cache and the cost per step stay
        those of ``context_len``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        context_len: int = 16,
        n_layers: int = 1,
        n_heads: int = 2,
        d_model: int = 32,
        dropout: float = 0.0,
        key_encoder: str = "momentum",
        key_momentum: float = 0.95,
        actor_context: bool = False,
        q_att_coef: float = 0.0,
        next_state_head: bool = False,
        rtg_head: bool = False,
        actor_value_head: bool = False,
        position_encoding: str = "relative",
        shared_transformer: bool = True,
        actor_reads_critic: bool = False,
        prev_action: bool = False,
        prev_action_encoding: str = "bounded",
        prev_obs: bool = False,
        start_bias: bool = False,
        local_window: int | None = None,
    ) -> None:
        check_spaces(observation_space, action_space)
        check_prev_action_encoding(prev_action_encoding, prev_action, action_space)
        check_flags(
            actor_context=actor_context,
            shared_transformer=shared_transformer,
            actor_reads_critic=actor_reads_critic,
            prev_action=prev_action,
            prev_obs=prev_obs,
            start_bias=start_bias,
        )
        check_q_att(q_att_coef, action_space, actor_context and not shared_transformer)
        check_actor_reads_critic(actor_reads_critic, actor_context, shared_transformer)
        if actor_value_head and not (actor_context and not shared_transformer):
            raise ValueError(
                "actor_value_head=True needs an actor transformer of its own: actor_context=True, shared_transformer=False"
            )
        check_attention_args(
            context_len,
            n_layers,
            n_heads,
            d_model,
            dropout,
            key_encoder,
            key_momentum,
            position_encoding,
            start_bias,
            local_window,
        )
        # Set before super().__init__(), whose _build() creates the transformer.
        self.context_len = context_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_model = d_model
        self.dropout = dropout
        self.key_encoder = key_encoder
        self.key_momentum = key_momentum
        self.actor_context = actor_context
        self.q_att_coef = q_att_coef
        self.next_state_head = next_state_head
        self.rtg_head = rtg_head
        self.actor_value_head = actor_value_head
        self.position_encoding = position_encoding
        self.shared_transformer = shared_transformer
        self.actor_reads_critic = actor_reads_critic
        self.prev_action = prev_action
        self.prev_action_encoding = prev_action_encoding
        self.prev_obs = prev_obs
        self.start_bias = start_bias
        self.local_window = local_window
        if net_arch is None:
            # SB3's actor; the critic's body is the transformer (its blocks hold MLPs), read by a linear head.
            net_arch = [] if features_extractor_class == NatureCNN else dict(pi=[64, 64], vf=[])
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=use_sde,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            squash_output=squash_output,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            context_len=self.context_len,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_model=self.d_model,
            dropout=self.dropout,
            key_encoder=self.key_encoder,
            key_momentum=self.key_momentum,
            actor_context=self.actor_context,
            q_att_coef=self.q_att_coef,
            next_state_head=self.next_state_head,
            rtg_head=self.rtg_head,
            actor_value_head=self.actor_value_head,
            position_encoding=self.position_encoding,
            shared_transformer=self.shared_transformer,
            actor_reads_critic=self.actor_reads_critic,
            prev_action=self.prev_action,
            prev_action_encoding=self.prev_action_encoding,
            prev_obs=self.prev_obs,
            start_bias=self.start_bias,
            local_window=self.local_window,
            share_features_extractor=self.share_features_extractor,
            normalize_images=self.normalize_images,
        )
        return data

    @classmethod
    def load(cls, path: str, device: th.device | str = "auto") -> "AttnActorCriticPolicy":
        """:meth:`BasePolicy.load <stable_baselines3.common.policies.BaseModel.load>`. Arguments an earlier
        release saved none of load with what it built (:data:`UNSAVED_ARGS`): 0.1's sinusoidal positions and
        shared transformer, 0.3.1's raw previous action.

        :param path: the file :meth:`save` wrote
        :param device: device to load the policy on
        """
        device = get_device(device)
        saved = th.load(path, map_location=device, weights_only=False)  # gymnasium spaces need full unpickling, as SB3
        model = cls(**{**UNSAVED_ARGS, **saved["data"]})
        model.load_state_dict(saved["state_dict"])
        return model.to(device)

    def _build_mlp_extractor(self) -> None:
        # Called by _build() before the optimizer is created: build the transformer critic here too.
        super()._build_mlp_extractor()
        # The value MLP reads the transformer's output (d_model wide), not the per-step features; with
        # actor_context the policy MLP reads both.
        critic_mlp = MlpExtractor(self.d_model, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device)
        self.mlp_extractor.value_net = critic_mlp.value_net
        self.mlp_extractor.latent_dim_vf = critic_mlp.latent_dim_vf
        if self.actor_context:
            actor_in = self.features_dim + self.d_model * (2 if self.actor_reads_critic else 1)
            actor_mlp = MlpExtractor(actor_in, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device)
            self.mlp_extractor.policy_net = actor_mlp.policy_net
            self.mlp_extractor.latent_dim_pi = actor_mlp.latent_dim_pi
        self.token_embedding = nn.Linear(self.features_dim, self.d_model)
        action_dim = get_flattened_obs_dim(self.action_space) if self.prev_action else 0
        self.action_embedding = nn.Linear(action_dim, self.d_model, bias=False) if action_dim else None
        self.prev_obs_embedding = nn.Linear(self.features_dim, self.d_model, bias=False) if self.prev_obs else None
        # The bounds a Box previous action is clipped to and scaled by (prev_action_encoding="bounded"), built once
        # here rather than per acting step; not saved (the action space gives them).
        bounds = None
        if action_dim and self.prev_action_encoding == "bounded" and isinstance(self.action_space, spaces.Box):
            bounds = th.as_tensor(np.stack([self.action_space.low, self.action_space.high]), dtype=th.float32)
        self.action_bounds: th.Tensor | None
        self.register_buffer("action_bounds", None if bounds is None else bounds.reshape(2, 1, -1), persistent=False)
        relative = self.position_encoding != "absolute"
        self.positions = EpisodeStartEmbedding(self.d_model) if relative else SinusoidalPositions(self.d_model)
        self.transformer = EpisodeTransformer(
            self.d_model,
            self.n_layers,
            self.n_heads,
            self.context_len,
            self.dropout,
            relative,
            self.start_bias,
            self.local_window,
        )
        # The actor's own transformer (actor_context without sharing); the critic's parts above keep 0.1's names.
        self.actor_encoder: EpisodeEncoder | None = None
        if self.actor_context and not self.shared_transformer:
            sizes = (self.features_dim, self.d_model, self.n_layers, self.n_heads, self.context_len)
            self.actor_encoder = EpisodeEncoder(
                *sizes, self.dropout, relative, action_dim, self.start_bias, self.local_window, self.prev_obs
            )
        if self.position_encoding == "alibi":
            self.transformer.init_alibi()
            if self.actor_encoder is not None:
                self.actor_encoder.transformer.init_alibi()
        # Masked-contrastive parts: the learned [MASK] token, the query head and the key encoder.
        self.mask_embedding = nn.Parameter(0.02 * th.randn(self.d_model))
        self.query_head = nn.Linear(self.d_model, self.d_model)
        # Q_att(s_t, .): one attention-value per action, read from the transformer's output.
        self.q_head = nn.Linear(self.d_model, int(self.action_space.n)) if self.q_att_coef > 0 else None  # type: ignore[attr-defined]
        # Masked prediction heads (design notes: "for t=4, input s_4, a_4, predict s_5 and the reward-to-go").
        self.next_state_net = nn.Linear(self.d_model, self.features_dim) if self.next_state_head else None
        self.rtg_net = nn.Linear(self.d_model, 1) if self.rtg_head else None
        self.actor_value_net = nn.Linear(self.d_model, 1) if self.actor_value_head else None
        self.key_net: nn.Module | None = None
        if self.key_encoder == "momentum":
            self.key_net = copy.deepcopy(self.token_embedding).requires_grad_(False)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        if self.ortho_init:
            # SB3 gives value_net gain 1, sized for its small tanh-MLP features. Ours reads the transformer's
            # LayerNorm'd output (unit scale per feature), where gain 1 starts V at O(1) against returns that may be
            # O(0.1): the first advantages are then all about -V, and A2C's first updates push the policy away
            # from every sampled action. Gain 0.01 (SB3's for action_net) starts V near 0, as A2C's does.
            self.value_net.apply(partial(self.init_weights, gain=0.01))

    def set_training_mode(self, mode: bool) -> None:
        # Called twice per rollout: nn.Module.train() walks the module tree through __setattr__; a cached flat
        # list of modules with a direct flag write is several times cheaper and sets the same flags.
        if mode == self.training:
            return
        if getattr(self, "_all_modules", None) is None:
            self._all_modules = list(self.modules())
        for module in self._all_modules:
            module.__dict__["training"] = mode

    # ----------------------------------------------------------------------------------------------------
    # The transformer over streams (training, "Method 2")
    def _critic(self, tokens: th.Tensor, meta: TokenMeta, band: Band | None = None) -> th.Tensor:
        band = self.transformer.band(meta) if band is None else band
        return self.transformer(tokens + self.positions(meta.timesteps), band)

    def _value_head(self, hidden: th.Tensor) -> th.Tensor:
        return self.value_net(self.mlp_extractor.forward_critic(hidden)).squeeze(-1)

    def stream_forward(
        self,
        observations: PyTorchObs,
        meta: TokenMeta,
        mask_ratio: float | None = None,
        bert_masking: bool = False,
        band: Band | None = None,
        prev_actions: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor, MaskedPass | None]:
        """The transformer over a batch of streams in one call.

        With ``mask_ratio``, a masked copy of the streams (for :meth:`contrastive_loss`) runs in the same call,
        as extra rows that attend both ways: a ``mask_ratio`` fraction of the valid tokens is replaced by the
        learned mask embedding (with ``bert_masking``: 80% mask, 10% a random token of the batch, 10% unchanged).

        :param observations: (B * L, *obs_shape) the streams' observations, row-major (or a dict of them)
        :param meta: (B, L) their metadata
        :param mask_ratio: fraction of tokens to mask in the masked copy (None: no masked copy)
        :param bert_masking: BERT's 80/10/10 replacement instead of always the mask embedding
        :param band: the attention layout if already built (:meth:`stream_band`)
        :param prev_actions: (B * L, *action_shape) each token's previous action, as the buffer stores actions
            (needed with ``prev_action``)
        :return: (B, L, D) causal outputs of the critic's transformer, what the actor reads of the transformers (the
            same tensor when shared; (B, L, 2D) with ``actor_reads_critic``: its own, then the critic's), and the
            masked pass (or None)
        """
        B, L = meta.timesteps.shape
        features = self._encoder_features(observations, self).view(B, L, -1)  # (B, L, F)
        tokens = self.token_embedding(features)  # (B, L, D)
        own = tokens + self._action_tokens(self, prev_actions, meta.timesteps)  # what a masked token hides
        inputs = own + self._prev_obs_tokens(self, features, meta)
        if band is None:
            band = self.stream_band(meta, masked=mask_ratio is not None)
        if mask_ratio is None:
            hidden = self._critic(inputs, meta, band)
            return hidden, self._actor_stream(observations, features, meta, band, hidden, prev_actions), None
        selected = select_masked(meta.valid, mask_ratio)  # (B, L)
        replacement = self.mask_embedding.expand_as(inputs)
        replaced = selected
        if bert_masking:
            u = th.rand(selected.shape, device=inputs.device)
            flat = inputs[meta.valid]
            random_tokens = flat[th.randint(len(flat), selected.shape, device=inputs.device)]
            replacement = th.where((u < 0.8)[..., None], replacement, random_tokens)
            replaced = selected & (u < 0.9)  # the last 10% keep their own token
        # A step after a replaced one does not embed its features either: the masked step stays hidden.
        masked_inputs = th.where(replaced[..., None], replacement, own + self._prev_obs_tokens(self, features, meta, replaced))
        both_meta = TokenMeta(*(th.cat([m, m]) for m in meta))
        hidden, masked_hidden = self._critic(th.cat([inputs, masked_inputs]), both_meta, band).split(B)
        actor_hidden = self._actor_stream(observations, features, meta, band, hidden, prev_actions)
        return hidden, actor_hidden, MaskedPass(masked_hidden, features, tokens, selected, meta, band)

    def _actor_stream(
        self,
        observations: PyTorchObs,
        features: th.Tensor,
        meta: TokenMeta,
        band: Band,
        hidden: th.Tensor,
        prev_actions: th.Tensor | None,
    ) -> th.Tensor:
        """What the actor reads of the transformers over streams: the critic's ``hidden`` when shared, its own
        transformer's outputs otherwise, followed by the critic's (stopped gradient) with ``actor_reads_critic``.

        :param observations: (B * L, *obs_shape) the streams' observations
        :param features: (B, L, F) the critic's features of them
        :param meta: (B, L) their metadata
        :param band: the critic pass's layout (its first B rows are the causal ones)
        :param hidden: (B, L, D) the critic's outputs
        :param prev_actions: (B * L, *action_shape) each token's previous action (or None)
        """
        if self.actor_encoder is None:
            return hidden
        B = meta.timesteps.shape[0]
        if len(band.allowed) > B:  # the masked rows are the critic's only
            band = band.select(th.arange(B, device=features.device))
        shared_features = features if self.share_features_extractor else None
        tokens = self._tokens(self.actor_encoder, observations, meta.timesteps, shared_features, prev_actions, meta=meta)
        own = self.actor_encoder.transformer(tokens, band)
        return th.cat([own, hidden.detach()], dim=-1) if self.actor_reads_critic else own

    def stream_band(self, meta: TokenMeta, masked: bool) -> Band:
        """The attention layout of :meth:`stream_forward` for streams with metadata ``meta``: B causal rows,
        followed (``masked``) by the B rows of the masked copy, which attend both ways.

        :param meta: (B, L) metadata
        :param masked: whether the masked copy runs in the same call
        """
        if not masked:
            return self.transformer.band(meta)
        B = meta.timesteps.shape[0]
        causal = th.arange(2 * B, device=meta.timesteps.device) < B
        return self.transformer.band(TokenMeta(*(th.cat([m, m]) for m in meta)), causal)

    def evaluate_streams(
        self, streams: EpisodeStreams, mask_ratio: float | None = None, bert_masking: bool = False
    ) -> StreamValues:
        """The critic over a rollout's streams in one batched pass ("Method 2"), see :meth:`stream_forward`.

        :param streams: from :meth:`EpisodeRolloutBuffer.streams`
        :param mask_ratio: fraction of tokens to mask in the masked copy (None: no masked copy)
        :param bert_masking: BERT's 80/10/10 replacement instead of always the mask embedding
        :return: values of the rollout steps, terminal observations and the following observation
        """
        E = streams.index.shape[0]
        index = streams.index.flatten()
        observations, prev_actions = take(streams.observations, index), streams.prev_actions[index]
        hidden, actor_hidden, masked = self.stream_forward(
            observations, streams.meta, mask_ratio, bert_masking, prev_actions=prev_actions
        )
        values = self._value_head(hidden)  # (E, L)
        envs = th.arange(E, device=values.device)
        return StreamValues(
            values=values[envs[None, :], streams.step_cols],  # (T, E)
            terminal_values=values[streams.terminal_envs, streams.terminal_cols],
            last_values=values[envs, streams.last_cols],
            hidden=hidden[envs[None, :], streams.step_cols],  # (T, E, D)
            actor_hidden=actor_hidden[envs[None, :], streams.step_cols],
            masked=masked,
        )

    def _stream_meta(self, length: int, episode_starts: np.ndarray | None) -> TokenMeta:
        """Metadata of one stream of ``length`` steps that starts an episode at step 0 and wherever marked."""
        starts = np.zeros(length, dtype=bool)
        if episode_starts is not None:
            starts[:] = np.asarray(episode_starts, dtype=bool).reshape(length)
        starts[0] = True
        step = np.arange(length)
        timesteps = step - np.maximum.accumulate(np.where(starts, step, 0))
        return TokenMeta(
            th.as_tensor(timesteps, device=self.device)[None],
            th.as_tensor(np.cumsum(starts), device=self.device)[None],
            th.ones(1, length, dtype=th.bool, device=self.device),
        )

    def _stream_inputs(
        self,
        observations: np.ndarray | dict[str, np.ndarray],
        episode_starts: np.ndarray | None,
        actions: np.ndarray | None,
    ) -> tuple[PyTorchObs, TokenMeta, th.Tensor | None]:
        """One stream's observations as tensors, its metadata, and each step's previous action (None without
        ``actions``)."""
        obs, _ = self.obs_to_tensor(observations)
        T = batch_len(obs)
        meta = self._stream_meta(T, episode_starts)
        if actions is None:
            if self.prev_action:
                raise ValueError("prev_action=True: pass the actions taken at each step (actions=...)")
            return obs, meta, None
        actions = th.as_tensor(np.asarray(actions), dtype=th.float32, device=self.device).reshape(T, -1)
        return obs, meta, F.pad(actions[:-1], (0, 0, 1, 0))  # step t's previous action is a_{t-1}

    def _stream(
        self,
        observations: np.ndarray | dict[str, np.ndarray],
        episode_starts: np.ndarray | None,
        actions: np.ndarray | None,
    ) -> tuple[PyTorchObs, th.Tensor, th.Tensor]:
        """One stream's observations as tensors, and the critic's and the actor's transformer outputs over it."""
        obs, meta, prev_actions = self._stream_inputs(observations, episode_starts, actions)
        with th.no_grad():
            hidden, actor_hidden, _ = self.stream_forward(obs, meta, prev_actions=prev_actions)
        return obs, hidden[0], actor_hidden[0]

    def trajectory_values(
        self,
        observations: np.ndarray | dict[str, np.ndarray],
        episode_starts: np.ndarray | None = None,
        actions: np.ndarray | None = None,
    ) -> th.Tensor:
        """V for every step of one stream of observations ("Method 2"): the values the algorithm uses.

        :param observations: (T, *obs_shape) consecutive observations of one env (or a dict of them)
        :param episode_starts: (T,) True where a new episode starts (the first step always starts one)
        :param actions: (T, *action_shape) the action taken at each step (needed with ``prev_action``)
        :return: (T,) values
        """
        _, hidden, _ = self._stream(observations, episode_starts, actions)
        with th.no_grad():
            return self._value_head(hidden)

    def trajectory_distribution(
        self,
        observations: np.ndarray | dict[str, np.ndarray],
        episode_starts: np.ndarray | None = None,
        actions: np.ndarray | None = None,
    ) -> Distribution:
        """The action distributions for every step of one stream of observations (with ``actor_context``,
        each step reads its episode's earlier steps), matching :meth:`trajectory_values`.

        :param observations: (T, *obs_shape) consecutive observations of one env (or a dict of them)
        :param episode_starts: (T,) True where a new episode starts (the first step always starts one)
        :param actions: (T, *action_shape) the action taken at each step (needed with ``prev_action``)
        :return: a distribution over T actions
        """
        obs, _, actor_hidden = self._stream(observations, episode_starts, actions)
        with th.no_grad():
            return self.action_distribution(obs, actor_hidden)

    def attention_weights(
        self,
        observations: np.ndarray | dict[str, np.ndarray],
        episode_starts: np.ndarray | None = None,
        actions: np.ndarray | None = None,
    ) -> list[th.Tensor]:
        """The transformer's attention weights over one stream of observations (an explicit, slower path that
        normal training and acting never run): one (n_heads, T, T) tensor per layer, whose row t says how much
        step t attends to each earlier step of its episode (causal, within ``context_len``).

        :param observations: (T, *obs_shape) consecutive observations of one env (or a dict of them)
        :param episode_starts: (T,) True where a new episode starts (the first step always starts one)
        :param actions: (T, *action_shape) the action taken at each step (needed with ``prev_action``)
        """
        obs, meta, prev_actions = self._stream_inputs(observations, episode_starts, actions)
        with th.no_grad():
            tokens = self._tokens(self, obs, meta.timesteps, prev_actions=prev_actions, meta=meta)
            return [w[0] for w in self.transformer.attention_weights(tokens, self.transformer.band(meta))]

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """V of each observation as the first step of an episode (no context), shape (N, 1) as SB3's."""
        return self._value_head(self._first_step_hidden(obs, self))[:, None]

    @property
    def _acting_encoder(self) -> "AttnActorCriticPolicy | EpisodeEncoder":
        """The actor's transformer: its own, or the policy's (the critic's) parts."""
        return self if self.actor_encoder is None else self.actor_encoder

    @property
    def _acting_encoders(self) -> list["AttnActorCriticPolicy | EpisodeEncoder"]:
        """What acting with context runs: the actor's transformer, and with ``actor_reads_critic`` the critic's (the
        acting cache holds their layers in this order)."""
        return [self._acting_encoder, self] if self.actor_reads_critic else [self._acting_encoder]

    def _encoder_features(self, obs: PyTorchObs, encoder: "AttnActorCriticPolicy | EpisodeEncoder") -> th.Tensor:
        """(N, F) per-step features the critic's transformer (``encoder is self``) or the actor's reads."""
        extractor = self.vf_features_extractor if encoder is self else self.pi_features_extractor
        return BasePolicy.extract_features(self, obs, extractor)  # type: ignore[return-value]

    def _tokens(
        self,
        encoder: "AttnActorCriticPolicy | EpisodeEncoder",
        obs: PyTorchObs,
        timesteps: th.Tensor,
        features: th.Tensor | None = None,
        prev_actions: th.Tensor | None = None,
        meta: TokenMeta | None = None,
        last: th.Tensor | None = None,
    ) -> th.Tensor:
        """The input tokens of the critic's transformer (``encoder is self``) or the actor's: the embedding of each
        observation's features, plus (``prev_action``) that of the previous action, plus (``prev_obs``) that of the
        previous step's features, plus its position embedding.

        :param encoder: whose token embedding and positions
        :param obs: (N, *obs_shape) observations, N = timesteps.numel(), row-major
        :param timesteps: (...,) their index within their episodes
        :param features: (..., F) their features, if already extracted by that encoder's extractor
        :param prev_actions: (N, *action_shape) each step's previous action (ignored without ``prev_action``)
        :param meta: (B, T) metadata of streams (``timesteps`` is theirs): with ``prev_obs`` each step's previous
            step is the column before it (:func:`~sb3_attn_ac.common.torch_layers.previous_steps`)
        :param last: (N, F) with ``prev_obs``, for one step per row: the features of each row's previous step
            (:attr:`KVCache.last`); neither ``meta`` nor ``last``: only first steps, which have none
        :return: (..., D) tokens
        """
        if features is None:
            features = self._encoder_features(obs, encoder).view(*timesteps.shape, -1)
        action_tokens = self._action_tokens(encoder, prev_actions, timesteps)
        if meta is not None:
            prev_obs_tokens = self._prev_obs_tokens(encoder, features, meta)
        elif encoder.prev_obs_embedding is None:
            prev_obs_tokens = 0.0
        elif last is None:
            if bool((timesteps > 0).any()):
                raise ValueError("prev_obs=True: the tokens of steps after an episode's first need the previous step")
            prev_obs_tokens = 0.0
        else:
            prev_obs_tokens = (timesteps > 0)[..., None] * encoder.prev_obs_embedding(last)
        return encoder.token_embedding(features) + action_tokens + prev_obs_tokens + encoder.positions(timesteps)

    @staticmethod
    def _prev_obs_tokens(
        encoder: "AttnActorCriticPolicy | EpisodeEncoder",
        features: th.Tensor,
        meta: TokenMeta,
        hidden: th.Tensor | None = None,
    ) -> th.Tensor | float:
        """(B, T, D) embedding of each stream token's previous step's features (``prev_obs``; zero where the column
        before is not that step); 0 without ``prev_obs``.

        :param encoder: whose embedding
        :param features: (B, T, F) the streams' features
        :param meta: (B, T) their metadata
        :param hidden: (B, T) steps whose features the next token must not see (the masked copy's)
        """
        if encoder.prev_obs_embedding is None:
            return 0.0
        return encoder.prev_obs_embedding(previous_steps(features, meta, hidden))

    def _action_tokens(
        self, encoder: "AttnActorCriticPolicy | EpisodeEncoder", prev_actions: th.Tensor | None, timesteps: th.Tensor
    ) -> th.Tensor | float:
        """(..., D) embedding of each step's previous action (SB3's one-hot for discrete actions), zero at an
        episode's first step; 0 without ``prev_action``.

        :param encoder: whose action embedding
        :param prev_actions: (N, *action_shape) the previous actions as the rollout buffer stores actions, N =
            timesteps.numel() (None: only first steps, which have none)
        :param timesteps: (...,) the steps' index within their episodes
        """
        if encoder.action_embedding is None:
            return 0.0
        N = timesteps.numel()
        if prev_actions is None:
            if bool((timesteps > 0).any()):
                raise ValueError("prev_action=True: the tokens of steps after an episode's first need the previous actions")
            return 0.0
        actions = prev_actions.reshape(N, -1)
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions[:, 0]
        encoded = preprocess_obs(actions, self.action_space).reshape(N, -1)  # type: ignore[union-attr]
        if self.action_bounds is not None:
            low, high = self.action_bounds
            encoded = 2 * (th.clamp(encoded, low, high) - low) / (high - low) - 1
        return (timesteps > 0)[..., None] * encoder.action_embedding(encoded).view(*timesteps.shape, -1)

    def _first_step_hidden(self, obs: PyTorchObs, encoder: "AttnActorCriticPolicy | EpisodeEncoder") -> th.Tensor:
        """(N, D) output of the critic's (``encoder is self``) or the actor's transformer for each observation
        as the first step of an episode."""
        zeros = th.zeros(batch_len(obs), 1, dtype=th.long, device=self.device)
        meta = TokenMeta(zeros, zeros, th.ones_like(zeros, dtype=th.bool))
        return encoder.transformer(self._tokens(encoder, obs, meta.timesteps), encoder.transformer.band(meta))[:, 0]

    # ----------------------------------------------------------------------------------------------------
    # The actor
    @property
    def uses_context(self) -> bool:
        """Whether acting reads the transformer (``actor_context`` or Q_att): incremental acting, ``state``."""
        return self.actor_context or self.q_head is not None

    def action_distribution(self, obs: PyTorchObs, hidden: th.Tensor | None = None) -> Distribution:
        """The action distribution for each observation; with ``actor_context`` (or Q_att) the actor also
        reads ``hidden``, the transformer's output at that step (each observation as the first step of an
        episode when it is None).

        :param obs: (N, *obs_shape) observations
        :param hidden: (N, D) transformer outputs at those steps ((N, 2D) with ``actor_reads_critic``: the actor's,
            then the critic's)
        """
        features = BasePolicy.extract_features(self, obs, self.pi_features_extractor)
        if self.uses_context and hidden is None:
            hidden = th.cat([self._first_step_hidden(obs, encoder) for encoder in self._acting_encoders], dim=-1)
        if self.actor_context:
            features = th.cat([features, hidden], dim=-1)  # type: ignore[list-item]
        latent_pi = self.mlp_extractor.forward_actor(features)
        if self.q_head is None:
            return self._get_action_dist_from_latent(latent_pi)
        # pi(s_t) = softmax(logits + beta * Q_att(s_t, .)); Q_att is trained by its own regression, not here.
        logits = self.action_net(latent_pi) + self.q_att_coef * self.q_head(hidden).detach()
        return self.action_dist.proba_distribution(action_logits=logits)

    def actor_values(self, actor_hidden: th.Tensor) -> th.Tensor:
        """The actor's value head on its own transformer's outputs ``actor_hidden`` (N, D; with ``actor_reads_critic``
        the (N, 2D) the actor reads, of which it takes the first D): (N,). Needs
        ``actor_value_head``; trained by regression, read by nothing else."""
        assert self.actor_value_net is not None, "the actor's value head needs actor_value_head=True"
        return self.actor_value_net(actor_hidden[..., : self.d_model]).squeeze(-1)  # its own transformer's part

    def q_att(self, hidden: th.Tensor) -> th.Tensor:
        """Q_att(s_t, .) for transformer outputs ``hidden`` (N, D): (N, n_actions). Needs ``q_att_coef > 0``."""
        assert self.q_head is not None, "Q_att needs q_att_coef > 0"
        return self.q_head(hidden)

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        """The action distribution (with ``actor_context``: each observation as the first step of an episode;
        use :meth:`predict` with ``state`` or :meth:`trajectory_distribution` for context)."""
        return self.action_distribution(obs)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, values and log-probabilities, each observation as the first step of an episode."""
        distribution = self.get_distribution(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, self.predict_values(obs), log_prob

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Values, log-likelihood of the actions and entropy, each observation as the first step of an episode."""
        distribution = self.get_distribution(obs)
        return self.predict_values(obs), distribution.log_prob(actions), distribution.entropy()

    # ----------------------------------------------------------------------------------------------------
    # Incremental acting with context (actor_context)
    def empty_cache(self, n_envs: int) -> KVCache:
        """A key/value cache holding no steps, for ``n_envs`` envs."""
        H, K, n = self.n_heads, self.context_len, len(self._acting_encoders)
        shape = (n * self.n_layers, n_envs, H, K - 1, self.d_model // H)
        zeros = th.zeros(shape, device=self.device)
        last = th.zeros(n_envs, n * self.features_dim, device=self.device) if self.prev_obs else None
        return KVCache(zeros, zeros.clone(), th.zeros(n_envs, K - 1, dtype=th.bool, device=self.device), last)

    def cache_from_stream(self, observations: PyTorchObs, meta: TokenMeta, prev_actions: th.Tensor | None = None) -> KVCache:
        """The cache of the running episodes after streams of their last steps (the rollout buffer's carried
        prefix: :func:`~sb3_attn_ac.common.torch_layers.stream_prefix_len` steps, with a local window the episode's
        first step and the last ``n_layers * (local_window - 1)``), computed with the current parameters.

        :param observations: (E * P, *obs_shape) the streams' observations, row-major
        :param meta: (E, P) their metadata
        :param prev_actions: (E * P, *action_shape) each step's previous action (needed with ``prev_action``)
        """
        E, P = meta.timesteps.shape
        needed = stream_prefix_len(self.n_layers, self.context_len, self.local_window, self.prev_obs)
        if P < needed:
            raise ValueError(f"the stream must hold {needed} steps (stream_prefix_len), got {P}")
        if P == 0:
            return self.empty_cache(E)
        caches, encoders = [], self._acting_encoders
        for encoder, empty in zip(encoders, self.empty_cache(E).split(self.n_layers, len(encoders)), strict=True):
            features = self._encoder_features(observations, encoder).view(E, P, -1)
            cache = empty
            if self.context_len > 1:
                tokens = self._tokens(encoder, observations, meta.timesteps, features, prev_actions, meta=meta)
                _, keys, values = encoder.transformer.forward_with_keys(tokens, encoder.transformer.band(meta))
                cache = KVCache.from_stream(keys, values, meta, self.context_len)
            # What the next token embeds with prev_obs: the last step's features.
            caches.append(cache._replace(last=features[:, -1] * meta.valid[:, -1:]) if self.prev_obs else cache)
        return KVCache.join(caches)

    def step(
        self, obs: PyTorchObs, timesteps: th.Tensor, cache: KVCache, prev_actions: th.Tensor | None = None
    ) -> tuple[Distribution, th.Tensor, KVCache]:
        """One acting step with context: the new observations attend to the cached steps of their episodes.
        Its cost does not depend on the step's position in the episode.

        :param obs: (E, *obs_shape) the current observations
        :param timesteps: (E,) their index within their episodes
        :param cache: the previous steps (reset it where an episode starts: :meth:`KVCache.reset`)
        :param prev_actions: (E, *action_shape) each env's last action (needed with ``prev_action``)
        :return: action distribution, (E, D) outputs of the transformer acting runs (the actor's; (E, 2D) with
            ``actor_reads_critic``: the actor's, then the critic's), and the cache rolled forward
        """
        hidden, rolled, encoders = [], [], self._acting_encoders
        for encoder, part in zip(encoders, cache.split(self.n_layers, len(encoders)), strict=True):
            features = self._encoder_features(obs, encoder)
            tokens = self._tokens(encoder, obs, timesteps, features, prev_actions, last=part.last)
            out, part = encoder.transformer.step(tokens, part, timesteps)
            hidden.append(out)
            rolled.append(part._replace(last=features) if self.prev_obs else part)
        actor_hidden = hidden[0] if len(hidden) == 1 else th.cat(hidden, dim=-1)
        return self.action_distribution(obs, actor_hidden), actor_hidden, KVCache.join(rolled)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Get the policy action from an observation (and optional context state).

        Without ``actor_context`` (or Q_att) this is SB3's ``predict`` (``state`` stays None). With it, ``state`` carries
        the context as a fixed-shape tuple of numpy arrays with n_envs on axis 1, as RecurrentPPO:
        keys and values ``(n_layers, n_envs, n_heads, context_len - 1, d_model / n_heads)`` (``2 * n_layers`` with
        ``actor_reads_critic``: the actor's layers, then the critic's), valid slots
        ``(1, n_envs, context_len - 1)``, timesteps ``(1, n_envs)``, with ``prev_action`` each env's last
        action ``(1, n_envs, action_dim)`` (as the rollout buffer stores actions) and, with ``prev_obs``, the
        features of each env's last step ``(1, n_envs, features_dim)`` (twice as wide with ``actor_reads_critic``:
        the actor's, then the critic's). Pass ``state=None`` to start,
        then the returned state and ``episode_start`` (True where an episode begins, which resets that env's
        context).

        :param observation: the input observation(s)
        :param state: the context of the previous call (None at the start)
        :param episode_start: (n_envs,) True where the observation starts a new episode
        :param deterministic: whether to return deterministic actions
        :return: the action(s) and the next state
        """
        if not self.uses_context:
            return super().predict(observation, state, episode_start, deterministic)
        self.set_training_mode(False)
        obs, vectorized = self.obs_to_tensor(observation)
        n_envs = batch_len(obs)
        if state is None:
            cache, timesteps = self.empty_cache(n_envs), th.zeros(n_envs, dtype=th.long, device=self.device)
            prev_actions = th.zeros(n_envs, get_action_dim(self.action_space), device=self.device)
        else:
            keys, values, valid, steps, *extra = (th.as_tensor(x, device=self.device) for x in state)
            prev_actions = extra.pop(0)[0].float() if self.prev_action else None
            last = extra.pop(0)[0].float() if self.prev_obs else None
            cache, timesteps = KVCache(keys, values, valid[0].bool(), last), steps[0].long()
        starts = th.zeros(n_envs, dtype=th.bool, device=self.device)
        if episode_start is not None:
            starts = th.as_tensor(np.asarray(episode_start, dtype=bool).reshape(n_envs), device=self.device)
        cache, timesteps = cache.reset(starts), th.where(starts, 0, timesteps)
        with th.no_grad():
            distribution, _, cache = self.step(obs, timesteps, cache, prev_actions)
            actions = distribution.get_actions(deterministic=deterministic)
        taken = actions.float().reshape(n_envs, -1)  # the next step's previous actions, unclipped as the buffer's
        actions = actions.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                actions = self.unscale_action(actions)
            else:
                actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if not vectorized:
            actions = actions.squeeze(axis=0)
        next_state = (
            cache.keys.cpu().numpy(),
            cache.values.cpu().numpy(),
            cache.valid[None].cpu().numpy(),
            (timesteps + 1)[None].cpu().numpy(),
        )
        if self.prev_action:
            next_state += (taken[None].cpu().numpy(),)
        if cache.last is not None:
            next_state += (cache.last[None].cpu().numpy(),)
        return actions, next_state

    # ----------------------------------------------------------------------------------------------------
    # Masked-contrastive loss
    def contrastive_loss(self, masked: MaskedPass, temperature: float) -> th.Tensor:
        """BERT-like masked-contrastive loss of a masked pass (see :meth:`evaluate_streams`).

        The output at each masked step i gives a query q_i that must pick its own state's key
        k_i = Enc_k(s_i) among the keys of the other steps j of the same episode inside its attention window
        (|t_i - t_j| < context_len). q and k are L2-normalised.

        :param masked: the masked pass
        :param temperature: omega
        :return: scalar loss
        """
        band = masked.band
        E = masked.hidden.shape[0]
        # Only the masked positions need a query: gather them, with their window of keys.
        env, chunk, slot = band.queries(masked.selected[:, None, :, None])[:, 0, ..., 0].nonzero(as_tuple=True)
        hidden = band.queries(masked.hidden[:, None])[:, 0][env, chunk, slot]  # (N, D)
        queries = F.normalize(self.query_head(hidden), dim=-1)
        keys = self.key_net(masked.features.detach()) if self.key_net is not None else masked.tokens
        keys = band.windows(F.normalize(keys, dim=-1)[:, None])[:, 0][env, chunk]  # (N, W, D)
        allowed = band.allowed[E:][env, chunk, slot]  # (N, W): the masked rows' windows
        return masked_contrastive_loss(queries, keys, band.left + slot, allowed, temperature)

    def masked_prediction_losses(
        self, masked: MaskedPass, rewards: th.Tensor, reward_known: th.Tensor, gamma: float
    ) -> tuple[th.Tensor | None, th.Tensor | None]:
        """The masked prediction heads' losses (None for a head that is off), averaged over masked positions:

        - next state: MSE to the next step's features (stop-gradient), where the next column is a valid step of
          the same episode (never across an episode boundary; a truncated episode's last step is followed by
          its terminal observation);
        - reward-to-go: MSE to sum_{k < context_len} gamma^k r_{t+k} over the same episode, where every reward in
          that window is known (not past the end of the rollout).

        :param masked: the masked pass
        :param rewards: (B, L) the tokens' rewards
        :param reward_known: (B, L) whether they are known
        :param gamma: discount factor
        """
        meta, selected = masked.meta, masked.selected
        next_state_loss = rtg_loss = None
        if self.next_state_net is not None:
            same = meta.episode_ids[:, 1:] == meta.episode_ids[:, :-1]
            use = selected[:, :-1] & meta.valid[:, 1:] & same  # (B, L - 1)
            prediction = self.next_state_net(masked.hidden[:, :-1][use])
            next_state_loss = F.mse_loss(prediction, masked.features[:, 1:][use].detach()) if use.any() else prediction.sum()
        if self.rtg_net is not None:
            target, complete = reward_to_go(rewards, reward_known, meta.episode_ids, gamma, self.context_len)
            use = selected & meta.valid & complete
            prediction = self.rtg_net(masked.hidden[use]).squeeze(-1)
            rtg_loss = F.mse_loss(prediction, target[use]) if use.any() else prediction.sum()
        return next_state_loss, rtg_loss

    def update_key_encoder(self) -> None:
        """EMA step of the momentum key encoder (no-op with the shared encoder)."""
        if self.key_net is None:
            return
        with th.no_grad():
            th._foreach_lerp_(
                list(self.key_net.parameters()), list(self.token_embedding.parameters()), 1.0 - self.key_momentum
            )


class AttnActorCriticCnnPolicy(AttnActorCriticPolicy):
    """:class:`AttnActorCriticPolicy` with SB3's NatureCNN features extractor (image observations)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class AttnMultiInputActorCriticPolicy(AttnActorCriticPolicy):
    """:class:`AttnActorCriticPolicy` with SB3's CombinedExtractor (Dict observations)."""

    def __init__(
        self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any
    ) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)

"""Actor-critic policies whose critic is a transformer over the current episode."""

import copy
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_attn_ac.common.attention.type_aliases import EpisodeStreams, MaskedPass, StreamValues
from sb3_attn_ac.common.torch_layers import Band, EpisodeTransformer, SinusoidalPositions, TokenMeta
from sb3_attn_ac.common.utils import check_attention_args, check_spaces, masked_contrastive_loss, select_masked


class AttnActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy with SB3's MLP actor and a transformer critic over the episode so far.

    The actor is SB3's: features extractor, ``net_arch["pi"]`` MLP, action distribution. The critic embeds
    each step's features as a token (plus a sinusoidal embedding of the step's index within its episode),
    runs a causal transformer whose layers attend to the last ``context_len`` steps of the same episode, and
    reads V(s_t) from the output at t through the ``net_arch["vf"]`` MLP and a linear head.

    Parameters up to ``optimizer_kwargs`` are those of
    :class:`~stable_baselines3.common.policies.ActorCriticPolicy`.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the policy and value networks; the value MLP reads the transformer's
        output. Default: ``dict(pi=[64, 64], vf=[])`` (``[]`` with NatureCNN)
    :param activation_fn: Activation function
    :param ortho_init: Whether to use or not orthogonal initialization (the transformer keeps GPT-2's init)
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
    ) -> None:
        check_spaces(observation_space, action_space)
        check_attention_args(context_len, n_layers, n_heads, d_model, dropout, key_encoder, key_momentum)
        # Set before super().__init__(), whose _build() creates the transformer.
        self.context_len = context_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_model = d_model
        self.dropout = dropout
        self.key_encoder = key_encoder
        self.key_momentum = key_momentum
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
            share_features_extractor=self.share_features_extractor,
            normalize_images=self.normalize_images,
        )
        return data

    def _build_mlp_extractor(self) -> None:
        # Called by _build() before the optimizer is created: build the transformer critic here too.
        super()._build_mlp_extractor()
        # The value MLP reads the transformer's output (d_model wide), not the per-step features.
        critic_mlp = MlpExtractor(self.d_model, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device)
        self.mlp_extractor.value_net = critic_mlp.value_net
        self.mlp_extractor.latent_dim_vf = critic_mlp.latent_dim_vf
        self.token_embedding = nn.Linear(self.features_dim, self.d_model)
        self.positions = SinusoidalPositions(self.d_model)
        self.transformer = EpisodeTransformer(self.d_model, self.n_layers, self.n_heads, self.context_len, self.dropout)
        # Masked-contrastive parts: the learned [MASK] token, the query head and the key encoder.
        self.mask_embedding = nn.Parameter(0.02 * th.randn(self.d_model))
        self.query_head = nn.Linear(self.d_model, self.d_model)
        self.key_net: nn.Module | None = None
        if self.key_encoder == "momentum":
            self.key_net = copy.deepcopy(self.token_embedding).requires_grad_(False)

    @property
    def receptive_field(self) -> int:
        """How many earlier steps of the episode can influence V(s_t): ``n_layers * (context_len - 1)``."""
        return self.transformer.receptive_field

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
    # Critic
    def _critic_features(self, obs: PyTorchObs) -> th.Tensor:
        return BasePolicy.extract_features(self, obs, self.vf_features_extractor)  # type: ignore[return-value]

    def _critic(self, tokens: th.Tensor, meta: TokenMeta, band: Band | None = None) -> th.Tensor:
        band = Band(meta, self.context_len) if band is None else band
        return self.transformer(tokens + self.positions(meta.timesteps), band)

    def _value_head(self, hidden: th.Tensor) -> th.Tensor:
        return self.value_net(self.mlp_extractor.forward_critic(hidden)).squeeze(-1)

    def evaluate_streams(
        self, streams: EpisodeStreams, mask_ratio: float | None = None, bert_masking: bool = False
    ) -> StreamValues:
        """The critic over a rollout's streams in one batched pass ("Method 2").

        With ``mask_ratio``, a masked copy of the streams (for :meth:`contrastive_loss`) runs in the same
        transformer call, as extra rows that attend both ways: a ``mask_ratio`` fraction of the valid tokens is
        replaced by the learned mask embedding (with ``bert_masking``: 80% mask, 10% a random token of the
        batch, 10% unchanged).

        :param streams: from :meth:`EpisodeRolloutBuffer.streams`
        :param mask_ratio: fraction of tokens to mask in the masked copy (None: no masked copy)
        :param bert_masking: BERT's 80/10/10 replacement instead of always the mask embedding
        :return: values of the rollout steps, terminal observations and the following observation
        """
        meta = streams.meta
        E = streams.index.shape[0]
        features = self._critic_features(streams.observations)[streams.index]  # (E, L, F)
        tokens = self.token_embedding(features)  # (E, L, D)
        masked = None
        if mask_ratio is None:
            hidden = self._critic(tokens, meta)
        else:
            selected = select_masked(meta.valid, mask_ratio)  # (E, L)
            replacement = self.mask_embedding.expand_as(tokens)
            replaced = selected
            if bert_masking:
                u = th.rand(selected.shape, device=tokens.device)
                flat = tokens[meta.valid]
                random_tokens = flat[th.randint(len(flat), selected.shape, device=tokens.device)]
                replacement = th.where((u < 0.8)[..., None], replacement, random_tokens)
                replaced = selected & (u < 0.9)  # the last 10% keep their own token
            masked_tokens = th.where(replaced[..., None], replacement, tokens)
            both_meta = TokenMeta(*(th.cat([m, m]) for m in meta))
            causal = th.arange(2 * E, device=tokens.device) < E  # value rows causal, masked rows both ways
            band = Band(both_meta, self.context_len, causal)
            hidden, masked_hidden = self._critic(th.cat([tokens, masked_tokens]), both_meta, band).split(E)
            masked = MaskedPass(masked_hidden, features, tokens, selected, band)
        values = self._value_head(hidden)  # (E, L)
        envs = th.arange(E, device=values.device)
        return StreamValues(
            values=values[envs[None, :], streams.step_cols],  # (T, E)
            terminal_values=values[streams.terminal_envs, streams.terminal_cols],
            last_values=values[envs, streams.last_cols],
            masked=masked,
        )

    def trajectory_values(
        self, observations: np.ndarray | dict[str, np.ndarray], episode_starts: np.ndarray | None = None
    ) -> th.Tensor:
        """V for every step of one stream of observations ("Method 2"): the values the algorithm uses.

        :param observations: (T, *obs_shape) consecutive observations of one env (or a dict of them)
        :param episode_starts: (T,) True where a new episode starts (the first step always starts one)
        :return: (T,) values
        """
        obs, _ = self.obs_to_tensor(observations)
        T = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        starts = (
            np.zeros(T, dtype=bool) if episode_starts is None else np.asarray(episode_starts, dtype=bool).reshape(T).copy()
        )
        starts[0] = True
        step = np.arange(T)
        timesteps = step - np.maximum.accumulate(np.where(starts, step, 0))
        meta = TokenMeta(
            th.as_tensor(timesteps, device=self.device)[None],
            th.as_tensor(np.cumsum(starts), device=self.device)[None],
            th.ones(1, T, dtype=th.bool, device=self.device),
        )
        with th.no_grad():
            tokens = self.token_embedding(self._critic_features(obs))[None]  # (1, T, D)
            return self._value_head(self._critic(tokens, meta))[0]

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """V of each observation as the first step of an episode (no context), shape (N, 1) as SB3's."""
        tokens = self.token_embedding(self._critic_features(obs))[:, None]  # (N, 1, D)
        zeros = th.zeros(tokens.shape[:2], dtype=th.long, device=tokens.device)
        return self._value_head(self._critic(tokens, TokenMeta(zeros, zeros, th.ones_like(zeros, dtype=th.bool))))

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, values (without context, see :meth:`predict_values`) and log-probabilities."""
        distribution = self.get_distribution(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, self.predict_values(obs), log_prob

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Values (without context), log-likelihood of the actions and entropy of the action distribution."""
        distribution = self.get_distribution(obs)
        return self.predict_values(obs), distribution.log_prob(actions), distribution.entropy()

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

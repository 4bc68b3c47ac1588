"""The RLlib entry point: a PPOConfig whose module is the attention actor-critic and whose learner adds its losses."""

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.env_context import EnvContext
from ray.rllib.utils.from_config import NotProvided

from sb3_attn_ac.rllib.checks import check_attention_config, check_rllib_spaces
from sb3_attn_ac.rllib.learner import AttnPPOTorchLearner
from sb3_attn_ac.rllib.rl_module import AttnPPOTorchRLModule

# Sequences RLlib cuts episodes into for training: twice the default window, so that a masked step in the middle
# of a sequence has context_len - 1 neighbours on both sides. Values do not depend on it (the cache carries context).
DEFAULT_MAX_SEQ_LEN = 32


class AttnPPOConfig(PPOConfig):
    """RLlib's :class:`~ray.rllib.algorithms.ppo.PPOConfig` (new API stack) with the attention actor-critic:
    :class:`AttnPPOTorchRLModule` as the default module and :class:`AttnPPOTorchLearner` (PPO's loss +
    ``ct_coef`` * masked-contrastive loss + the optional heads) as the default learner. Everything else is
    PPOConfig's: combine it with ``.environment()``, ``.env_runners()``, ``.learners()``, ``.training()``.

    The attention arguments are :class:`~sb3_attn_ac.AttnPPO`'s (same names and defaults; see :meth:`attention`),
    checked when set and again in :meth:`validate`, which also checks the env's spaces: bad input fails before
    Ray starts work.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        # AttnPPO's attention arguments and defaults.
        self.context_len = 16
        self.n_layers = 1
        self.n_heads = 2
        self.d_model = 32
        self.dropout = 0.0
        self.ct_coef = 0.1
        self.ct_temperature = 0.1
        self.mask_ratio = 0.15
        self.key_encoder = "momentum"
        self.key_momentum = 0.95
        self.bert_masking = False
        self.actor_context = False
        self.q_att_coef = 0.0
        self.q_att_loss_coef = 0.5
        self.next_state_coef = 0.0
        self.rtg_coef = 0.0
        self.actor_value_coef = 0.0
        self.position_encoding = "relative"
        self.shared_transformer = True
        self.actor_reads_critic = False
        self.prev_action = False
        self.prev_action_encoding = "bounded"
        self.prev_obs = False
        self.start_bias = False
        self.local_window: int | None = None
        self.policy_kwargs: dict[str, Any] | None = None
        self.max_seq_len = DEFAULT_MAX_SEQ_LEN

    def attention(
        self,
        *,
        context_len: int = NotProvided,  # type: ignore[assignment]
        n_layers: int = NotProvided,  # type: ignore[assignment]
        n_heads: int = NotProvided,  # type: ignore[assignment]
        d_model: int = NotProvided,  # type: ignore[assignment]
        dropout: float = NotProvided,  # type: ignore[assignment]
        ct_coef: float = NotProvided,  # type: ignore[assignment]
        ct_temperature: float = NotProvided,  # type: ignore[assignment]
        mask_ratio: float = NotProvided,  # type: ignore[assignment]
        key_encoder: str = NotProvided,  # type: ignore[assignment]
        key_momentum: float = NotProvided,  # type: ignore[assignment]
        bert_masking: bool = NotProvided,  # type: ignore[assignment]
        actor_context: bool = NotProvided,  # type: ignore[assignment]
        q_att_coef: float = NotProvided,  # type: ignore[assignment]
        q_att_loss_coef: float = NotProvided,  # type: ignore[assignment]
        next_state_coef: float = NotProvided,  # type: ignore[assignment]
        rtg_coef: float = NotProvided,  # type: ignore[assignment]
        actor_value_coef: float = NotProvided,  # type: ignore[assignment]
        position_encoding: str = NotProvided,  # type: ignore[assignment]
        shared_transformer: bool = NotProvided,  # type: ignore[assignment]
        actor_reads_critic: bool = NotProvided,  # type: ignore[assignment]
        prev_action: bool = NotProvided,  # type: ignore[assignment]
        prev_action_encoding: str = NotProvided,  # type: ignore[assignment]
        prev_obs: bool = NotProvided,  # type: ignore[assignment]
        start_bias: bool = NotProvided,  # type: ignore[assignment]
        local_window: int | None = NotProvided,  # type: ignore[assignment]
        policy_kwargs: dict[str, Any] | None = NotProvided,  # type: ignore[assignment]
        max_seq_len: int = NotProvided,  # type: ignore[assignment]
        **rollout_args: Any,
    ) -> "AttnPPOConfig":
        """Set the attention arguments (those not given keep their value), as RLlib's ``.training()`` does.
        They mean what they mean for :class:`~sb3_attn_ac.AttnPPO`:

        :param context_len: K, each attention layer's window: the step itself and K - 1 earlier steps of its episode
        :param n_layers: transformer blocks; the transformer sees ``n_layers * (context_len - 1)`` earlier steps
        :param n_heads: attention heads (must divide ``d_model``)
        :param d_model: token width
        :param dropout: dropout in the transformer
        :param ct_coef: lambda, weight of the masked-contrastive loss (0: not computed)
        :param ct_temperature: omega, temperature of the contrastive softmax
        :param mask_ratio: fraction of positions masked in the masked pass, in (0, 1)
        :param key_encoder: ``"momentum"`` (EMA copy of the token embedding, no gradient) or ``"shared"``
        :param key_momentum: EMA coefficient of the momentum key encoder (one EMA step per optimizer step)
        :param bert_masking: BERT's 80/10/10 replacement (mask / random token / unchanged) instead of always masking
        :param actor_context: the actor also reads the transformer's output at each step (memory for partially
            observed tasks)
        :param q_att_coef: beta (Discrete actions): the actor's preferences become logits + beta * Q_att(s_t, .)
        :param q_att_loss_coef: weight of Q_att's regression on the value targets of the taken actions
        :param next_state_coef: weight of a head predicting, at each masked position, the next step's features
        :param rtg_coef: weight of a head predicting, at each masked position, the discounted reward-to-go over the
            next ``context_len`` steps
        :param actor_value_coef: must stay 0 on RLlib (it needs an actor transformer of its own)
        :param position_encoding: ``"relative"`` (offset biases and a start-of-episode embedding), ``"alibi"`` (the
            same, offset biases starting as ALiBi's recency slopes) or ``"absolute"``
        :param shared_transformer: must stay True on RLlib (the actor reads the critic's transformer)
        :param actor_reads_critic: must stay False on RLlib (it needs an actor transformer of its own)
        :param prev_action: must stay False on RLlib (the token of the previous action is not supported there yet)
        :param prev_action_encoding: ``"bounded"`` or ``"raw"`` (AttnPPO's; no effect while ``prev_action`` is False)
        :param prev_obs: must stay False on RLlib (the previous step's features in the token are not supported there
            yet)
        :param start_bias: each attention head also learns a bias for its episode's first step (with
            ``position_encoding="relative"`` or ``"alibi"``)
        :param local_window: None, or w <= ``context_len``: beyond the last w steps each layer attends only to the
            episode's first step
        :param policy_kwargs: arguments of the policy other than the attention ones (``net_arch``,
            ``activation_fn``, ``ortho_init``, features extractor, ...); the optimizer is RLlib's
        :param max_seq_len: RLlib's training sequence length (episodes are cut into sequences this long; each
            starts from the cache its previous one ended with). RLlib-only; default 32
        :param rollout_args: AttnPPO's rollout options (``n_episodes``, ``max_rollout_steps``) are refused with a
            ValueError: RLlib's ``.env_runners()`` and ``.training()`` set rollouts
        :return: this config
        """
        given = {name: value for name, value in locals().items() if name not in ("self", "rollout_args")}
        given = {name: value for name, value in given.items() if value is not NotProvided}
        unknown = sorted(set(rollout_args) - {"n_episodes", "max_rollout_steps"})
        if unknown:
            raise TypeError(f"attention() got unexpected keyword arguments: {', '.join(unknown)}")
        check_attention_config({**self.attention_args(), **given, **rollout_args})
        for name, value in given.items():
            setattr(self, name, value)
        return self

    def attention_args(self) -> dict[str, Any]:
        """The attention arguments (and ``max_seq_len``) by name."""
        return {name: getattr(self, name) for name in ATTENTION_ARGS}

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        # What the module builds from; a user's .rl_module(model_config=...) entries take precedence, as in RLlib.
        return {**super()._model_config_auto_includes, **self.attention_args()}

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=AttnPPOTorchRLModule)

    def get_default_learner_class(self) -> type[AttnPPOTorchLearner]:
        return AttnPPOTorchLearner

    def validate(self) -> None:
        """PPOConfig's checks, then the attention arguments the module will be built with and the env's spaces,
        before any env runner or learner starts."""
        super().validate()
        model_args = {name: self.model_config[name] for name in ATTENTION_ARGS}
        check_attention_config(model_args)
        self._check_env_spaces()

    def _check_env_spaces(self) -> None:
        """AttnPPO's space checks on the single-agent env: its spaces as given to ``.environment()``, else those of
        one env made here. Left to the module when an env-to-module connector may change the observations."""
        if self.is_multi_agent or self._env_to_module_connector is not None:
            return
        observation_space, action_space = self.observation_space, self.action_space
        if observation_space is None or action_space is None:
            if self.env is None:
                return
            _, env_creator = Algorithm._get_env_id_and_creator(self.env, self)
            env = env_creator(EnvContext(self.env_config, worker_index=0))
            observation_space = observation_space or env.observation_space
            action_space = action_space or env.action_space
            env.close()
        check_rllib_spaces(observation_space, action_space, self.q_att_coef)


# The arguments AttnPPOConfig adds to PPOConfig (the module's model_config holds them).
ATTENTION_ARGS = (
    "context_len",
    "n_layers",
    "n_heads",
    "d_model",
    "dropout",
    "ct_coef",
    "ct_temperature",
    "mask_ratio",
    "key_encoder",
    "key_momentum",
    "bert_masking",
    "actor_context",
    "q_att_coef",
    "q_att_loss_coef",
    "next_state_coef",
    "rtg_coef",
    "actor_value_coef",
    "position_encoding",
    "shared_transformer",
    "actor_reads_critic",
    "prev_action",
    "prev_action_encoding",
    "prev_obs",
    "start_bias",
    "local_window",
    "policy_kwargs",
    "max_seq_len",
)


def attn_ppo_config(**attention_args: Any) -> AttnPPOConfig:
    """An RLlib PPO config with the attention actor-critic, to combine with RLlib's own builder::

        config = attn_ppo_config(actor_context=True).environment("CartPole-v1").env_runners(num_env_runners=4)
        algo = config.build_algo()

    :param attention_args: :class:`~sb3_attn_ac.AttnPPO`'s attention arguments (same names and defaults), see
        :meth:`AttnPPOConfig.attention`; bad values raise AttnPPO's ValueError here
    :return: the config (new API stack)
    """
    return AttnPPOConfig().attention(**attention_args)

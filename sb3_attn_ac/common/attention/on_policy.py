"""Rollout collection shared by AttnA2C and AttnPPO: whole episodes, and one critic pass per rollout."""

import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_attn_ac.common.attention.buffers import DictEpisodeRolloutBuffer, EpisodeBufferMixin, EpisodeRolloutBuffer
from sb3_attn_ac.common.attention.policies import (
    UNSAVED_ARGS,
    AttnActorCriticCnnPolicy,
    AttnActorCriticPolicy,
    AttnMultiInputActorCriticPolicy,
)
from sb3_attn_ac.common.attention.type_aliases import EpisodeStreams, MaskedPass, StreamValues
from sb3_attn_ac.common.torch_layers import keeps_first_step, stream_prefix_len
from sb3_attn_ac.common.utils import (
    check_actor_reads_critic,
    check_actor_value,
    check_attention_args,
    check_contrastive_args,
    check_flags,
    check_loss_coefs,
    check_n_steps,
    check_policy_kwargs,
    check_prev_action_encoding,
    check_q_att,
    check_rollout_args,
    check_spaces,
)

SelfAttnOnPolicyAlgorithm = TypeVar("SelfAttnOnPolicyAlgorithm", bound="AttnOnPolicyAlgorithm")

# Algorithm arguments that are forwarded to the policy.
POLICY_ARGS = (
    "context_len",
    "n_layers",
    "n_heads",
    "d_model",
    "dropout",
    "key_encoder",
    "key_momentum",
    "actor_context",
    "q_att_coef",
    "position_encoding",
    "shared_transformer",
    "actor_reads_critic",
    "prev_action",
    "prev_action_encoding",
    "prev_obs",
    "start_bias",
    "local_window",
)


class AttnOnPolicyAlgorithm(OnPolicyAlgorithm):
    """Base of the attention actor-critics: SB3's on-policy loop with an episode-keeping rollout buffer.

    While acting only the actor runs (it needs no context). At the end of a rollout the critic runs once over
    every env's stream (carried prefix + rollout + terminal observations of truncated episodes + the next
    observation), which gives the stored values, the time-limit bootstraps and the last values for GAE.

    With ``n_episodes`` a rollout instead runs until that many episodes have ended across the envs; the update
    trains on those whole episodes and the unfinished ones stay in the buffer for the next rollout.

    Parameters are :class:`~stable_baselines3.common.on_policy_algorithm.OnPolicyAlgorithm`'s, then those of
    :class:`AttnActorCriticPolicy` (``context_len`` ... ``key_momentum``) and of the contrastive loss
    (``ct_coef``, ``ct_temperature``, ``mask_ratio``, ``bert_masking``); see :class:`~sb3_attn_ac.AttnA2C`.
    """

    policy: AttnActorCriticPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": AttnActorCriticPolicy,
        "CnnPolicy": AttnActorCriticCnnPolicy,
        "MultiInputPolicy": AttnMultiInputActorCriticPolicy,
        "MlpAttnPolicy": AttnActorCriticPolicy,
        "CnnAttnPolicy": AttnActorCriticCnnPolicy,
        "MultiInputAttnPolicy": AttnMultiInputActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[AttnActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule,
        n_steps: int,
        gamma: float,
        gae_lambda: float,
        ent_coef: float,
        vf_coef: float,
        max_grad_norm: float,
        use_sde: bool,
        sde_sample_freq: int,
        rollout_buffer_class: type[RolloutBuffer] | None,
        rollout_buffer_kwargs: dict[str, Any] | None,
        stats_window_size: int,
        tensorboard_log: str | None,
        policy_kwargs: dict[str, Any] | None,
        verbose: int,
        seed: int | None,
        device: th.device | str,
        context_len: int,
        n_layers: int,
        n_heads: int,
        d_model: int,
        dropout: float,
        ct_coef: float,
        ct_temperature: float,
        mask_ratio: float,
        key_encoder: str,
        key_momentum: float,
        bert_masking: bool,
        actor_context: bool,
        q_att_coef: float,
        q_att_loss_coef: float,
        next_state_coef: float,
        rtg_coef: float,
        actor_value_coef: float,
        n_episodes: int | None,
        max_rollout_steps: int,
        position_encoding: str,
        shared_transformer: bool,
        actor_reads_critic: bool,
        prev_action: bool,
        prev_action_encoding: str,
        prev_obs: bool,
        start_bias: bool,
        local_window: int | None,
    ) -> None:
        check_rollout_args(n_episodes, max_rollout_steps)
        check_flags(
            bert_masking=bert_masking,
            actor_context=actor_context,
            shared_transformer=shared_transformer,
            actor_reads_critic=actor_reads_critic,
            prev_action=prev_action,
            prev_obs=prev_obs,
            start_bias=start_bias,
        )
        check_prev_action_encoding(prev_action_encoding)
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
        check_contrastive_args(ct_coef, ct_temperature, mask_ratio)
        check_loss_coefs(q_att_loss_coef, next_state_coef, rtg_coef, actor_value_coef)
        check_actor_value(actor_value_coef, actor_context, shared_transformer)
        check_actor_reads_critic(actor_reads_critic, actor_context, shared_transformer)
        # The algorithm sets these policy arguments itself (the heads from next_state_coef and rtg_coef).
        check_policy_kwargs(policy_kwargs, POLICY_ARGS, type(self).__name__)
        check_n_steps(n_steps, n_episodes)
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
            device=device,
            seed=seed,
            _init_setup_model=False,
        )
        self.context_len = context_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_model = d_model
        self.dropout = dropout
        self.ct_coef = ct_coef
        self.ct_temperature = ct_temperature
        self.mask_ratio = mask_ratio
        self.key_encoder = key_encoder
        self.key_momentum = key_momentum
        self.bert_masking = bert_masking
        self.actor_context = actor_context
        self.q_att_coef = q_att_coef
        self.q_att_loss_coef = q_att_loss_coef
        self.next_state_coef = next_state_coef
        self.rtg_coef = rtg_coef
        self.actor_value_coef = actor_value_coef
        self.n_episodes = n_episodes
        self.max_rollout_steps = max_rollout_steps
        self.position_encoding = position_encoding
        self.shared_transformer = shared_transformer
        self.actor_reads_critic = actor_reads_critic
        self.prev_action = prev_action
        self.prev_action_encoding = prev_action_encoding
        self.prev_obs = prev_obs
        self.start_bias = start_bias
        self.local_window = local_window

    def _setup_model(self) -> None:
        # Everything below derives from saved attributes, so load() (which calls this after restoring them) agrees.
        check_spaces(self.observation_space, self.action_space)
        check_q_att(self.q_att_coef, self.action_space, self.actor_context and not self.shared_transformer)
        if not issubclass(self.policy_class, AttnActorCriticPolicy):
            raise ValueError(
                f"policy must be one of {sorted(self.policy_aliases)} or a subclass of AttnActorCriticPolicy, "
                f"got {self.policy_class}"
            )
        if self.rollout_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = DictEpisodeRolloutBuffer if dict_obs else EpisodeRolloutBuffer
        if not issubclass(self.rollout_buffer_class, EpisodeBufferMixin):
            raise ValueError(
                "rollout_buffer_class must be EpisodeRolloutBuffer, DictEpisodeRolloutBuffer or a subclass, "
                f"got {self.rollout_buffer_class}"
            )
        # The buffer is built before the policy: its prefix (the critic's receptive field, or with a local window the
        # episode's first step and the last n_layers * (local_window - 1) steps; with prev_obs one step more) comes
        # from the arguments.
        self.rollout_buffer_kwargs = {
            **self.rollout_buffer_kwargs,
            "prefix_len": stream_prefix_len(self.n_layers, self.context_len, self.local_window, self.prev_obs),
            "carry_unfinished": self.n_episodes is not None,
            "keep_first_step": keeps_first_step(self.n_layers, self.context_len, self.local_window),
        }
        # The policy gets the optimizer defaults and the attention arguments on top of the user's policy_kwargs,
        # while self.policy_kwargs (saved, and compared with load()'s policy_kwargs) stays what the user passed.
        user_policy_kwargs = self.policy_kwargs
        # Saves of 0.1.0 stored them merged (optimizer included, use_rms_prop not saved): complete as they are.
        saved_merged = "context_len" in user_policy_kwargs
        self.policy_kwargs = {
            **user_policy_kwargs,
            **({} if saved_merged else self._optimizer_defaults()),
            **{name: getattr(self, name) for name in POLICY_ARGS},
            "next_state_head": self.next_state_coef > 0,
            "rtg_head": self.rtg_coef > 0,
            "actor_value_head": self.actor_value_coef > 0,
        }
        try:
            super()._setup_model()
        finally:
            self.policy_kwargs = user_policy_kwargs
        if self.n_episodes is not None:  # rows for the longest rollout, unfinished episodes included
            self.rollout_buffer = self.rollout_buffer_class(
                self.max_rollout_steps,
                self.observation_space,  # type: ignore[arg-type]
                self.action_space,
                device=self.device,
                gamma=self.gamma,
                gae_lambda=self.gae_lambda,
                n_envs=self.n_envs,
                **self.rollout_buffer_kwargs,
            )
        self._rollout_streams: EpisodeStreams | None = None
        self._rollout_values: StreamValues | None = None

    @classmethod
    def load(
        cls: type[SelfAttnOnPolicyAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfAttnOnPolicyAlgorithm:
        """SB3's :meth:`~stable_baselines3.common.base_class.BaseAlgorithm.load` (same arguments). Models saved by
        an earlier release load with what it built where it saved no argument (:data:`UNSAVED_ARGS`): 0.1's
        sinusoidal positions (no ``position_encoding``) and shared transformer, 0.3.1's raw previous action (no
        ``prev_action_encoding``)."""
        data, _, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects)
        if isinstance(path, io.BufferedIOBase):
            path.seek(0)
        if data is not None:
            kwargs = {**{name: value for name, value in UNSAVED_ARGS.items() if name not in data}, **kwargs}
        return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_rollout_streams", "_rollout_values"]

    def _keep_value_graph(self) -> bool:
        """Whether the critic pass at the end of a rollout keeps its graph for the update (A2C's single step)."""
        return False

    def _maybe_recommend_cpu(self, mlp_class_name: str = AttnActorCriticPolicy.__name__) -> None:
        # As A2C and PPO: warn when the MlpPolicy runs on the GPU (SB3 checks the policy's class name).
        super()._maybe_recommend_cpu(mlp_class_name)

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        """SB3's progress remaining (1 at the start, 0 at ``total_timesteps``), never below 0. A budget that is not a
        multiple of the rollout size makes SB3's last rollout overshoot it; the schedules (learning rate, clip
        range) would then be evaluated past their end, and rl-zoo3's ``lin_`` schedules turn negative there: the
        last update of e.g. PendulumNoVel's entry (1e5 steps in rollouts of 4,096) would ascend the loss with
        learning rate -2.4e-5 and invert the clip range, which left the saved model at about -900 where the
        evaluation at 1e5 steps had it at about -200."""
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        self._current_progress_remaining = max(0.0, self._current_progress_remaining)

    def _optimizer_defaults(self) -> dict[str, Any]:
        """Optimizer arguments the algorithm gives the policy unless ``policy_kwargs`` sets them (as A2C's RMSprop)."""
        return {}

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect experiences with the actor alone, then compute values with one critic pass over the streams.

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: Buffer to fill with rollouts (an :class:`EpisodeRolloutBuffer`)
        :param n_rollout_steps: Number of experiences to collect per environment (ignored with ``n_episodes``:
            the rollout then runs until ``n_episodes`` episodes have ended)
        :return: True if function returned with at least `n_rollout_steps` collected,
            False if callback terminated rollout prematurely.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        assert isinstance(rollout_buffer, EpisodeBufferMixin)
        self.policy.set_training_mode(False)
        self._rollout_streams, self._rollout_values = None, None
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        no_values = th.zeros(env.num_envs)  # filled by the critic pass at the end of the rollout
        continue_training = True
        # An env reset outside the loop (learn() with reset_num_timesteps) abandons its carried episode.
        rollout_buffer.discard_unfinished(self._last_episode_starts)  # type: ignore[arg-type]
        if self.policy.uses_context:
            # The actor reads the episode so far: rebuild each env's key/value cache from the carried context
            # with the current parameters, so acting sees exactly what the update will recompute.
            with th.no_grad():
                cache = self.policy.cache_from_stream(*rollout_buffer.context_stream())
        n_ended = 0

        while n_steps < n_rollout_steps if self.n_episodes is None else n_ended < self.n_episodes:
            if self.n_episodes is not None and rollout_buffer.full:  # the buffer holds max_rollout_steps rows
                if n_ended == 0:
                    raise RuntimeError(
                        f"no episode ended within max_rollout_steps={self.max_rollout_steps} steps per env "
                        f"(n_episodes={self.n_episodes}): an episode longer than that can never be trained whole. "
                        "Raise max_rollout_steps or give the env a time limit (gymnasium.wrappers.TimeLimit)."
                    )
                warnings.warn(
                    f"rollout stopped at max_rollout_steps={self.max_rollout_steps} steps per env with {n_ended} of "
                    f"n_episodes={self.n_episodes} episodes ended; training on those",
                    stacklevel=2,
                )
                break
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)

            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                if self.policy.uses_context:
                    starts = th.as_tensor(self._last_episode_starts, dtype=th.bool, device=self.device)
                    timesteps = th.as_tensor(rollout_buffer.next_timesteps(self._last_episode_starts), device=self.device)  # type: ignore[arg-type]
                    prev_actions = th.as_tensor(rollout_buffer.last_actions, device=self.device)
                    distribution, _, cache = self.policy.step(obs_tensor, timesteps, cache.reset(starts), prev_actions)
                else:
                    distribution = self.policy.get_distribution(obs_tensor)
                actions_tensor = distribution.get_actions()
                log_probs = distribution.log_prob(actions_tensor)
            actions = actions_tensor.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[misc]

            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            continue_training = callback.on_step()
            # The env has moved on either way: record the step so the carried context stays continuous.
            self._update_info_buffer(infos, dones)
            n_steps += 1
            n_ended += int(np.sum(dones))
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, no_values, log_probs)  # type: ignore[arg-type]
            for idx, done in enumerate(dones):
                # Time limit: bootstrap from the terminal observation's value *with its episode's context*.
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    rollout_buffer.add_terminal(idx, infos[idx]["terminal_observation"])
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            if not continue_training:
                break

        rollout_buffer.finish_rollout(self._last_obs, self._last_episode_starts)  # type: ignore[arg-type]
        if not continue_training:
            return False
        self._compute_rollout_values(rollout_buffer)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _compute_rollout_values(self, rollout_buffer: EpisodeBufferMixin) -> None:
        """One critic pass over the rollout's streams: stored values, time-limit bootstraps, returns, advantages."""
        streams = rollout_buffer.streams()
        keep_graph = self._keep_value_graph()
        with th.set_grad_enabled(keep_graph):
            out = self._critic_pass(streams) if keep_graph else self.policy.evaluate_streams(streams)
        rollout_buffer.values[: rollout_buffer.pos] = out.values.detach().cpu().numpy()  # type: ignore[attr-defined]
        if len(streams.terminal_steps) > 0:
            terminal_values = out.terminal_values.detach().cpu().numpy()
            rollout_buffer.rewards[streams.terminal_steps, streams.terminal_envs.cpu().numpy()] += self.gamma * terminal_values  # type: ignore[attr-defined]
        rollout_buffer.compute_returns_and_advantage(last_values=out.last_values.detach(), dones=self._last_episode_starts)  # type: ignore[attr-defined]
        self._rollout_streams = streams
        self._rollout_values = out if keep_graph else None

    @property
    def _masked_ratio(self) -> float | None:
        """``mask_ratio`` when a masked pass is needed (contrastive loss or a prediction head on), else None."""
        return self.mask_ratio if max(self.ct_coef, self.next_state_coef, self.rtg_coef) > 0 else None

    def _critic_pass(self, streams: EpisodeStreams) -> StreamValues:
        """The critic over streams for the update: with the masked copy when a masked-pass loss is on."""
        return self.policy.evaluate_streams(streams, self._masked_ratio, self.bert_masking)

    def _rollout_critic(self) -> StreamValues:
        """The critic over the last rollout's streams, with gradient (reusing the rollout's pass when kept)."""
        assert self._rollout_streams is not None, "collect a rollout first"
        out = self._rollout_values if self._rollout_values is not None else self._critic_pass(self._rollout_streams)
        self._rollout_values = None  # a graph serves one backward pass
        return out

    def _auxiliary_terms(
        self,
        masked: MaskedPass | None,
        rewards: th.Tensor,
        reward_known: th.Tensor,
        hidden: th.Tensor,
        actor_hidden: th.Tensor,
        actions: th.Tensor,
        returns: th.Tensor,
    ) -> tuple[th.Tensor | None, dict[str, float]]:
        """The losses added to the RL loss, weighted, each computed only when its coefficient is on:
        ``ct_coef`` * L_ct, ``next_state_coef`` * next-state and ``rtg_coef`` * reward-to-go prediction (from the
        masked pass), ``q_att_loss_coef`` * Q_att's regression on the returns of the taken actions, and
        ``actor_value_coef`` * the actor's value head's regression on the returns.

        :param masked: the masked pass (None when no masked-pass loss is on)
        :param rewards: (B, L) rewards of its tokens
        :param reward_known: (B, L) whether they are known
        :param hidden: (N, D) transformer outputs at the trained steps
        :param actor_hidden: (N, D) the actor's transformer outputs there (``hidden`` when shared)
        :param actions: (N,) their actions
        :param returns: (N,) their returns (TD(lambda), as the value target)
        :return: the weighted sum (None if nothing is on) and each loss's value, by logger name
        """
        terms, logs = [], {}
        if masked is not None:
            if self.ct_coef > 0:
                ct_loss = self.policy.contrastive_loss(masked, self.ct_temperature)
                terms.append(self.ct_coef * ct_loss)
                logs["contrastive_loss"] = ct_loss.item()
            next_state_loss, rtg_loss = self.policy.masked_prediction_losses(masked, rewards, reward_known, self.gamma)
            if next_state_loss is not None:
                terms.append(self.next_state_coef * next_state_loss)
                logs["next_state_loss"] = next_state_loss.item()
            if rtg_loss is not None:
                terms.append(self.rtg_coef * rtg_loss)
                logs["rtg_loss"] = rtg_loss.item()
        if self.policy.q_head is not None:
            q_taken = self.policy.q_att(hidden).gather(1, actions.long().view(-1, 1)).squeeze(1)
            q_loss = F.mse_loss(q_taken, returns)
            terms.append(self.q_att_loss_coef * q_loss)
            logs["q_att_loss"] = q_loss.item()
        if self.policy.actor_value_net is not None:
            actor_value_loss = F.mse_loss(self.policy.actor_values(actor_hidden), returns)
            terms.append(self.actor_value_coef * actor_value_loss)
            logs["actor_value_loss"] = actor_value_loss.item()
        return (sum(terms[1:], terms[0]) if terms else None), logs

"""Where the acting transformer of trained AttnPPO models looks: each final model plays deterministic episodes, and
the script prints, per layer and head of the transformer acting runs (the actor's own, or the shared one), the mean
attention weight on the step itself, on the step before (lag 1, what a velocity estimate from two positions reads)
and on the episode's first step from the steps beyond a local window (``local_window`` to ``context_len - 1``).

    python benchmarks/attention_offsets.py logs/ablations/ppo_attn/default --env PendulumNoVel-v1 --seeds 103 104 105

The run folder of seed s is rl-zoo3's ``<logs>/seed<s>/ppo_attn/<env>_<N>`` (the newest N), as ``report.py`` and
``ablations.py`` write it.
"""

import argparse
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import numpy as np
import report
import rl_zoo3.import_envs  # noqa: F401  (registers the NoVel envs)
import torch as th


def attention_summary(run: Path, env_id: str, n_episodes: int, seed: int) -> tuple[float, np.ndarray]:
    """Play ``n_episodes`` deterministic episodes with the final model of ``run`` and average its acting
    transformer's attention over their steps.

    :param run: rl-zoo3's run folder
    :param env_id: the env
    :param n_episodes: episodes to play
    :param seed: the env's seed (start states)
    :return: the mean return and (n_layers, n_heads, 3) mean weights on the step itself, on lag 1 and on the first
        step from beyond the local window (NaN without a local window or episodes that long)
    """
    env, model = report.final_model(run, env_id, seed)
    policy = model.policy
    encoder = policy._acting_encoder
    window = policy.local_window or policy.context_len
    obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
    returns, summaries = [], []
    for _ in range(n_episodes):
        observations, actions, done = [], [], False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            observations.append(obs[0])
            actions.append(action[0])
            obs, _, start, infos = env.step(action)
            done = bool(start[0])
        returns.append(infos[0]["episode"]["r"])
        # Replay the episode as one stream; actions as the buffer stores them, the policy's own encoding applies.
        stream, meta, prev_actions = policy._stream_inputs(np.array(observations), None, np.array(actions))
        with th.no_grad():
            tokens = policy._tokens(encoder, stream, meta.timesteps, prev_actions=prev_actions, meta=meta)
            weights = encoder.transformer.attention_weights(tokens, encoder.transformer.band(meta))
        T = len(observations)
        rows = th.arange(1, T)
        far = th.arange(window, min(T, policy.context_len))
        per_layer = []
        for w in weights:  # (1, H, T, T)
            w = w[0]
            first = w[:, far, 0].mean(-1) if len(far) else th.full((w.shape[0],), float("nan"))
            per_layer.append(th.stack([w[:, rows, rows].mean(-1), w[:, rows, rows - 1].mean(-1), first], -1))
        summaries.append(th.stack(per_layer).numpy())
    return float(np.mean(returns)), np.mean(summaries, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, help="the folder holding seed<s>/ppo_attn/<env>_<N>")
    parser.add_argument("--env", default="PendulumNoVel-v1")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--env-seed", type=int, default=12345, help="seed of the evaluation env (start states)")
    args = parser.parse_args()
    print(f"# {args.logs}: {args.episodes} deterministic episodes per model, env seed {args.env_seed}")
    print("# per layer and head: attention on the step itself / the step before / the first step from beyond the window")
    for seed, run in zip(args.seeds, report.seed_runs(args.logs, args.seeds, args.env), strict=True):
        mean_return, summary = attention_summary(run, args.env, args.episodes, args.env_seed)
        print(f"seed {seed}: mean return {mean_return:.1f}")
        for layer, heads in enumerate(summary):
            cells = "; ".join(f"head {h}: {s:.3f} / {lag:.3f} / {first:.3f}" for h, (s, lag, first) in enumerate(heads))
            print(f"    layer {layer}: {cells}")


if __name__ == "__main__":
    main()

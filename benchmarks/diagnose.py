"""One AttnPPO (or, with ``--algo a2c_attn``, AttnA2C) run through rl-zoo3 exactly as ``report.py`` trains it, with SB3's
train statistics of every update (``train/approx_kl``, ``clip_fraction``, ``entropy_loss``, ``value_loss``,
``explained_variance``, ``contrastive_loss``, ...) and each head's offset biases (offsets 0-4, and the mean of the
rest; with ``start_bias`` also its first-step bias; ``bias/actor_...``: an actor transformer of its own) written to a
CSV (``progress.csv`` in ``--logs``), and the scale of each rollout's advantages before PPO normalises them, to see
*why* a run fails: what the heads attend to, when the policy turns deterministic, whether an update jumped. It also
logs the size of the gradient that the value head and the actor each send into the transformer's outputs (the L2 norm
per minibatch, averaged over an update: ``grad/value_head``, ``grad/actor``): with the shared transformer it tells
which loss shapes what both heads read. After every update it logs how far each part of the policy moved (``move/actor``,
``critic``, ``biases``, ``rest``: the RMS change per parameter in units of the learning rate) and the RMS of Adam's
sqrt(v) there (``sqrt_v/...``): Adam steps about the learning rate whatever the gradient's scale, so a part moves as
far under a loss at chance as under one that carries signal. The callback only reads, so the run is the report's run
(same seed, same result); evaluations every 10% of the budget as the report's. A ``popgym-...`` env trains with
``popgym_tasks.py``'s AttnPPO entry (plain observations, 1e5 steps unless ``--set`` changes them).

    python benchmarks/diagnose.py --env CartPoleNoVel-v1 --seed 101
    python benchmarks/diagnose.py --env CartPoleNoVel-v1 --seed 100 --set prev_action=false
    python benchmarks/diagnose.py --env CartPoleNoVel-v1 --seed 101 --set normalize_advantage=false
    python benchmarks/diagnose.py --algo a2c_attn --env CartPoleNoVel-v1 --seed 101
    python benchmarks/diagnose.py --env popgym-PositionOnlyPendulumEasy-v0 --seed 100
    python benchmarks/diagnose.py --env popgym-RepeatFirstEasy-v0 --seed 100 \
        --set shared_transformer=false context_len=64 start_bias=true
"""

import argparse
import os
import sys
from pathlib import Path

import common  # one torch thread; must come first  # noqa: F401
import pandas as pd
import popgym_tasks
import report
import torch as th
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure


def policy_parts(policy: th.nn.Module) -> dict[str, list[th.nn.Parameter]]:
    """The policy's trained parameters by part: the actor's MLP and action head, the critic's, the offset (and start)
    biases, and the rest (embeddings, the transformer's weights, the contrastive heads)."""
    parts = {
        "actor": [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()],
        "critic": [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()],
        "biases": [p for n, p in policy.named_parameters() if n.endswith(("offset_bias_raw", "start_bias_raw"))],
    }
    taken = {id(p) for ps in parts.values() for p in ps}
    parts["rest"] = [p for p in policy.parameters() if p.requires_grad and id(p) not in taken]
    return parts


class TrainStatistics(BaseCallback):
    """Send SB3's logger to a CSV in ``$DIAGNOSE_DIR``; record the offset biases after every rollout and the gradients
    the heads sent into the transformer's outputs in the update before it."""

    def _on_training_start(self) -> None:
        self.model.set_logger(configure(os.environ["DIAGNOSE_DIR"], ["csv"]))
        self.grad_norms: dict[str, list[float]] = {"value_head": [], "actor": []}
        policy = self.model.policy
        self.parts = policy_parts(policy)  # the same parameter objects all run long
        self._before: dict[str, list[th.Tensor]] | None = None  # each part at the last rollout's end
        value_head, action_distribution = policy._value_head, policy.action_distribution
        # The heads' inputs get a hook that records the gradient arriving there (training passes only: acting runs
        # without gradients). Instance attributes: the policy's methods are unchanged.
        policy._value_head = lambda hidden: value_head(self._watched("value_head", hidden))
        policy.action_distribution = lambda obs, hidden=None: action_distribution(
            obs, None if hidden is None else self._watched("actor", hidden)
        )

    def _watched(self, head: str, hidden: th.Tensor) -> th.Tensor:
        if hidden.requires_grad:
            hidden = hidden.view_as(hidden)
            hidden.register_hook(lambda grad: self.grad_norms[head].append(float(grad.norm())))
        return hidden

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # The update between the last rollout's end and this rollout: how far each part moved (RMS per parameter, in
        # units of the learning rate it ran with) and the size of Adam's gradient estimates there (RMS of sqrt(v)).
        # Adam's step is about lr * m / sqrt(v) per parameter whatever the gradient's scale, so a part whose gradient
        # is pure noise still moves by about lr per step.
        before = self._before
        if before is None:  # no update yet
            return
        optimizer = self.model.policy.optimizer
        lr = optimizer.param_groups[0]["lr"]
        for name, params in self.parts.items():
            moved = th.cat([(p.detach() - b).flatten() for p, b in zip(params, before[name], strict=True)])
            sqrt_v = th.cat([optimizer.state[p]["exp_avg_sq"].sqrt().flatten() for p in params if p in optimizer.state])
            self.logger.record(f"move/{name}", float(moved.square().mean().sqrt()) / lr if lr else float("nan"))
            self.logger.record(f"sqrt_v/{name}", float(sqrt_v.square().mean().sqrt()))

    def _on_rollout_end(self) -> None:
        self._before = {name: [p.detach().clone() for p in ps] for name, ps in self.parts.items()}
        for head, norms in self.grad_norms.items():  # the update before this rollout (none before the first)
            if norms:
                self.logger.record(f"grad/{head}", sum(norms) / len(norms))
            norms.clear()
        # The rollout's advantages before PPO normalises them per minibatch (SB3 computes them before this call):
        # their scale against the returns' tells how much signal the normalised ones carry.
        buffer = self.model.rollout_buffer
        self.logger.record("adv/std", float(buffer.advantages.std()))
        self.logger.record("adv/abs_mean", float(abs(buffer.advantages).mean()))
        self.logger.record("adv/return_std", float(buffer.returns.std()))
        K = self.model.context_len
        policy = self.model.policy
        transformers = {"": policy.transformer}  # the critic's (the actor's too, when shared)
        if policy.actor_encoder is not None:
            transformers["actor_"] = policy.actor_encoder.transformer
        for name, transformer in transformers.items():
            for layer, block in enumerate(transformer.blocks):
                bias = block.attn.offset_bias
                if bias is None:  # position_encoding="absolute"
                    continue
                causal = bias[:, K - 1 :].detach().cpu()  # (H, K): offsets 0 .. K - 1
                for head, row in enumerate(causal):
                    for offset in range(min(5, K)):
                        self.logger.record(f"bias/{name}l{layer}h{head}o{offset}", float(row[offset]))
                    if K > 5:
                        self.logger.record(f"bias/{name}l{layer}h{head}rest", float(row[5:].mean()))
                if block.attn.start_bias is not None:
                    for head, value in enumerate(block.attn.start_bias.detach().cpu()):
                        self.logger.record(f"bias/{name}l{layer}h{head}start", float(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["ppo_attn", "a2c_attn"], default="ppo_attn")
    parser.add_argument("--env", default="CartPoleNoVel-v1")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], help="entry overrides, name=yaml-value")
    parser.add_argument("--logs", type=Path, default=Path("logs/diagnose"))
    args = parser.parse_args()
    popgym = args.env.startswith("popgym-")
    if popgym and args.algo != "ppo_attn":
        parser.error("popgym_tasks.py has an entry for ppo_attn only")
    entry = popgym_tasks.entry(args.algo, "plain", 1e5) if popgym else report.hyperparams(args.algo, args.env)
    for override in args.set:
        name, value = override.split("=", 1)
        entry[name] = yaml.safe_load(value)
    own = entry.get("callback") or []  # the entry's callbacks (CartPoleNoVel-v1 freezes its statistics) run too
    entry["callback"] = [*(own if isinstance(own, list) else [own]), "diagnose.TrainStatistics"]
    folder = args.logs / f"{args.env}_seed{args.seed}"
    os.environ["DIAGNOSE_DIR"] = str(folder.resolve())
    here = str(Path(__file__).parent.resolve())  # the zoo subprocess imports this module for the callback
    os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    row = report.train(args.algo, args.env, args.seed, folder, entry, gym_packages=("popgym",) if popgym else ())
    print(f"evaluations every 10%: {[round(x, 2) for x in row['eval_mean']]}", file=sys.stderr)
    table = pd.read_csv(folder / "progress.csv")
    table = table.ffill()[table["train/value_loss"].notna()]  # one row per update (biases: the rollout before it)
    columns = ["time/total_timesteps", "rollout/ep_rew_mean", "train/approx_kl", "train/entropy_loss", "train/value_loss",
               "train/explained_variance", "train/contrastive_loss", "adv/std", "adv/return_std", "grad/value_head",
               "grad/actor", *(f"{kind}/{part}" for kind in ("move", "sqrt_v")
                               for part in ("actor", "critic", "biases", "rest"))]  # fmt: skip
    table["grad/actor_to_value"] = table["grad/actor"] / table["grad/value_head"]
    columns = [c for c in columns if c in table] + ["grad/actor_to_value"] + [c for c in table if c.startswith("bias/")]
    print(table[columns].iloc[:: max(1, len(table) // 20)].to_string(float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    main()

"""The attention actor-critic on RLlib: PPO with the attention module (``actor_context=True``: the actor reads the
episode) on CartPoleNoVel-v1 (rl-zoo3's CartPole with the velocities hidden), two env runners on a local Ray
instance, then a checkpoint (30k steps, one to two minutes on two cores). On a cluster, ``ray.init(address="auto")``
instead, with sb3-attn-ac[rllib] installed on every node; ``.learners(num_learners=2)`` adds learners."""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray
import torch as th
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN, LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from sb3_attn_ac.rllib import attn_ppo_config, register_gym_env

th.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--train-batch", type=int, default=2000, help="env steps per iteration")
    parser.add_argument("--env-runners", type=int, default=2)
    parser.add_argument("--out", default="outputs/rllib_cartpole_novel", help="checkpoint folder")
    args = parser.parse_args()

    # One torch thread in every env runner and learner too (tiny networks on small CPUs).
    ray.init(include_dashboard=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    # rl-zoo3 registers the NoVel envs with gymnasium on import: env runners in other processes import it too.
    register_gym_env("CartPoleNoVel-v1", imports=["rl_zoo3.import_envs"])
    config = (
        attn_ppo_config(actor_context=True)  # AttnPPO's attention arguments, same names and defaults
        .environment("CartPoleNoVel-v1")
        .env_runners(num_env_runners=args.env_runners, num_envs_per_env_runner=4)
        .training(lr=3e-4, train_batch_size_per_learner=args.train_batch, minibatch_size=128, num_epochs=6)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    for iteration in range(1, args.iterations + 1):
        result = algo.train()
        steps = int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])
        mean_return = result[ENV_RUNNER_RESULTS].get(EPISODE_RETURN_MEAN, float("nan"))
        contrastive = result[LEARNER_RESULTS]["default_policy"]["contrastive_loss"]
        print(f"iteration {iteration}: {steps} env steps, mean return {mean_return:.1f}, contrastive loss {contrastive:.3f}")
    print(f"checkpoint: {algo.save_to_path(os.path.abspath(args.out))}")
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()

"""PPO with a learned critic, as used for LLMs (Ouyang et al. 2022; GAE: Schulman et al. 2016).

Deviations from the paper:
- Rollouts per prompt is 1, as in InstructGPT; a step draws more prompts so every preset sees
  the same number of samples per step.
- The KL to the reference sits in the loss (k3, beta as GRPO) so the diff against GRPO is the
  baseline alone; InstructGPT puts -beta*k1 in the reward: `algo.kl_placement=reward`.
- The critic is a second trunk of the policy's architecture, initialised from the policy,
  with a scalar head; no shared trunk, no value pre-training.
- epochs/minibatches are this project's CPU defaults (2 x 2), shared by every preset.
"""
from algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="ppo",
    baseline="critic",  # GAE over a learned value (Schulman et al. 2016)
    scale="batch_whiten",  # whiten advantages over the batch's response tokens
    group_size=1,  # one rollout per prompt
    aggregation="seq_mean_token_mean",
    eps_low=0.2,
    eps_high=0.2,
    kl_coef=0.04,
    kl_kind="k3",
    kl_placement="loss",
)

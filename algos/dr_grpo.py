"""Dr.GRPO: GRPO done right (Liu et al. 2025, "Understanding R1-Zero-Like Training", §3).

Removes GRPO's two normalizations that bias the gradient: the division by the group's reward
std (which up-weights too-easy and too-hard prompts, §3.1) and the division by each response's
length (which favours long wrong answers, §3.2); the loss is summed over tokens and divided by
a constant L, the generation budget.

Deviations from the paper:
- L defaults to the run's rollout.max_new_tokens (`algo.norm_len=None`).
- K, epochs and minibatches as the other presets of this project (8, 2, 2).
"""
from algos.grpo import PRESET as GRPO

PRESET = GRPO.replace(
    name="dr_grpo",
    scale="none",  # no std-normalization (§3.1)
    aggregation="seq_mean_token_sum_norm",  # sum over tokens / L (§3.2)
    kl_coef=0.0,  # no KL term (§3.2, following R1-Zero-like practice)
)

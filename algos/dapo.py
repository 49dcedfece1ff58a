"""DAPO: Decoupled clip and Dynamic sAmpling Policy Optimization (Yu et al. 2025, §3).

GRPO with four changes: clip-higher (eps_high = 0.28, §3.1), dynamic sampling that drops
groups whose rewards are all equal and draws more prompts (§3.2), a token-level loss (§3.3)
and overlong reward shaping (§3.4); no KL term.

Deviations from the paper:
- Dynamic sampling draws at most `filter_max_rounds` extra rounds per step (the paper samples
  until the batch is full); a step with too few informative groups trains on what it has.
- L_cache is `overlong_cache_len` tokens of the tiny models' budget (the paper: 4096 of 20480).
- K, epochs and minibatches as the other presets of this project (8, 2, 2).
"""
from algos.grpo import PRESET as GRPO

PRESET = GRPO.replace(
    name="dapo",
    eps_high=0.28,  # clip-higher (§3.1)
    filter_groups=True,  # dynamic sampling (§3.2)
    aggregation="token_mean",  # token-level policy gradient loss (§3.3)
    soft_punish=True,  # soft overlong punishment (§3.4, Eq. 13)
    mask_truncated=True,  # overlong filtering (§3.4)
    kl_coef=0.0,  # KL removed (§2.3)
)

"""RLOO: REINFORCE leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024), with PPO's clip.

A_i = r_i - mean_{j != i} r_j = K/(K-1) (r_i - mean_g r); no std-normalization.

Deviations from the paper:
- Ahmadian et al. use plain REINFORCE with one update per batch and the KL in the reward;
  here the clipped surrogate, epochs and the KL in the loss are shared with GRPO so the diff
  shows the baseline alone.
"""
from algos.grpo import PRESET as GRPO

PRESET = GRPO.replace(
    name="rloo",
    baseline="leave_one_out",
    scale="none",
)

"""GRPO: PPO minus the value head (DeepSeekMath, Shao et al. 2024, §4.1).

The baseline is the mean of the K rewards of the prompt's own group, divided by their
(unbiased) std; the clipped surrogate, KL anchor and epochs are PPO's.

Deviations from the paper:
- K = 8 rollouts per prompt (the paper's 64 is for billion-parameter models).
- epochs/minibatches are this project's CPU defaults (2 x 2); DeepSeek-R1 used 1 update per batch.
- Rewards come from a code verifier only (no reward model), as in R1-style training.
"""
from algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="grpo",
    baseline="group",  # A_i = r_i - mean_g(r)              (§4.1.2)
    scale="group_std",  # / (std_g(r) + eps), unbiased std   (§4.1.2)
    group_size=8,
    aggregation="seq_mean_token_mean",  # (1/G) sum_i 1/|o_i| sum_t   (Eq. 3)
    eps_low=0.2,
    eps_high=0.2,
    kl_coef=0.04,  # beta (§4.2)
    kl_kind="k3",  # unbiased, >= 0 (Eq. 4)
    kl_placement="loss",
)

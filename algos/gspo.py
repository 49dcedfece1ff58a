"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, arXiv 2507.18071).

GRPO's group-normalized advantage with a sequence-level importance ratio: one ratio per rollout,
the exponential of its length-normalised log-ratio sum, s_i = (pi(o_i)/pi_old(o_i))^(1/|o_i|)
(Eq. 7), clipped per sequence (Eq. 5), the loss averaged over the group's sequences. A token-level
ratio weights each token by its own noisy ratio; the sequence ratio matches the unit the reward
is given to.

Deviations from the paper:
- Clip range 3e-4 / 4e-4 as in the paper's experiments (§5.1); at that range most sequences are
  clipped once the policy moves, which is GSPO's intent (its reported clip fractions are ~15 %).
- No KL term (beta = 0), as in the paper's setup; K, epochs and minibatches as the other presets
  of this project (8, 2, 2).
- Only the sequence-level variant: with one advantage per rollout, GSPO-token (Eq. 13-14) has the
  same value and gradient.
"""
from algos.grpo import PRESET as GRPO

PRESET = GRPO.replace(
    name="gspo",
    ratio_level="sequence",  # s_i = exp(mean_t log(pi/pi_old)) per rollout (Eq. 7)
    eps_low=3e-4,  # clip(s_i, 1 - 3e-4, 1 + 4e-4) (§5.1)
    eps_high=4e-4,
    kl_coef=0.0,  # no KL term
)

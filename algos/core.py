"""The algorithm math, as small pure tensor functions.

Every function here is a direct transcription of one equation in
`ALGORITHMS.md` (DeepSeekMath §4.1, DAPO §3, Dr.GRPO §3, GAE). No function
knows which named algorithm calls it: PPO, GRPO, Dr.GRPO and DAPO are knob
settings over these pieces (see `algos/config.py`).

Shapes used throughout:
    B  rollouts in the batch = groups * group_size, groups stored consecutively
       (rollout i of group g sits at index g * group_size + i)
    T  response tokens (right-padded); `response_mask` (B, T) is 1 on real tokens
"""
from __future__ import annotations

import torch
from torch import Tensor

from algos.names import AGGREGATIONS, BASELINES, FILTER_ON, GROUP_SCALES, KL_KINDS, RATIO_LEVELS  # noqa: F401
# Log ratios (and the KL's delta) are clamped to +-LOG_RATIO_CLAMP before exp: exp(20) ~ 4.9e8 is
# finite in fp32 and bf16, and a token that far off has no useful gradient (verl clamps at 20 too).
LOG_RATIO_CLAMP = 20.0


def _check_choice(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """(B,) -> (groups, group_size), with a clear error when B is not a multiple of K."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"batch of {rewards.numel()} rewards cannot be split into groups of {group_size}: "
            "B must be a positive multiple of group_size (groups are stored consecutively)"
        )
    return rewards.view(-1, group_size)


# --------------------------------------------------------------------------- masks
def masked_sum(values: Tensor, mask: Tensor, dim=None) -> Tensor:
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim=None) -> Tensor:
    """Mean of `values` where `mask` is 1; 0 when the mask is empty (never NaN)."""
    total = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / total.clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """`batch_whiten`: (A - masked mean) / (masked std + eps) over all response tokens.

    Std is the unbiased (N-1) one over the masked tokens. Positions outside the mask are 0.
    """
    mean = masked_mean(values, mask)
    count = mask.sum()
    var = masked_sum((values - mean) ** 2, mask) / (count - 1).clamp(min=1)
    return (values - mean) / (var.sqrt() + eps) * mask


# --------------------------------------------------------------------------- advantages
def degenerate_groups(rewards: Tensor, group_size: int) -> Tensor:
    """True for each group whose rewards are all equal (no learning signal).

    rewards (B,) -> bool (groups,). A group of one rollout is always degenerate.
    """
    grouped = _grouped(rewards, group_size)  # (G, K)
    return (grouped == grouped[:, :1]).all(dim=1)


def informative_groups(rewards: Tensor, correct: Tensor, group_size: int, *, filter_on: str = "accuracy") -> Tensor:
    """DAPO's dynamic-sampling rule (§3.2): True for each group worth training on.

    filter_on="accuracy" (DAPO §3.2 and verl's `acc` metric): a group is informative iff its K
    verdicts are not all equal, so a shaped reward (e.g. the overlong penalty) cannot make a group
    of wrong answers look informative; "reward": iff its K shaped rewards are not all equal.
    rewards (B,), correct (B,) bool -> bool (groups,).
    """
    _check_choice(filter_on, FILTER_ON, "filter_on")
    values = correct.float() if filter_on == "accuracy" else rewards
    return ~degenerate_groups(values, group_size)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    baseline: str = "group",
    scale: str = "group_std",
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantages of K rollouts per prompt (GRPO, DeepSeekMath §4.1.2).

        group:          A_i = r_i - mean_g(r)
        leave_one_out:  A_i = r_i - mean_{j != i}(r_j) = K/(K-1) * (r_i - mean_g(r))   (RLOO)
        scale group_std: A_i / (std_g(r) + eps), std unbiased (N-1), as `torch.std`
        scale batch_std: A_i / (std_batch(r) + eps), one unbiased std over all B rewards
        scale none:      A_i unchanged (Dr.GRPO §3.1)

    A degenerate group (all rewards equal) gets exactly 0 advantage, never NaN.

    rewards (B,) with B = groups * group_size -> advantages (B,)
    """
    _check_choice(baseline, ("group", "leave_one_out"), "group baseline")
    _check_choice(scale, GROUP_SCALES, "advantage scale")
    if group_size < 2:
        raise ValueError(
            f"baseline={baseline!r} needs group_size >= 2 (got {group_size}): a group of one "
            "rollout has no baseline but its own reward. Use group_size >= 2 or baseline='critic'."
        )
    grouped = _grouped(rewards.float(), group_size)  # (G, K)
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # (G, K)
    if baseline == "leave_one_out":
        centered = centered * (group_size / (group_size - 1))
    if scale == "group_std":
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch_std":
        centered = centered / (rewards.float().std() + eps)
    degenerate = degenerate_groups(rewards, group_size)  # (G,)
    centered = torch.where(degenerate[:, None], torch.zeros_like(centered), centered)
    return centered.reshape(-1)  # (B,)


def gae(
    token_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, Eq. 16) over response tokens.

        delta_t = rho_t + gamma * V_{t+1} - V_t      (V past the last response token = 0)
        A_t     = sum_l (gamma * lam)^l * delta_{t+l}
        G_t     = A_t + V_t                           (the critic's regression target)

    token_rewards, values, response_mask: (B, T), responses right-padded (the mask is a
    prefix of ones in each row). Returns (advantages, returns), both (B, T), 0 off the mask.
    """
    mask = response_mask.to(values.dtype)
    batch, length = values.shape
    advantages = torch.zeros_like(values)
    running = torch.zeros(batch, dtype=values.dtype, device=values.device)
    for t in reversed(range(length)):
        next_mask = mask[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        next_value = values[:, t + 1] * next_mask if t + 1 < length else torch.zeros_like(running)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_mask * running
        advantages[:, t] = running
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


# --------------------------------------------------------------------------- policy loss
def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman 2020; DeepSeekMath Eq. 4).

    With delta = ref_logp - logp:
        k1 = -delta                  unbiased, can be negative
        k2 = delta^2 / 2             biased, >= 0
        k3 = exp(delta) - delta - 1  unbiased, >= 0 (DeepSeekMath's choice)
    delta is clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] before exp so a far-off token can't overflow.

    logp, ref_logp (B, T) -> (B, T)
    """
    _check_choice(kind, KL_KINDS, "KL estimator")
    delta = ref_logp - logp
    if kind == "k1":
        return -delta
    if kind == "k2":
        return 0.5 * delta**2
    delta = delta.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.exp(delta) - delta - 1.0


def clamp_kl(kl: Tensor, bound: float | None) -> tuple[Tensor, Tensor]:
    """A per-token KL estimate clamped to [-bound, bound] (verl clamps k3 to [-10, 10]); None: unchanged.

    Outside the bound the gradient is 0: a token that far from the reference stops being pulled
    back, which is why every preset leaves this off. kl (B, T) -> (clamped (B, T), clamped-token
    indicator (B, T) float).
    """
    if bound is None:
        return kl, torch.zeros_like(kl)
    if bound <= 0:
        raise ValueError(f"kl clamp bound must be > 0 or None, got {bound}")
    return kl.clamp(-bound, bound), (kl.abs() > bound).float().detach()


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    response_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate per token (Schulman et al. 2017, Eq. 7; DAPO §3.1 clip-higher),
    optionally dual-clipped (Ye et al. 2020, "Mastering Complex Control in MOBA Games", Eq. 5).

        ratio = exp(clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        l_t   = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
        dual_clip = c > 1, where A < 0:  l_t = min(l_t, -c * A)

    ratio_level="sequence" (GSPO, Zheng et al. 2025, Eq. 5-7): one ratio per rollout,
        s_i = exp((1/|o_i|) sum_t (logp - old_logp)) over the tokens of `response_mask`, used in
        place of every token's ratio (the per-token loss is then the same at each token of a
        rollout, so `seq_mean_token_mean` gives GSPO's (1/G) sum_i l_i); its gradient reaches every
        token through the mean. Needs `response_mask` (B, T) and a per-rollout advantage.

    For A < 0 the clipped surrogate alone grows without bound in the ratio; dual-clip caps that
    token's loss at c*|A| (and its gradient at 0). The log-ratio clamp keeps exp finite for a
    token the sampler and trainer disagree on wildly (its gradient is 0 outside the clamp).

    logp, old_logp (B, T); advantages (B,) (broadcast to every token) or (B, T).
    Returns per-token loss (B, T) and stats, each (B, T) float, ready for a masked mean:
        clip_low:  1 where the low side is active  (A < 0 and ratio < 1 - eps_low): no gradient
        clip_high: 1 where the high side is active (A > 0 and ratio > 1 + eps_high): no gradient
        clip_dual: 1 where the dual-clip cap is active (A < 0 and ratio > c): no gradient
        ratio:     the importance ratio
    """
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (the cap is c*|A| for ratios above c) or None, got {dual_clip}")
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)  # (B,) -> (B, T)
    advantages = advantages.detach()
    _check_choice(ratio_level, RATIO_LEVELS, "ratio_level")
    log_ratio = logp - old_logp  # (B, T)
    if ratio_level == "sequence":
        if response_mask is None:
            raise ValueError("ratio_level='sequence' needs response_mask (B, T) for each rollout's mean log ratio")
        mask = response_mask.to(log_ratio.dtype)
        seq_log_ratio = (log_ratio * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        log_ratio = seq_log_ratio[:, None].expand_as(logp)  # (B,) -> (B, T)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    per_token_loss = -torch.min(unclipped, clipped)
    clip_dual = torch.zeros_like(per_token_loss)
    if dual_clip is not None:
        cap = -dual_clip * advantages  # (B, T), positive where A < 0
        capped = (advantages < 0) & (per_token_loss > cap)
        per_token_loss = torch.where(capped, cap, per_token_loss)
        clip_dual = capped.float().detach()
    with torch.no_grad():
        clip_low = ((advantages < 0) & (ratio < 1.0 - eps_low)).float()
        clip_high = ((advantages > 0) & (ratio > 1.0 + eps_high)).float()
    return per_token_loss, {"clip_low": clip_low, "clip_high": clip_high, "clip_dual": clip_dual,
                            "ratio": ratio.detach()}


def aggregate(
    per_token: Tensor,
    response_mask: Tensor,
    mode: str = "seq_mean_token_mean",
    *,
    max_len: int | None = None,
    num_seqs: Tensor | int | None = None,
    num_tokens: Tensor | int | None = None,
) -> Tensor:
    """Reduce a per-token loss (B, T) over the rollouts of a minibatch to a scalar.

        seq_mean_token_mean      (1/G) sum_i (1/|o_i|) sum_t l_it          (GRPO, DeepSeekMath Eq. 3)
        token_mean               sum_i sum_t l_it / sum_i |o_i|            (DAPO §3.3)
        seq_mean_token_sum_norm  (1/G) sum_i sum_t l_it / L, L = max_len   (Dr.GRPO §3.2)

    G counts the rollouts with at least one unmasked token (a rollout removed from the
    loss entirely, e.g. by `mask_truncated`, does not dilute the others). An empty mask gives 0.
    Micro-batches: pass the whole minibatch's G (`num_seqs`) and sum_i |o_i| (`num_tokens`) when
    this call sees one micro-batch of it; the micro-batch losses then sum to the minibatch's loss,
    so accumulated gradients equal the unsplit ones.
    """
    _check_choice(mode, AGGREGATIONS, "loss aggregation")
    mask = response_mask.to(per_token.dtype)
    lengths = mask.sum(dim=1)  # (B,)
    if num_seqs is None:
        num_seqs = (lengths > 0).sum().clamp(min=1)
    if mode == "token_mean":
        return masked_sum(per_token, mask) / (lengths.sum().clamp(min=1) if num_tokens is None else num_tokens)
    if mode == "seq_mean_token_mean":
        return (masked_sum(per_token, mask, dim=1) / lengths.clamp(min=1)).sum() / num_seqs
    if max_len is None or max_len <= 0:
        raise ValueError(
            "aggregation 'seq_mean_token_sum_norm' needs max_len > 0, the constant L of Dr.GRPO "
            f"(the generation budget max_new_tokens); got max_len={max_len}"
        )
    return masked_sum(per_token, mask) / (num_seqs * max_len)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    response_mask: Tensor,
    *,
    clip: float = 0.2,
    num_tokens: Tensor | int | None = None,
) -> Tensor:
    """Clipped value loss of PPO's critic, token mean over the response:

        1/2 * max((V - G)^2, (V_old + clip(V - V_old, -clip, clip) - G)^2)

    values, old_values, returns, response_mask (B, T) -> scalar. `num_tokens`: the minibatch's
    response tokens when this call sees one micro-batch of it (see `aggregate`).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = 0.5 * torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    if num_tokens is not None:
        return masked_sum(per_token, response_mask.to(values.dtype)) / num_tokens
    return masked_mean(per_token, response_mask.to(values.dtype))


def explained_variance(values: Tensor, returns: Tensor, response_mask: Tensor) -> float:
    """1 - Var[G - V] / Var[G] over the response tokens (1 = perfect critic, <= 0 = useless)."""
    mask = response_mask.to(values.dtype)
    returns_mean = masked_mean(returns, mask)
    var_returns = masked_mean((returns - returns_mean) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    if var_returns.item() == 0:
        return float("nan")
    return float(1.0 - var_residual / var_returns)


# --------------------------------------------------------------------------- reward shaping
def overlong_penalty(lengths: Tensor, *, max_len: int, cache_len: int) -> Tensor:
    """DAPO's soft overlong punishment R_len(|o|) (DAPO §3.4, Eq. 13):

         0                                  |o| <= L_max - L_cache
        ((L_max - L_cache) - |o|) / L_cache  L_max - L_cache < |o| <= L_max
        -1                                  |o| > L_max

    lengths (B,) -> penalty (B,) float, added to the verifier's reward.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(
            f"overlong cache_len must be in [1, max_len={max_len}], got {cache_len}: "
            "set algo.overlong_cache_len below rollout.max_new_tokens"
        )
    lengths = lengths.float()
    soft_start = max_len - cache_len
    penalty = (soft_start - lengths) / cache_len
    penalty = torch.where(lengths <= soft_start, torch.zeros_like(lengths), penalty)
    return torch.where(lengths > max_len, torch.full_like(lengths, -1.0), penalty)


# --------------------------------------------------------------------------- statistics
def advantage_stats(
    rewards: Tensor,
    advantages: Tensor,
    group_size: int,
    *,
    eps: float = 1e-6,
    correct: Tensor | None = None,
) -> dict:
    """The advantage statistics ALGORITHMS.md asks every run to log.

    rewards (B,); advantages (B,) per rollout (for token-level advantages pass the
    per-rollout mean); correct (B,) bool, the verifier's verdict (None: reward >= 1 counts as
    correct). Scalars are Python floats (None where undefined); per-group
    entries are (groups,) tensors:
        adv_mean, adv_std, adv_abs_mean, adv_zero_frac   over rollouts
        groups_degenerate_frac                            share of groups with all rewards equal
        std_gain_mean, std_gain_max                       1/(std_g + eps) over non-degenerate groups
        group_success_rate (share correct), group_reward_mean, group_reward_std, group_std_gain (NaN if degenerate),
        group_adv_abs_mean, group_degenerate
    For 0/1 rewards with success rate p, the gain grows like 1/sqrt(p(1-p)) (Dr.GRPO §3.1).
    """
    rewards = rewards.float()
    advantages = advantages.float()
    grouped = _grouped(rewards, group_size)  # (G, K)
    degenerate = degenerate_groups(rewards, group_size)  # (G,)
    if group_size > 1:
        group_std = grouped.std(dim=1)
    else:
        group_std = torch.zeros(grouped.shape[0])
    gain = torch.where(degenerate, torch.full_like(group_std, float("nan")), 1.0 / (group_std + eps))
    informative = gain[~degenerate]
    return {
        "adv_mean": advantages.mean().item(),
        "adv_std": advantages.std().item() if advantages.numel() > 1 else 0.0,
        "adv_abs_mean": advantages.abs().mean().item(),
        "adv_zero_frac": (advantages == 0).float().mean().item(),
        "groups_degenerate_frac": degenerate.float().mean().item(),
        "std_gain_mean": informative.mean().item() if informative.numel() else None,
        "std_gain_max": informative.max().item() if informative.numel() else None,
        "group_success_rate": (_grouped(correct.float(), group_size) if correct is not None
                               else (grouped >= 1.0).float()).mean(dim=1),
        "group_reward_mean": grouped.mean(dim=1),
        "group_reward_std": group_std,
        "group_std_gain": gain,
        "group_adv_abs_mean": advantages.view(-1, group_size).abs().mean(dim=1),
        "group_degenerate": degenerate,
    }

"""The pieces of `core.py` composed as the training loop uses them, driven by an `AlgoConfig`.

The loop calls exactly these three functions, for every algorithm, and never branches on
an algorithm's name:

    rewards = shape_rewards(rewards, lengths, truncated, cfg, max_len)    # overlong shaping
    advantages, returns = compute_advantages(rewards, response_mask, cfg, values=..., kl_per_token=...)
    loss, metrics = policy_loss(batch, cfg)                                 # per minibatch
"""
from __future__ import annotations

import torch
from torch import Tensor

from algos.config import AlgoConfig
from algos.core import (
    aggregate,
    LOG_RATIO_CLAMP,
    clamp_kl,
    clipped_surrogate,
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    masked_whiten,
    overlong_penalty,
)


def shape_rewards(rewards: Tensor, lengths: Tensor, cfg: AlgoConfig, *, max_len: int) -> Tensor:
    """Verifier rewards (B,) plus DAPO's soft overlong penalty when `cfg.soft_punish`."""
    if not cfg.soft_punish:
        return rewards
    return rewards + overlong_penalty(lengths, max_len=max_len, cache_len=cfg.overlong_cache_len)


def compute_advantages(
    rewards: Tensor,
    response_mask: Tensor,
    cfg: AlgoConfig,
    *,
    values: Tensor | None = None,
    kl_per_token: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Token-level advantages (B, T) and, with a critic, returns (B, T) (else None).

    baseline=critic: token rewards rho_t = 0 except rho_last = r (minus beta*k1_t per token when
    kl_placement=reward), then GAE. Group baselines: `group_advantages` broadcast to every token.
    scale=batch_whiten then whitens over all response tokens of the batch.
    """
    mask = response_mask.float()
    returns = None
    if cfg.baseline == "critic":
        if values is None:
            raise ValueError("baseline='critic' needs the critic's values (B, T)")
        lengths = mask.sum(dim=1).long()  # (B,)
        token_rewards = torch.zeros_like(mask)
        rows = torch.arange(mask.shape[0])
        last = (lengths - 1).clamp(min=0)
        token_rewards[rows, last] = rewards.float() * (lengths > 0)
        if cfg.kl_placement == "reward" and cfg.kl_coef > 0:
            if kl_per_token is None:
                raise ValueError("kl_placement='reward' needs kl_per_token (k1 of policy vs reference)")
            kl_per_token = clamp_kl(kl_per_token, cfg.kl_clamp)[0]
            token_rewards = token_rewards - cfg.kl_coef * kl_per_token * mask
        advantages, returns = gae(token_rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
    else:
        scale = cfg.scale if cfg.scale != "batch_whiten" else "none"
        per_rollout = group_advantages(rewards, cfg.group_size, baseline=cfg.baseline, scale=scale, eps=cfg.eps)
        advantages = per_rollout[:, None] * mask  # (B,) -> (B, T)
    if cfg.scale == "batch_whiten":
        advantages = masked_whiten(advantages, mask, eps=cfg.eps)
    return advantages, returns


def loss_mask(response_mask: Tensor, truncated: Tensor | None, cfg: AlgoConfig) -> Tensor:
    """The tokens in the policy loss (B, T): the response, less truncated rollouts under mask_truncated."""
    mask = response_mask.float()
    if cfg.mask_truncated:
        if truncated is None:
            raise ValueError("mask_truncated needs batch['truncated'] (B,) bool")
        mask = mask * (~truncated.bool()).float()[:, None]
    return mask


def loss_mask_counts(response_mask: Tensor, truncated: Tensor | None, cfg: AlgoConfig) -> dict[str, Tensor]:
    """A minibatch's loss denominators, for each of its micro-batches' `policy_loss`:
    num_seqs (rollouts with a token in the loss, >= 1) and num_tokens (>= 1)."""
    mask = loss_mask(response_mask, truncated, cfg)
    return {"num_seqs": (mask.sum(1) > 0).sum().clamp(min=1), "num_tokens": mask.sum().clamp(min=1)}


def policy_loss(batch: dict[str, Tensor], cfg: AlgoConfig) -> tuple[Tensor, dict[str, float]]:
    """Loss of one minibatch: clipped surrogate, aggregated, plus beta * KL when it sits in the loss.

    batch keys (B rollouts, T response tokens):
        logp (B, T)           current policy, with grad
        old_logp (B, T)       policy that the advantages were computed for (before the first update)
        advantages (B,) or (B, T)
        response_mask (B, T)
        ref_logp (B, T)       needed when kl_coef > 0 and kl_placement == "loss"
        sampler_logp (B, T)   needed when tis_cap is set (sampler != trainer, e.g. vLLM)
        truncated (B,) bool   needed when mask_truncated
        entropy (B, T)        needed when entropy_coef > 0 (with gradient)
        max_len int           L for seq_mean_token_sum_norm when cfg.norm_len is None
        num_seqs, num_tokens  the minibatch's loss-mask counts when this is one micro-batch of it
                              (`loss_mask_counts`); omitted: this batch's own
    Returns the scalar loss and float metrics (pg_loss, kl_loss, clip_frac_low, clip_frac_high,
    clip_frac_dual (None without dual_clip), ratio_mean, tis_weight_mean, kl_clamp_frac); every
    metric is None when the mask (after mask_truncated) holds no token.
    """
    mask = loss_mask(batch["response_mask"], batch.get("truncated"), cfg)
    logp = batch["logp"]
    per_token, stats = clipped_surrogate(
        logp, batch["old_logp"], batch["advantages"], eps_low=cfg.eps_low, eps_high=cfg.eps_high,
        dual_clip=cfg.dual_clip, ratio_level=cfg.ratio_level, response_mask=mask,
    )
    metrics: dict[str, float] = {}
    if cfg.tis_cap is not None:
        if "sampler_logp" not in batch:
            raise ValueError("tis_cap needs batch['sampler_logp'], the sampler's log-probs")
        # Truncated importance sampling: the rollout came from the sampler, not pi_old.
        log_weight = (batch["old_logp"] - batch["sampler_logp"]).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        tis_weight = torch.exp(log_weight).clamp(max=cfg.tis_cap).detach()
        per_token = per_token * tis_weight
        metrics["tis_weight_mean"] = masked_mean(tis_weight, mask).item()
    max_len = cfg.norm_len if cfg.norm_len is not None else batch.get("max_len")
    norm = {"max_len": max_len, "num_seqs": batch.get("num_seqs"), "num_tokens": batch.get("num_tokens")}
    pg_loss = aggregate(per_token, mask, cfg.aggregation, **norm)
    loss = pg_loss
    kl_loss = torch.zeros(())
    if cfg.kl_coef > 0 and cfg.kl_placement == "loss":
        if batch.get("ref_logp") is None:
            raise ValueError("kl_coef > 0 with kl_placement='loss' needs batch['ref_logp']")
        kl, kl_clamped = clamp_kl(kl_estimate(logp, batch["ref_logp"], cfg.kl_kind), cfg.kl_clamp)
        kl_loss = aggregate(kl, mask, cfg.aggregation, **norm)
        loss = pg_loss + cfg.kl_coef * kl_loss
        if cfg.kl_clamp is not None:
            metrics["kl_clamp_frac"] = masked_mean(kl_clamped, mask).item()
    if cfg.entropy_coef > 0:
        if batch.get("entropy") is None:
            raise ValueError("entropy_coef > 0 needs batch['entropy'] (B, T) with gradient")
        entropy_loss = aggregate(batch["entropy"], mask, cfg.aggregation, **norm)
        loss = loss - cfg.entropy_coef * entropy_loss
        metrics["entropy_bonus"] = entropy_loss.item()
    metrics.update(
        pg_loss=pg_loss.item(),
        kl_loss=kl_loss.item(),
        clip_frac_low=masked_mean(stats["clip_low"], mask).item(),
        clip_frac_high=masked_mean(stats["clip_high"], mask).item(),
        clip_frac_dual=masked_mean(stats["clip_dual"], mask).item() if cfg.dual_clip is not None else None,
        ratio_mean=masked_mean(stats["ratio"], mask).item(),
    )
    if not mask.any():
        # No token in the loss (e.g. every rollout truncated under mask_truncated): the loss is 0
        # and these statistics are undefined, not 0; None keeps them out of the step's means.
        metrics = {key: None for key in metrics}
    return loss, metrics

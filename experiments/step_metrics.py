"""One step's rows for the run folder, assembled from what the step computed: the metrics.jsonl
row (every key of `experiments.metrics.METRIC_KEYS`), its groups.jsonl rows and its samples."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from algos import explained_variance, kl_estimate, masked_mean
from experiments.evaluate import sample_row

UPDATE_KEYS = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "kl_clamp_frac", "ratio_mean", "entropy_mean",
               "pg_loss", "loss", "grad_norm", "tis_weight_mean", "value_loss")
BATCH_STAT_KEYS = ("reward_mean", "reward_std", "accuracy", "groups_degenerate_frac_sampled", "resp_len_mean",
                   "resp_len_max", "resp_len_correct_mean", "resp_len_incorrect_mean", "filter_rounds",
                   "filter_prompts_drawn", "filter_groups_dropped", "verify_timeouts")
ADV_KEYS = ("adv_mean", "adv_std", "adv_abs_mean", "adv_zero_frac", "groups_degenerate_frac", "std_gain_mean",
            "std_gain_max")


def update_means(per_minibatch: list[dict]) -> dict:
    """Mean of each update metric over the step's minibatches, leaving out None (a minibatch with no
    token in the loss, a skipped non-finite update) and non-finite values; None if none is left."""
    means = {}
    for key in UPDATE_KEYS:
        values = [m[key] for m in per_minibatch if m.get(key) is not None and math.isfinite(m[key])]
        means[key] = sum(values) / len(values) if values else None
    return means


SUMMED_KEYS = ("pg_loss", "kl_loss", "entropy_bonus", "value_loss", "loss_value")  # normalised by the minibatch
LOSS_MASK_MEANS = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "ratio_mean", "tis_weight_mean",
                   "kl_clamp_frac")  # means over the tokens in the loss


def combine_micro_metrics(parts: list[dict]) -> dict:
    """One minibatch's metrics from its micro-batches': the losses (each already normalised by the
    whole minibatch) summed, token means weighted by each micro-batch's tokens, so the result
    equals the unsplit minibatch's. None where no micro-batch had a token in the loss."""
    loss_tokens = sum(p["loss_tokens"] for p in parts)
    out: dict = {}
    for key in SUMMED_KEYS:
        values = [p[key] for p in parts if p.get(key) is not None]
        out[key] = sum(values) if values else None
    for key in LOSS_MASK_MEANS:
        pairs = [(p[key], p["loss_tokens"]) for p in parts if p.get(key) is not None]
        weight = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / weight if pairs and weight > 0 else None
    response_tokens = sum(p["response_tokens"] for p in parts)
    out["entropy_mean"] = (sum(p["entropy_mean"] * p["response_tokens"] for p in parts) / response_tokens
                           if response_tokens else None)
    if loss_tokens == 0:  # no token in the loss: the loss statistics are undefined, not 0
        out.update({key: None for key in (*LOSS_MASK_MEANS, "pg_loss", "kl_loss", "entropy_bonus", "entropy_mean")})
    out["loss"] = out.pop("loss_value") if loss_tokens else None
    return out


@dataclass
class StepTensors:
    """The no-grad passes of a step, each (B, T) over the response tokens (None where not used)."""

    mask: torch.Tensor  # response mask, float
    old_logp: torch.Tensor  # the policy the advantages are for
    ref_logp: torch.Tensor | None  # the reference (beta > 0)
    values: torch.Tensor | None  # the critic's values before the update (PPO)
    returns: torch.Tensor | None  # GAE returns (PPO)
    old_logp_from_update: bool = False  # old_logp is filled by the (exactly on-policy) update's own forward


def policy_rows(passes: StepTensors, sampler_logp: torch.Tensor, kl_kind: str) -> dict:
    """KL to the reference, the critic's fit and the sampler-trainer log-prob gap of the step."""
    mask = passes.mask
    gap = (sampler_logp.to(mask.device) - passes.old_logp).abs() * mask
    return {
        "kl_ref_mean": masked_mean(kl_estimate(passes.old_logp, passes.ref_logp, kl_kind), mask).item()
        if passes.ref_logp is not None else None,
        "value_mean": masked_mean(passes.values, mask).item() if passes.values is not None else None,
        "critic_explained_var": explained_variance(passes.values, passes.returns, mask)
        if passes.values is not None else None,
        "sampler_logp_diff_mean": (gap.sum() / mask.sum().clamp(min=1)).item(),
        "sampler_logp_diff_max": gap.max().item(),
    }


def group_rows(adv_stats: dict, step: int, group_size: int) -> list[dict]:
    """groups.jsonl: one row per group of the trained batch (none for PPO's groups of one)."""
    if group_size < 2:
        return []
    return [{
        "step": step,
        "group": g,
        "success_rate": adv_stats["group_success_rate"][g].item(),
        "reward_mean": adv_stats["group_reward_mean"][g].item(),
        "reward_std": adv_stats["group_reward_std"][g].item(),
        "std_gain": adv_stats["group_std_gain"][g].item(),
        "adv_abs_mean": adv_stats["group_adv_abs_mean"][g].item(),
        "degenerate": bool(adv_stats["group_degenerate"][g]),
    } for g in range(len(adv_stats["group_degenerate"]))]


def train_sample_rows(batch, step: int, keep: int, group_size: int) -> list[dict]:
    """`keep` rollouts of the step for samples.jsonl, one per group from the first groups on
    (spread over prompts), with their shaped reward and verdict."""
    rollouts = batch.rollouts
    stride = max(1, min(group_size, len(batch.examples) // max(keep, 1)))
    rows = list(range(0, len(batch.examples), stride))[:keep]
    return [{"step": step, "kind": "train", **sample_row(
        batch.examples[i], rollouts.texts[i], batch.rewards[i].item(), bool(batch.correct[i]),
        int(rollouts.lengths[i]), bool(rollouts.truncated[i]))} for i in rows]

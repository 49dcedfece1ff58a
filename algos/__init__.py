"""Algorithm core: pure math (`core`), knobs and presets (`config`), the composed loss (`loss`)."""
from algos import dapo, dr_grpo, grpo, gspo, ppo, rloo
from algos.config import AlgoConfig, knob_help, knob_names, parse_knob, preset
from algos.core import (
    LOG_RATIO_CLAMP,
    advantage_stats,
    clamp_kl,
    aggregate,
    clipped_surrogate,
    degenerate_groups,
    explained_variance,
    gae,
    group_advantages,
    informative_groups,
    kl_estimate,
    masked_mean,
    masked_whiten,
    overlong_penalty,
    value_loss,
)
from algos.loss import compute_advantages, policy_loss, shape_rewards

PRESETS: dict[str, AlgoConfig] = {
    module.PRESET.name: module.PRESET for module in (ppo, grpo, dr_grpo, dapo, rloo, gspo)
}

__all__ = [
    "AlgoConfig", "PRESETS", "preset", "knob_names", "knob_help", "parse_knob",
    "group_advantages", "gae", "kl_estimate", "clamp_kl", "LOG_RATIO_CLAMP", "clipped_surrogate", "aggregate", "value_loss",
    "overlong_penalty", "degenerate_groups", "informative_groups", "advantage_stats", "explained_variance",
    "masked_mean", "masked_whiten", "compute_advantages", "policy_loss", "shape_rewards",
]

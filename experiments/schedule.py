"""Learning-rate schedules: the multiplier of the base lr at each training step.

A pure function of the step, so a resumed run (which restores the step) follows the same
schedule with no scheduler state to save. `step` counts training steps from 1; each step's
updates (epochs x minibatches) all use that step's lr, for the policy and the critic alike.

    constant  1
    linear    1 -> 0 from the end of warm-up to the last step (TRL/HF's default decay)
    cosine    0.5 * (1 + cos(pi * progress)), 1 -> 0 over the same span
with a linear warm-up from 1/warmup_steps to 1 over the first `warmup_steps` steps.
"""
from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, total_steps: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """The lr multiplier at training step `step` (1-based) of `total_steps`."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
    if step <= warmup_steps:
        return step / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    # progress 0 at the first step after warm-up, 1 at the last step: the last step's lr is 0 for
    # linear and cosine, as in TRL/HF; a one-step decay span gives 1 then nothing to decay to.
    span = total_steps - warmup_steps
    progress = (step - warmup_steps - 1) / max(span - 1, 1) if span > 1 else 0.0
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))

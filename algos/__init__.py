"""Algorithm core: pure math (`core`), knobs and presets (`config`, `presets`), the composed loss (`loss`).

`import algos` and `algos.config`/`algos.presets` need no torch: the tensor functions of `core`
and `loss` are imported on first use (PEP 562), so analysis can label runs without torch.
"""
import importlib

from algos.config import AlgoConfig, knob_help, knob_names, parse_knob, preset
from algos.presets import PRESETS

_CORE = ("LOG_RATIO_CLAMP", "advantage_stats", "aggregate", "clamp_kl", "clipped_surrogate", "degenerate_groups",
         "explained_variance", "gae", "group_advantages", "informative_groups", "kl_estimate", "masked_mean",
         "masked_whiten", "overlong_penalty", "value_loss")
_LOSS = ("compute_advantages", "loss_mask", "loss_mask_counts", "policy_loss", "shape_rewards")

__all__ = ["AlgoConfig", "PRESETS", "preset", "knob_names", "knob_help", "parse_knob", *_CORE, *_LOSS]


def __getattr__(name: str):
    if name in _CORE or name in _LOSS:
        module = importlib.import_module("algos.core" if name in _CORE else "algos.loss")
        return getattr(module, name)
    raise AttributeError(f"module 'algos' has no attribute {name!r}")

"""Readable algorithm labels for a set of runs: the preset name plus every algo knob that differs
within the set and from the preset ("grpo" vs "grpo scale=none"). Needs no torch."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

# Keys that do not make two runs different experiments: seeds (they are what is pooled over) and
# bookkeeping that does not change what a run computes.
POOLED_KEYS = ("seed", "task.seed", "model.init_seed", "name", "out", "out_dir", "cache_dir", "threads", "device",
               "eval_every", "checkpoint_every", "preempt_grace_s", "task.verify_workers", "task.verify_timeout_s")
POOLED_PREFIXES = ("meta.", "log.", "rollout.vllm_", "experiment")


def _pooled(key: str) -> bool:
    return key in POOLED_KEYS or key.startswith(POOLED_PREFIXES)


def algo_labels(configs: Sequence[dict[str, Any]]) -> list[str]:
    """A readable label per flattened config: runs with equal labels (in one experiment, task and
    model) differ in seed alone, and only they are pooled.

    The label is `algo.name` plus `knob=value` for every `algo.*` knob that (a) takes more than
    one value among the loaded runs of that preset in the same experiment, task and model and (b)
    differs from the preset's default (from `algos.PRESETS`; where the preset is unknown, from the
    value most runs share), then `key=value` for every other config key that varies there, seeds
    and bookkeeping (`POOLED_KEYS`) aside, against the value most runs share. So GRPO seeds with
    and without std-normalization read "grpo" and "grpo scale=none", and a 2-step run beside
    60-step ones reads "grpo steps=2".
    """
    by_name: dict[Any, list[int]] = defaultdict(list)
    for i, config in enumerate(configs):
        key = ("algo.name", "experiment", "task.name", "model.name")
        by_name[tuple(_hashable(config.get(k)) for k in key)].append(i)
    labels = [""] * len(configs)
    for (name, *_), members in by_name.items():
        base = str(name) if name is not None else "unknown"
        keys = sorted({k for i in members for k in configs[i] if k != "algo.name" and not _pooled(k)})
        varying = [k for k in keys if len({_hashable(configs[i].get(k)) for i in members}) > 1]
        knobs = [k for k in varying if k.startswith("algo.")]
        others = [k for k in varying if not k.startswith("algo.")]
        defaults = {f"algo.{k}": v for k, v in _preset_defaults(base).items()} if knobs else {}
        for k in varying:
            if k not in defaults:
                defaults[k] = Counter(_hashable(configs[i].get(k)) for i in members).most_common(1)[0][0]
        for i in members:
            parts = [f"{k.removeprefix('algo.')}={_format_value(configs[i].get(k))}" for k in [*knobs, *others]
                     if not _same(configs[i].get(k), defaults[k])]
            labels[i] = " ".join([base, *parts])
    return labels


def _preset_defaults(name: str) -> dict[str, Any]:
    from algos.presets import PRESETS  # plain dataclasses, no torch

    preset = PRESETS.get(name)
    return dict(preset.to_dict()) if preset is not None else {}


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return bool(np.isclose(a, b, rtol=1e-9, atol=0)) or a == b
    return _hashable(a) == _hashable(b)


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _attach_algo_labels(infos: list[dict[str, Any]]) -> None:
    configs = [{**i["config"], "experiment": i.get("experiment")} for i in infos]
    for info, label in zip(infos, algo_labels(configs)):
        info["algo"] = label

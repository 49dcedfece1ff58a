"""Readable algorithm labels for a set of runs: the preset name plus every algo knob that differs
within the set and from the preset ("grpo" vs "grpo scale=none"). Needs no torch."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

def algo_labels(configs: Sequence[dict[str, Any]]) -> list[str]:
    """A readable algorithm label per flattened config.

    The label is `algo.name` plus `knob=value` for every `algo.*` knob that (a) takes more than
    one value among the loaded runs of that preset on the same task and model (`task.name`,
    `model.name`: runs that are never averaged together) and (b) differs from the preset's
    default (from `algos.PRESETS`; where the preset is unknown, from the value most runs share).
    So GRPO seeds with and without std-normalization read "grpo" and "grpo scale=none"; knobs
    that every run of a preset shares stay out of the label.
    """
    by_name: dict[Any, list[int]] = defaultdict(list)
    for i, config in enumerate(configs):
        by_name[tuple(_hashable(config.get(k)) for k in ("algo.name", "task.name", "model.name"))].append(i)
    labels = [""] * len(configs)
    for (name, _, _), members in by_name.items():
        base = str(name) if name is not None else "unknown"
        knobs = sorted({k for i in members for k in configs[i] if k.startswith("algo.") and k != "algo.name"})
        varying = [k for k in knobs if len({_hashable(configs[i].get(k)) for i in members}) > 1]
        defaults = _preset_defaults(base) if varying else {}
        for k in varying:
            if k[len("algo."):] not in defaults:
                counts = Counter(_hashable(configs[i].get(k)) for i in members)
                defaults[k[len("algo."):]] = counts.most_common(1)[0][0]
        for i in members:
            parts = [f"{k[len('algo.'):]}={_format_value(configs[i].get(k))}" for k in varying
                     if not _same(configs[i].get(k), defaults[k[len('algo.'):]])]
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
    for info, label in zip(infos, algo_labels([i["config"] for i in infos])):
        info["algo"] = label

"""Analysis: load run folders into tidy tables (`load`), statistics (`stats`), figures (`figures`).

    from analysis import load_runs
    df = load_runs("runs/")          # one row per run x step, knobs as columns

`python -m analysis figures runs/ --out figures/` regenerates every figure.
"""
from analysis.load import (
    METRIC_KEYS,
    GROUP_KEYS,
    algo_labels,
    find_runs,
    flatten_config,
    list_runs,
    load_groups,
    load_runs,
    read_jsonl,
)

__all__ = [
    "METRIC_KEYS", "GROUP_KEYS", "algo_labels", "find_runs", "flatten_config", "list_runs",
    "load_groups", "load_runs", "read_jsonl",
]

"""Analysis: load run folders into tidy tables (`load`), statistics (`stats`), figures (`figures`).

    from analysis import load_runs
    df = load_runs("runs/")          # one row per run x step, knobs as columns

`python -m analysis figures runs/ --out figures/` regenerates every figure.
"""
from analysis.jsonl import read_jsonl
from analysis.labels import algo_labels
from analysis.load import GROUP_KEYS, METRIC_KEYS, find_runs, flatten_config, list_runs, load_groups, load_runs

__all__ = [
    "METRIC_KEYS", "GROUP_KEYS", "algo_labels", "find_runs", "flatten_config", "list_runs",
    "load_groups", "load_runs", "read_jsonl",
]

"""Write synthetic run folders in the layout of docs/DESIGN.md ("Run folder") for the analysis tests.

`write_run(root, name, metrics={...}, algo={...})` writes config.yaml (nested like the trainer's
fully resolved config), metrics.jsonl (every metric key on every row, null where not given),
groups.jsonl (optional) and status.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from algos import preset
from analysis.load import METRIC_KEYS

def make_config(name: str, *, algo: str = "grpo", seed: int = 0, steps: int = 10, model: str = "tiny",
                task: str = "arithmetic", **algo_overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed,
        "steps": steps,
        "out_dir": f"runs/{name}",
        "algo": preset(algo, **algo_overrides).to_dict(),
        "task": {"name": task, "max_operand": 20},
        "model": {"name": model, "lr": 1e-5},
        "rollout": {"backend": "hf", "max_new_tokens": 16, "temperature": 1.0},
        "meta": {"versions": {"torch": "2.13.0"}, "git_commit": "abc123", "created": "2025-01-01T00:00:00"},
    }


def metric_rows(metrics: dict[str, list[Any]], steps: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows with every METRIC_KEYS key; `metrics` maps key -> one value per step (None = null)."""
    lengths = {len(v) for v in metrics.values()}
    if len(lengths) > 1:
        raise ValueError(f"metric arrays differ in length: { {k: len(v) for k, v in metrics.items()} }")
    n = lengths.pop() if lengths else len(steps or [])
    steps = list(range(1, n + 1)) if steps is None else list(steps)
    rows = []
    for i, step in enumerate(steps):
        row = {k: None for k in METRIC_KEYS}
        row["step"] = step
        for key, values in metrics.items():
            value = values[i]
            row[key] = None if value is None else float(value) if key != "step" else int(value)
        rows.append(row)
    return rows


def write_run(root: str | Path, name: str, *, metrics: dict[str, list[Any]] | None = None,
              step_numbers: list[int] | None = None, groups: list[dict[str, Any]] | None = None,
              state: str | None = "completed", error: str | None = None, torn_tail: str | None = None,
              config: dict[str, Any] | None = None, **config_kwargs: Any) -> Path:
    """Write one run folder at root/name and return its path.

    step_numbers: the logged steps (default 1..n); config: the full nested config (default: `make_config(name, **config_kwargs)`);
    torn_tail: text appended after the last complete line without a newline (a writer mid-line);
    state None: no status.json at all.
    """
    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else make_config(name, **config_kwargs)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = metric_rows(metrics or {}, step_numbers)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn_tail is not None:
        text += torn_tail
    (run / "metrics.jsonl").write_text(text)
    if groups is not None:
        (run / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    if state is not None:
        last = rows[-1]["step"] if rows else 0
        status = {"state": state, "step": last, "steps": config.get("steps"), "error": error,
                  "updated": "2025-01-01T00:00:00", "job_id": None, "host": "test", "pid": 1}
        (run / "status.json").write_text(json.dumps(status))
    return run


def append_rows(run: Path, metrics: dict[str, list[Any]], steps: list[int]) -> None:
    """Append metric rows to an existing run's metrics.jsonl (a training run taking more steps)."""
    with open(run / "metrics.jsonl", "a") as f:
        for row in metric_rows(metrics, steps):
            f.write(json.dumps(row) + "\n")


def group_rows(step: int, rewards_per_group: list[list[float]], *, scale: str = "group_std",
               eps: float = 1e-6) -> list[dict[str, Any]]:
    """groups.jsonl rows for one step from each group's K rewards (0/1 -> success rate = mean).

    adv_abs_mean is the mean |A| the trainer would log with `scale` (group_std: unbiased std).
    """
    rows = []
    for g, rewards in enumerate(rewards_per_group):
        k = len(rewards)
        mean = sum(rewards) / k
        std = (sum((r - mean) ** 2 for r in rewards) / (k - 1)) ** 0.5
        degenerate = all(r == rewards[0] for r in rewards)
        divisor = (std + eps) if scale == "group_std" else 1.0
        adv_abs = 0.0 if degenerate else sum(abs(r - mean) for r in rewards) / k / divisor
        rows.append({"step": step, "group": g, "success_rate": mean, "reward_mean": mean, "reward_std": std,
                     "std_gain": None if degenerate else 1.0 / (std + eps), "adv_abs_mean": adv_abs,
                     "degenerate": degenerate})
    return rows

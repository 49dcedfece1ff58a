"""`python -m experiments status SWEEP_DIR|RUN_DIR`: one row per run (state, step, last reward and
eval, job id) and SLURM's view of each job."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from experiments.runfolder import RunFolder
from experiments.sweep.grid import SWEEP_FILE
from experiments.sweep.launch import lock_held, read_json, squeue_states

def _last_rows(path: Path) -> tuple[dict, Any]:
    """(last metrics row, last non-null eval_accuracy) of a metrics.jsonl, tolerating torn lines."""
    last, eval_acc = {}, None
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return last, eval_acc
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        last = row
        if row.get("eval_accuracy") is not None:
            eval_acc = row["eval_accuracy"]
    return last, eval_acc


def _is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in ("status.json", "metrics.jsonl", "config.yaml"))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def status_rows(sweep_dir: Path, queue: dict[str, str] | None) -> list[dict]:
    """One row per run of a sweep folder: from sweep.json's cells, plus run folders found on disk."""
    record = read_json(sweep_dir / SWEEP_FILE)
    entries = {c["folder"]: c for c in record.get("cells", [])}
    if not entries and _is_run_folder(sweep_dir):  # a single run folder, not a sweep
        entries = {".": {"folder": "."}}
    for status_file in sorted(sweep_dir.glob("*/status.json")):
        entries.setdefault(status_file.parent.name, {"folder": status_file.parent.name})
    rows = []
    for folder, entry in sorted(entries.items(), key=lambda kv: (kv[1].get("index", 1 << 30), kv[0])):
        run_dir = sweep_dir / folder
        status = RunFolder(run_dir).status()
        last, eval_acc = _last_rows(run_dir / "metrics.jsonl")
        job = entry.get("job_id") or status.get("job_id")
        state = status.get("state", "not started" if not last else "unknown (no status.json)")
        if state == "unreadable":
            state = "unknown (status.json unreadable)"
        if state == "running" and not lock_held(run_dir) and status.get("host") in (None, os.uname().nodename):
            state = "running?"   # no process holds the lock: it died without saying so
        steps = status.get("steps") or entry.get("steps") or "?"
        step = status.get("step") if isinstance(status.get("step"), int) else last.get("step")
        rows.append({
            "run": sweep_dir.name if folder == "." else folder, "state": state,
            "step": f"{step or 0}/{steps}" if status or last else "-",
            "reward": _fmt(last.get("reward_mean")), "acc": _fmt(last.get("accuracy")),
            "eval_acc": _fmt(eval_acc), "job": job or "-",
            "slurm": (queue.get(str(job), "-") if queue is not None and job else "-"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers)]
    lines += ["  ".join(str(r[h]).ljust(widths[h]) for h in headers) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def main_status(argv: list[str]) -> int:
    """`python -m experiments status SWEEP_DIR|RUN_DIR`: a table of the sweep's runs (or of one run:
    state, step, last reward/accuracy, last eval accuracy, job id) and SLURM's view of each job."""
    if not argv or any(a in ("-h", "--help") for a in argv) or len(argv) > 1:
        print("usage: python -m experiments status SWEEP_DIR|RUN_DIR", file=sys.stderr if argv else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    sweep_dir = Path(argv[0])
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir} is not a folder; give the out= of a sweep or of a run", file=sys.stderr)
        return 2
    queue = squeue_states()
    rows = status_rows(sweep_dir, queue)
    record = read_json(sweep_dir / SWEEP_FILE)
    title = record.get("name", sweep_dir.name)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    print(f"{title}: {len(rows)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})"
          + ("" if queue is not None else "; SLURM not reachable"))
    print(format_table(rows))
    return 0

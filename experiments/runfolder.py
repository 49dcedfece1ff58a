"""The run folder contract (docs/DESIGN.md): config.yaml, metrics.jsonl, groups.jsonl,
status.json, checkpoint/, lock. Every write that a reader may see half-done is atomic
(temporary name, then rename); JSONL files are appended and flushed row by row.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
import yaml

STATES = ("running", "completed", "failed", "preempted")


class RunFolderBusy(RuntimeError):
    pass


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    """JSON-safe: tensors to numbers, NaN/inf to null."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a write cut by a kill) is ignored."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break
            raise ValueError(f"{path}:{number + 1}: not valid JSON") from None
    return rows


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.groups_path = self.path / "groups.jsonl"
        self.status_path = self.path / "status.json"
        self.config_path = self.path / "config.yaml"
        self.checkpoint_path = self.path / "checkpoint" / "state.pt"
        self._lock_handle = None

    # ---------------------------------------------------------------- lock
    def acquire(self) -> None:
        """Hold an exclusive flock on RUN/lock for the life of this process (or until release)."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / "lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            owner = self.status().get("pid")
            raise RunFolderBusy(
                f"run folder {self.path} is being written by another process (pid {owner}); "
                "wait for it to end, or choose another out="
            ) from None
        self._lock_handle = handle

    def release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # ---------------------------------------------------------------- status / config
    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def set_status(self, state: str, *, step: int, steps: int, error: str | None = None) -> None:
        assert state in STATES, state
        status = {
            "state": state,
            "step": step,
            "steps": steps,
            "error": error,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "job_id": os.environ.get("SLURM_ARRAY_JOB_ID") and
            f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
            or os.environ.get("SLURM_JOB_ID"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        atomic_write_text(self.status_path, json.dumps(status, indent=1) + "\n")

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict | None:
        if not self.config_path.exists():
            return None
        return yaml.safe_load(self.config_path.read_text())

    # ---------------------------------------------------------------- metrics
    def truncate_after(self, step: int) -> None:
        """Keep only rows with step <= `step` in metrics.jsonl and groups.jsonl (atomically):
        rows written after the checkpoint we resume from are recomputed, never duplicated."""
        for path in (self.metrics_path, self.groups_path):
            rows = [row for row in read_jsonl(path) if row["step"] <= step]
            atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))

    def append(self, path: Path, rows: list[dict]) -> None:
        with open(path, "a") as handle:
            for row in rows:
                handle.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def log_step(self, metrics: dict, groups: list[dict]) -> None:
        if groups:
            self.append(self.groups_path, groups)
        self.append(self.metrics_path, [metrics])

    # ---------------------------------------------------------------- checkpoint
    def save_checkpoint(self, state: dict) -> None:
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".state.pt.tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

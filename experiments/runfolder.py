"""The run folder contract (docs/DESIGN.md): config.yaml, metrics.jsonl, groups.jsonl,
samples.jsonl, status.json, checkpoint/, lock. Every write that a reader may see half-done is atomic
(temporary name, then rename); JSONL files are appended and flushed row by row.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch
import yaml

STATES = ("running", "completed", "failed", "preempted")


class RunFolderBusy(RuntimeError):
    pass


class RunFolderError(ValueError):
    """A run folder that cannot be resumed as it is (unreadable file, missing piece): the message
    names the file and what to do; nothing in the folder was changed."""


# The non-tensor types a checkpoint holds besides dicts, lists, tuples, numbers, strings and None:
# none. The numpy RNG state is stored as tensors and numbers (`numpy_rng_state`), so checkpoints
# load with `torch.load(weights_only=True)`, which runs no code from the file.
CHECKPOINT_FIX = ("restore it from a copy, or remove checkpoint/ to restart the run from step 0 "
                  "(its metric rows after step 0 are then dropped), or choose another out=")

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


def read_jsonl(path: Path, *, require_step: bool = False) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a write cut by a kill) is ignored. With
    `require_step`, every row must be an object with an integer "step" (RunFolderError otherwise)."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break
            raise RunFolderError(f"{path}:{number + 1}: not valid JSON; fix or remove that line") from None
        if require_step and not (isinstance(row, dict) and isinstance(row.get("step"), int)):
            raise RunFolderError(f"{path}:{number + 1}: a row without an integer 'step'; fix or remove that line")
        rows.append(row)
    return rows


def numpy_rng_state() -> dict:
    """numpy's global RNG state as tensors and numbers (loadable with weights_only=True)."""
    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: dict) -> None:
    import numpy as np

    np.random.set_state((state["name"], state["keys"].numpy().astype("uint32"), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))


class RunFolder:
    """A run folder. With writer=False (the ranks other than 0 of a distributed run) it reads as
    usual and every write is skipped: one process writes the folder."""

    def __init__(self, path: str | os.PathLike, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self.metrics_path = self.path / "metrics.jsonl"
        self.groups_path = self.path / "groups.jsonl"
        self.samples_path = self.path / "samples.jsonl"
        self.status_path = self.path / "status.json"
        self.config_path = self.path / "config.yaml"
        self.checkpoint_path = self.path / "checkpoint" / "state.pt"
        self._lock_handle = None

    # ---------------------------------------------------------------- lock
    def acquire(self) -> None:
        """Hold an exclusive flock on RUN/lock for the life of this process (or until release)."""
        if not self.writer:
            return
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

    def lock_held(self) -> bool:
        """True when another process holds the flock on RUN/lock (train holds it while it writes)."""
        lock = self.path / "lock"
        if not lock.exists():
            return False
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # ---------------------------------------------------------------- status / config
    def status(self) -> dict:
        """status.json as a dict; {} when there is none, {"state": "unreadable"} when it is garbage."""
        try:
            status = json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {"state": "unreadable"}
        return status if isinstance(status, dict) else {"state": "unreadable"}

    def set_status(self, state: str, *, step: int, steps: int, error: str | None = None) -> None:
        assert state in STATES, state
        if not self.writer:
            return
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

    def mark_preempted(self, from_states: tuple[str, ...], error: str) -> bool:
        """Set the state to `preempted` (atomically) if it is one of `from_states`; the rest of
        status.json is kept. For a launcher that saw the job end (SLURM requeue) while the run's own
        process could not say so."""
        status = self.status()
        if status.get("state") not in from_states or not self.writer:
            return False
        status.update(state="preempted", updated=time.strftime("%Y-%m-%dT%H:%M:%S"), error=error)
        atomic_write_text(self.status_path, json.dumps(status, indent=1) + "\n")
        return True

    def write_config(self, config: dict) -> None:
        if not self.writer:
            return
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict | None:
        """config.yaml as a dict, None if there is none; RunFolderError if it is not a YAML mapping."""
        if not self.config_path.exists():
            return None
        try:
            config = yaml.safe_load(self.config_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            problem = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise RunFolderError(f"{self.config_path}: not valid YAML ({problem}); restore it, or choose another out=") from None
        if not isinstance(config, dict):
            raise RunFolderError(f"{self.config_path}: expected a mapping of config keys, got "
                                 f"{type(config).__name__}; restore it, or choose another out=")
        return config

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl rows, each with an integer step (RunFolderError naming the line otherwise)."""
        return read_jsonl(self.metrics_path, require_step=True)

    # ---------------------------------------------------------------- metrics
    def truncate_after(self, step: int) -> dict[str, list[int]]:
        """Keep only rows with step <= `step` in metrics.jsonl and groups.jsonl (atomically):
        rows written after the checkpoint we resume from are recomputed, never duplicated.
        Returns the steps of the dropped rows per file name (for the message that says so)."""
        dropped = {}
        for path in (self.metrics_path, self.groups_path, self.samples_path):
            rows = read_jsonl(path, require_step=True)
            kept = [row for row in rows if row["step"] <= step]
            dropped[path.name] = [row["step"] for row in rows if row["step"] > step]
            if (dropped[path.name] or path.exists()) and self.writer:
                atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
        return dropped

    def append(self, path: Path, rows: list[dict]) -> None:
        if not self.writer:
            return
        with open(path, "a") as handle:
            for row in rows:
                handle.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def log_step(self, metrics: dict, groups: list[dict], samples: list[dict] = ()) -> None:
        """One step's rows: groups.jsonl and samples.jsonl first, metrics.jsonl last (a step whose
        metrics row exists has all its rows)."""
        if groups:
            self.append(self.groups_path, groups)
        if samples:
            self.append(self.samples_path, list(samples))
        self.append(self.metrics_path, [metrics])

    # ---------------------------------------------------------------- checkpoint
    def save_checkpoint(self, state: dict) -> None:
        if not self.writer:
            return
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".state.pt.tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def sharded_checkpoint_dir(self, step: int) -> Path:
        """RUN/checkpoints/step-N/, emptied and created by the writer, for every rank to write its
        part of a sharded checkpoint into (`experiments.checkpoint`); not the checkpoint yet."""
        folder = self.path / "checkpoints" / f"step-{step}"
        if self.writer:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        return folder

    def publish_sharded_checkpoint(self, folder: Path, state: dict) -> None:
        """Write `state` (the bookkeeping, no tensors of the models) as folder/state.pt, then point
        RUN/checkpoint at `folder` in one atomic rename of a link; older step folders are removed."""
        if not self.writer:
            return
        torch.save(state, folder / "state.pt")
        link = self.path / f".checkpoint.link.tmp{os.getpid()}"
        link.unlink(missing_ok=True)
        os.symlink(Path(folder.parent.name) / folder.name, link)
        os.replace(link, self.checkpoint_path.parent)
        for old in folder.parent.iterdir():
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> dict | None:
        """checkpoint/state.pt, loaded with weights_only=True (tensors and plain containers only:
        a file that would run code is refused); None if there is none, RunFolderError if it is
        unreadable (empty, truncated, corrupt, or holding other objects)."""
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise RunFolderError(f"{self.checkpoint_path}: unreadable checkpoint ({type(error).__name__}: "
                                 f"{reason}); {CHECKPOINT_FIX}") from None
        if not isinstance(state, dict) or "step" not in state:
            raise RunFolderError(f"{self.checkpoint_path}: not a checkpoint of this trainer; {CHECKPOINT_FIX}")
        return state


def dropped_text(dropped: dict[str, list[int]]) -> str:
    """'; dropped 3 metric rows (steps 5-7) and 24 group rows, recomputed from here' or ''."""
    metrics, groups = dropped.get("metrics.jsonl", []), dropped.get("groups.jsonl", [])
    if not metrics and not groups:
        return ""
    steps = f" (steps {min(metrics)}-{max(metrics)})" if metrics else ""
    return f"; dropped {len(metrics)} metric rows{steps} and {len(groups)} group rows, recomputed from here"

"""The local single-node SLURM for tests marked `slurm`: started once per session by slurm/start.sh
(idempotent; installs the Debian packages when missing). Without root and without a SLURM that
already answers, the tests are skipped with the reason; with root, a start failure fails them."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Train settings that keep each cell to a few seconds of work (startup dominates).
FAST = ("task.name=arithmetic", "model.name=tiny", "model.warmstart=false", "rollouts_per_step=8",
        "eval_size=8", "threads=1")


def _slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and any(s.strip("*~#") in ("idle", "mix", "alloc") for s in result.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Start (or find) the local SLURM; returns the node name."""
    if os.geteuid() != 0 and not _slurm_answers():
        pytest.skip("local SLURM is not up and slurm/start.sh needs root (run it as root first)")
    result = subprocess.run([str(REPO / "slurm" / "start.sh")], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"slurm/start.sh failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()


def squeue_state(job_id: str) -> str | None:
    """State of one job ('12_0' or '12') in SLURM's queue, None once it left the queue."""
    result = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=30)
    for line in result.stdout.splitlines():
        job, _, state = line.partition("|")
        if job == job_id:
            return state
    return None


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def cancel(*job_ids: str) -> None:
    """Leave no job of a failed test behind."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)

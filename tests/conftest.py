"""Shared test setup: one model cache for the whole session (built and warm-started models are
reused across tests and by later runs of the suite), and small helpers to run the real CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.setdefault("RLVR_CACHE", str(REPO / ".cache" / "rlvr")))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def run_cli(*args: str, timeout: float = 600, check: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python -m experiments ARGS...` in a subprocess, as a user would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def warm_tiny() -> dict:
    """The default tiny arithmetic policy, warm-started into its accuracy band (cached on disk)."""
    result = run_cli("warmstart", timeout=900)
    import json

    return json.loads(result.stdout)

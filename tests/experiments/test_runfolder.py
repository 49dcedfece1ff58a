"""Run folders that cannot be corrupted, hijacked or silently reset (each case found by trying it).

R is a run killed at step 7 whose checkpoint is at step 4 (rows 0-7 logged, status "running"),
built by copying the step-4 checkpoint over the step-7 one. Every refusal exits 2 with one line
naming the file and what to do, and leaves the folder byte for byte as it was.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.runfolder import RunFolder, read_jsonl
from experiments.train import main as train_main
from tests.conftest import REPO, run_cli

T = ["model.name=tiny", "model.warmstart=false", "rollouts_per_step=16", "eval_size=8", "eval_every=2",
     "checkpoint_every=4", "threads=1"]


def train(out: Path, *extra: str, capsys) -> tuple[int, str]:
    """train_main on `out`; returns its exit code and what it printed to stderr (only this call's)."""
    capsys.readouterr()
    code = train_main([*T, *extra, f"out={out}"])
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "lock"}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """R: rows of steps 0-7, checkpoint at step 4, status running (as a SIGKILL at step 7 leaves it)."""
    out = tmp_path_factory.mktemp("r") / "R"
    assert train_main([*T, "steps=4", f"out={out}"]) == 0
    step4 = (out / "checkpoint" / "state.pt").read_bytes()
    assert train_main([*T, "steps=7", f"out={out}"]) == 0
    (out / "checkpoint" / "state.pt").write_bytes(step4)
    status = json.loads((out / "status.json").read_text())
    (out / "status.json").write_text(json.dumps({**status, "state": "running"}))
    return out


@pytest.fixture
def run_copy(killed_run, tmp_path) -> Path:
    copy = tmp_path / "R"
    shutil.copytree(killed_run, copy)
    return copy


def assert_refused(code: int, err: str, before: dict, folder: Path, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert snapshot(folder) == before


class Exploit:
    """Unpickling this would run a shell command (what a hostile state.pt can hold)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_1_a_checkpoint_that_would_run_code_is_refused(run_copy, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"step": 4, "evil": Exploit(marker)}, run_copy / "checkpoint" / "state.pt")
    before = snapshot(run_copy)
    code, err = train(run_copy, "steps=7", capsys=capsys)
    assert_refused(code, err, before, run_copy, "state.pt: unreadable checkpoint", "remove checkpoint/")
    assert not marker.exists()


def test_2_a_deleted_checkpoint_is_refused_not_a_silent_restart(run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoint")
    before = snapshot(run_copy)
    code, err = train(run_copy, "steps=7", capsys=capsys)
    assert_refused(code, err, before, run_copy, "state.pt is missing", "steps up to 7", "every 4 steps")


def test_2_killed_before_the_first_checkpoint_restarts_and_says_what_it_dropped(tmp_path, capsys):
    out = tmp_path / "early"
    assert train_main([*T, "steps=2", "checkpoint_every=10", f"out={out}"]) == 0
    shutil.rmtree(out / "checkpoint")  # as a kill before step 10 leaves it
    capsys.readouterr()
    code, err = train(out, "steps=3", "checkpoint_every=10", capsys=capsys)
    assert code == 0, err
    assert "no checkpoint yet" in err and "dropped 3 metric rows (steps 0-2)" in err
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2, 3]


def test_3_a_missing_config_is_refused(run_copy, capsys):
    (run_copy / "config.yaml").unlink()
    before = snapshot(run_copy)
    code, err = train(run_copy, "algo=dr_grpo", "lr=0.01", "steps=10", capsys=capsys)
    assert_refused(code, err, before, run_copy, "8 metric rows and a checkpoint but no config.yaml")


def test_4_config_is_checked_before_completed(tmp_path, capsys):
    out = tmp_path / "done"
    assert train_main([*T, "steps=3", f"out={out}"]) == 0
    before = snapshot(out)
    code, err = train(out, "algo=dapo", "task.name=countdown", "lr=0.1", "steps=3", capsys=capsys)
    assert_refused(code, err, before, out, "different config")
    assert "already completed" not in err


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x80\x02garbage"])
def test_9_corrupt_empty_or_truncated_checkpoint_names_the_file(run_copy, capsys, content):
    path = run_copy / "checkpoint" / "state.pt"
    path.write_bytes(content if content else b"")
    before = snapshot(run_copy)
    code, err = train(run_copy, "steps=7", capsys=capsys)
    assert_refused(code, err, before, run_copy, str(path), "unreadable checkpoint")


def test_9_truncated_real_checkpoint(run_copy, capsys):
    path = run_copy / "checkpoint" / "state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(run_copy)
    code, err = train(run_copy, "steps=7", capsys=capsys)
    assert_refused(code, err, before, run_copy, "unreadable checkpoint")


def test_10_garbage_config_and_a_row_without_step(run_copy, capsys):
    original = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text("algo: [unclosed\n  - : :\n")
    before = snapshot(run_copy)
    code, err = train(run_copy, "steps=7", capsys=capsys)
    assert_refused(code, err, before, run_copy, "config.yaml: not valid YAML")

    (run_copy / "config.yaml").write_text(original)
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    lines[2] = json.dumps({k: v for k, v in json.loads(lines[2]).items() if k != "step"})
    (run_copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(run_copy)
    code, err = train(run_copy, "steps=7", capsys=capsys)
    assert_refused(code, err, before, run_copy, "metrics.jsonl:3: a row without an integer 'step'")


def test_11_a_moved_run_folder_resumes_and_says_what_it_recomputes(run_copy, tmp_path, capsys):
    moved = tmp_path / "elsewhere" / "R2"
    moved.parent.mkdir()
    run_copy.rename(moved)
    code, err = train(moved, "steps=8", capsys=capsys)
    assert code == 0, err
    assert "resumed" in err and "from step 4" in err and "dropped 3 metric rows (steps 5-7)" in err
    assert [r["step"] for r in read_jsonl(moved / "metrics.jsonl")] == list(range(9))


def test_11_status_of_one_run_and_of_a_garbage_status_file(run_copy):
    out = run_cli("status", str(run_copy)).stdout
    assert "R: 1 runs" in out and "running" in out and "7/7" in out
    (run_copy / "status.json").write_text("{garbage")
    out = run_cli("status", str(run_copy)).stdout
    assert "unknown (status.json unreadable)" in out and "7/" in out


def test_14_sigterm_finishes_the_step_and_checkpoints_it(tmp_path):
    """SIGTERM (SLURM preemption) mid-run: the step in flight ends, a checkpoint of it is saved
    (checkpoint_every is far away), status says preempted, and the rerun loses no step."""
    out = tmp_path / "pre"
    args = [*T, "steps=40", "checkpoint_every=100", "eval_every=100"]
    process = subprocess.Popen([sys.executable, "-m", "experiments", "train", *args, f"out={out}"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(r["step"] >= 2 for r in read_jsonl(out / "metrics.jsonl")):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    logged = max(r["step"] for r in read_jsonl(out / "metrics.jsonl"))
    assert 2 <= logged < 40, "the run ended before it could be signalled"
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    status = json.loads((out / "status.json").read_text())
    assert state["step"] == logged == status["step"] and status["state"] == "preempted"
    assert "SIGTERM" in status["error"] and "finishing step" in err
    result = run_cli("train", *args, f"out={out}")
    assert "dropped" not in result.stderr   # nothing was lost, so nothing is recomputed
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(41))

"""One run on several ranks (torchrun, gloo on CPU, FSDP2) computes what one process computes:
the same rollouts, metrics, groups and (within AdamW's amplification of float noise) weights;
and a 2-rank run killed mid-run resumes from its sharded checkpoint to the uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.distributed import World, shard_range
from experiments.runfolder import read_jsonl
from tests.conftest import REPO, run_cli


def torchrun(*args: str, ranks: int = 2, timeout: float = 900) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node RANKS -m experiments ARGS...` in a subprocess."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "-m", "experiments", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstderr:\n{result.stderr[-6000:]}")
    return result


def rows(run: Path) -> list[dict]:
    return read_jsonl(run / "metrics.jsonl")


def machine(key: str) -> bool:
    """Metrics that measure the machine or the process (time, memory held per rank), not the run."""
    return key.startswith(("time_", "mem_")) or key == "tokens_per_s"


def assert_same_run(one: Path, two: Path, *, updates: int, lr: float) -> None:
    """Same rollouts (samples.jsonl), groups.jsonl and metrics as the micro-batch rule asks
    (tests/experiments/test_train.py::test_micro_batches_give_the_same_run): 1e-5 relative up to
    step 1; later steps start from weights that differ in the last bits, which AdamW's
    per-coordinate scaling turns into steps of up to ~lr in coordinates whose gradient is ~0, so
    they are compared at 1e-4 absolute or 1e-2 relative and the final weights at 2 * lr * updates.
    Measured at tiny, 3 steps of 3 groups, GRPO: 2 ranks vs 1 rank, grad_norm 2.0e-3 relative,
    pg_loss 5.4e-5 absolute, weights 1.4e-3; one process with micro_batch_size=4 vs unsplit: 2.3e-3,
    4.0e-5 and 1.4e-3, the same noise floor. PPO (critic_lr 5x lr): grad_norm 7e-3 at step 3 on 2
    ranks, 1.9e-3 micro-batched. With a negligible lr the gradients agree to 1e-5
    (`test_two_ranks_sum_gradients_like_one_rank`)."""
    from safetensors.torch import load_file

    a_rows, b_rows = rows(one), rows(two)
    assert [r["step"] for r in a_rows] == [r["step"] for r in b_rows]
    for a, b in zip(a_rows, b_rows):
        for key, value in a.items():
            if machine(key):
                continue
            other = b[key]
            if isinstance(value, float) and other is not None:
                rel, abs_ = (1e-5, 1e-6) if a["step"] <= 1 else (1e-2, 1e-4)
                assert other == pytest.approx(value, rel=rel, abs=abs_), (a["step"], key, value, other)
            else:
                assert other == value, (a["step"], key)
    assert read_jsonl(one / "samples.jsonl") == read_jsonl(two / "samples.jsonl")  # the very same rollouts
    groups_a, groups_b = read_jsonl(one / "groups.jsonl"), read_jsonl(two / "groups.jsonl")
    assert len(groups_a) == len(groups_b)
    for a, b in zip(groups_a, groups_b):
        for key, value in a.items():
            close = isinstance(value, float) and b[key] is not None
            assert b[key] == (pytest.approx(value, rel=5e-3, abs=1e-4) if close else value), (a["step"], key)
    weights_a = load_file(one / "final" / "model.safetensors")
    weights_b = load_file(two / "final" / "model.safetensors")
    assert sorted(weights_a) == sorted(weights_b)
    gap = max((weights_a[k] - weights_b[k]).abs().max().item() for k in weights_a)
    assert gap <= 2 * lr * updates, gap


def test_shard_range_splits_groups_contiguously_in_rank_order():
    for count in range(0, 9):
        for size in (1, 2, 3):
            shares = [shard_range(count, World(rank=r, size=size)) for r in range(size)]
            assert shares[0][0] == 0 and shares[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
            assert max(hi - lo for lo, hi in shares) - min(hi - lo for lo, hi in shares) <= 1


GRPO = ["algo=grpo", "steps=3", "rollouts_per_step=24", "eval_every=3", "eval_size=8", "threads=1"]  # 3 groups: 2 + 1
PPO = ["algo=ppo", "steps=3", "rollouts_per_step=24", "eval_every=3", "eval_size=8", "threads=1"]  # batch_whiten


@pytest.mark.slow
@pytest.mark.parametrize("args", [GRPO, PPO], ids=["grpo", "ppo"])
def test_two_ranks_give_the_one_rank_run(tmp_path, warm_tiny, args):
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("train", *args, f"out={one}")
    torchrun("train", *args, f"out={two}")
    assert_same_run(one, two, updates=3 * 4, lr=2e-4)
    assert any(r["pg_loss"] for r in rows(one)[1:])  # a real update happened
    assert os.path.islink(two / "checkpoint") and (two / "checkpoint" / "dcp").is_dir()
    policy_bytes = [r["mem_policy_params_bytes"] for r in (rows(one)[-1], rows(two)[-1])]
    assert policy_bytes[1] < 0.75 * policy_bytes[0]  # each rank holds its shard


@pytest.mark.slow
def test_two_ranks_sum_gradients_like_one_rank(tmp_path, warm_tiny):
    # With a negligible lr the weights stay put, so every step's gradient norm, losses and critic
    # loss must agree tightly: FSDP averaging over ranks instead of summing would halve grad_norm.
    args = [*PPO, "lr=1e-12", "critic_lr=1e-12", "micro_batch_size=5"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("train", *args, f"out={one}")
    torchrun("train", *args, f"out={two}")
    for a, b in zip(rows(one)[1:], rows(two)[1:]):
        for key in ("grad_norm", "pg_loss", "value_loss", "loss", "adv_std", "critic_explained_var"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)


@pytest.mark.slow
def test_two_ranks_dynamic_sampling_and_batch_whitening(tmp_path, warm_tiny):
    # DAPO: rounds of prompts until enough groups are informative; later rounds may hold fewer
    # groups than ranks (a rank with no group samples a placeholder). Whitening over the batch.
    args = ["algo=dapo", "algo.scale=batch_whiten", "algo.filter_max_rounds=3", "steps=3", "rollouts_per_step=32",
            "eval_every=3", "eval_size=8", "threads=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("train", *args, f"out={one}")
    torchrun("train", *args, f"out={two}")
    assert_same_run(one, two, updates=3 * 4, lr=2e-4)
    assert any(r["filter_rounds"] > 1 for r in rows(one)[1:])  # dynamic sampling drew extra rounds


@pytest.mark.slow
def test_two_ranks_sigkill_then_resume_matches_uninterrupted(tmp_path, warm_tiny):
    args = ["algo=grpo", "steps=5", "checkpoint_every=2", "eval_every=5", "rollouts_per_step=16", "eval_size=8",
            "threads=1"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    torchrun("train", *args, f"out={reference}")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "experiments", "train",
         *args, f"out={killed}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and not any(r["step"] == 3 for r in rows(killed)):
        time.sleep(0.05)
    os.killpg(launcher.pid, signal.SIGKILL)  # torchrun and both ranks, at once
    launcher.wait()
    assert any(r["step"] == 3 for r in rows(killed)), "the run ended before it could be killed"
    assert json.loads((killed / "status.json").read_text())["state"] == "running"

    torchrun("train", *args, f"out={killed}")
    resumed, uninterrupted = rows(killed), rows(reference)
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4, 5]
    keep = lambda row: {k: v for k, v in row.items() if not machine(k)}  # noqa: E731
    assert [keep(r) for r in resumed] == [keep(r) for r in uninterrupted]
    assert read_jsonl(killed / "groups.jsonl") == read_jsonl(reference / "groups.jsonl")
    from safetensors.torch import load_file

    a, b = load_file(reference / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "status.json").read_text())["state"] == "completed"


@pytest.mark.slow
def test_local_sweep_cell_on_two_ranks(tmp_path, warm_tiny):
    from experiments import sweep

    grid = tmp_path / "two.yaml"
    grid.write_text("name: two\naxes:\n  algo: [grpo]\n")
    out = tmp_path / "sweep"
    assert sweep.main_sweep([str(grid), "executor=local", "local.ranks=2", f"out={out}", "steps=2",
                             "rollouts_per_step=16", "eval_size=8", "threads=1"]) == 0
    (run,) = [p for p in out.iterdir() if (p / "metrics.jsonl").exists()]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert os.path.islink(run / "checkpoint")  # the sharded layout: the cell ran on 2 ranks
    assert "torch.distributed.run --standalone --nproc-per-node 2" in next((out / "logs").iterdir()).read_text()


@pytest.mark.slow
def test_a_one_process_checkpoint_is_not_resumed_on_two_ranks(tmp_path, warm_tiny):
    out = tmp_path / "run"
    args = ["algo=grpo", "rollouts_per_step=16", "eval_size=8", "threads=1"]
    run_cli("train", *args, "steps=1", f"out={out}")
    before = (out / "status.json").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "experiments", "train",
         *args, "steps=2", f"out={out}"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode != 0 and "resume it on one process" in result.stderr
    assert (out / "status.json").read_text() == before  # nothing written

"""Sweeps against the real local SLURM (slurm/start.sh): array jobs, submitit launches, relaunch,
requeue mid-run (by `scontrol requeue` and by the time-limit signal), and slurm/sweep.sbatch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import sweep
from tests.slurm.conftest import FAST, REPO, cancel, squeue_state, wait_until

pytestmark = pytest.mark.slurm


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def status_of(run_dir: Path) -> dict:
    return sweep.read_json(run_dir / "status.json")


def write_grid(tmp_path: Path, name: str, axes: str, base: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{base}axes:\n{axes}")
    return path


def test_sbatch_array_job_completes(slurm_cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\necho \"task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID on $(hostname -s)\" "
                      f"> {tmp_path}/out_$SLURM_ARRAY_TASK_ID\n")
    result = subprocess.run(["sbatch", "--wait", "--array=0-2", "--job-name=rlvr-test-array",
                             f"--output={tmp_path}/%A_%a.log", str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    job = result.stdout.split()[-1]                     # "Submitted batch job 12"
    for task in range(3):
        assert (tmp_path / f"out_{task}").read_text() == f"task {task} of {job} on {slurm_cluster}\n"


@pytest.mark.slow
def test_two_task_cell_is_one_distributed_run(slurm_cluster, tmp_path):
    # slurm.tasks_per_node=2: one SLURM job of 2 tasks per cell; submitit's
    # TorchDistributedEnvironment makes them ranks 0 and 1 of one FSDP2 run (gloo on CPU).
    grid = write_grid(tmp_path, "two", "  algo: [grpo]\n")
    out = tmp_path / "sweep"
    args = [str(grid), "executor=slurm", f"out={out}", "steps=2", "slurm.time=10", "slurm.tasks_per_node=2", *FAST]
    assert sweep.main_sweep(args) == 0
    record = json.loads((out / "sweep.json").read_text())
    jobs = record["launches"][0]["jobs"]
    try:
        sweep.wait_slurm(jobs, poll_s=1)
    finally:
        cancel(*jobs.values())
    (cell,) = record["cells"]
    run = out / cell["folder"]
    assert status_of(run)["state"] == "completed", status_of(run)
    assert metric_steps(run) == [0, 1, 2]
    assert (run / "checkpoint").is_symlink() and (run / "checkpoint" / "rng-1.pt").exists()  # 2 ranks wrote it


@pytest.mark.slow
def test_srun_with_two_tasks_is_one_distributed_run(slurm_cluster, tmp_path):
    # Plain `srun -n 2 python -m experiments train`: no torchrun, RANK etc. come from SLURM's variables.
    out = tmp_path / "run"
    result = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", "--time=10", sys.executable, "-m",
                             "experiments", "train", "algo=grpo", "steps=2", f"out={out}", *FAST],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert status_of(out)["state"] == "completed"
    assert metric_steps(out) == [0, 1, 2]
    assert (out / "checkpoint" / "rng-1.pt").exists()


@pytest.mark.slow
def test_grid_on_slurm_completes_and_relaunch_skips(slurm_cluster, tmp_path, capsys):
    grid = write_grid(tmp_path, "tiny", "  algo: [grpo, dr_grpo]\n")
    out = tmp_path / "sweep"
    args = [str(grid), "executor=slurm", f"out={out}", "steps=3", "slurm.time=10", *FAST]
    assert sweep.main_sweep(args) == 0
    record = json.loads((out / "sweep.json").read_text())
    jobs = record["launches"][0]["jobs"]
    try:
        array_id = record["launches"][0]["array_job_id"]
        assert sorted(jobs.values()) == [f"{array_id}_0", f"{array_id}_1"]          # ONE array job
        names = subprocess.run(["squeue", "-h", "-r", "-o", "%j", "-j", array_id], capture_output=True, text=True)
        assert set(names.stdout.split()) <= {"rlvr-tiny"}                           # readable in squeue
        assert "#SBATCH --job-name=rlvr-tiny" in (out / "submitit" / f"{array_id}_submission.sh").read_text()
        assert "#SBATCH --time=10" in (out / "submitit" / f"{array_id}_submission.sh").read_text()
        sweep.wait_slurm(jobs, poll_s=1)
    finally:
        cancel(*jobs.values())
    for cell in record["cells"]:
        run = out / cell["folder"]
        status = status_of(run)
        assert (status["state"], status["step"], status["job_id"]) == ("completed", 3, cell["job_id"])
        assert metric_steps(run) == [0, 1, 2, 3]
    capsys.readouterr()

    assert sweep.main_sweep([*args, "--wait"]) == 0                                # relaunch: nothing to do
    printed = capsys.readouterr().out
    assert "2 cells, 0 to run, 2 skipped" in printed and printed.count("skip, completed (3/3 steps)") == 2
    assert json.loads((out / "sweep.json").read_text())["launches"][1]["jobs"] == {}

    assert sweep.main_status([str(out)]) == 0
    table = capsys.readouterr().out
    assert "tiny: 2 runs (2 completed)" in table and f"{array_id}_1" in table


def start_long_run(tmp_path: Path, steps: int) -> tuple[Path, str]:
    """Submit a one-cell grid of `steps` steps (checkpoint every 4); wait until it logged 8 rows."""
    grid = write_grid(tmp_path, "long", "  algo: [grpo]\n", base="base: {checkpoint_every: 4, eval_every: 1000}\n")
    out = tmp_path / "sweep"
    assert sweep.main_sweep([str(grid), "executor=slurm", f"out={out}", f"steps={steps}", "slurm.time=10", *FAST]) == 0
    record = json.loads((out / "sweep.json").read_text())
    run, job = out / record["cells"][0]["folder"], record["cells"][0]["job_id"]
    wait_until(lambda: (run / "metrics.jsonl").exists() and len(metric_steps(run)) >= 8, 180, "8 logged steps")
    return run, job


@pytest.mark.slow
def test_scontrol_requeue_mid_run_logs_every_step_once(slurm_cluster, tmp_path):
    steps = 60
    run, job = start_long_run(tmp_path, steps)
    try:
        first_pid = status_of(run)["pid"]
        assert len(metric_steps(run)) < steps + 1
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: squeue_state(job) is None, 300, f"job {job} to finish after its requeue", poll_s=1)
    finally:
        cancel(job)
    status = status_of(run)
    assert (status["state"], status["step"]) == ("completed", steps)
    assert status["pid"] != first_pid                                  # a second process finished the run
    assert metric_steps(run) == list(range(steps + 1))                 # every step exactly once
    log = (run.parent / "submitit" / f"{job}_0_log.err").read_text()
    assert "resumed" in log and "from step" in log


@pytest.mark.slow
def test_time_limit_signal_checkpoints_marks_preempted_and_requeues(slurm_cluster, tmp_path):
    """SLURM's time-limit signal (USR2, sent here by hand) makes submitit call CellJob.checkpoint():
    status.json says preempted, the job requeues itself and resumes from the last checkpoint."""
    steps = 60
    run, job = start_long_run(tmp_path, steps)
    seen = set()
    try:
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

        def finished():
            seen.add(status_of(run).get("state"))
            return squeue_state(job) is None

        wait_until(finished, 300, f"job {job} to requeue and finish", poll_s=0.2)
    finally:
        cancel(job)
    assert "preempted" in seen
    assert status_of(run)["state"] == "completed"
    assert metric_steps(run) == list(range(steps + 1))
    log = (run.parent / "submitit" / f"{job}_0_log.out").read_text()
    assert "Calling checkpoint method" in log and f"Requeued job {job}" in log


@pytest.mark.slow
def test_sbatch_template_runs_grid_cells(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path, "tiny", "  algo: [grpo, dr_grpo]\n")
    out = tmp_path / "sweep"
    overrides = [f"out={out}", "steps=3", *FAST]
    count = subprocess.run([sys.executable, "-m", "experiments", "sweep", str(grid), "--count"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert count == "2"
    result = subprocess.run(["sbatch", "--wait", f"--array=0-{int(count) - 1}", f"--output={tmp_path}/%A_%a.log",
                             "slurm/sweep.sbatch", str(grid), *overrides],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    job = result.stdout.split()[-1]
    folders = [c.folder for c in sweep.load_grid(grid).cells(dict(o.split("=", 1) for o in overrides[1:]))]
    for task, folder in enumerate(folders):                  # the same run folders as a submitit launch
        assert status_of(out / folder)["state"] == "completed"
        assert status_of(out / folder)["job_id"] == f"{job}_{task}"
        assert metric_steps(out / folder) == [0, 1, 2, 3]
        assert f"[sweep.sbatch] cell {task} exited with code 0" in (tmp_path / f"{job}_{task}.log").read_text()
    assert json.loads((out / "sweep.json").read_text())["name"] == "tiny"


@pytest.mark.slow
def test_sbatch_template_requeues_itself_near_the_time_limit(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path, "long", "  algo: [grpo]\n", base="base: {checkpoint_every: 4, eval_every: 1000}\n")
    out = tmp_path / "sweep"
    steps = 60
    result = subprocess.run(["sbatch", "--array=0", f"--output={tmp_path}/%A_%a.log", "slurm/sweep.sbatch", str(grid),
                             f"out={out}", f"steps={steps}", *FAST], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    job = f"{result.stdout.split()[-1]}_0"
    run = out / sweep.load_grid(grid).cells({"steps": str(steps), **dict(o.split("=", 1) for o in FAST)})[0].folder
    try:
        wait_until(lambda: (run / "metrics.jsonl").exists() and len(metric_steps(run)) >= 8, 180, "8 logged steps")
        # what SLURM sends 120 s before the time limit (--signal=B:USR1@120), to the batch shell
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
        wait_until(lambda: squeue_state(job) is None, 300, f"job {job} to requeue and finish", poll_s=1)
    finally:
        cancel(job)
    assert status_of(run)["state"] == "completed"
    assert metric_steps(run) == list(range(steps + 1))
    log = (tmp_path / f"{job}.log").read_text()
    assert "time limit near: stopping cell 0 and requeueing" in log and "(restart 1)" in log
    assert "resume: was preempted" in log

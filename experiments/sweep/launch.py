"""Launching cells: locally (a process pool, logs per cell) or on SLURM as one submitit array job,
what to skip or resume on a relaunch, and the sweep record (sweep.json)."""
from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from experiments.runfolder import RunFolder, atomic_write_text
from experiments.sweep.grid import SWEEP_FILE, Cell, Grid, GridError

REPO_ROOT = Path(__file__).resolve().parents[2]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON under a temporary name, then rename: a reader sees the old or the new file."""
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def lock_held(run_dir: Path) -> bool:
    """True when another process holds the flock on RUN/lock (train holds it while it writes)."""
    return RunFolder(run_dir).lock_held()


def mark_preempted(run_dir: str | os.PathLike, *, from_states: tuple[str, ...] = ("running",)) -> bool:
    """Set the run's state to `preempted` if it is one of `from_states` (RunFolder writes it)."""
    return RunFolder(run_dir).mark_preempted(
        from_states, "preempted or timed out in SLURM; requeued, resumes from the last checkpoint")


def plan_cell(cell: Cell, sweep_dir: Path, queued: dict[str, str]) -> tuple[str, str]:
    """What a launch does with a cell: ("skip", why) | ("resume", why) | ("new", "").

    `queued` maps the cell's folder name to a SLURM job of an earlier launch still in the queue."""
    run_dir = cell.run_dir(sweep_dir)
    status = read_json(run_dir / "status.json")
    state, step, steps = status.get("state"), status.get("step"), status.get("steps")
    if state == "completed" and step == steps:
        return "skip", f"completed ({step}/{steps} steps)"
    if lock_held(run_dir):
        return "skip", f"running elsewhere (pid {status.get('pid')} on {status.get('host')} holds {run_dir}/lock)"
    if cell.folder in queued:
        return "skip", f"still in SLURM's queue as job {queued[cell.folder]}"
    if state:
        return "resume", f"resume: was {state} at step {step}/{steps}"
    return "new", ""


# =========================================================================== the job
_PREEMPTED: set[str] = set()   # run folders whose job got SLURM's preemption/timeout signal


class CellJob(submitit.helpers.Checkpointable):
    """The callable submitit runs for one cell: `experiments.train.main(argv)` in the job process.

    On SLURM's timeout/preemption signal submitit calls `checkpoint()`, which marks the run
    `preempted` and returns this same callable to requeue; the rerun resumes from the run's
    last checkpoint (train drops metric rows written after it)."""

    def __init__(self, run_dir: str, argv: list[str]):
        self.run_dir = str(run_dir)
        self.argv = list(argv)

    def __call__(self) -> dict:
        from experiments.train import main

        try:
            code = main(self.argv)
        except SystemExit:
            # submitit exits the process after requeueing; train records that as failed.
            if self.run_dir in _PREEMPTED:
                mark_preempted(self.run_dir, from_states=("running", "failed"))
            raise
        status = read_json(Path(self.run_dir) / "status.json")
        if code != 0:
            raise RuntimeError(f"train exited with code {code} for {self.run_dir}: state "
                               f"{status.get('state')}, error {status.get('error')}")
        return status

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        _PREEMPTED.add(self.run_dir)
        mark_preempted(self.run_dir)
        return submitit.helpers.DelayedSubmission(CellJob(self.run_dir, self.argv), *args, **kwargs)

    def __repr__(self) -> str:
        return f"CellJob({self.run_dir!r})"


# =========================================================================== SLURM
@dataclass
class SlurmSettings:
    """`slurm.KEY=VALUE` on the sweep command line."""

    partition: str = field(default="", metadata={"help": "partition (default: the cluster's default)"})
    time: int = field(default=60, metadata={"help": "time limit per cell in minutes (submitit's timeout_min)"})
    gpus_per_task: int = field(default=0, metadata={"help": "GPUs per cell; N > 1 (tasks_per_node unset): the cell is "
                                                             "one run on N ranks per node, one GPU each (FSDP2)"})
    nodes: int = field(default=1, metadata={"help": "nodes per cell (one run across them)"})
    tasks_per_node: int = field(default=1, metadata={"help": "ranks per node: with nodes, more than one makes each "
                                                             "cell one run on nodes x tasks_per_node ranks (FSDP2)"})
    cpus_per_task: int = field(default=1, metadata={"help": "CPUs per cell"})
    mem: str = field(default="", metadata={"help": "memory per cell, sbatch --mem syntax (16G)"})
    array_parallelism: int = field(default=64, metadata={"help": "max array tasks running at once"})
    signal_delay_s: int = field(default=90, metadata={"help": "seconds before the time limit SLURM signals the "
                                                              "job to checkpoint and requeue"})
    max_num_timeout: int = field(default=3, metadata={"help": "requeues after a time-out before giving up "
                                                               "(preemptions do not count)"})
    extra: str = field(default="", metadata={"help": "extra sbatch flags, e.g. '--qos=high --account=lab'"})


def parse_extra_flags(text: str) -> dict[str, Any]:
    """'--qos=high --exclusive -A lab' -> {qos: high, exclusive: True, A: lab} for submitit's
    additional_parameters (which writes them back as #SBATCH --key=value)."""
    out: dict[str, Any] = {}
    tokens = shlex.split(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            raise GridError(f"slurm.extra: expected sbatch flags like --qos=high, got {token!r}")
        key, eq, value = token.lstrip("-").partition("=")
        if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            value, i = tokens[i + 1], i + 1
        out[key.replace("-", "_")] = value if (eq or value) else True
        i += 1
    return out


def slurm_available() -> bool:
    """sbatch is on PATH and sinfo answers."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def squeue_states() -> dict[str, str] | None:
    """{job id: state} of this user's queued and running jobs, array tasks one per id ('12_3');
    None when squeue is missing or does not answer."""
    if not shutil.which("squeue"):
        return None
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    states = {}
    for line in result.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state
    return states


def task_layout(settings: SlurmSettings) -> dict[str, int]:
    """submitit parameters for a cell's tasks: one task (with gpus_per_task GPUs), or one run on
    nodes x tasks_per_node ranks; gpus_per_task=N > 1 alone means N ranks per node, one GPU each."""
    ranks_per_node, gpus = settings.tasks_per_node, settings.gpus_per_task
    if ranks_per_node == 1 and gpus > 1:
        ranks_per_node, gpus = gpus, 1
    layout = {"slurm_gpus_per_task": gpus} if gpus else {}
    if settings.nodes > 1 or ranks_per_node > 1:
        layout.update(nodes=settings.nodes, tasks_per_node=ranks_per_node)
    return layout


def submit_slurm(cells: list[Cell], grid: Grid, sweep_dir: Path, settings: SlurmSettings) -> dict[str, str]:
    """Submit the cells as ONE array job through submitit; returns {cell folder: job id}."""
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster="slurm",
                                     slurm_max_num_timeout=settings.max_num_timeout)
    python_path = f"{REPO_ROOT}{os.pathsep}{os.environ['PYTHONPATH']}" if os.environ.get("PYTHONPATH") else str(REPO_ROOT)
    params: dict[str, Any] = dict(
        name=f"rlvr-{grid.name}",
        timeout_min=settings.time,
        cpus_per_task=settings.cpus_per_task,
        slurm_array_parallelism=settings.array_parallelism,
        slurm_signal_delay_s=settings.signal_delay_s,
        slurm_setup=[f"export PYTHONPATH={shlex.quote(python_path)}"],
    )
    if settings.partition:
        params["slurm_partition"] = settings.partition
    params.update(task_layout(settings))
    if settings.mem:
        params["slurm_mem"] = settings.mem
    if settings.extra:
        params["slurm_additional_parameters"] = parse_extra_flags(settings.extra)
    executor.update_parameters(**params)
    jobs = []
    with executor.batch():
        for cell in cells:
            argv = cell.argv(sweep_dir)
            jobs.append(executor.submit(CellJob(str(cell.run_dir(sweep_dir)), argv)))
    return {cell.folder: str(job.job_id) for cell, job in zip(cells, jobs)}


def wait_slurm(job_ids: dict[str, str], poll_s: float = 3.0) -> None:
    """Block until none of `job_ids` is in SLURM's queue, with a tqdm progress bar."""
    from tqdm import tqdm

    pending = dict(job_ids)
    misses = 0
    with tqdm(total=len(job_ids), desc="cells done", unit="cell") as bar:
        while pending:
            states = squeue_states()
            if states is None:
                misses += 1
                if misses in (1, 20):
                    print(f"warning: squeue does not answer; still waiting for {len(pending)} jobs", file=sys.stderr)
                time.sleep(poll_s)
                continue
            misses = 0
            for folder, job in list(pending.items()):
                if job not in states:
                    del pending[folder]
                    bar.update(1)
            counts: dict[str, int] = {}
            for job in pending.values():
                counts[states[job]] = counts.get(states[job], 0) + 1
            bar.set_postfix({k.lower(): v for k, v in sorted(counts.items())})
            if pending:
                time.sleep(poll_s)


# =========================================================================== local
def run_local(cells: list[Cell], sweep_dir: Path, parallel: int, on_start=None, ranks: int = 1) -> dict[str, int]:
    """Run each cell as a subprocess `python -m experiments train ...` (under torchrun on `ranks`
    ranks when more than one), at most `parallel` at once, logging to SWEEP_DIR/logs/<folder>.log.
    Returns {cell folder: exit code}."""
    from tqdm import tqdm

    log_dir = sweep_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO_ROOT)
    todo = list(cells)
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    codes: dict[str, int] = {}
    try:
        with tqdm(total=len(cells), desc="cells done", unit="cell") as bar:
            while todo or running:
                while todo and len(running) < parallel:
                    cell = todo.pop(0)
                    log = open(log_dir / f"{cell.folder}.log", "a")
                    launcher = (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
                                if ranks > 1 else [])
                    command = [sys.executable, *launcher, "-m", "experiments", "train", *cell.argv(sweep_dir)]
                    log.write(f"$ {shlex.join(command)}\n")
                    log.flush()
                    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                    running[cell.folder] = (process, log)
                    if on_start:
                        on_start(cell, process.pid)
                for folder, (process, log) in list(running.items()):
                    code = process.poll()
                    if code is not None:
                        log.close()
                        codes[folder] = code
                        del running[folder]
                        bar.update(1)
                        if code != 0:
                            bar.write(f"{folder}: train exited with code {code}; see {log_dir / folder}.log")
                if running:
                    time.sleep(0.5)
    finally:
        for folder, (process, log) in running.items():   # interrupted: stop the children (they save)
            process.send_signal(signal.SIGTERM)
        for folder, (process, log) in running.items():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
    return codes


# =========================================================================== sweep.json
def update_sweep_record(sweep_dir: Path, grid: Grid, cells: list[Cell], extra: dict[str, str],
                        launch: dict | None) -> dict:
    """Merge this grid's cells (by folder) and the launch into SWEEP_DIR/sweep.json."""
    path = sweep_dir / SWEEP_FILE
    record = read_json(path) or {"launches": [], "cells": []}
    known = {c["folder"]: c for c in record.get("cells", [])}
    for cell in cells:
        entry = known.setdefault(cell.folder, {})
        entry.update(index=cell.index, name=cell.name, id=cell.id, folder=cell.folder, overrides=cell.overrides)
    record.update(name=grid.name, grid_path=grid.path, grid=grid.raw, overrides=extra, sweep_dir=str(sweep_dir),
                  cells=list(known.values()))
    if launch is not None:
        record.setdefault("launches", []).append(launch)
        for folder, job in launch.get("jobs", {}).items():
            known[folder]["job_id"] = job
    atomic_write_json(path, record)
    return record


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# =========================================================================== sweep CLI

"""`python -m experiments sweep GRID.yaml ...`: parse the command line, then list, count, run one
cell, or launch the grid (see the package docstring)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import submitit

from experiments.sweep.grid import ACTIVE_SLURM_STATES, SWEEP_FILE, Cell, Grid, GridError, load_grid, validate_cells
from experiments.sweep.launch import (
    SlurmSettings, atomic_write_json, now, plan_cell, read_json, run_local, slurm_available, squeue_states,
    submit_slurm, update_sweep_record, wait_slurm,
)

SWEEP_USAGE = """usage: python -m experiments sweep GRID.yaml [key=value ...] [executor=local|slurm] [out=SWEEP_DIR]
                                  [--wait] [--dry-run] [--count] [--list] [--cell I]

  executor=slurm|local   default: slurm when sbatch is on PATH and sinfo answers, else local
  out=SWEEP_DIR          default: runs/<grid name>
  local.parallel=N       local: cells run at once (default 1)
  local.ranks=N          local: each cell one run on N ranks (torchrun --standalone --nproc-per-node N; FSDP2)
  slurm.KEY=VALUE        {slurm_keys}
  key=value              any other key: a train override applied to every cell (e.g. steps=5)
  --wait                 block until every cell ends (progress bar); local runs always block
  --dry-run              check the grid, print what each cell would do, submit nothing
  --count                print the number of cells (for sbatch --array=0-$((N-1)))
  --list                 print index, folder and overrides of each cell
  --cell I               run cell I in this process (used by slurm/sweep.sbatch)
"""


@dataclass
class SweepArgs:
    grid: str = ""
    executor: str = ""
    out: str = ""
    parallel: int = 1
    ranks: int = 1
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    overrides: dict[str, str] = field(default_factory=dict)
    wait: bool = False
    dry_run: bool = False
    count: bool = False
    list: bool = False
    cell: int | None = None


def parse_sweep_args(argv: list[str]) -> SweepArgs:
    """Split the sweep command line into sweep settings and train overrides (GridError on misuse)."""
    args = SweepArgs()
    slurm_fields = {f.name: f for f in fields(SlurmSettings)}
    items = list(argv)
    while items:
        item = items.pop(0)
        if item in ("--wait", "--dry-run", "--count", "--list"):
            setattr(args, item[2:].replace("-", "_"), True)
        elif item == "--cell" or item.startswith("--cell="):
            text = item.partition("=")[2] if "=" in item else (items.pop(0) if items else "")
            if not text.isdigit():
                raise GridError(f"--cell needs a cell index (0, 1, ...), got {text!r}")
            args.cell = int(text)
        elif item.startswith("-"):
            raise GridError(f"unknown option {item!r}\n{usage()}")
        elif "=" not in item:
            if args.grid:
                raise GridError(f"two grid files given ({args.grid!r}, {item!r}); overrides are key=value")
            args.grid = item
        else:
            key, _, value = item.partition("=")
            key = key.strip()
            if key == "executor":
                if value not in ("local", "slurm"):
                    raise GridError(f"executor={value!r}: valid: local, slurm")
                args.executor = value
            elif key == "out":
                args.out = value
            elif key in ("local.parallel", "local.ranks"):
                if not value.isdigit() or int(value) < 1:
                    raise GridError(f"{key}={value!r}: expected an integer >= 1")
                setattr(args, key[len("local."):], int(value))
            elif key.startswith("slurm."):
                name = key[len("slurm."):]
                if name not in slurm_fields:
                    raise GridError(f"unknown key {key!r}; valid: {', '.join('slurm.' + n for n in slurm_fields)}")
                if slurm_fields[name].type in ("int", int):
                    if not value.isdigit():
                        raise GridError(f"{key}={value!r}: expected a non-negative integer"
                                        f"{' (minutes)' if name == 'time' else ''}")
                    setattr(args.slurm, name, int(value))
                else:
                    setattr(args.slurm, name, value)
            elif key.startswith("local."):
                raise GridError(f"unknown key {key!r}; valid: local.parallel, local.ranks")
            else:
                args.overrides[key] = value
    if not args.grid:
        raise GridError(f"no grid file given\n{usage()}")
    if args.slurm.time < 1:
        raise GridError("slurm.time must be >= 1 (minutes)")
    return args


def usage() -> str:
    keys = ", ".join(f"slurm.{f.name}" for f in fields(SlurmSettings))
    return SWEEP_USAGE.format(slurm_keys=keys)


def main_sweep(argv: list[str]) -> int:
    """`python -m experiments sweep ...` (see SWEEP_USAGE). Returns a process exit code."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    try:
        args = parse_sweep_args(argv)
        grid = load_grid(args.grid)
        cells = grid.cells(args.overrides)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.count:
        print(len(cells))
        return 0
    sweep_dir = Path(args.out or Path("runs") / grid.name)
    if args.list:
        for cell in cells:
            print(f"{cell.index}\t{cell.folder}\t{' '.join(f'{k}={v}' for k, v in cell.overrides.items())}")
        return 0
    if args.cell is not None:
        return _run_one_cell(grid, cells, args, sweep_dir)
    try:
        validate_cells(cells, sweep_dir)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    executor = _choose_executor(args)
    if executor is None:
        return 2
    return _launch(grid, cells, args, sweep_dir, executor)


def _choose_executor(args: SweepArgs) -> str | None:
    """executor= as given, else slurm where SLURM answers; None (after saying why) if slurm was
    asked for and cannot be reached."""
    executor = args.executor or ("slurm" if slurm_available() else "local")
    if args.executor == "slurm" and not args.dry_run and not slurm_available():
        print("error: executor=slurm, but sbatch is not on PATH or sinfo does not answer; start a local SLURM "
              "with slurm/start.sh (as root), or use executor=local", file=sys.stderr)
        return None
    if not args.executor:
        print(f"[sweep] executor={executor} ({'sbatch found and sinfo answers' if executor == 'slurm' else 'no SLURM answering here'})")
    return executor


def _launch(grid: Grid, cells: list[Cell], args: SweepArgs, sweep_dir: Path, executor: str) -> int:
    """Plan every cell (new, resume or skip, saying why), then run or submit the ones to run."""
    queued = _queued_cells(sweep_dir)
    plan = {cell.folder: plan_cell(cell, sweep_dir, queued) for cell in cells}
    to_run = [cell for cell in cells if plan[cell.folder][0] != "skip"]
    print(f"[sweep] {grid.name}: {len(cells)} cells, {len(to_run)} to run, {len(cells) - len(to_run)} skipped; "
          f"folder {sweep_dir}")
    for cell in cells:
        action, why = plan[cell.folder]
        if action != "new":
            print(f"  {cell.folder}: {'skip, ' if action == 'skip' else ''}{why}")
    if args.dry_run:
        for cell in to_run:
            print(f"  would run {cell.folder}: {' '.join(f'{k}={v}' for k, v in cell.overrides.items())}")
        return 0
    sweep_dir.mkdir(parents=True, exist_ok=True)
    launch = {"submitted": now(), "executor": executor, "jobs": {},
              "skipped": {folder: why for folder, (action, why) in plan.items() if action == "skip"}}
    if not to_run:
        update_sweep_record(sweep_dir, grid, cells, args.overrides, launch)
        print("[sweep] nothing to run")
        return 0
    if executor == "slurm":
        code = _submit(grid, cells, to_run, args, sweep_dir, launch)
        if code is not None:
            return code
    else:
        _run_here(grid, cells, to_run, args, sweep_dir, launch)
    return _summarise(cells, sweep_dir)


def _submit(grid: Grid, cells: list[Cell], to_run: list[Cell], args: SweepArgs, sweep_dir: Path,
            launch: dict) -> int | None:
    """Submit `to_run` as one SLURM array job and record it; with --wait, wait for it (then None)."""
    try:
        jobs = submit_slurm(to_run, grid, sweep_dir, args.slurm)
    except (submitit.core.utils.FailedJobError, OSError, subprocess.CalledProcessError) as error:
        print(f"error: sbatch failed: {error}", file=sys.stderr)
        return 1
    launch["jobs"] = jobs
    array_id = next(iter(jobs.values())).split("_")[0]
    launch["array_job_id"] = array_id
    update_sweep_record(sweep_dir, grid, cells, args.overrides, launch)
    print(f"[sweep] submitted array job {array_id} ({len(jobs)} tasks) as rlvr-{grid.name}, "
          f"timeout {args.slurm.time} min")
    for folder, job in jobs.items():
        print(f"  {job}\t{folder}")
    print(f"[sweep] SLURM logs: {sweep_dir / 'submitit'}; progress: python -m experiments status {sweep_dir}")
    if not args.wait:
        return 0
    wait_slurm(jobs)
    return None


def _run_here(grid: Grid, cells: list[Cell], to_run: list[Cell], args: SweepArgs, sweep_dir: Path,
              launch: dict) -> None:
    """Run `to_run` on this machine, `args.parallel` at a time, recording each cell's pid."""
    update_sweep_record(sweep_dir, grid, cells, args.overrides, launch)

    def on_start(cell: Cell, pid: int) -> None:
        launch["jobs"][cell.folder] = f"local:{pid}"

    print(f"[sweep] running {len(to_run)} cells here, {args.parallel} at a time; logs in {sweep_dir / 'logs'}")
    try:
        run_local(to_run, sweep_dir, args.parallel, on_start=on_start, ranks=args.ranks)
    finally:
        record = read_json(sweep_dir / SWEEP_FILE)
        record["launches"][-1] = launch
        for entry in record["cells"]:
            if entry["folder"] in launch["jobs"]:
                entry["job_id"] = launch["jobs"][entry["folder"]]
        atomic_write_json(sweep_dir / SWEEP_FILE, record)


def _queued_cells(sweep_dir: Path) -> dict[str, str]:
    """{cell folder: job id} for jobs of earlier launches of this folder still in SLURM's queue
    (local launches respect them too)."""
    record = read_json(sweep_dir / SWEEP_FILE)
    if not any(launch.get("executor") == "slurm" for launch in record.get("launches", [])):
        return {}
    states = squeue_states() or {}
    queued = {}
    for launch in record.get("launches", []):
        for folder, job in launch.get("jobs", {}).items():
            if states.get(job) in ACTIVE_SLURM_STATES:
                queued[folder] = job
    return queued


def _summarise(cells: list[Cell], sweep_dir: Path) -> int:
    """Print how many cells ended in each state; 0 when all completed."""
    states: dict[str, list[str]] = {}
    for cell in cells:
        state = read_json(cell.run_dir(sweep_dir) / "status.json").get("state", "missing")
        states.setdefault(state, []).append(cell.folder)
    print("[sweep] " + ", ".join(f"{len(v)} {k}" for k, v in sorted(states.items())))
    for state, folders in states.items():
        if state != "completed":
            for folder in folders:
                print(f"  {state}: {folder}")
    return 0 if set(states) == {"completed"} else 1


def _run_one_cell(grid: Grid, cells: list[Cell], args: SweepArgs, sweep_dir: Path) -> int:
    """--cell I: run one cell here (for slurm/sweep.sbatch), with the same skip rules as a launch."""
    if not 0 <= args.cell < len(cells):
        print(f"error: --cell {args.cell} is out of range: {grid.path} has {len(cells)} cells (0..{len(cells) - 1})",
              file=sys.stderr)
        return 2
    cell = cells[args.cell]
    try:
        validate_cells([cell], sweep_dir)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not (sweep_dir / SWEEP_FILE).exists():
        try:   # many array tasks start at once: the first one writes the record
            fd = os.open(sweep_dir / f".{SWEEP_FILE}.init", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            update_sweep_record(sweep_dir, grid, cells, args.overrides, None)
        except FileExistsError:
            pass
    action, why = plan_cell(cell, sweep_dir, {})
    print(f"[sweep] cell {cell.index} of {grid.name}: {cell.folder}" + (f" ({why})" if why else ""))
    if action == "skip":
        return 0
    from experiments.train import main

    return main(cell.argv(sweep_dir))


# =========================================================================== status

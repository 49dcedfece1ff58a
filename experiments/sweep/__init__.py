"""Sweeps: a grid of `train` runs, run on this machine or submitted to SLURM as one array job.

    python -m experiments sweep experiments/grids/ppo_vs_grpo.yaml out=runs/ppo_vs_grpo [--wait]
    python -m experiments sweep GRID.yaml executor=local local.parallel=2 steps=5 out=/tmp/s
    python -m experiments sweep GRID.yaml --count | --list | --dry-run
    python -m experiments sweep GRID.yaml --cell 3 out=DIR        # one cell, in this process (slurm/sweep.sbatch)
    python -m experiments status runs/ppo_vs_grpo

A grid file (schema in slurm/README.md and atop each file in experiments/grids/) has a `base`
mapping of train overrides, `axes` (their product is the grid) and optional `zip` groups (keys
varied together). Each cell is one train run with a readable name (`grpo-scale=none-s3`) and an id
hashed from its overrides; its run folder is SWEEP_DIR/<name>-<id>. Launching the same grid into
the same SWEEP_DIR again skips completed runs, resumes failed or preempted ones, and skips cells
that another process is writing (RUN/lock is held) or that are still queued in SLURM.

SWEEP_DIR/
  sweep.json             the grid, its cells (name, id, overrides, run folder) and every launch
                         (submitted time, executor, job id per cell, skipped cells with the reason)
  <name>-<id>/           run folders (written by `train`, see docs/DESIGN.md)
  logs/<name>-<id>.log   stdout+stderr of local runs
  submitit/              submitit's job pickles and SLURM logs (%A_%a_0_log.out / .err)
"""
from experiments.sweep.cli import SweepArgs, main_sweep, parse_sweep_args, usage
from experiments.sweep.grid import (
    GRID_KEYS, ID_EXCLUDED_KEYS, SWEEP_FILE, Axis, Cell, Grid, GridError, cell_id_of, load_grid, parse_grid,
    validate_cells, value_text,
)
from experiments.sweep.launch import (
    CellJob, SlurmSettings, atomic_write_json, lock_held, mark_preempted, parse_extra_flags, plan_cell, read_json,
    run_local, slurm_available, squeue_states, submit_slurm, wait_slurm,
)
from experiments.sweep.status import format_table, main_status, status_rows

__all__ = [
    "GRID_KEYS", "ID_EXCLUDED_KEYS", "SWEEP_FILE", "Axis", "Cell", "CellJob", "Grid", "GridError", "SlurmSettings",
    "SweepArgs", "atomic_write_json", "cell_id_of", "format_table", "load_grid", "lock_held", "main_status",
    "main_sweep", "mark_preempted", "parse_extra_flags", "parse_grid", "parse_sweep_args", "plan_cell", "read_json",
    "run_local", "slurm_available", "squeue_states", "status_rows", "submit_slurm", "usage", "validate_cells",
    "value_text", "wait_slurm",
]

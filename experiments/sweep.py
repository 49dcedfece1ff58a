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
from __future__ import annotations

import fcntl
import getpass
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import submitit
import yaml

from experiments.runfolder import RunFolder

REPO_ROOT = Path(__file__).resolve().parents[1]
GRID_KEYS = ("name", "description", "base", "axes", "zip")
# Overrides that do not change what a run computes; they are left out of the cell id.
ID_EXCLUDED_KEYS = ("out", "name", "cache_dir", "threads")
# Keys the sweep sets per cell; a grid or the command line may not set them.
RESERVED_KEYS = ("out", "name")
LABEL_KEY = "label"           # in a zip group: the name part of each point instead of key=value
SWEEP_FILE = "sweep.json"
ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                       "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}


class GridError(ValueError):
    """A grid file or a sweep command line is malformed; the message names the file and line."""


# =========================================================================== grid file
@dataclass(frozen=True)
class Axis:
    """One varied dimension: a plain axis varies one key, a zip group several keys together.

    points[i] holds the override texts of point i, one per key (same order as `keys`)."""

    keys: tuple[str, ...]
    points: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...] | None    # zip groups with a `label` list: name part of each point
    lines: tuple[int, ...]            # line of each point in the grid file
    line: int                         # line of the axis (or zip group) itself
    source: str                       # "axes" or "zip group N", for messages


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    index: int                        # position in the grid (the SLURM array task id of --cell)
    name: str                         # readable, from the varied values: grpo-scale=none-s3
    id: str                           # 8 hex chars of sha1 over the overrides (minus ID_EXCLUDED_KEYS)
    overrides: dict[str, str]         # train key -> value text (base, command line, then the axes)

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.id}"

    def run_dir(self, sweep_dir: str | os.PathLike) -> Path:
        return Path(sweep_dir) / self.folder

    def argv(self, sweep_dir: str | os.PathLike) -> list[str]:
        """The `train` command line of this cell (out= and name= included)."""
        return [f"{k}={v}" for k, v in self.overrides.items()] + [
            f"name={self.name}", f"out={self.run_dir(sweep_dir)}"]


@dataclass
class Grid:
    name: str
    path: str
    description: str
    base: dict[str, str]
    base_lines: dict[str, int]
    axes: list[Axis]
    raw: dict                         # the file as plain data (saved in sweep.json)

    def cells(self, extra: dict[str, str] | None = None) -> list[Cell]:
        """The grid's cells: the product of the axes (the last axis varies fastest), each with
        base < command-line overrides < axis values. Raises GridError for duplicate cells."""
        extra = dict(extra or {})
        for key in extra:
            if key in RESERVED_KEYS:
                raise GridError(f"{key}= is set by the sweep for each cell; do not pass it")
            for axis in self.axes:
                if key in axis.keys:
                    raise GridError(f"{self.path}:{axis.lines[0]}: {key}={extra[key]} would override {axis.source} "
                                    f"key {key!r} that the grid varies; drop the override or edit the grid")
        varied = [k for axis in self.axes for k in axis.keys]
        order = sorted(range(len(self.axes)), key=lambda i: _name_rank(self.axes[i].keys))
        cells: list[Cell] = []
        seen: dict[str, tuple[int, tuple[int, ...]]] = {}
        for index, combo in enumerate(itertools.product(*(range(len(a.points)) for a in self.axes))):
            overrides = {**self.base, **extra}
            for axis, point in zip(self.axes, combo):
                overrides.update(zip(axis.keys, axis.points[point]))
            parts = []
            for axis_index in order:
                axis, point = self.axes[axis_index], combo[axis_index]
                if axis.labels is not None:
                    parts.append(axis.labels[point])
                else:
                    parts += [_name_part(k, v, varied) for k, v in zip(axis.keys, axis.points[point])]
            cell_id = cell_id_of(overrides)
            lines = tuple(axis.lines[point] for axis, point in zip(self.axes, combo))
            if cell_id in seen:
                other, other_lines = seen[cell_id]
                raise GridError(f"{self.path}:{lines[-1] if lines else 1}: cells {other} and {index} are the same run "
                                f"({' '.join(f'{k}={v}' for k, v in overrides.items())}); values at lines "
                                f"{other_lines} and {lines}")
            seen[cell_id] = (index, lines)
            name = _safe_name("-".join(parts) or self.name)
            if "algo" in overrides:   # the preset first, then the knobs over it, for readers
                overrides = {"algo": overrides.pop("algo"), **overrides}
            cells.append(Cell(index=index, name=name, id=cell_id, overrides=overrides))
        return cells


def cell_id_of(overrides: dict[str, str]) -> str:
    """8 hex chars of sha1 over the sorted overrides, without the bookkeeping keys (ID_EXCLUDED_KEYS)."""
    kept = sorted((k, v) for k, v in overrides.items() if k not in ID_EXCLUDED_KEYS)
    return hashlib.sha1(json.dumps(kept).encode()).hexdigest()[:8]


def _name_rank(keys: tuple[str, ...]) -> int:
    """Name parts: the algorithm first, the seed last, other axes in file order between."""
    return 0 if "algo" in keys else 2 if "seed" in keys else 1


def _name_part(key: str, value: str, varied: list[str]) -> str:
    """`algo`, `*.name` -> the value; `seed` -> s<value>; other keys -> <last component>=<value>
    (the full key where two varied keys share a last component)."""
    if key == "algo" or key.endswith(".name"):
        return value
    if key == "seed":
        return f"s{value}"
    short = key.rsplit(".", 1)[-1]
    if sum(k.rsplit(".", 1)[-1] == short for k in varied) > 1:
        short = key
    return f"{short}={value}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name)


def value_text(value: Any) -> str:
    """A YAML scalar as the train CLI reads it: true/false, null, 0.28, grpo."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _where(path: str, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping_items(node: yaml.Node, path: str, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """(key, key node, value node) of a YAML mapping, rejecting non-mappings and repeated keys."""
    if not isinstance(node, yaml.MappingNode):
        raise GridError(f"{_where(path, node)}: {what} must be a mapping of key: value")
    items, first_line = [], {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise GridError(f"{_where(path, key_node)}: {what} keys must be plain names")
        key = str(key_node.value)
        if key in first_line:
            raise GridError(f"{_where(path, key_node)}: {what} repeats key {key!r} (first at line {first_line[key]})")
        first_line[key] = key_node.start_mark.line + 1
        items.append((key, key_node, value_node))
    return items


class _GridParser:
    def __init__(self, text: str, path: str):
        self.path = path
        self.loader = yaml.SafeLoader(text)   # only its constructor is used, for scalars

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise GridError(f"{_where(self.path, node)}: {what} must be a single value (a string, number, "
                            "true/false or null), not a list or mapping")
        return value_text(self.loader.construct_object(node, deep=True))

    def flat_mapping(self, node: yaml.Node, what: str, prefix: str = "") -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Mapping items with nested mappings flattened into dotted keys: {algo: {eps_high: 0.28}}
        -> algo.eps_high."""
        out = []
        for key, key_node, value_node in _mapping_items(node, self.path, what):
            dotted = f"{prefix}{key}"
            if isinstance(value_node, yaml.MappingNode):
                out += self.flat_mapping(value_node, what, prefix=f"{dotted}.")
            else:
                out.append((dotted, key_node, value_node))
        return out

    def points(self, key: str, node: yaml.Node, where_name: str) -> tuple[list[str], list[int]]:
        if not isinstance(node, yaml.SequenceNode):
            raise GridError(f"{_where(self.path, node)}: {where_name} {key!r} must be a list of values, "
                            f"e.g. {key}: [a, b]")
        if not node.value:
            raise GridError(f"{_where(self.path, node)}: {where_name} {key!r} is empty; give at least one value")
        return ([self.scalar(item, f"each value of {where_name} {key!r}") for item in node.value],
                [item.start_mark.line + 1 for item in node.value])


def parse_grid(text: str, path: str = "<grid>") -> Grid:
    """Parse and check a grid file; every error names the file and line (GridError)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "?"
        raise GridError(f"{path}:{line}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if root is None:
        raise GridError(f"{path}:1: the grid file is empty; it needs at least `axes:` (see slurm/README.md)")
    parser = _GridParser(text, path)
    top = {key: (key_node, value_node) for key, key_node, value_node in _mapping_items(root, path, "the grid file")}
    for key, (key_node, _) in top.items():
        if key not in GRID_KEYS:
            raise GridError(f"{_where(path, key_node)}: unknown top-level key {key!r}; valid: {', '.join(GRID_KEYS)}")

    name = Path(path).stem
    if "name" in top:
        name = parser.scalar(top["name"][1], "name")
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise GridError(f"{_where(path, top['name'][1])}: name {name!r} may only hold letters, digits and ._+-")
    description = parser.scalar(top["description"][1], "description") if "description" in top else ""

    base: dict[str, str] = {}
    base_lines: dict[str, int] = {}
    if "base" in top and top["base"][1].tag != "tag:yaml.org,2002:null":
        for key, key_node, value_node in parser.flat_mapping(top["base"][1], "base"):
            if key in base:
                raise GridError(f"{_where(path, key_node)}: base sets {key!r} twice (first at line {base_lines[key]})")
            _check_key(key, key_node, path)
            base[key] = parser.scalar(value_node, f"base value of {key!r}")
            base_lines[key] = key_node.start_mark.line + 1

    axes: list[Axis] = []
    owner: dict[str, tuple[str, int]] = {k: ("base", line) for k, line in base_lines.items()}

    def claim(key: str, key_node: yaml.Node, source: str) -> None:
        _check_key(key, key_node, path)
        if key in owner:
            first, line = owner[key]
            raise GridError(f"{_where(path, key_node)}: key {key!r} is set by both {first} (line {line}) and {source}; "
                            "set it in one place")
        owner[key] = (source, key_node.start_mark.line + 1)

    if "axes" in top and top["axes"][1].tag != "tag:yaml.org,2002:null":
        for key, key_node, value_node in parser.flat_mapping(top["axes"][1], "axes"):
            claim(key, key_node, "axes")
            values, lines = parser.points(key, value_node, "axis")
            _reject_repeats([(v,) for v in values], lines, path, f"axis {key!r}")
            axes.append(Axis(keys=(key,), points=tuple((v,) for v in values), labels=None, lines=tuple(lines),
                             line=key_node.start_mark.line + 1, source="axes"))

    if "zip" in top and top["zip"][1].tag != "tag:yaml.org,2002:null":
        zip_node = top["zip"][1]
        if not isinstance(zip_node, yaml.SequenceNode):
            raise GridError(f"{_where(path, zip_node)}: zip must be a list of groups, "
                            "e.g. zip: [{algo.eps_high: [0.2, 0.28], label: [sym, higher]}]")
        for number, group_node in enumerate(zip_node.value, start=1):
            source = f"zip group {number}"
            columns: dict[str, list[str]] = {}
            column_lines: list[list[int]] = []
            labels = None
            for key, key_node, value_node in parser.flat_mapping(group_node, source):
                values, lines = parser.points(key, value_node, f"{source} key")
                if key == LABEL_KEY:
                    labels = tuple(_safe_name(v) for v in values)
                    _reject_repeats([(v,) for v in labels], lines, path, f"{source} label")
                else:
                    claim(key, key_node, source)
                    columns[key] = values
                column_lines.append(lines)
                lengths = {len(v) for v in [*columns.values(), *([labels] if labels else [])]}
                if len(lengths) > 1:
                    raise GridError(f"{_where(path, key_node)}: {source}: {key!r} has {len(values)} values but the "
                                    f"keys before it have {len(column_lines[0])}; zipped keys need equal lengths")
            if not columns:
                raise GridError(f"{_where(path, group_node)}: {source} varies no key")
            points = list(zip(*columns.values()))
            lines = [min(ls) for ls in zip(*column_lines)]
            _reject_repeats(points, lines, path, source)
            axes.append(Axis(keys=tuple(columns), points=tuple(points), labels=labels, lines=tuple(lines),
                             line=group_node.start_mark.line + 1, source=source))

    raw = yaml.safe_load(text)
    return Grid(name=name, path=path, description=description, base=base, base_lines=base_lines, axes=axes, raw=raw)


def _check_key(key: str, node: yaml.Node, path: str) -> None:
    if key in RESERVED_KEYS:
        raise GridError(f"{_where(path, node)}: {key!r} is set by the sweep for each cell; remove it from the grid")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise GridError(f"{_where(path, node)}: {key!r} is not a dotted config key like algo.eps_high")


def _reject_repeats(points: list[tuple[str, ...]], lines: list[int], path: str, what: str) -> None:
    first: dict[tuple[str, ...], int] = {}
    for point, line in zip(points, lines):
        if point in first:
            shown = ", ".join(point)
            raise GridError(f"{path}:{line}: {what} repeats {shown} (first at line {first[point]}): "
                            "the grid would hold duplicate cells")
        first[point] = line


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and parse a grid file (GridError naming file:line on any problem)."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise GridError(f"cannot read grid file {path}: {error.strerror}") from None
    return parse_grid(text, path)


def validate_cells(cells: list[Cell], sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """Build every cell's TrainConfig with experiments.config.load_config before anything runs.
    Returns {cell id: TrainConfig}; raises GridError listing the cells whose overrides are rejected,
    or cells that differ in their overrides but resolve to the same training config."""
    from experiments.config import load_config

    configs, errors = {}, {}
    for cell in cells:
        try:
            configs[cell.id] = load_config(cell.argv(sweep_dir))
        except ValueError as error:
            errors.setdefault(str(error), []).append(cell.name)
    if errors:
        lines = [f"  {message}  [cells: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}]"
                 for message, names in errors.items()]
        raise GridError("the train config rejects these overrides (nothing was submitted):\n" + "\n".join(lines))
    seen: dict[str, Cell] = {}
    for cell in cells:
        record = configs[cell.id].to_dict()
        for key in ID_EXCLUDED_KEYS:
            record.pop(key, None)
        record["algo"].pop("name", None)
        digest = hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
        if digest in seen:
            raise GridError(f"cells {seen[digest].name} and {cell.name} resolve to the same training config "
                            "(their overrides differ only in values the presets already have); drop one")
        seen[digest] = cell
    return configs


# =========================================================================== run folders
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON under a temporary name, then rename: a reader sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def lock_held(run_dir: Path) -> bool:
    """True when another process holds the flock on RUN/lock (train holds it while it writes)."""
    lock = run_dir / "lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def mark_preempted(run_dir: str | os.PathLike, *, from_states: tuple[str, ...] = ("running",)) -> bool:
    """Set status.json's state to `preempted` if it is one of `from_states` (atomically)."""
    path = Path(run_dir) / "status.json"
    status = read_json(path)
    if status.get("state") not in from_states:
        return False
    status.update(state="preempted", updated=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  error="preempted or timed out in SLURM; requeued, resumes from the last checkpoint")
    atomic_write_json(path, status)
    return True


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
    gpus_per_task: int = field(default=0, metadata={"help": "GPUs per cell"})
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
    if settings.gpus_per_task:
        params["slurm_gpus_per_task"] = settings.gpus_per_task
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
def run_local(cells: list[Cell], sweep_dir: Path, parallel: int, on_start=None) -> dict[str, int]:
    """Run each cell as a subprocess `python -m experiments train ...`, at most `parallel` at once,
    logging to SWEEP_DIR/logs/<folder>.log. Returns {cell folder: exit code}."""
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
                    command = [sys.executable, "-m", "experiments", "train", *cell.argv(sweep_dir)]
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
SWEEP_USAGE = """usage: python -m experiments sweep GRID.yaml [key=value ...] [executor=local|slurm] [out=SWEEP_DIR]
                                  [--wait] [--dry-run] [--count] [--list] [--cell I]

  executor=slurm|local   default: slurm when sbatch is on PATH and sinfo answers, else local
  out=SWEEP_DIR          default: runs/<grid name>
  local.parallel=N       local: cells run at once (default 1)
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
            elif key == "local.parallel":
                if not value.isdigit() or int(value) < 1:
                    raise GridError(f"local.parallel={value!r}: expected an integer >= 1")
                args.parallel = int(value)
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
                raise GridError(f"unknown key {key!r}; valid: local.parallel")
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
        configs = validate_cells(cells, sweep_dir)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    executor = args.executor or ("slurm" if slurm_available() else "local")
    if args.executor == "slurm" and not args.dry_run and not slurm_available():
        print("error: executor=slurm, but sbatch is not on PATH or sinfo does not answer; start a local SLURM "
              "with slurm/start.sh (as root), or use executor=local", file=sys.stderr)
        return 2
    if not args.executor:
        print(f"[sweep] executor={executor} ({'sbatch found and sinfo answers' if executor == 'slurm' else 'no SLURM answering here'})")

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
    else:
        update_sweep_record(sweep_dir, grid, cells, args.overrides, launch)

        def on_start(cell: Cell, pid: int) -> None:
            launch["jobs"][cell.folder] = f"local:{pid}"

        print(f"[sweep] running {len(to_run)} cells here, {args.parallel} at a time; logs in {sweep_dir / 'logs'}")
        try:
            run_local(to_run, sweep_dir, args.parallel, on_start=on_start)
        finally:
            record = read_json(sweep_dir / SWEEP_FILE)
            record["launches"][-1] = launch
            for entry in record["cells"]:
                if entry["folder"] in launch["jobs"]:
                    entry["job_id"] = launch["jobs"][entry["folder"]]
            atomic_write_json(sweep_dir / SWEEP_FILE, record)
    return _summarise(cells, sweep_dir)


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
def _last_rows(path: Path) -> tuple[dict, Any]:
    """(last metrics row, last non-null eval_accuracy) of a metrics.jsonl, tolerating torn lines."""
    last, eval_acc = {}, None
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return last, eval_acc
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        last = row
        if row.get("eval_accuracy") is not None:
            eval_acc = row["eval_accuracy"]
    return last, eval_acc


def _is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in ("status.json", "metrics.jsonl", "config.yaml"))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def status_rows(sweep_dir: Path, queue: dict[str, str] | None) -> list[dict]:
    """One row per run of a sweep folder: from sweep.json's cells, plus run folders found on disk."""
    record = read_json(sweep_dir / SWEEP_FILE)
    entries = {c["folder"]: c for c in record.get("cells", [])}
    if not entries and _is_run_folder(sweep_dir):  # a single run folder, not a sweep
        entries = {".": {"folder": "."}}
    for status_file in sorted(sweep_dir.glob("*/status.json")):
        entries.setdefault(status_file.parent.name, {"folder": status_file.parent.name})
    rows = []
    for folder, entry in sorted(entries.items(), key=lambda kv: (kv[1].get("index", 1 << 30), kv[0])):
        run_dir = sweep_dir / folder
        status = RunFolder(run_dir).status()
        last, eval_acc = _last_rows(run_dir / "metrics.jsonl")
        job = entry.get("job_id") or status.get("job_id")
        state = status.get("state", "not started" if not last else "unknown (no status.json)")
        if state == "unreadable":
            state = "unknown (status.json unreadable)"
        if state == "running" and not lock_held(run_dir) and status.get("host") in (None, os.uname().nodename):
            state = "running?"   # no process holds the lock: it died without saying so
        steps = status.get("steps") or entry.get("steps") or "?"
        step = status.get("step") if isinstance(status.get("step"), int) else last.get("step")
        rows.append({
            "run": sweep_dir.name if folder == "." else folder, "state": state,
            "step": f"{step or 0}/{steps}" if status or last else "-",
            "reward": _fmt(last.get("reward_mean")), "acc": _fmt(last.get("accuracy")),
            "eval_acc": _fmt(eval_acc), "job": job or "-",
            "slurm": (queue.get(str(job), "-") if queue is not None and job else "-"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers)]
    lines += ["  ".join(str(r[h]).ljust(widths[h]) for h in headers) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def main_status(argv: list[str]) -> int:
    """`python -m experiments status SWEEP_DIR|RUN_DIR`: a table of the sweep's runs (or of one run:
    state, step, last reward/accuracy, last eval accuracy, job id) and SLURM's view of each job."""
    if not argv or any(a in ("-h", "--help") for a in argv) or len(argv) > 1:
        print("usage: python -m experiments status SWEEP_DIR|RUN_DIR", file=sys.stderr if argv else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    sweep_dir = Path(argv[0])
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir} is not a folder; give the out= of a sweep or of a run", file=sys.stderr)
        return 2
    queue = squeue_states()
    rows = status_rows(sweep_dir, queue)
    record = read_json(sweep_dir / SWEEP_FILE)
    title = record.get("name", sweep_dir.name)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    print(f"{title}: {len(rows)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})"
          + ("" if queue is not None else "; SLURM not reachable"))
    print(format_table(rows))
    return 0

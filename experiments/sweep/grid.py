"""Grids: parse a grid YAML (line numbers in every error), expand its axes and zip groups into
cells, name each cell and derive its id from its overrides, and validate every cell's config."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GRID_KEYS = ("name", "description", "base", "axes", "zip", "figures")
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
    """Reads the parts of one grid file's YAML node tree, remembering which part set each key."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.loader = yaml.SafeLoader(text)   # only its constructor is used, for scalars
        self.owner: dict[str, tuple[str, int]] = {}  # key -> (base | axes | zip group N, line)

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

    def claim(self, key: str, key_node: yaml.Node, source: str) -> None:
        """`key` is set by `source` (base, axes or a zip group); a key set in two places is an error."""
        _check_key(key, key_node, self.path)
        if key in self.owner:
            first, line = self.owner[key]
            raise GridError(f"{_where(self.path, key_node)}: key {key!r} is set by both {first} (line {line}) and "
                            f"{source}; set it in one place")
        self.owner[key] = (source, key_node.start_mark.line + 1)

    def base(self, node: yaml.Node) -> tuple[dict[str, str], dict[str, int]]:
        """`base:` as {key: value text} and {key: line}."""
        base: dict[str, str] = {}
        lines: dict[str, int] = {}
        for key, key_node, value_node in self.flat_mapping(node, "base"):
            if key in base:
                raise GridError(f"{_where(self.path, key_node)}: base sets {key!r} twice (first at line {lines[key]})")
            _check_key(key, key_node, self.path)
            base[key] = self.scalar(value_node, f"base value of {key!r}")
            lines[key] = key_node.start_mark.line + 1
        self.owner.update({k: ("base", line) for k, line in lines.items()})
        return base, lines

    def axes(self, node: yaml.Node) -> list[Axis]:
        """`axes:`, one Axis per key (their product is the grid)."""
        axes = []
        for key, key_node, value_node in self.flat_mapping(node, "axes"):
            self.claim(key, key_node, "axes")
            values, lines = self.points(key, value_node, "axis")
            _reject_repeats([(v,) for v in values], lines, self.path, f"axis {key!r}")
            axes.append(Axis(keys=(key,), points=tuple((v,) for v in values), labels=None, lines=tuple(lines),
                             line=key_node.start_mark.line + 1, source="axes"))
        return axes

    def zip_groups(self, node: yaml.Node) -> list[Axis]:
        """`zip:`, one Axis per group of keys varied together (with optional labels)."""
        if not isinstance(node, yaml.SequenceNode):
            raise GridError(f"{_where(self.path, node)}: zip must be a list of groups, "
                            "e.g. zip: [{algo.eps_high: [0.2, 0.28], label: [sym, higher]}]")
        return [self._zip_group(group_node, f"zip group {number}") for number, group_node in enumerate(node.value, 1)]

    def _zip_group(self, group_node: yaml.Node, source: str) -> Axis:
        columns: dict[str, list[str]] = {}
        column_lines: list[list[int]] = []
        labels = None
        for key, key_node, value_node in self.flat_mapping(group_node, source):
            values, lines = self.points(key, value_node, f"{source} key")
            if key == LABEL_KEY:
                labels = tuple(_safe_name(v) for v in values)
                _reject_repeats([(v,) for v in labels], lines, self.path, f"{source} label")
            else:
                self.claim(key, key_node, source)
                columns[key] = values
            column_lines.append(lines)
            lengths = {len(v) for v in [*columns.values(), *([labels] if labels else [])]}
            if len(lengths) > 1:
                raise GridError(f"{_where(self.path, key_node)}: {source}: {key!r} has {len(values)} values but the "
                                f"keys before it have {len(column_lines[0])}; zipped keys need equal lengths")
        if not columns:
            raise GridError(f"{_where(self.path, group_node)}: {source} varies no key")
        points = list(zip(*columns.values()))
        lines = [min(ls) for ls in zip(*column_lines)]
        _reject_repeats(points, lines, self.path, source)
        return Axis(keys=tuple(columns), points=tuple(points), labels=labels, lines=tuple(lines),
                    line=group_node.start_mark.line + 1, source=source)


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
    present = {key: node for key, (_, node) in top.items() if node.tag != "tag:yaml.org,2002:null"}
    name = Path(path).stem
    if "name" in top:
        name = parser.scalar(top["name"][1], "name")
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise GridError(f"{_where(path, top['name'][1])}: name {name!r} may only hold letters, digits and ._+-")
    description = parser.scalar(top["description"][1], "description") if "description" in top else ""
    if "figures" in present:  # which figures of `python -m analysis figures` this sweep feeds
        node = present["figures"]
        if not isinstance(node, yaml.SequenceNode):
            raise GridError(f"{_where(path, node)}: figures must be a list of figure names, e.g. "
                            "figures: [fig2_curves, summary]")
        for item in node.value:
            if not re.fullmatch(r"[a-z0-9_]+", parser.scalar(item, "each figure name")):
                raise GridError(f"{_where(path, item)}: {item.value!r} is not a figure name (like fig2_curves)")
    base, base_lines = parser.base(present["base"]) if "base" in present else ({}, {})
    axes = parser.axes(present["axes"]) if "axes" in present else []
    axes += parser.zip_groups(present["zip"]) if "zip" in present else []
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

"""Load run folders into tidy DataFrames: one row per run x step (`load_runs`), one row per
run x step x group (`load_groups`), one row per run (`list_runs`).

A run folder (docs/DESIGN.md, "Run folder") holds config.yaml, metrics.jsonl, groups.jsonl and
status.json. Each loaded row carries the run's knobs as columns: the config flattened with dots
(`algo.name`, `algo.scale`, `model.name`, `seed`, ...), plus

    run        the run folder (absolute path, str)
    run_name   config `name` (the folder name when the config has none)
    algo       a readable algorithm label: the preset name plus every algo knob that differs
               within the loaded set and differs from the preset, e.g. "grpo" vs "grpo scale=none"
    state      status.json `state` (running|completed|failed|preempted; "unknown" when missing)

Reading is tolerant of runs being written: a torn last line (the writer was mid-line) is
ignored, an unparsable line elsewhere is skipped with a warning, and a step logged twice (a
run resumed from an earlier checkpoint) keeps its last row. Parsed runs are cached beside their
sources, in `RUN/.metrics.cache.arrow` (and `RUN/.groups.cache.arrow`): the table and the flattened
config, keyed by the source files' size and mtime, so a second load of an unchanged run reads one
small file instead of parsing YAML and JSON. Delete those files to clear the cache.
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.ipc  # noqa: F401 - pa.ipc
import yaml

from analysis.jsonl import _empty_table, read_jsonl
from analysis.labels import _attach_algo_labels
from experiments.metrics import GROUP_KEYS, METRIC_KEYS  # noqa: E402 - one list for writer and reader
# METRIC_KEYS: every metrics.jsonl row; all but `step` load as float64, all-NaN where a run does not
# log them. GROUP_KEYS: every groups.jsonl row; `step`, `group` load as int64, `degenerate` as bool.

ID_COLUMNS: tuple[str, ...] = ("run", "run_name", "algo", "experiment", "experiment.figures", "state")
"""Columns every loaded frame starts with, before the step data and the config knobs. `experiment`
is the run's sweep (its folder name): runs of two experiments are never pooled; figures named in
`experiment.figures` (the grid's `figures:`) are drawn from it."""

CONFIG_FILE, METRICS_FILE, GROUPS_FILE, STATUS_FILE = "config.yaml", "metrics.jsonl", "groups.jsonl", "status.json"
_PARSE_THREADS = min(4, os.cpu_count() or 1)
"""Threads parsing runs without a current cache (measured on 2 cores only; more than 4 cannot
gain much while YAML parsing holds the GIL)."""
CACHE_SUFFIX = ".cache.arrow"
"""Parsed runs are cached in RUN/.metrics.cache.arrow and RUN/.groups.cache.arrow (see "cache")."""
_CACHE_VERSION = 2
_META_CONFIG_KEY, _META_CONFIG, _META_TABLE_KEY = b"analysis.config_key", b"analysis.config", b"analysis.table_key"
_SKIP_DIRS = {"checkpoint", "__pycache__"}  # never hold run folders; skipping them keeps the walk fast

_METRIC_TYPES: dict[str, pa.DataType] = {k: pa.float64() for k in METRIC_KEYS} | {"step": pa.int64()}
_GROUP_TYPES: dict[str, pa.DataType] = {k: pa.float64() for k in GROUP_KEYS} | {
    "step": pa.int64(), "group": pa.int64(), "degenerate": pa.bool_()}


PathsLike = str | os.PathLike | Iterable[str | os.PathLike]


# ----------------------------------------------------------------------------- discovery


def find_runs(paths: PathsLike) -> list[Path]:
    """Run folders under `paths`: each path is a run folder or a folder searched recursively
    for folders holding both config.yaml and metrics.jsonl. Sorted, without duplicates.

    Raises FileNotFoundError for a path that does not exist.
    """
    found: dict[Path, None] = {}
    for raw in _as_path_list(paths):
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such file or directory; pass run folders or folders that contain them "
                f"(a run folder holds {CONFIG_FILE} and {METRICS_FILE})"
            )
        if path.is_file():
            if path.name not in (CONFIG_FILE, METRICS_FILE):
                raise ValueError(f"{path} is a file; pass a run folder (with {CONFIG_FILE} and {METRICS_FILE}) "
                                 "or a folder that contains run folders")
            path = path.parent
        for dirpath, dirnames, filenames in os.walk(path):
            if CONFIG_FILE in filenames and METRICS_FILE in filenames:
                found[Path(dirpath).resolve()] = None
                dirnames[:] = []  # a run folder holds no further runs
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
    return sorted(found)


def _as_path_list(paths: PathsLike) -> list[str | os.PathLike]:
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    out = list(paths)
    if not out:
        raise ValueError("no paths given; pass run folders or folders that contain them")
    return out


# ----------------------------------------------------------------------------- public loaders


def list_runs(paths: PathsLike) -> pd.DataFrame:
    """One row per run folder under `paths`: the id columns (run, run_name, algo, state),
    `status.step`, `status.error`, and the flattened config. Includes runs with no steps yet."""
    runs = find_runs(paths)
    infos = [_run_info(run, _listing_config(run)) for run in runs]
    _attach_algo_labels(infos)
    return _info_frame(infos)


def load_runs(paths: PathsLike, *, cache: bool = True) -> pd.DataFrame:
    """One row per run x logged step of every run under `paths` (see the module docstring).

    Columns: run, run_name, algo, state, then the metrics (`step` int64, every other key of
    `METRIC_KEYS` float64, NaN where the run logged null), then the config knobs. Metric keys a
    run does not log are NaN columns, so figures can rely on them. `cache=False` neither reads
    nor writes the cache.
    """
    infos, tables = _load_all(find_runs(paths), METRICS_FILE, _METRIC_TYPES, ("step",), cache=cache)
    _attach_algo_labels(infos)
    return _assemble(infos, tables, METRIC_KEYS)


def load_groups(paths: PathsLike, *, cache: bool = True, config_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run x step x group from groups.jsonl of every run under `paths`.

    Columns: run, run_name, algo, state, then `GROUP_KEYS` (step, group int64; degenerate bool;
    the rest float64), then the config knobs — all of them, or only `config_columns` (large
    group tables get big with ~50 object columns). Runs without groups.jsonl add no rows.
    """
    infos, tables = _load_all(find_runs(paths), GROUPS_FILE, _GROUP_TYPES, ("step", "group"), cache=cache)
    _attach_algo_labels(infos)
    if config_columns is not None:
        missing = [c for c in config_columns if not any(c in i["config"] for i in infos)] if infos else []
        if missing:
            raise KeyError(f"config column(s) {missing} not in any loaded run's config; "
                           f"available: {sorted({k for i in infos for k in i['config']})}")
        for info in infos:
            info["config"] = {k: v for k, v in info["config"].items() if k in config_columns}
    return _assemble(infos, tables, GROUP_KEYS)


# ----------------------------------------------------------------------------- per-run pieces


def _run_info(run: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The run's id columns, status (read afresh: it is not cached), experiment and flattened config."""
    status = read_status(run / STATUS_FILE)
    name = config.get("name")
    experiment, figures = experiment_of(run)
    return {
        "run": str(run),
        "run_name": str(name) if name is not None else run.name,
        "algo": "",
        "experiment": experiment,
        "experiment.figures": figures,
        "state": status.get("state") or "unknown",
        "status.step": status.get("step"),
        "status.error": status.get("error"),
        "config": config,
    }


def _sweep_record(folder: Path) -> tuple[str, str] | None:
    """(name, figures as a comma-separated list) of the sweep whose sweep.json sits in `folder`;
    read once per version of the file (keyed by its mtime), so a relaunch that rewrites it is seen."""
    path = folder / "sweep.json"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _read_sweep_record(path, mtime)


@functools.lru_cache(maxsize=4096)
def _read_sweep_record(path: Path, mtime_ns: int) -> tuple[str, str]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return path.parent.name, ""
    figures = (record.get("grid") or {}).get("figures") or []
    return path.parent.name, ",".join(str(f) for f in figures) if isinstance(figures, list) else ""


def experiment_of(run: Path) -> tuple[str, str]:
    """The experiment a run belongs to: its sweep's folder name (the folder holding sweep.json) and
    the figures that sweep's grid declares (`figures:`; '' = none declared). Runs outside any sweep
    share the experiment "—" (declaring no figures); their labels still keep apart any two that
    differ in more than the seed."""
    record = _sweep_record(run.parent.resolve())
    return record if record is not None else ("—", "")


def read_status(path: Path) -> dict[str, Any]:
    """status.json as a dict; {} when it is missing, unreadable or torn (with a warning)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        warnings.warn(f"{path}: cannot read ({err}); treating the run's state as unknown", stacklevel=3)
        return {}
    try:
        status = json.loads(text)
    except json.JSONDecodeError:
        warnings.warn(f"{path}: not valid JSON (being written?); treating the run's state as unknown", stacklevel=3)
        return {}
    return status if isinstance(status, dict) else {}


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algo": {"scale": "none"}, "seed": 1} -> {"algo.scale": "none", "seed": 1}.

    Lists become JSON strings so every value is hashable (groupby-able); empty dicts vanish.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def _parse_config(path: Path) -> dict[str, Any]:
    """config.yaml flattened (`flatten_config`), every value a JSON scalar."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        raw = yaml.load(path.read_text(), Loader=loader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}); the run folder is damaged — rewrite or remove it") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(raw).__name__}")
    config = flatten_config(raw)
    # Dates and other YAML scalars JSON cannot hold become strings.
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in config.items()}


# ----------------------------------------------------------------------------- cache
#
# One file per run and jsonl file, RUN/.metrics.cache.arrow (RUN/.groups.cache.arrow): an
# uncompressed Arrow IPC file holding the parsed table, with the flattened config and the stat
# keys (size, mtime) of both sources in its schema metadata. Measured on 1,000 runs (see
# benchmarks/load_runs.py), against the former parquet table + config.json in RUN/.cache/: IPC
# reads ~15x and writes ~10x faster than parquet for ~50 KB tables (the float metrics do not
# compress anyway), and one file beside the sources instead of two in a new folder saves a
# mkdir and a file create per run: 1-2 s of system time per 1,000 runs on the ext4 disk measured.


def _cache_path(run: Path, filename: str) -> Path:
    return run / f".{Path(filename).stem}{CACHE_SUFFIX}"


def _stat_key(path: Path) -> bytes:
    """The cache key of a source file: format version, size, mtime; b"missing" when absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return b"missing"
    return b"%d %d %d" % (_CACHE_VERSION, st.st_size, st.st_mtime_ns)


def _load_all(runs: list[Path], filename: str, types: dict[str, pa.DataType], unique_by: tuple[str, ...],
              *, cache: bool) -> tuple[list[dict[str, Any]], list[pa.Table]]:
    """Per run: its info (id columns, status, flattened config; `_run_info`) and its `filename`
    as an arrow table (empty when the file is missing). Config and table come from the cache
    where their source is unchanged; the rest is parsed, in `_PARSE_THREADS` threads (JSON
    parsing and file writes release the GIL: 1.3-1.6x faster on 2 cores; reading the cache
    does not gain, so it stays serial), and the cache rewritten."""
    # stat *before* reading: a later write only makes the key stale, never the cache wrong
    keys = [(_stat_key(run / CONFIG_FILE), _stat_key(run / filename)) for run in runs]
    loaded = [_read_cache(_cache_path(run, filename), *key) if cache else (None, None) for run, key in zip(runs, keys)]
    stale = [i for i, (config, table) in enumerate(loaded) if config is None or table is None]

    def refresh(i: int) -> tuple[dict[str, Any], pa.Table]:
        run, (config_key, table_key), (config, table) = runs[i], keys[i], loaded[i]
        if config is None:
            config = _parse_config(run / CONFIG_FILE)
        if table is None:
            table = read_jsonl(run / filename, types, unique_by=unique_by) if table_key != b"missing" else _empty_table(types)
        if cache:
            _write_cache(_cache_path(run, filename), config_key, config, table_key, table)
        return config, table

    workers = min(len(stale), _PARSE_THREADS)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            for i, result in zip(stale, pool.map(refresh, stale)):
                loaded[i] = result
    else:
        for i in stale:
            loaded[i] = refresh(i)
    return [_run_info(run, config) for run, (config, _) in zip(runs, loaded)], [table for _, table in loaded]


def _listing_config(run: Path) -> dict[str, Any]:
    """The run's flattened config for `list_runs`: from the metrics cache when current (read
    only, so listing never writes)."""
    config, _ = _read_cache(_cache_path(run, METRICS_FILE), _stat_key(run / CONFIG_FILE), None)
    return config if config is not None else _parse_config(run / CONFIG_FILE)


def _read_cache(cache_file: Path, config_key: bytes, table_key: bytes | None
                ) -> tuple[dict[str, Any] | None, pa.Table | None]:
    """(config, table) from `cache_file`, each None unless it was cached under the given key
    (the table is not read when `table_key` is None). A missing or damaged file gives (None,
    None); it is then rewritten."""
    try:
        with open(cache_file, "rb") as f:
            data = f.read()  # one read, then parse from memory: faster than a memory map for small files
        reader = pa.ipc.open_file(pa.py_buffer(data))
        meta = reader.schema.metadata or {}
        config = json.loads(meta[_META_CONFIG]) if meta.get(_META_CONFIG_KEY) == config_key else None
        table = None
        if table_key is not None and meta.get(_META_TABLE_KEY) == table_key:
            table = reader.read_all().replace_schema_metadata(None)
    except (OSError, ValueError, KeyError, pa.ArrowException):  # ArrowInvalid is a ValueError
        return None, None
    return (config if isinstance(config, dict) else None), table


def _write_cache(cache_file: Path, config_key: bytes, config: dict[str, Any], table_key: bytes,
                 table: pa.Table) -> None:
    metadata = {_META_CONFIG_KEY: config_key, _META_CONFIG: json.dumps(config).encode(), _META_TABLE_KEY: table_key}
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema.with_metadata(metadata)) as writer:
        writer.write_table(table)
    _write_atomic(cache_file, sink.getvalue())


_cache_write_warned = False


def _write_atomic(path: Path, data: bytes | pa.Buffer) -> None:
    """Write via a temporary file and rename, so a concurrent reader never sees half a file.
    A read-only run folder only costs the cache (one warning), never the load."""
    global _cache_write_warned
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if not _cache_write_warned:
            warnings.warn(f"cannot write the analysis cache {path} ({err}); loading without a cache", stacklevel=5)
            _cache_write_warned = True


# ----------------------------------------------------------------------------- assembly


def _info_frame(infos: list[dict[str, Any]]) -> pd.DataFrame:
    records = []
    for info in infos:
        record = {c: info[c] for c in ID_COLUMNS}
        record["status.step"] = info["status.step"]
        record["status.error"] = info["status.error"]
        for k, v in info["config"].items():
            record.setdefault(k, v)
        records.append(record)
    columns = [*ID_COLUMNS, "status.step", "status.error"]
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=columns)


def _assemble(infos: list[dict[str, Any]], tables: list[pa.Table], data_keys: Sequence[str]) -> pd.DataFrame:
    """Concatenate the per-run tables and broadcast each run's id and config columns to its rows."""
    counts = np.array([t.num_rows for t in tables], dtype=np.int64)
    if not tables or counts.sum() == 0:
        data = pd.DataFrame({k: pd.Series(dtype="int64" if k in ("step", "group") else
                                          "bool" if k == "degenerate" else "float64") for k in data_keys})
        ids = pd.DataFrame({c: pd.Series(dtype=object) for c in ID_COLUMNS})
        return pd.concat([ids, data], axis=1)
    data = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    data_names = set(data.columns)
    records = []
    for info in infos:
        record = {c: info[c] for c in ID_COLUMNS}
        for k, v in info["config"].items():
            # a config field named like a metric (or an id column) keeps its value under "config.<key>"
            record["config." + k if (k in data_names or k in record) else k] = v
        records.append(record)
    per_run = pd.DataFrame.from_records(records)
    ids = per_run.iloc[np.repeat(np.arange(len(per_run)), counts)].reset_index(drop=True)
    id_part = ids[list(ID_COLUMNS)]
    config_part = ids.drop(columns=list(ID_COLUMNS))
    return pd.concat([id_part, data, config_part], axis=1)

"""How every figure looks: preset colours and order, panel titles per (task, model), legends laid
out in rows below their panels, byte formatting, saving png/pdf/csv together."""
from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

class SkipFigure(Exception):
    """The loaded runs cannot support this figure; the message says which runs it needs."""


# ----------------------------------------------------------------------------- style

PRESETS = ("ppo", "grpo", "dr_grpo", "dapo", "rloo", "gspo")
PRESET_COLORS: dict[str, str] = {  # seaborn "colorblind"; fixed so every figure agrees
    "ppo": "#0173b2",      # blue
    "grpo": "#de8f05",     # orange
    "dr_grpo": "#029e73",  # green
    "dapo": "#cc78bc",     # purple
    "rloo": "#ca9161",     # brown
}
# variants: black and sky blue first, far from every preset's hue (vermillion next to GRPO's orange
# made "grpo" and a GRPO variant hard to tell apart)
_EXTRA_COLORS = ("#000000", "#56b4e9", "#d55e00", "#949494", "#ece133", "#fbafe4",
                 "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")
SIZE_ORDER = ("tiny", "small", "base", "medium", "large")  # experiments/models/presets.py size presets
SETTING_KEYS = ("experiment", "task.name", "model.name")  # runs differing here are never averaged together
STEP_LABEL = "training step"
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"),
       "axes.titleweight": "bold", "legend.frameon": False, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
       "pdf.fonttype": 42}
_DPI = 200


def algo_order(labels: Sequence[str]) -> list[str]:
    """Presets in a fixed order (ppo, grpo, dr_grpo, dapo, rloo, gspo), each followed by its variants."""
    def key(label: str):
        base = label.split(" ", 1)[0]
        return (PRESETS.index(base) if base in PRESETS else len(PRESETS), base, label != base, label)
    return sorted(dict.fromkeys(labels), key=key)


def algo_palette(labels: Sequence[str]) -> dict[str, str]:
    """One colour per algorithm label: the presets' fixed colours, then the extras in label order.

    Build it once from every label of the loaded set and pass it to each figure, so a variant
    such as "grpo scale=none" keeps its colour across figures."""
    palette, extra = {}, 0
    for label in algo_order(labels):
        if label in PRESET_COLORS:
            palette[label] = PRESET_COLORS[label]
        else:
            palette[label] = (_EXTRA_COLORS[extra] if extra < len(_EXTRA_COLORS)
                              else sns.color_palette("husl", extra + 1).as_hex()[-1])
            extra += 1
    return palette


def _save(fig: plt.Figure, out_dir: str | Path, name: str, data: pd.DataFrame) -> pd.DataFrame:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=_DPI)
    fig.savefig(out / f"{name}.pdf")
    plt.close(fig)
    data = data.reset_index(drop=True)
    data.to_csv(out / f"{name}.csv", index=False)
    return data


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SkipFigure(f"needs the column(s) {missing} in the runs (are these run folders from experiments/train.py?)")


def _settings(df: pd.DataFrame) -> pd.DataFrame:
    """Add the SETTING_KEYS columns where a config lacks them, so grouping never drops rows."""
    df = df.copy()
    for key in SETTING_KEYS:
        if key not in df.columns:
            df[key] = "—"
        df[key] = df[key].fillna("—").astype(str)
    return df


def _setting_title(experiment: str, task: str, model: str) -> str:
    return f"{experiment} · task {task} · model {model}" if experiment not in ("", "—") else f"task {task} · model {model}"


def _setting_sort_key(setting: tuple[str, str, str]) -> tuple:
    experiment, task, model = setting
    return (experiment, task, SIZE_ORDER.index(model) if model in SIZE_ORDER else len(SIZE_ORDER), model)


_LEGEND_IN_PER_CHAR = 0.075  # legend text width per character at the paper context's legend font
_LEGEND_HANDLE_IN = 0.5      # handle, gap and column spacing per legend column
_LEGEND_IN_PER_LINE = 0.19   # height of one legend text line
_TITLE_IN_PER_CHAR = 0.075   # bold panel-title width per character


def _legend_columns(labels: Sequence[str], width_in: float) -> int:
    """As many legend columns as fit the figure width (about 0.075 in per character + handle)."""
    longest = max((len(str(label)) for label in labels), default=1)
    return max(1, min(len(labels), int(width_in / (_LEGEND_IN_PER_CHAR * longest + _LEGEND_HANDLE_IN))))


def _label_pieces(word: str) -> list[str]:
    """A word split after each "=", the places a long variant label may break
    ("aggregation=seq_mean_token_sum_norm" -> "aggregation=", "seq_mean_token_sum_norm")."""
    return re.findall(r"[^=]*=|[^=]+", word) or [word]


def _wrap_label(label: str, chars: int) -> str:
    """`label` on lines of at most `chars` characters, broken at spaces and, inside a word longer
    than a line, after an "=" (a piece longer than a line stays whole)."""
    tokens: list[tuple[str, str]] = []  # (text, separator before it)
    for word in str(label).split():
        parts = _label_pieces(word) if len(word) > chars else [word]
        tokens += [(part, "" if j else " ") for j, part in enumerate(parts)]
    lines: list[str] = []
    for text, sep in tokens:
        if lines and len(lines[-1]) + len(sep) + len(text) <= chars:
            lines[-1] += sep + text
        else:
            lines.append(text)
    return "\n".join(lines)


def _legend_layout(labels: Sequence[str], width_in: float, *, max_ncol: int = 4) -> tuple[int, list[str], int]:
    """Columns, labels wrapped to fit a column, and the text lines of the tallest column, for a
    legend of `labels` spanning `width_in` inches (filled row by row, see _row_major).

    Long variant labels ("grpo aggregation=seq_mean_token_sum_norm norm_len=8 scale=none") would
    give a one-column legend as tall as the panels; wrapping them lets two or more columns fit.
    Picks the layout with the fewest lines in its tallest column plus half a line per extra line
    that wrapping adds (a legend of few, long entries reads better than one of many, chopped
    ones), then the most columns."""
    labels = [str(label) for label in labels]
    if not labels:
        return 1, [], 0
    longest_piece = max(len(piece) for label in labels for word in label.split() for piece in _label_pieces(word))
    best: tuple[tuple[int, int, int], int, list[str], int] | None = None
    for ncol in range(1, min(len(labels), max_ncol) + 1):
        chars = int((width_in / ncol - _LEGEND_HANDLE_IN) / _LEGEND_IN_PER_CHAR)
        if ncol > 1 and chars < max(longest_piece, 16):
            break
        wrapped = [_wrap_label(label, max(chars, longest_piece)) for label in labels]
        lines = [w.count("\n") + 1 for w in wrapped]
        tallest = max(sum(lines[c::ncol]) for c in range(ncol))  # entry i sits in column i % ncol
        key = (tallest + 0.5 * (sum(lines) - len(lines)), -ncol)  # each wrapped line counts half a row
        if best is None or key < best[0]:
            best = (key, ncol, wrapped, tallest)
    _, ncol, wrapped, tallest = best
    return ncol, wrapped, tallest


def _row_major(items: Sequence, ncol: int) -> list:
    """Reorder legend entries so they read left to right, row by row (matplotlib fills columns)."""
    rows = -(-len(items) // ncol)
    grid = [list(items[r * ncol:(r + 1) * ncol]) for r in range(rows)]
    return [grid[r][c] for c in range(ncol) for r in range(rows) if c < len(grid[r])]


def _fmt_bytes_unit(max_bytes: float) -> tuple[float, str]:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if max_bytes >= scale:
            return scale, unit
    return 1.0, "bytes"


def _fmt_bytes(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    scale, unit = _fmt_bytes_unit(value)
    return f"{value / scale:.3g} {unit}"


def _is_on(value) -> bool:
    """Truthiness of a config knob as the trainer may write it (bool, 0/1, "true", "off", None)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "off", "none", "no")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _runs_with(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of the runs that logged `metric` at least once (finite)."""
    if metric not in df.columns:
        return df.iloc[0:0]
    has = df.groupby("run")[metric].transform(lambda s: np.isfinite(s.to_numpy(dtype=float)).any())
    return df[has.astype(bool)]


def _preset_runs(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The runs labelled exactly `name` (the preset as published); if there are none, every run
    whose algo.name is `name` (its variants)."""
    exact = df[df["algo"] == name]
    return exact if len(exact) else df[df["algo.name"] == name]


def _seed_counts(df: pd.DataFrame) -> str:
    counts = _settings(df).groupby([*SETTING_KEYS, "algo"])["run"].nunique()
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def _finish(fig: plt.Figure, title: str, handles: dict[str, object], *, legend_title: str | None = "algorithm",
            note: str | None = None) -> plt.Figure:
    """Suptitle (wrapped to the figure width), one legend for all panels (below them, reading
    left to right, or beside a single column of panels), an optional note at the very bottom,
    then tight_layout. The figure grows to make room, so the panels keep their size."""
    width, height = fig.get_size_inches()
    n_cols = fig.axes[0].get_gridspec().ncols if fig.axes else 1
    note_in = 0.22 if note else 0.0
    beside = bool(handles) and n_cols == 1
    right_in = legend_in = 0.0
    if beside:
        right_in = 0.075 * max(len(str(k)) for k in handles) + 0.7
    wrapped = textwrap.fill(title, int((width + right_in) * 72 / (_RC["font.size"] * 0.56)))
    top_in = 0.08 + 0.17 * wrapped.count("\n")
    if handles and not beside:
        ncol, names, n_lines = _legend_layout(list(handles), width)
        legend_in = 0.12 + _LEGEND_IN_PER_LINE * n_lines + (0.2 if legend_title else 0.0)
    total_w, total_h = width + right_in, height + top_in + legend_in + note_in
    fig.set_size_inches(total_w, total_h)
    if beside:
        fig.legend(list(handles.values()), list(handles.keys()), loc="center left", title=legend_title,
                   bbox_to_anchor=(width / total_w, (note_in + height / 2) / total_h))
    elif handles:
        fig.legend(_row_major(list(handles.values()), ncol), _row_major(names, ncol),
                   loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, note_in / total_h), title=legend_title)
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=7.5, color="0.3")
    fig.suptitle(wrapped, y=1.0, va="top")
    fig.tight_layout(rect=(0, (legend_in + note_in) / total_h, 1 - right_in / total_w, 1 - top_in / total_h))
    return fig

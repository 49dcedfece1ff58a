"""Every figure of the comparison, from loaded runs (seaborn/matplotlib, Agg backend).

Each `fig_*` function takes the frame of `analysis.load_runs` (fig_std_norm also the frame of
`load_groups`), draws one figure, saves `<name>.png`, `<name>.pdf` and the plotted numbers as
`<name>.csv` in `out_dir`, and returns the plotted numbers as a tidy DataFrame. A figure that
the loaded runs cannot support raises `SkipFigure` with a message naming the runs it needs.

    fig1_memory         peak memory by phase per algorithm and model size, with the bytes
                        held by parameters, gradients and optimizer states
    fig2_curves         reward and eval accuracy over training, mean and 95 % interval over seeds
    fig3_std_norm       the std-normalization gain 1/(std+eps) against success rate (theory for
                        K = 4, 8, 16 and the measured groups), and the share of gradient weight
                        by success rate with and without std-normalization
    fig4_degenerate     share of degenerate groups with and without dynamic sampling
    fig5_length         response length (all / correct / incorrect), GRPO vs Dr.GRPO
    fig6_clip           clip fractions and entropy for eps_high 0.2 vs 0.28
    fig7_critic         PPO's critic explained variance beside the PPO and GRPO reward curves
    fig8_k4_advantages  the lesson's K = 4 panel: advantages of example reward vectors,
                        group_std vs none (computed with algos.group_advantages)
    summary.md          per algorithm: final accuracy IQM with interval, P(improvement over
                        grpo), steps to threshold, peak memory, tokens per second

`make_all(run_paths, out_dir)` draws them all and reports what it skipped and why.
"""
from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.stats import (  # noqa: E402
    aggregate_over_seeds,
    bootstrap_mean_ci,
    final_values,
    iqm_ci,
    probability_of_improvement_ci,
    steps_to_threshold,
)

__all__ = [
    "SkipFigure", "PRESET_COLORS", "algo_palette", "algo_order",
    "fig_memory", "fig_curves", "fig_std_norm", "fig_degenerate", "fig_length", "fig_clip",
    "fig_critic", "fig_k4_advantages", "summary_table", "write_summary", "theory_std_gain",
    "FIGURES", "make_all",
]


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
_EXTRA_COLORS = ("#d55e00", "#56b4e9", "#949494", "#ece133", "#fbafe4", "#000000",
                 "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")
SIZE_ORDER = ("tiny", "small", "base", "medium", "large")  # experiments/models.py size presets
SETTING_KEYS = ("task.name", "model.name")  # runs differing here are never averaged together
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


def _setting_title(task: str, model: str) -> str:
    return f"task {task} · model {model}"


def _setting_sort_key(setting: tuple[str, str]) -> tuple:
    task, model = setting
    return (task, SIZE_ORDER.index(model) if model in SIZE_ORDER else len(SIZE_ORDER), model)


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


# ----------------------------------------------------------------------------- curves


def _curve_data(runs: pd.DataFrame, metrics: Sequence[str], *, smooth: int, n_boot: int,
                extra_by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean and 95 % interval over seeds per (task, model, algo[, extra_by]) and step, for each metric."""
    runs = _settings(runs)
    by = [*SETTING_KEYS, "algo", *extra_by]
    parts = []
    for metric in metrics:
        agg = aggregate_over_seeds(runs, metric, by=by, smooth=smooth, n_boot=n_boot)
        agg.insert(0, "metric", metric)
        parts.append(agg)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _draw_curves(ax: plt.Axes, data: pd.DataFrame, palette: dict[str, str], *,
                 legend_names: dict[str, str] | None = None) -> list[Line2D]:
    """Mean line and interval band per algorithm. Lines drawn first are drawn wider, so curves
    that coincide (e.g. every algorithm at reward 0) still show each colour as a stripe."""
    handles = []
    algos = algo_order(data["algo"].unique())
    for i, algo in enumerate(algos):
        d = data[data["algo"] == algo].sort_values("step")
        color = palette.get(algo, "#333333")
        width = 1.3 + 1.2 * (len(algos) - 1 - i) / max(len(algos) - 1, 1)
        (line,) = ax.plot(d["step"], d["mean"], color=color, lw=width, label=(legend_names or {}).get(algo, algo))
        if (d["high"] > d["low"]).any():
            ax.fill_between(d["step"], d["low"], d["high"], color=color, alpha=0.2, lw=0)
        if len(d) == 1:
            ax.plot(d["step"], d["mean"], "o", color=color, ms=4)
        handles.append(line)
    return handles


def _curve_grid(data: pd.DataFrame, panels: Sequence[tuple[str, str, str]], palette: dict[str, str], title: str,
                *, legend_names: dict[str, str] | None = None, ylims: dict[str, tuple] | None = None,
                hlines: dict[str, float] | None = None, panel_width: float = 2.6) -> plt.Figure:
    """One row per (task, model) setting, one column per (metric, panel title, y label); with a
    single metric the settings go side by side instead."""
    settings = sorted({tuple(s) for s in data[list(SETTING_KEYS)].itertuples(index=False)}, key=_setting_sort_key)
    settings = settings or [("—", "—")]
    n_rows, n_cols = len(settings), len(panels)
    transpose = n_cols == 1 and n_rows > 1
    if transpose:
        n_rows, n_cols = 1, n_rows
    if len(settings) > 1:  # two-line titles: make each panel wide enough for "task … · model …"
        longest_title = max(len(_setting_title(*setting)) for setting in settings)
        panel_width = max(panel_width, _TITLE_IN_PER_CHAR * longest_title + 0.9)
    width = max(3.4, panel_width * n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, 2.4 * n_rows), squeeze=False,
                             sharex="row" if not transpose else False)
    labels: dict[str, Line2D] = {}
    for r, setting in enumerate(settings):
        for c, (metric, panel_title, ylabel) in enumerate(panels):
            ax = axes[0][r] if transpose else axes[r][c]
            d = data[(data["metric"] == metric) & (data["task.name"] == setting[0]) & (data["model.name"] == setting[1])]
            if d.empty:
                ax.text(0.5, 0.5, f"no run logged a value of\n{metric}", ha="center", va="center", transform=ax.transAxes,
                        color="0.4")
            else:
                for h in _draw_curves(ax, d, palette, legend_names=legend_names):
                    labels.setdefault(h.get_label(), h)
            ax.use_sticky_edges = False  # the interval bands would pin the y limits to the data: keep a margin
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if hlines and metric in hlines:
                ax.axhline(hlines[metric], color="0.3", lw=0.8, ls=":")
            if ylims and metric in ylims:
                ax.set_ylim(*ylims[metric])
            elif not d.empty and d["low"].min() >= 0:  # a non-negative quantity: no axis below zero
                low, high = ax.get_ylim()
                ax.set_ylim(max(low, -0.03 * (high - max(low, 0))), high)
            ax.set_title(panel_title if len(settings) == 1 else f"{panel_title}\n{_setting_title(*setting)}")
            ax.set_ylabel(ylabel if (c == 0 or not transpose) else "")
            ax.set_xlabel(STEP_LABEL if (transpose or r == n_rows - 1) else "")
    return _finish(fig, title, labels)


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


# ----------------------------------------------------------------------------- fig 1: memory

MEMORY_PHASES = (("rollout", "mem_peak_rollout_bytes"), ("reference", "mem_peak_reference_bytes"),
                 ("critic", "mem_peak_critic_bytes"), ("update", "mem_peak_update_bytes"))
MEMORY_HELD = (("parameters", "mem_params_bytes"), ("gradients", "mem_grads_bytes"),
               ("optimizer", "mem_optimizer_bytes"))
MEMORY_ALGOS = ("ppo", "grpo", "dr_grpo", "dapo")


def _size_order(sizes: Sequence[str], params: dict[str, float]) -> list[str]:
    return sorted(sizes, key=lambda s: (SIZE_ORDER.index(s) if s in SIZE_ORDER else len(SIZE_ORDER),
                                        params.get(s, np.inf), s))


def fig_memory(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None) -> pd.DataFrame:
    """fig1_memory: peak memory per phase (max over steps, mean over seeds) of PPO, GRPO, Dr.GRPO
    and DAPO for each model size, beside the bytes held by parameters, gradients and optimizer
    states. Returns [model.name, algo, quantity, kind ("phase peak"|"held"), bytes, n_runs]."""
    _require_columns(runs, ["algo.name", "model.name"])
    columns = [c for _, c in MEMORY_PHASES + MEMORY_HELD]
    sel = runs[runs["algo.name"].isin(MEMORY_ALGOS)]
    sel = sel[sel[columns].notna().any(axis=1)]
    sizes = sorted(sel["model.name"].dropna().astype(str).unique())
    if len(sizes) < 2:
        raise SkipFigure(f"needs runs of ≥2 model sizes (model.name) of {'/'.join(MEMORY_ALGOS)} with memory "
                         f"metrics (found {len(sizes)}{': ' + ', '.join(sizes) if sizes else ''})")
    per_run = sel.groupby(["run", "model.name", "algo"], sort=False)[columns].max().reset_index()
    per_algo = per_run.groupby(["model.name", "algo"])[columns].mean()
    n_runs = per_run.groupby(["model.name", "algo"])["run"].nunique()
    records = []
    for (model, algo), row in per_algo.iterrows():
        for quantity, column in MEMORY_PHASES:
            records.append((model, algo, quantity, "phase peak", row[column], n_runs[(model, algo)]))
        for quantity, column in MEMORY_HELD:
            records.append((model, algo, quantity, "held", row[column], n_runs[(model, algo)]))
    data = pd.DataFrame.from_records(records, columns=["model.name", "algo", "quantity", "kind", "bytes", "n_runs"])
    palette = palette or algo_palette(data["algo"].unique())
    params = data[data.quantity == "parameters"].groupby("model.name")["bytes"].min().to_dict()
    sizes = _size_order(sizes, params)
    all_algos = algo_order(data["algo"].unique())
    groups = [q for q, _ in MEMORY_PHASES] + ["held"]
    hatches = {"parameters": "", "gradients": "////", "optimizer": "...."}
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(sizes), figsize=(max(7.0, 3.6 * len(sizes)), 2.7), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            d = data[data["model.name"] == size]
            algos = [a for a in all_algos if a in set(d["algo"])]
            width = 0.82 / len(algos)
            scale, unit = _fmt_bytes_unit(np.nanmax(d["bytes"].to_numpy(dtype=float)))
            for i, algo in enumerate(algos):
                a = d[d.algo == algo].set_index("quantity")["bytes"]
                x0 = np.arange(len(groups)) - 0.41 + width * (i + 0.5)
                color = palette.get(algo, "#333333")
                for g, (quantity, _) in enumerate(MEMORY_PHASES):
                    value = a.get(quantity, np.nan)
                    if np.isfinite(value):
                        ax.bar(x0[g], value / scale, width, color=color, edgecolor="white", lw=0.4)
                bottom = 0.0
                for quantity, _ in MEMORY_HELD:
                    value = a.get(quantity, np.nan)
                    if np.isfinite(value):
                        ax.bar(x0[-1], value / scale, width, bottom=bottom, color=color, alpha=0.85,
                               hatch=hatches[quantity], edgecolor="white", lw=0.4)
                        bottom += value / scale
            ax.set_xticks(np.arange(len(groups)))
            ax.set_xticklabels(["rollout", "ref.", "critic", "update", "held"])
            ax.axvline(len(groups) - 1.5, color="0.6", lw=0.8, ls="--")
            ax.set_ylabel(f"peak memory ({unit})")
            ax.set_xlabel("training phase")
            ax.set_title(f"model {size} (weights {_fmt_bytes(params.get(size, np.nan))})")
            ax.grid(axis="x", visible=False)
        handles = {a: Patch(color=palette.get(a, "#333333")) for a in all_algos}
        # held swatches: outlined white, not grey, so they are not read as a grey variant's colour
        handles.update({f"held: {q}": Patch(facecolor="white", hatch=h, edgecolor="0.35", lw=0.6) for q, h in hatches.items()})
        _finish(fig, "Peak memory by training phase (max over steps, mean over seeds)", handles, legend_title=None,
                note="held = bytes of parameters + gradients + optimizer states (all models). "
                     "No bar: the runs logged no such phase (the critic is PPO's only).")
        return _save(fig, out_dir, "fig1_memory", data)


# ----------------------------------------------------------------------------- fig 2: learning curves


def fig_curves(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None,
               smooth: int = 1, n_boot: int = 2000) -> pd.DataFrame:
    """fig2_curves: reward_mean and eval_accuracy over training for every algorithm, mean and
    95 % bootstrap interval over seeds (one row of panels per task x model). Returns the
    aggregate_over_seeds rows with a `metric` column."""
    sel = _runs_with(runs, "reward_mean")
    if sel.empty:
        raise SkipFigure("needs runs that logged reward_mean (found none)")
    data = _curve_data(sel, ["reward_mean", "eval_accuracy"], smooth=smooth, n_boot=n_boot)
    palette = palette or algo_palette(data["algo"].unique())
    smooth_note = f", rolling mean over {smooth} steps" if smooth > 1 else ""
    with plt.rc_context(_RC):
        fig = _curve_grid(data, [("reward_mean", "Training reward", "mean reward"),
                                 ("eval_accuracy", "Eval accuracy", "eval accuracy (fraction)")],
                          palette, f"Learning curves: mean and 95 % interval over {_seed_counts(sel)}{smooth_note}",
                          panel_width=3.5)
        return _save(fig, out_dir, "fig2_curves", data)


# ----------------------------------------------------------------------------- fig 3: std normalization


def theory_std_gain(p: np.ndarray, k: int, eps: float = 1e-6) -> np.ndarray:
    """The std-normalization gain 1/(std + eps) of a group of K 0/1 rewards with success rate p,
    std unbiased (N-1): std = sqrt(K/(K-1) * p(1-p)). Infinite-ish (1/eps) at p = 0 or 1."""
    p = np.asarray(p, dtype=np.float64)
    return 1.0 / (np.sqrt(k / (k - 1) * p * (1 - p)) + eps)


def _success_bins(rates: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Bin edges and labels for success rates: the exact rates j/K when there are few distinct
    values (one K), else ten equal bins."""
    distinct = np.unique(np.round(rates[np.isfinite(rates)], 6))
    if 0 < len(distinct) <= 17:
        mids = (distinct[1:] + distinct[:-1]) / 2
        edges = np.concatenate([[-np.inf], mids, [np.inf]])
        return edges, [f"{v:.3g}" for v in distinct]
    edges = np.linspace(0, 1, 11)
    edges[0], edges[-1] = -np.inf, np.inf
    return edges, [f"{a:.1f}–{b:.1f}" for a, b in zip(np.linspace(0, 0.9, 10), np.linspace(0.1, 1, 10))]


def _short_rate_label(label: str) -> str:
    """A success-rate bin label for a crowded axis: "0.125" -> ".125", "0.1–0.2" -> ".1–.2"."""
    return re.sub(r"(?<![\d.])0\.(?=\d)", ".", str(label))


def fig_std_norm(runs: pd.DataFrame, groups: pd.DataFrame, out_dir: str | Path, *,
                 palette: dict[str, str] | None = None, ks: Sequence[int] = (4, 8, 16), eps: float = 1e-6,
                 n_boot: int = 2000) -> pd.DataFrame:
    """fig3_std_norm. (a) the gain 1/(std+eps) against a group's success rate: theory for each K
    in `ks` (0/1 rewards, unbiased std) and the measured non-degenerate groups of groups.jsonl;
    (b) the share of gradient weight (sum over a group's rollouts of |A| = K * adv_abs_mean) per
    success-rate bin, per run then mean and 95 % interval over runs, for runs with a group
    baseline with (`algo.scale` group_std) and without (none) std-normalization, beside the
    share of groups in each bin.

    Returns rows with `panel` "theory" (K, success_rate, gain), "measured" (K, success_rate,
    gain mean over groups, n_groups) and "weight_share" (algo, algo.scale, bin, mean, low,
    high, n_runs; algo "groups (count share)" is the share of groups).
    """
    if groups is None or groups.empty:
        raise SkipFigure("needs runs with groups.jsonl rows (found none)")
    _require_columns(groups, ["algo.group_size", "algo.scale", "success_rate", "std_gain", "adv_abs_mean"])
    records = []
    measured = groups[np.isfinite(groups["std_gain"].to_numpy(dtype=float))]
    if "reward_mean" in measured:
        # The theory is for 0/1 rewards, where a group's mean reward is its success rate; shaped
        # rewards (DAPO's overlong penalty, a format reward) fall outside it.
        binary = np.isclose(measured["reward_mean"].to_numpy(dtype=float),
                            measured["success_rate"].to_numpy(dtype=float))
        measured = measured[binary]
    all_ks = sorted(set(int(k) for k in ks) | set(int(k) for k in measured["algo.group_size"].dropna().unique()
                                                  if int(k) >= 2))
    for k in all_ks:
        for j in range(1, k):
            records.append({"panel": "theory", "K": k, "success_rate": j / k, "gain": float(theory_std_gain(j / k, k, eps))})
    m = measured.assign(rate=measured["success_rate"].round(6), K=measured["algo.group_size"].astype(int))
    for (k, rate), part in m.groupby(["K", "rate"]):
        records.append({"panel": "measured", "K": k, "success_rate": rate, "gain": part["std_gain"].mean(),
                        "n_groups": len(part)})

    # (b) gradient-weight share per success-rate bin, per run
    group_base = groups[groups.get("algo.baseline", pd.Series("group", index=groups.index)).isin(
        ["group", "leave_one_out"]) & groups["algo.scale"].isin(["group_std", "none"])]
    notes = []
    scales_found = sorted(group_base["algo.scale"].unique())
    if set(scales_found) != {"group_std", "none"}:
        need = "none" if "none" not in scales_found else "group_std"
        notes.append(f"panel (b) shows only algo.scale={','.join(scales_found) or '—'}; "
                     f"needs runs with algo.scale={need} (and groups.jsonl) for the comparison")
    share_rows = []
    if not group_base.empty:
        edges, bin_labels = _success_bins(group_base["success_rate"].to_numpy(dtype=float))
        gb = group_base.assign(bin=pd.cut(group_base["success_rate"], edges, labels=False),
                               weight=group_base["adv_abs_mean"] * group_base["algo.group_size"])
        weight = gb.pivot_table(index=["algo", "algo.scale", "run"], columns="bin", values="weight",
                                aggfunc="sum", fill_value=0.0)
        weight = weight.reindex(columns=range(len(bin_labels)), fill_value=0.0)
        share = weight.div(weight.sum(axis=1).replace(0, np.nan), axis=0)  # (runs, bins)
        count = gb.pivot_table(index="run", columns="bin", values="weight", aggfunc="size", fill_value=0)
        count = count.reindex(columns=range(len(bin_labels)), fill_value=0)
        count_share = count.div(count.sum(axis=1), axis=0)
        for (algo, scale), part in share.groupby(level=["algo", "algo.scale"]):
            if part.isna().all(axis=None):  # every group degenerate: A = 0, no gradient weight to share
                notes.append(f"panel (b) leaves out {algo}: all its groups had zero advantage")
                continue
            mean, low, high = bootstrap_mean_ci(part.to_numpy(dtype=float), n_boot=n_boot)
            for b, label in enumerate(bin_labels):
                share_rows.append({"panel": "weight_share", "algo": algo, "algo.scale": scale, "bin": label,
                                   "mean": mean[b], "low": low[b], "high": high[b], "n_runs": len(part)})
        mean, low, high = bootstrap_mean_ci(count_share.to_numpy(dtype=float), n_boot=n_boot)
        for b, label in enumerate(bin_labels):
            share_rows.append({"panel": "weight_share", "algo": "groups (count share)", "algo.scale": "",
                               "bin": label, "mean": mean[b], "low": low[b], "high": high[b],
                               "n_runs": len(count_share)})
    data = pd.DataFrame.from_records(records + share_rows)
    data.attrs["notes"] = notes

    k_colors = dict(zip(all_ks, sns.color_palette("mako", len(all_ks) + 2).as_hex()[1:-1][::-1]))
    k_styles = dict(zip(all_ks, [":", "--", "-", "-."] * len(all_ks)))
    shares = data[data.panel == "weight_share"]
    b_handles: dict[str, Patch] = {}
    if not shares.empty:
        hue_order = [a for a in algo_order(shares.algo.unique()) if a != "groups (count share)"]
        hue_order.append("groups (count share)")
        colors = {**(palette or algo_palette(hue_order[:-1])), "groups (count share)": "#bbbbbb"}
        b_names = {}
        for algo in hue_order:
            scale = shares.loc[shares.algo == algo, "algo.scale"].dropna()
            scale = scale.iloc[0] if len(scale) else ""
            b_names[algo] = f"{algo} (scale={scale})" if scale and f"scale={scale}" not in algo else algo
            b_handles[b_names[algo]] = Patch(color=colors.get(algo, "#333333"))
    # Panels side by side, each legend in its own row below its panel (panel (b)'s names are
    # long variant labels: wrapped, in as many columns as fit), so neither legend covers data.
    width_a, width_b, panel_h = 2.9, 4.5, 2.6
    a_labels = [f"theory K={k}" for k in all_ks] + ["measured groups", "measured mean"]
    a_ncol, a_names, a_lines = _legend_layout(a_labels, width_a, max_ncol=2)
    b_ncol, b_wrapped, b_lines = _legend_layout(list(b_handles), width_b)
    legend_h = 0.15 + _LEGEND_IN_PER_LINE * max(a_lines, b_lines, 1)
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(width_a + width_b, panel_h + 0.45 + legend_h))
        grid = fig.add_gridspec(2, 2, width_ratios=[width_a, width_b], height_ratios=[panel_h, legend_h])
        ax_a, ax_b = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        a_handles = []
        for k in all_ks:
            p = np.linspace(1 / k, 1 - 1 / k, 200)
            ax_a.plot(p, theory_std_gain(p, k, eps), color=k_colors[k], lw=1.4, ls=k_styles[k])
            t = data[(data.panel == "theory") & (data.K == k)]
            ax_a.plot(t.success_rate, t.gain, "o", color=k_colors[k], ms=3.5, mfc="white")
            a_handles.append(Line2D([], [], color=k_colors[k], lw=1.4, ls=k_styles[k], marker="o", ms=3.5,
                                    mfc="white"))
        raw = measured.sample(min(len(measured), 5000), random_state=0) if len(measured) > 5000 else measured
        ax_a.scatter(raw["success_rate"], raw["std_gain"], s=6, c=[k_colors.get(int(k), "0.5") for k in raw["algo.group_size"]],
                     alpha=0.25, lw=0)
        md = data[data.panel == "measured"]
        ax_a.scatter(md.success_rate, md.gain, s=28, marker="x", color="0.15", lw=1.1, zorder=5)
        a_handles += [Line2D([], [], ls="", marker="o", ms=3, color="0.5", alpha=0.5),
                      Line2D([], [], ls="", marker="x", ms=5, mew=1.1, color="0.15")]
        ax_a.set_xlim(-0.03, 1.03)  # markers at p = 0 or 1 stay whole
        top = max(float(data.loc[data.panel != "weight_share", "gain"].max()), 1.0)
        ax_a.set_ylim(0, top * 1.08)
        ax_a.set_xlabel("group success rate p")
        ax_a.set_ylabel("gain 1 / (std + ε)")
        ax_a.set_title("(a) std-normalization gain", loc="left")

        if shares.empty:
            ax_b.text(0.5, 0.5, "no runs with a group baseline\nand algo.scale group_std / none",
                      ha="center", va="center", transform=ax_b.transAxes, color="0.4")
        else:
            bins = list(dict.fromkeys(shares["bin"]))
            width = 0.84 / len(hue_order)
            for i, algo in enumerate(hue_order):
                d = shares[shares.algo == algo].set_index("bin").reindex(bins)
                x = np.arange(len(bins)) - 0.42 + width * (i + 0.5)
                ax_b.bar(x, d["mean"], width, color=colors.get(algo, "#333333"), label=b_names[algo],
                         yerr=[d["mean"] - d["low"], d["high"] - d["mean"]],
                         error_kw={"lw": 0.6, "capsize": 1.0, "ecolor": "0.25"})
            ax_b.set_xticks(np.arange(len(bins)))
            ax_b.set_xticklabels([_short_rate_label(b) for b in bins])
            ax_b.set_xlim(-0.5, len(bins) - 0.5)
            ax_b.set_ylim(0, max(0.05, float(np.nanmax(shares["high"]))) * 1.05)
            for sep in np.arange(len(bins) - 1) + 0.5:  # faint separators between success-rate bins
                ax_b.axvline(sep, color="0.9", lw=0.6, zorder=0)
        ax_b.set_xlabel("group success rate (bin)")
        ax_b.set_ylabel("share of Σ|A| (fraction)")
        ax_b.set_title("(b) gradient weight by success rate", loc="left")
        ax_b.grid(axis="x", visible=False)
        for cell, handles, names, ncol in ((grid[1, 0], a_handles, a_names, a_ncol),
                                           (grid[1, 1], list(b_handles.values()), b_wrapped, b_ncol)):
            if not handles:
                continue
            ax_leg = fig.add_subplot(cell)
            ax_leg.axis("off")
            ax_leg.legend(_row_major(handles, ncol), _row_major(names, ncol), ncol=ncol, loc="upper center",
                          bbox_to_anchor=(0.5, 1.0), borderaxespad=0.0, columnspacing=1.0, handlelength=1.6)
        _finish(fig, "Std-normalization amplifies near-unanimous groups (0/1 rewards, unbiased std)", {})
        return _save(fig, out_dir, "fig3_std_norm", data)


# ----------------------------------------------------------------------------- fig 4: degenerate groups


def fig_degenerate(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None,
                   smooth: int = 1, n_boot: int = 2000) -> pd.DataFrame:
    """fig4_degenerate: share of degenerate groups (all K rewards equal) over training, with
    (`algo.filter_groups` on) and without dynamic sampling; mean and 95 % interval over seeds.
    Two panels where the runs log both: among all sampled groups (`groups_degenerate_frac_sampled`,
    before dynamic sampling drops any) and in the batch trained on (`groups_degenerate_frac`).
    Runs with group_size < 2 (PPO) are left out: a group of one is always degenerate."""
    _require_columns(runs, ["algo.filter_groups"])
    sel = _runs_with(runs, "groups_degenerate_frac")
    if "algo.group_size" in sel.columns:
        sel = sel[pd.to_numeric(sel["algo.group_size"], errors="coerce").fillna(2) >= 2]
    sel = sel.assign(filter_groups=sel["algo.filter_groups"].map(_is_on))
    found = sorted(sel["filter_groups"].unique())
    if found != [False, True]:
        have = {True: "on", False: "off"}
        raise SkipFigure("needs runs with dynamic sampling on and off (algo.filter_groups true and false) that "
                         f"logged groups_degenerate_frac (found: {', '.join(have[f] for f in found) or 'none'})")
    panels = [("groups_degenerate_frac", "In the batch trained on", "degenerate groups (fraction)")]
    if len(_runs_with(sel, "groups_degenerate_frac_sampled")):
        panels.insert(0, ("groups_degenerate_frac_sampled", "Among all sampled groups", "degenerate groups (fraction)"))
    data = _curve_data(sel, [m for m, _, _ in panels], smooth=smooth, n_boot=n_boot, extra_by=["filter_groups"])
    palette = palette or algo_palette(data["algo"].unique())
    names = {a: f"{a} ({'dynamic sampling' if f else 'no filtering'})"
             for a, f in data[["algo", "filter_groups"]].drop_duplicates().itertuples(index=False)}
    with plt.rc_context(_RC):
        fig = _curve_grid(data, panels, palette,
                          f"Degenerate groups (all K rewards equal): mean and 95 % interval over {_seed_counts(sel)}",
                          legend_names=names, ylims={m: (-0.02, 1.02) for m, _, _ in panels}, panel_width=3.5)
        return _save(fig, out_dir, "fig4_degenerate", data)


# ----------------------------------------------------------------------------- fig 5: response length


def fig_length(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None,
               smooth: int = 1, n_boot: int = 2000) -> pd.DataFrame:
    """fig5_length: response length over training, all / correct / incorrect responses, for the
    GRPO and Dr.GRPO runs (the presets as published; their variants only where a preset has none)."""
    _require_columns(runs, ["algo.name"])
    sel = pd.concat([_runs_with(_preset_runs(runs, name), "resp_len_mean") for name in ("grpo", "dr_grpo")])
    found = sorted(sel["algo.name"].unique())
    if found != ["dr_grpo", "grpo"]:
        raise SkipFigure(f"needs runs of both grpo and dr_grpo that logged resp_len_mean (found: {', '.join(found) or 'none'})")
    metrics = [("resp_len_mean", "All responses", "response length (tokens)"),
               ("resp_len_correct_mean", "Correct responses", "response length (tokens)"),
               ("resp_len_incorrect_mean", "Incorrect responses", "response length (tokens)")]
    data = _curve_data(sel, [m for m, _, _ in metrics], smooth=smooth, n_boot=n_boot)
    palette = palette or algo_palette(data["algo"].unique())
    with plt.rc_context(_RC):
        fig = _curve_grid(data, metrics, palette,
                          f"Response length, GRPO vs Dr.GRPO: mean and 95 % interval over {_seed_counts(sel)}")
        return _save(fig, out_dir, "fig5_length", data)


# ----------------------------------------------------------------------------- fig 6: clip-higher


def fig_clip(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None,
             smooth: int = 1, n_boot: int = 2000) -> pd.DataFrame:
    """fig6_clip: fraction of tokens clipped at 1-eps_low and at 1+eps_high, and the entropy,
    over training for runs with different `algo.eps_high` (e.g. 0.2 vs DAPO's 0.28)."""
    _require_columns(runs, ["algo.eps_high"])
    sel = _runs_with(runs, "clip_frac_high")
    found = sorted(sel["algo.eps_high"].dropna().unique())
    if len(found) < 2:
        raise SkipFigure("needs runs of ≥2 values of algo.eps_high (e.g. 0.2 and 0.28) that logged clip fractions "
                         f"(found {len(found)}{': ' + ', '.join(f'{v:g}' for v in found) if found else ''})")
    metrics = [("clip_frac_low", "Clipped low (r < 1−ε_low)", "clipped tokens (fraction)"),
               ("clip_frac_high", "Clipped high (r > 1+ε_high)", "clipped tokens (fraction)"),
               ("entropy_mean", "Policy entropy", "entropy (nats / token)")]
    data = _curve_data(sel, [m for m, _, _ in metrics], smooth=smooth, n_boot=n_boot, extra_by=["algo.eps_high"])
    palette = palette or algo_palette(data["algo"].unique())
    names = {a: f"{a} (ε_high={e:g})" for a, e in data[["algo", "algo.eps_high"]].drop_duplicates().itertuples(index=False)}
    with plt.rc_context(_RC):
        fig = _curve_grid(data, metrics, palette,
                          f"Clip-higher: clip fractions and entropy, mean and 95 % interval over {_seed_counts(sel)}",
                          legend_names=names, panel_width=2.8)
        return _save(fig, out_dir, "fig6_clip", data)


# ----------------------------------------------------------------------------- fig 7: critic


def fig_critic(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None,
               smooth: int = 1, n_boot: int = 2000) -> pd.DataFrame:
    """fig7_critic: PPO's critic explained variance of the returns over training, beside the
    reward curves of PPO and GRPO (the presets; their variants only where a preset has none)."""
    _require_columns(runs, ["algo.name"])
    ppo = _runs_with(_preset_runs(runs, "ppo"), "critic_explained_var")
    grpo = _runs_with(_preset_runs(runs, "grpo"), "reward_mean")
    missing = [n for n, d in (("ppo runs that logged critic_explained_var", ppo), ("grpo runs", grpo)) if d.empty]
    if missing:
        raise SkipFigure(f"needs {' and '.join(missing)} (found none)")
    ev = _curve_data(ppo, ["critic_explained_var"], smooth=smooth, n_boot=n_boot)
    reward = _curve_data(pd.concat([_runs_with(ppo, "reward_mean"), grpo]), ["reward_mean"], smooth=smooth,
                         n_boot=n_boot)
    data = pd.concat([ev, reward], ignore_index=True)
    palette = palette or algo_palette(data["algo"].unique())
    lo = float(np.nanmin(ev["low"])) if ev["low"].notna().any() else 0.0
    with plt.rc_context(_RC):
        fig = _curve_grid(data, [("critic_explained_var", "PPO critic: explained variance",
                                  "explained variance of returns"),
                                 ("reward_mean", "Training reward", "mean reward")], palette,
                          "PPO's critic against GRPO's group baseline: mean and 95 % interval over seeds",
                          hlines={"critic_explained_var": 0.0},
                          ylims={"critic_explained_var": (max(-1.05, min(lo, 0.0) - 0.05), 1.05)}, panel_width=3.5)
        return _save(fig, out_dir, "fig7_critic", data)


# ----------------------------------------------------------------------------- fig 8: K = 4 advantages

K4_EXAMPLES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("all equal", (1.0, 1.0, 1.0, 1.0)),
    ("one success", (1.0, 0.0, 0.0, 0.0)),
    ("one failure", (0.0, 1.0, 1.0, 1.0)),
    ("one slightly lower", (0.9, 1.0, 1.0, 1.0)),
    ("half", (1.0, 1.0, 0.0, 0.0)),
)
K4_SCALES = (("group_std", "÷ (std + ε): GRPO, DAPO", PRESET_COLORS["grpo"]),
             ("none", "no scaling: Dr.GRPO", PRESET_COLORS["dr_grpo"]))


def fig_k4_advantages(runs: pd.DataFrame | None, out_dir: str | Path, *,
                      examples: Sequence[tuple[str, Sequence[float]]] = K4_EXAMPLES) -> pd.DataFrame:
    """fig8_k4_advantages: the lesson's K = 4 panel. Advantages of example reward vectors from
    `algos.group_advantages` (group baseline), with scale group_std and none. `runs` is unused
    (kept for a uniform signature). Returns [example, rewards, rollout, reward, scale, advantage]."""
    try:
        import torch
        from algos import group_advantages
    except Exception as err:  # noqa: BLE001
        raise SkipFigure(f"needs algos.group_advantages importable ({type(err).__name__}: {err})") from None
    records = []
    for name, rewards in examples:
        r = torch.tensor(rewards, dtype=torch.float32)
        for scale, _, _ in K4_SCALES:
            adv = group_advantages(r, len(rewards), baseline="group", scale=scale)
            for i, (reward, a) in enumerate(zip(rewards, adv.tolist())):
                records.append({"example": name, "rewards": "[" + ", ".join(f"{v:g}" for v in rewards) + "]",
                                "rollout": i + 1, "reward": reward, "scale": scale, "advantage": a})
    data = pd.DataFrame.from_records(records)
    lim = float(np.abs(data["advantage"]).max()) * 1.3 or 1.0
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(examples), figsize=(1.6 * len(examples) + 0.4, 2.4), sharey=True, squeeze=False)
        for ax, (name, rewards) in zip(axes[0], examples):
            d = data[data.example == name]
            for j, (scale, _, color) in enumerate(K4_SCALES):
                s = d[d.scale == scale]
                x = s["rollout"].to_numpy() - 0.2 + 0.4 * j
                ax.bar(x, s["advantage"], 0.4, color=color)
                first_of_value = ~pd.Series(rewards).duplicated().to_numpy()  # label one bar per distinct reward
                for xi, a, show in zip(x, s["advantage"], first_of_value):
                    if show and abs(a) > 1e-9:
                        ax.text(xi, a + (0.06 if a > 0 else -0.06) * lim, f"{a:.2g}", ha="center",
                                va="bottom" if a > 0 else "top", fontsize=6.5)
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_xticks(range(1, len(rewards) + 1))
            ax.set_xticklabels([f"{v:g}" for v in rewards])
            ax.set_xlabel("reward of rollout")
            ax.set_title(f"{name}\nr = [{', '.join(f'{v:g}' for v in rewards)}]", fontsize=8.5)
            ax.set_ylim(-lim, lim)
            ax.grid(axis="x", visible=False)
            if all(v == rewards[0] for v in rewards):
                ax.text(0.5, 0.25, "degenerate:\nA = 0", transform=ax.transAxes, ha="center", fontsize=7.5, color="0.35")
        axes[0][0].set_ylabel("advantage A_i")
        _finish(fig, "GRPO advantages of K = 4 rollouts: A_i = (r_i − mean) / (std + ε) vs r_i − mean",
                {label: Patch(color=c) for _, label, c in K4_SCALES}, legend_title=None)
        return _save(fig, out_dir, "fig8_k4_advantages", data)


# ----------------------------------------------------------------------------- summary


def summary_table(runs: pd.DataFrame, *, threshold: float = 0.5, window: int = 1, baseline: str = "grpo",
                  n_boot: int = 2000) -> pd.DataFrame:
    """One row per (task, model, algorithm).

    final_acc_*: IQM of each run's final eval_accuracy with its stratified-bootstrap 95 %
    interval, over completed runs (over all runs, flagged `final_over_unfinished`, when none
    completed); p_improve_*: P(this algorithm's final accuracy > `baseline`'s) with interval;
    steps_to_threshold: first step where the mean eval accuracy over seeds (trailing mean over
    `window` evals) reaches `threshold`; peak_mem_bytes: max over steps of mem_peak_bytes, mean
    over runs; tokens_per_s: mean over steps, mean over runs; final_eval_pass@k (runs logged
    with eval_samples): mean over runs of each run's final pass@k.
    """
    if runs.empty:
        return pd.DataFrame()
    runs = _settings(runs)
    pass_columns = sorted((c for c in runs.columns if c.startswith("eval_pass@")), key=lambda c: int(c.split("@")[1]))
    rows = []
    for (task, model), setting in runs.groupby(list(SETTING_KEYS), sort=True):
        finals: dict[str, np.ndarray] = {}
        unfinished: dict[str, bool] = {}
        for algo, part in setting.groupby("algo"):
            completed = part[part["state"] == "completed"]
            use = completed if completed["run"].nunique() else part
            scores = final_values(use, "eval_accuracy").to_numpy(dtype=float)
            finals[algo] = scores
            unfinished[algo] = use is part and (part["state"] != "completed").any()
        for algo in algo_order(setting["algo"].unique()):
            part = setting[setting["algo"] == algo]
            row = {"task.name": task, "model.name": model, "algo": algo, "n_runs": part["run"].nunique(),
                   "n_completed": part.loc[part["state"] == "completed", "run"].nunique(),
                   "final_over_unfinished": unfinished[algo]}
            scores = finals[algo]
            if len(scores):
                row["final_acc_iqm"], row["final_acc_low"], row["final_acc_high"] = iqm_ci(scores, n_boot=n_boot)
            base = finals.get(baseline, np.array([]))
            if algo != baseline and len(scores) and len(base):
                row["p_improve"], row["p_improve_low"], row["p_improve_high"] = probability_of_improvement_ci(
                    scores, base, n_boot=n_boot)
            wide = part.pivot_table(index="run", columns="step", values="eval_accuracy", aggfunc="last")
            row["steps_to_threshold"] = (steps_to_threshold(wide.columns.to_numpy(), wide.to_numpy(dtype=float),
                                                            threshold, window=window) if wide.size else np.nan)
            row["peak_mem_bytes"] = part.groupby("run")["mem_peak_bytes"].max().mean()
            row["tokens_per_s"] = part.groupby("run")["tokens_per_s"].mean().mean()
            for column in pass_columns:  # eval_pass@k of runs with eval_samples: mean final value over runs
                finals_k = final_values(part, column) if part[column].notna().any() else pd.Series(dtype=float)
                row[f"final_{column}"] = finals_k.mean() if len(finals_k) else np.nan
            rows.append(row)
    columns = ["task.name", "model.name", "algo", "n_runs", "n_completed", "final_over_unfinished", "final_acc_iqm",
               "final_acc_low", "final_acc_high", "p_improve", "p_improve_low", "p_improve_high",
               "steps_to_threshold", "peak_mem_bytes", "tokens_per_s", *(f"final_{c}" for c in pass_columns)]
    return pd.DataFrame.from_records(rows).reindex(columns=columns)


def _fmt_interval(point, low, high, digits: int = 3) -> str:
    if point is None or not np.isfinite(point):
        return "—"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def write_summary(runs: pd.DataFrame, out_dir: str | Path, *, threshold: float = 0.5, window: int = 1,
                  baseline: str = "grpo", n_boot: int = 2000) -> pd.DataFrame:
    """summary.md (and summary.csv): `summary_table` as one markdown table per task x model."""
    table = summary_table(runs, threshold=threshold, window=window, baseline=baseline, n_boot=n_boot)
    if table.empty:
        raise SkipFigure("needs at least one run (found none)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Summary", "",
             f"Final accuracy: IQM of each run's last eval_accuracy, 95 % stratified-bootstrap interval. "
             f"P(> {baseline}): probability that a run of the algorithm ends above a run of {baseline}. "
             f"Steps to {threshold:g}: first step where the mean eval accuracy over seeds"
             f"{f' (trailing mean over {window} evals)' if window > 1 else ''} reaches {threshold:g}. "
             "Peak memory: max over steps of mem_peak_bytes, mean over runs. Tokens/s: mean over steps and runs.", ""]
    header = ["algorithm", "runs (completed)", "final accuracy IQM [95 % CI]", f"P(> {baseline}) [95 % CI]",
              f"steps to {threshold:g}", "peak memory", "tokens/s"]
    for (task, model), part in table.groupby(["task.name", "model.name"], sort=True):
        lines += [f"## {_setting_title(task, model)}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * len(header)) + "|"]
        for r in part.itertuples(index=False):
            r = r._asdict()
            final = _fmt_interval(r["final_acc_iqm"], r["final_acc_low"], r["final_acc_high"])
            if r["final_over_unfinished"] and final != "—":
                final += " *"
            p_imp = "—" if r["algo"] == baseline else _fmt_interval(r["p_improve"], r["p_improve_low"], r["p_improve_high"], 2)
            steps = "never" if not np.isfinite(r["steps_to_threshold"]) else f"{r['steps_to_threshold']:.0f}"
            tps = f"{r['tokens_per_s']:.0f}" if np.isfinite(r["tokens_per_s"]) else "—"
            lines.append(f"| {r['algo']} | {r['n_runs']} ({r['n_completed']}) | {final} | {p_imp} | {steps} | "
                         f"{_fmt_bytes(r['peak_mem_bytes'])} | {tps} |")
        lines.append("")
    if table["final_over_unfinished"].any():
        lines.append("\\* no completed run: over unfinished runs' last eval.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    table.to_csv(out / "summary.csv", index=False)
    return table


# ----------------------------------------------------------------------------- all at once

FIGURES: tuple[tuple[str, str], ...] = (
    ("fig1_memory", "fig_memory"), ("fig2_curves", "fig_curves"), ("fig3_std_norm", "fig_std_norm"),
    ("fig4_degenerate", "fig_degenerate"), ("fig5_length", "fig_length"), ("fig6_clip", "fig_clip"),
    ("fig7_critic", "fig_critic"), ("fig8_k4_advantages", "fig_k4_advantages"), ("summary", "write_summary"),
)


def make_all(runs: pd.DataFrame, groups: pd.DataFrame | None, out_dir: str | Path, *, only: Sequence[str] | None = None,
             smooth: int = 1, threshold: float = 0.5, window: int = 1, n_boot: int = 2000,
             log: Callable[[str], None] = print) -> dict[str, str]:
    """Draw every figure (or those named in `only`) and summary.md into `out_dir`; one palette
    for all. Returns {name: "wrote" | "skipped: <why>"} and logs one line per figure."""
    names = [n for n, _ in FIGURES]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown figure(s) {unknown}; valid: {', '.join(names)}")
    palette = algo_palette(runs["algo"].dropna().unique()) if len(runs) else {}
    calls: dict[str, Callable[[], pd.DataFrame]] = {
        "fig1_memory": lambda: fig_memory(runs, out_dir, palette=palette),
        "fig2_curves": lambda: fig_curves(runs, out_dir, palette=palette, smooth=smooth, n_boot=n_boot),
        "fig3_std_norm": lambda: fig_std_norm(runs, groups, out_dir, palette=palette, n_boot=n_boot),
        "fig4_degenerate": lambda: fig_degenerate(runs, out_dir, palette=palette, smooth=smooth, n_boot=n_boot),
        "fig5_length": lambda: fig_length(runs, out_dir, palette=palette, smooth=smooth, n_boot=n_boot),
        "fig6_clip": lambda: fig_clip(runs, out_dir, palette=palette, smooth=smooth, n_boot=n_boot),
        "fig7_critic": lambda: fig_critic(runs, out_dir, palette=palette, smooth=smooth, n_boot=n_boot),
        "fig8_k4_advantages": lambda: fig_k4_advantages(runs, out_dir),
        "summary": lambda: write_summary(runs, out_dir, threshold=threshold, window=window, n_boot=n_boot),
    }
    report = {}
    for name in names:
        if only and name not in only:
            continue
        try:
            data = calls[name]()
        except SkipFigure as why:
            report[name] = f"skipped: {why}"
            log(f"skipped {name}: {why}")
            continue
        report[name] = "wrote"
        files = "summary.md" if name == "summary" else f"{name}.png/.pdf/.csv"
        log(f"wrote {Path(out_dir) / files}")
        for note in data.attrs.get("notes", []):
            log(f"  note {name}: {note}")
    return report

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
    fig5_length         response length (all / correct / incorrect), GRPO vs Dr.GRPO (and GRPO
                        variants with another algo.aggregation)
    fig6_clip           clip fractions and entropy for eps_high 0.2 vs 0.28
    fig7_critic         PPO's critic explained variance beside the PPO and GRPO reward curves
    fig8_k4_advantages  the lesson's K = 4 panel: advantages of example reward vectors,
                        group_std vs none (computed with algos.group_advantages)
    summary.md          per algorithm: final accuracy IQM with interval, P(improvement over
                        grpo), steps to threshold, peak memory, tokens per second

`make_all(run_paths, out_dir)` draws them all and reports what it skipped and why.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from analysis.draw_curves import fig_clip, fig_critic, fig_curves, fig_degenerate, fig_length
from analysis.draw_special import _short_rate_label, fig_k4_advantages, fig_memory, fig_std_norm, theory_std_gain
from analysis.style import PRESET_COLORS, SkipFigure, _legend_layout, _wrap_label, algo_order, algo_palette

_HELPERS = (_legend_layout, _short_rate_label, _wrap_label)  # re-exported for tests of the layout helpers
from analysis.summary import summary_table, write_summary

__all__ = [
    "SkipFigure", "PRESET_COLORS", "algo_palette", "algo_order",
    "fig_memory", "fig_curves", "fig_std_norm", "fig_degenerate", "fig_length", "fig_clip",
    "fig_critic", "fig_k4_advantages", "summary_table", "write_summary", "theory_std_gain",
    "FIGURES", "make_all",
]

# ----------------------------------------------------------------------------- all at once

FIGURES: tuple[tuple[str, str], ...] = (
    ("fig1_memory", "fig_memory"), ("fig2_curves", "fig_curves"), ("fig3_std_norm", "fig_std_norm"),
    ("fig4_degenerate", "fig_degenerate"), ("fig5_length", "fig_length"), ("fig6_clip", "fig_clip"),
    ("fig7_critic", "fig_critic"), ("fig8_k4_advantages", "fig_k4_advantages"), ("summary", "write_summary"),
)


def _runs_for(frame: pd.DataFrame | None, figure: str) -> pd.DataFrame | None:
    """The rows a figure is drawn from: runs of the experiments whose grid names it in `figures:`,
    plus runs of experiments that declare no figures (every figure may use them)."""
    if frame is None or frame.empty or "experiment.figures" not in frame:
        return frame
    declared = frame["experiment.figures"].fillna("").astype(str)
    wants = declared.eq("") | declared.str.split(",").map(lambda names: figure in names)
    return frame[wants.to_numpy()]


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
    for_fig = {name: _runs_for(runs, name) for name in names}
    groups_for = {name: _runs_for(groups, name) if groups is not None else None for name in names}
    calls: dict[str, Callable[[], pd.DataFrame]] = {
        "fig1_memory": lambda: fig_memory(for_fig["fig1_memory"], out_dir, palette=palette),
        "fig2_curves": lambda: fig_curves(for_fig["fig2_curves"], out_dir, palette=palette, smooth=smooth,
                                          n_boot=n_boot),
        "fig3_std_norm": lambda: fig_std_norm(for_fig["fig3_std_norm"], groups_for["fig3_std_norm"], out_dir,
                                              palette=palette, n_boot=n_boot),
        "fig4_degenerate": lambda: fig_degenerate(for_fig["fig4_degenerate"], out_dir, palette=palette,
                                                  smooth=smooth, n_boot=n_boot),
        "fig5_length": lambda: fig_length(for_fig["fig5_length"], out_dir, palette=palette, smooth=smooth,
                                          n_boot=n_boot),
        "fig6_clip": lambda: fig_clip(for_fig["fig6_clip"], out_dir, palette=palette, smooth=smooth, n_boot=n_boot),
        "fig7_critic": lambda: fig_critic(for_fig["fig7_critic"], out_dir, palette=palette, smooth=smooth,
                                          n_boot=n_boot),
        "fig8_k4_advantages": lambda: fig_k4_advantages(runs, out_dir),
        "summary": lambda: write_summary(for_fig["summary"], out_dir, threshold=threshold, window=window,
                                         n_boot=n_boot),
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

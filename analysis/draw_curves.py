"""The curve figures: mean and 95 % interval over seeds per algorithm and step (fig2 learning
curves, fig4 degenerate groups, fig5 response length, fig6 clip-higher, fig7 critic)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.labels import _preset_defaults  # noqa: E402
from analysis.stats import aggregate_over_seeds  # noqa: E402
from analysis.style import (  # noqa: E402
    _RC, _TITLE_IN_PER_CHAR, SETTING_KEYS, STEP_LABEL, SkipFigure, _finish, _is_on, _preset_runs, _require_columns,
    _runs_with, _save, _seed_counts, _setting_sort_key, _setting_title, _settings, algo_order, algo_palette,
)

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
    """One row per (experiment, task, model) setting, one column per (metric, panel title, y label);
    with a single metric the settings go side by side instead."""
    settings = sorted({tuple(s) for s in data[list(SETTING_KEYS)].itertuples(index=False)}, key=_setting_sort_key)
    settings = settings or [("—",) * len(SETTING_KEYS)]
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
            in_setting = (data[list(SETTING_KEYS)] == pd.Series(setting, index=list(SETTING_KEYS))).all(axis=1)
            d = data[(data["metric"] == metric) & in_setting]
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
    GRPO and Dr.GRPO runs (the presets as published; their variants only where a preset has none),
    and GRPO variants with another `algo.aggregation` (the length knob on its own)."""
    _require_columns(runs, ["algo.name"])
    sel = pd.concat([_runs_with(_preset_runs(runs, name), "resp_len_mean") for name in ("grpo", "dr_grpo")])
    found = sorted(sel["algo.name"].unique())
    if found != ["dr_grpo", "grpo"]:
        raise SkipFigure(f"needs runs of both grpo and dr_grpo that logged resp_len_mean (found: {', '.join(found) or 'none'})")
    extra = ""
    if "algo.aggregation" in runs and (sel["algo"] == "grpo").any():
        grpo = runs[(runs["algo.name"] == "grpo") & (runs["algo"] != "grpo")]
        preset = _preset_defaults("grpo")["aggregation"]
        other = grpo["algo.aggregation"].notna() & (grpo["algo.aggregation"] != preset)
        variants = _runs_with(grpo[other], "resp_len_mean")
        if len(variants):
            sel, extra = pd.concat([sel, variants]), " and GRPO variants"
    metrics = [("resp_len_mean", "All responses", "response length (tokens)"),
               ("resp_len_correct_mean", "Correct responses", "response length (tokens)"),
               ("resp_len_incorrect_mean", "Incorrect responses", "response length (tokens)")]
    data = _curve_data(sel, [m for m, _, _ in metrics], smooth=smooth, n_boot=n_boot)
    palette = palette or algo_palette(data["algo"].unique())
    with plt.rc_context(_RC):
        fig = _curve_grid(data, metrics, palette,
                          f"Response length, GRPO vs Dr.GRPO{extra}: mean and 95 % interval over {_seed_counts(sel)}")
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

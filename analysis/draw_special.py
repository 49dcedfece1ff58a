"""The figures that are not curves: fig1 memory by phase and model size, fig3 the std-normalization
gain and gradient weight by success rate, fig8 the lesson's K = 4 advantage panel."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from analysis.stats import bootstrap_mean_ci  # noqa: E402
from analysis.style import (  # noqa: E402
    _LEGEND_IN_PER_LINE, _RC, PRESET_COLORS, SIZE_ORDER, SkipFigure, _finish, _fmt_bytes, _fmt_bytes_unit,
    _legend_layout, _require_columns, _row_major, _save, algo_order, algo_palette,
)

# ----------------------------------------------------------------------------- fig 1: memory

MEMORY_PHASES = (("rollout", "mem_peak_rollout_bytes"), ("reference", "mem_peak_reference_bytes"),
                 ("critic", "mem_peak_critic_bytes"), ("update", "mem_peak_update_bytes"))
MEMORY_HELD = (("parameters", "mem_params_bytes"), ("gradients", "mem_grads_bytes"),
               ("optimizer", "mem_optimizer_bytes"))
MEMORY_ALGOS = ("ppo", "grpo", "dr_grpo", "dapo")


def _size_order(sizes: Sequence[str], params: dict[str, float]) -> list[str]:
    return sorted(sizes, key=lambda s: (SIZE_ORDER.index(s) if s in SIZE_ORDER else len(SIZE_ORDER),
                                        params.get(s, np.inf), s))


def memory_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """fig1's numbers (pure pandas) from one experiment's runs: per (model.name, algo) the peak of
    each phase (max over steps, mean over seeds) and the bytes held; and the model sizes found."""
    _require_columns(runs, ["algo.name", "model.name"])
    columns = [c for _, c in MEMORY_PHASES + MEMORY_HELD]
    sel = runs[runs["algo.name"].isin(MEMORY_ALGOS)]
    sel = sel[sel[columns].notna().any(axis=1)]
    notes = []
    if "experiment" in sel and sel["experiment"].nunique() > 1:  # one experiment: never pool two sweeps
        n_sizes = sel.groupby("experiment")["model.name"].nunique()
        chosen = sorted(n_sizes.index, key=lambda e: (-n_sizes[e], str(e)))[0]
        notes.append(f"drawn from experiment {chosen} (the most model sizes); left out: "
                     f"{', '.join(sorted(str(e) for e in n_sizes.index if e != chosen))}")
        sel = sel[sel["experiment"] == chosen]
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
    data.attrs["notes"] = notes
    return data, sizes


_HATCHES = {"parameters": "", "gradients": "////", "optimizer": "...."}


def _draw_memory_panel(ax, d: pd.DataFrame, algos: list[str], palette: dict[str, str]) -> str:
    """One model size: a bar per algorithm for each phase's peak, and the held bytes stacked;
    returns the unit of the y axis."""
    groups = [q for q, _ in MEMORY_PHASES] + ["held"]
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
                       hatch=_HATCHES[quantity], edgecolor="white", lw=0.4)
                bottom += value / scale
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(["rollout", "ref.", "critic", "update", "held"])
    ax.axvline(len(groups) - 1.5, color="0.6", lw=0.8, ls="--")
    return unit


def fig_memory(runs: pd.DataFrame, out_dir: str | Path, *, palette: dict[str, str] | None = None) -> pd.DataFrame:
    """fig1_memory: peak memory per phase (max over steps, mean over seeds) of PPO, GRPO, Dr.GRPO
    and DAPO for each model size, beside the bytes held by parameters, gradients and optimizer
    states. Returns [model.name, algo, quantity, kind ("phase peak"|"held"), bytes, n_runs]."""
    data, sizes = memory_table(runs)
    palette = palette or algo_palette(data["algo"].unique())
    params = data[data.quantity == "parameters"].groupby("model.name")["bytes"].min().to_dict()
    sizes = _size_order(sizes, params)
    all_algos = algo_order(data["algo"].unique())
    hatches = _HATCHES
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(sizes), figsize=(max(7.0, 3.6 * len(sizes)), 2.7), squeeze=False)
        for ax, size in zip(axes[0], sizes):
            d = data[data["model.name"] == size]
            unit = _draw_memory_panel(ax, d, [a for a in all_algos if a in set(d["algo"])], palette)
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


def std_norm_table(groups: pd.DataFrame, *, ks: Sequence[int] = (4, 8, 16), eps: float = 1e-6,
                   n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """fig3's numbers (pure pandas): the rows `fig_std_norm` returns (see there), the measured
    groups with 0/1 rewards, and every K drawn. Notes on what is missing are in data.attrs."""
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
    return data, measured, all_ks


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
    data, measured, all_ks = std_norm_table(groups, ks=ks, eps=eps, n_boot=n_boot)
    shares = data[data.panel == "weight_share"]
    b_handles: dict[str, Patch] = {}
    hue_order, colors, b_names = [], {}, {}
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
        a_handles = _draw_gain_panel(ax_a, data, measured, all_ks, eps)
        _draw_share_panel(ax_b, shares, hue_order, colors, b_names)
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


def _draw_gain_panel(ax_a, data: pd.DataFrame, measured: pd.DataFrame, all_ks: list[int], eps: float) -> list:
    """fig3 (a): theory curves per K, the measured groups and their mean per success rate; returns the legend handles."""
    k_colors = dict(zip(all_ks, sns.color_palette("mako", len(all_ks) + 2).as_hex()[1:-1][::-1]))
    k_styles = dict(zip(all_ks, [":", "--", "-", "-."] * len(all_ks)))
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

    return a_handles


def _draw_share_panel(ax_b, shares: pd.DataFrame, hue_order: list[str], colors: dict, b_names: dict) -> None:
    """fig3 (b): share of gradient weight per success-rate bin, bars with 95 % intervals."""
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

"""summary.md: per (experiment, task, model, algorithm) final accuracy IQM with interval, gain over the
warm start (mean over seeds, interval), P(improvement over grpo), steps to threshold, peak memory,
tokens per second, final pass@k."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import bootstrap_mean_ci, final_values, iqm_ci, probability_of_improvement_ci, steps_to_threshold
from analysis.style import (
    SETTING_KEYS, SkipFigure, _fmt_bytes, _setting_title, _settings, algo_order,
)

# ----------------------------------------------------------------------------- summary


def summary_table(runs: pd.DataFrame, *, threshold: float = 0.5, window: int = 1, baseline: str = "grpo",
                  n_boot: int = 2000) -> pd.DataFrame:
    """One row per (experiment, task, model, algorithm): one table per experiment in summary.md.

    final_acc_*: IQM of each run's final eval_accuracy with its stratified-bootstrap 95 %
    interval, over completed runs (over all runs, flagged `final_over_unfinished`, when none
    completed); gain_*: each run's last eval_accuracy minus its step-0 eval_accuracy (the warm
    start), mean over the same runs with its percentile-bootstrap 95 % interval;
    p_improve_*: P(this algorithm's final accuracy > `baseline`'s) with interval;
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
    for (experiment, task, model), setting in runs.groupby(list(SETTING_KEYS), sort=True):
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
            row = {"experiment": experiment, "task.name": task, "model.name": model, "algo": algo,
                   "n_runs": part["run"].nunique(),
                   "n_completed": part.loc[part["state"] == "completed", "run"].nunique(),
                   "final_over_unfinished": unfinished[algo]}
            scores = finals[algo]
            if len(scores):
                row["final_acc_iqm"], row["final_acc_low"], row["final_acc_high"] = iqm_ci(scores, n_boot=n_boot)
            gains = _eval_gains(part if unfinished[algo] else part[part["state"] == "completed"])
            if len(gains):
                mean, low, high = bootstrap_mean_ci(gains, n_boot=n_boot)
                row["gain_mean"], row["gain_low"], row["gain_high"] = mean[0], low[0], high[0]
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
    columns = ["experiment", "task.name", "model.name", "algo", "n_runs", "n_completed", "final_over_unfinished",
               "final_acc_iqm", "final_acc_low", "final_acc_high", "gain_mean", "gain_low", "gain_high",
               "p_improve", "p_improve_low", "p_improve_high",
               "steps_to_threshold", "peak_mem_bytes", "tokens_per_s", *(f"final_{c}" for c in pass_columns)]
    return pd.DataFrame.from_records(rows).reindex(columns=columns)


def _eval_gains(part: pd.DataFrame) -> np.ndarray:
    """Per run: last eval_accuracy minus the step-0 one (runs without a step-0 eval are left out)."""
    evals = part.dropna(subset=["eval_accuracy"]).sort_values("step")
    by_run = evals.groupby("run")
    first = by_run.first()
    last = by_run.last()
    keep = first["step"] == 0
    return (last.loc[keep, "eval_accuracy"] - first.loc[keep, "eval_accuracy"]).to_numpy(dtype=float)


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
             "Gain: last eval_accuracy minus the step-0 (warm-start) one, mean over runs, 95 % bootstrap interval. "
             f"P(> {baseline}): probability that a run of the algorithm ends above a run of {baseline}. "
             f"Steps to {threshold:g}: first step where the mean eval accuracy over seeds"
             f"{f' (trailing mean over {window} evals)' if window > 1 else ''} reaches {threshold:g}. "
             "Peak memory: max over steps of mem_peak_bytes, mean over runs. Tokens/s: mean over steps and runs.", ""]
    header = ["algorithm", "runs (completed)", "final accuracy IQM [95 % CI]", "gain mean [95 % CI]",
              f"P(> {baseline}) [95 % CI]", f"steps to {threshold:g}", "peak memory", "tokens/s"]
    for (experiment, task, model), part in table.groupby(["experiment", "task.name", "model.name"], sort=True):
        lines += [f"## {_setting_title(experiment, task, model)}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * len(header)) + "|"]
        for r in part.itertuples(index=False):
            r = r._asdict()
            final = _fmt_interval(r["final_acc_iqm"], r["final_acc_low"], r["final_acc_high"])
            if r["final_over_unfinished"] and final != "—":
                final += " *"
            gain = _fmt_interval(r["gain_mean"], r["gain_low"], r["gain_high"])
            p_imp = "—" if r["algo"] == baseline else _fmt_interval(r["p_improve"], r["p_improve_low"], r["p_improve_high"], 2)
            steps = "never" if not np.isfinite(r["steps_to_threshold"]) else f"{r['steps_to_threshold']:.0f}"
            tps = f"{r['tokens_per_s']:.0f}" if np.isfinite(r["tokens_per_s"]) else "—"
            lines.append(f"| {r['algo']} | {r['n_runs']} ({r['n_completed']}) | {final} | {gain} | {p_imp} | {steps} | "
                         f"{_fmt_bytes(r['peak_mem_bytes'])} | {tps} |")
        lines.append("")
    if table["final_over_unfinished"].any():
        lines.append("\\* no completed run: over unfinished runs' last eval.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    table.to_csv(out / "summary.csv", index=False)
    return table

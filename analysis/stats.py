"""Pure statistics for comparing algorithms over seeds (no plotting, no file I/O).

Arrays follow rliable's convention: `scores` is (n_runs, n_tasks); curves are (n_seeds, n_steps)
with NaN where a seed has no value at a step (a shorter or still running run, a non-eval step).

- `bootstrap_mean_ci`: mean across seeds per step with a percentile-bootstrap interval.
- `aggregate_over_seeds`: the same on a tidy frame, per group and step.
- `iqm`, `iqm_ci`: interquartile mean of final scores with a stratified-bootstrap interval.
- `probability_of_improvement`, `probability_of_improvement_ci`: P(X > Y) (+ half the ties).
- `steps_to_threshold`: first step where the (smoothed) mean across seeds reaches a threshold.

Point estimates come from `rliable.metrics` (aggregate_iqm, probability_of_improvement).
`rliable.library` (its bootstrap) is not used: it imports `arch`, whose 7.x release fails to
import against pandas 3; the stratified bootstrap here follows rliable's definition (resample
runs with replacement independently within each task; percentile interval).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

try:
    from rliable import metrics as _rly_metrics
except Exception:  # noqa: BLE001 - rliable missing or broken: same formulas below
    _rly_metrics = None

__all__ = [
    "bootstrap_mean_ci", "aggregate_over_seeds", "rolling_mean", "iqm", "iqm_ci",
    "stratified_bootstrap_ci", "probability_of_improvement", "probability_of_improvement_ci",
    "steps_to_threshold", "final_values",
]


def bootstrap_mean_ci(values: np.ndarray, *, confidence: float = 0.95, n_boot: int = 2000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean across seeds and its percentile-bootstrap interval, per column.

    values: (n_seeds, n_points), NaN = missing -> (mean, low, high), each (n_points,).
    Each column is bootstrapped over its finite seeds only (resample them with replacement
    `n_boot` times, take the mean, then the (1-confidence)/2 and (1+confidence)/2 percentiles).
    One finite seed gives low = high = mean; none gives NaN. Same `seed`, same result.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"values must be (n_seeds, n_points), got shape {values.shape}")
    _check_confidence(confidence)
    n_points = values.shape[1]
    mean = np.full(n_points, np.nan)
    low = np.full(n_points, np.nan)
    high = np.full(n_points, np.nan)
    finite = np.isfinite(values)  # (n_seeds, n_points)
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    # Columns with the same set of finite seeds share one resampling: one vectorised pass each.
    patterns, pattern_of_column = np.unique(finite.T, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        columns = np.flatnonzero(pattern_of_column.reshape(-1) == p)
        seeds = np.flatnonzero(pattern)
        if len(seeds) == 0:
            continue
        sub = values[np.ix_(seeds, columns)]  # (n, c)
        mean[columns] = sub.mean(axis=0)
        if len(seeds) == 1:
            low[columns] = high[columns] = sub[0]
            continue
        index = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))  # (n_boot, n)
        chunk = max(1, 4_000_000 // (n_boot * len(seeds)))  # bound memory to ~32 MB per chunk
        for start in range(0, len(columns), chunk):
            boot_means = sub[index, start:start + chunk].mean(axis=1)  # (n_boot, c)
            low[columns[start:start + chunk]] = np.percentile(boot_means, 100 * alpha, axis=0)
            high[columns[start:start + chunk]] = np.percentile(boot_means, 100 * (1 - alpha), axis=0)
    return mean, low, high


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` points along the last axis, ignoring NaN points;
    the first window-1 points average what exists so far. window=1 returns the input.

    values (..., n) -> (..., n)
    """
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if window == 1:
        return values.copy()
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    csum = np.cumsum(filled, axis=-1)
    ccount = np.cumsum(finite, axis=-1)
    pad = [(0, 0)] * (values.ndim - 1) + [(window, 0)]
    csum = np.pad(csum, pad)
    ccount = np.pad(ccount, pad)
    total = csum[..., window:] - csum[..., :-window]
    count = ccount[..., window:] - ccount[..., :-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def aggregate_over_seeds(df: pd.DataFrame, value: str, *, by: Sequence[str] = ("algo",), x: str = "step",
                         run: str = "run", smooth: int = 1, confidence: float = 0.95, n_boot: int = 2000,
                         seed: int = 0) -> pd.DataFrame:
    """Mean across runs (seeds) of `value` per group and `x`, with a bootstrap interval.

    df: tidy rows (run, x, value, *by). Each run is one seed of its group. Rows where `value`
    is NaN are dropped first (e.g. non-eval steps for eval_accuracy). `smooth` > 1 applies a
    trailing `rolling_mean` over each run's own points before averaging.
    Returns columns [*by, x, "mean", "low", "high", "n"] (n = seeds with a value there).
    """
    by = list(by)
    missing = [c for c in [*by, x, run, value] if c not in df.columns]
    if missing:
        raise KeyError(f"aggregate_over_seeds: columns {missing} not in the frame; it has {list(df.columns)}")
    rows = df[[*by, x, run, value]].dropna(subset=[value])
    out = []
    for key, part in rows.groupby(by, sort=True, dropna=False) if by else [((), rows)]:
        wide = part.pivot_table(index=run, columns=x, values=value, aggfunc="last")  # (n_runs, n_x)
        values = wide.to_numpy(dtype=np.float64)
        if smooth > 1:
            values = rolling_mean(values, smooth)
            values[~np.isfinite(wide.to_numpy(dtype=np.float64))] = np.nan  # keep each run's own support
        mean, low, high = bootstrap_mean_ci(values, confidence=confidence, n_boot=n_boot, seed=seed)
        frame = pd.DataFrame({x: wide.columns.to_numpy(), "mean": mean, "low": low, "high": high,
                              "n": np.isfinite(values).sum(axis=0)})
        key = key if isinstance(key, tuple) else (key,)
        for column, k in zip(by, key):
            frame.insert(by.index(column), column, k)
        out.append(frame)
    if not out:  # typed, so concatenating it with non-empty results keeps numeric columns numeric
        empty = {c: df[c].iloc[0:0] for c in [*by, x]}
        empty.update({c: pd.Series(dtype="float64") for c in ("mean", "low", "high")})
        empty["n"] = pd.Series(dtype="int64")
        return pd.DataFrame(empty)
    return pd.concat(out, ignore_index=True)


# ----------------------------------------------------------------------------- final scores


def _as_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"{name} must be (n_runs, n_tasks) with at least one run, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} holds NaN/inf; drop runs without a final score first")
    return scores


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of all runs x tasks scores (25 % trimmed
    from each end, `scipy.stats.trim_mean`; with fewer than 4 scores nothing is trimmed).

    scores (n_runs, n_tasks) or (n_runs,) -> float
    """
    scores = _as_scores(scores)
    if _rly_metrics is not None:
        return float(_rly_metrics.aggregate_iqm(scores))
    return float(scipy.stats.trim_mean(scores, proportiontocut=0.25, axis=None))


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each bootstrap replicate: (n_boot, n_runs, n_tasks) -> (n_boot,)"""
    return scipy.stats.trim_mean(samples.reshape(samples.shape[0], -1), proportiontocut=0.25, axis=1)


def _stratified_resample(scores: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resample runs with replacement independently within each task: (n_runs, n_tasks) -> (n_boot, n_runs, n_tasks)"""
    n_runs, n_tasks = scores.shape
    index = rng.integers(0, n_runs, size=(n_boot, n_runs, n_tasks))
    return scores[index, np.arange(n_tasks)[None, None, :]]


def stratified_bootstrap_ci(scores: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray] = _iqm_rows, *,
                            confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `statistic` under rliable's stratified bootstrap.

    statistic maps replicates (n_boot, n_runs, n_tasks) -> (n_boot,) (default: IQM of each).
    """
    scores = _as_scores(scores)
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    replicates = np.asarray(statistic(_stratified_resample(scores, n_boot, rng)), dtype=np.float64)
    alpha = (1 - confidence) / 2
    return float(np.percentile(replicates, 100 * alpha)), float(np.percentile(replicates, 100 * (1 - alpha)))


def iqm_ci(scores: np.ndarray, *, confidence: float = 0.95, n_boot: int = 2000,
           seed: int = 0) -> tuple[float, float, float]:
    """(IQM, low, high): the IQM of `scores` and its stratified-bootstrap percentile interval."""
    low, high = stratified_bootstrap_ci(scores, _iqm_rows, confidence=confidence, n_boot=n_boot, seed=seed)
    return iqm(scores), low, high


def _poi_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + 0.5 P(X = Y) per task averaged over tasks, for batches:
    x (b, n_x, n_tasks), y (b, n_y, n_tasks) -> (b,)"""
    greater = (x[:, :, None, :] > y[:, None, :, :]).mean(axis=(1, 2))  # (b, n_tasks)
    equal = (x[:, :, None, :] == y[:, None, :, :]).mean(axis=(1, 2))
    return (greater + 0.5 * equal).mean(axis=1)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y): the chance that a random run of X beats a random run of Y on a task (ties count
    half; the Mann-Whitney U over n_x * n_y), averaged over tasks. 0.5 = no difference.

    scores_x (n_runs_x, n_tasks), scores_y (n_runs_y, n_tasks) -> float
    """
    x, y = _as_scores(scores_x, "scores_x"), _as_scores(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"scores_x has {x.shape[1]} task(s), scores_y {y.shape[1]}; they must match")
    if _rly_metrics is not None:
        return float(_rly_metrics.probability_of_improvement(x, y))
    return float(_poi_batched(x[None], y[None])[0])


def probability_of_improvement_ci(scores_x: np.ndarray, scores_y: np.ndarray, *, confidence: float = 0.95,
                                  n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), low, high), the interval from stratified bootstrap of X's and Y's runs independently."""
    x, y = _as_scores(scores_x, "scores_x"), _as_scores(scores_y, "scores_y")
    point = probability_of_improvement(x, y)
    rng = np.random.default_rng(seed)
    bx, by_ = _stratified_resample(x, n_boot, rng), _stratified_resample(y, n_boot, rng)
    replicates = _poi_batched(bx, by_)
    alpha = (1 - confidence) / 2
    return point, float(np.percentile(replicates, 100 * alpha)), float(np.percentile(replicates, 100 * (1 - alpha)))


# ----------------------------------------------------------------------------- curves -> numbers


def steps_to_threshold(steps: np.ndarray, values: np.ndarray, threshold: float, *, window: int = 1) -> float:
    """First step at which the mean across seeds, smoothed by a trailing mean over `window`
    logged points, reaches `threshold` (>=); NaN if it never does.

    steps (n_steps,), values (n_seeds, n_steps) or (n_steps,), NaN = not logged. Steps where no
    seed has a value (non-eval steps) are dropped before smoothing; the first window-1 points
    are never counted (a full window is needed), so one lucky point cannot cross alone.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.shape[-1] != steps.shape[0]:
        raise ValueError(f"values has {values.shape[-1]} steps, steps has {steps.shape[0]}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    logged = np.isfinite(values).any(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values[:, logged], axis=0)  # (n_logged,)
    steps = steps[logged]
    if len(mean) < window:
        return float("nan")
    smoothed = np.convolve(mean, np.ones(window) / window, mode="valid")  # (n_logged - window + 1,)
    hit = np.flatnonzero(smoothed >= threshold)
    return float(steps[hit[0] + window - 1]) if len(hit) else float("nan")


def final_values(df: pd.DataFrame, value: str, *, run: str = "run", x: str = "step", last: int = 1) -> pd.Series:
    """Each run's final `value`: the mean of its last `last` non-NaN points (by `x`); runs with
    none are left out. Returns a Series indexed by run."""
    rows = df[[run, x, value]].dropna(subset=[value]).sort_values([run, x])
    return rows.groupby(run, sort=True)[value].apply(lambda s: s.iloc[-last:].mean())


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")

"""analysis.stats on hand-made arrays with exact expected values (each worked out in a comment)."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from analysis.stats import (
    aggregate_over_seeds,
    bootstrap_mean_ci,
    final_values,
    iqm,
    iqm_ci,
    probability_of_improvement,
    probability_of_improvement_ci,
    rolling_mean,
    stratified_bootstrap_ci,
    steps_to_threshold,
)

# ----------------------------------------------------------------------------- bootstrap_mean_ci


def test_bootstrap_mean_ci_exact_cases():
    values = np.array([[0.0, 1.0, 2.0, np.nan],
                       [1.0, 1.0, np.nan, np.nan]])
    mean, low, high = bootstrap_mean_ci(values, n_boot=2000, seed=0)
    # column 0: resampled means of {0, 1} are 0 (p=1/4), 0.5 (1/2), 1 (1/4): 2.5th pct 0, 97.5th 1
    # column 1: both seeds equal -> no spread; column 2: one seed -> its value; column 3: none -> NaN
    np.testing.assert_array_equal(mean[:3], [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(low[:3], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(high[:3], [1.0, 1.0, 2.0])
    assert math.isnan(mean[3]) and math.isnan(low[3]) and math.isnan(high[3])


def test_bootstrap_mean_ci_three_seeds():
    # seeds {0, 0, 3}: resampled mean is 3 with p = 1/27 = 3.7 % > 2.5 % -> high = 3;
    # mean 0 with p = (2/3)^3 = 29.6 % -> low = 0
    mean, low, high = bootstrap_mean_ci(np.array([0.0, 0.0, 3.0]), n_boot=4000, seed=1)
    assert (mean[0], low[0], high[0]) == (1.0, 0.0, 3.0)


def test_bootstrap_mean_ci_is_reproducible_and_seeded():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 40))
    first = bootstrap_mean_ci(values, seed=3)
    again = bootstrap_mean_ci(values, seed=3)
    other = bootstrap_mean_ci(values, seed=4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_mean_ci(values, confidence=95)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 6)),
              elements=st.one_of(st.floats(-10, 10), st.just(np.nan))))
def test_bootstrap_interval_brackets_the_mean(values):
    mean, low, high = bootstrap_mean_ci(values, n_boot=200)
    has = np.isfinite(values).any(axis=0)
    assert np.array_equal(np.isfinite(mean), has)
    assert np.all(low[has] <= mean[has] + 1e-12) and np.all(mean[has] <= high[has] + 1e-12)
    np.testing.assert_allclose(mean[has], np.nanmean(values[:, has], axis=0))


# ----------------------------------------------------------------------------- rolling / aggregate


def test_rolling_mean():
    np.testing.assert_allclose(rolling_mean(np.array([1.0, 2, 3, 4]), 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(rolling_mean(np.array([[1.0, np.nan, 3, 5]]), 2), [[1.0, 1.0, 3.0, 4.0]])
    np.testing.assert_allclose(rolling_mean(np.array([1.0, 2, 3]), 1), [1.0, 2, 3])
    with pytest.raises(ValueError, match="window must be >= 1"):
        rolling_mean(np.array([1.0]), 0)


def test_aggregate_over_seeds_means_per_group_and_step():
    df = pd.DataFrame({
        "algo": ["a"] * 6 + ["b"] * 3,
        "run": ["a1", "a1", "a1", "a2", "a2", "a2", "b1", "b1", "b1"],
        "step": [1, 2, 3, 1, 2, 3, 1, 2, 3],
        "reward_mean": [0.0, 0.2, 0.4, 1.0, 0.4, np.nan, 0.5, 0.5, 0.5],
    })
    out = aggregate_over_seeds(df, "reward_mean", by=["algo"], n_boot=500)
    assert list(out.columns) == ["algo", "step", "mean", "low", "high", "n"]
    a = out[out.algo == "a"]
    np.testing.assert_allclose(a["mean"], [0.5, 0.3, 0.4])  # step 3: only a1 logged it
    assert a.n.tolist() == [2, 2, 1]
    assert a.low.iloc[0] == 0.0 and a.high.iloc[0] == 1.0  # resampled {0, 1}
    b = out[out.algo == "b"]
    np.testing.assert_allclose(b[["mean", "low", "high"]].to_numpy(), 0.5)
    smoothed = aggregate_over_seeds(df, "reward_mean", by=["algo"], smooth=2, n_boot=100)
    # a1 smoothed: [0, 0.1, 0.3]; a2: [1, 0.7, (no value at step 3)] -> mean [0.5, 0.4, 0.3]
    np.testing.assert_allclose(smoothed[smoothed.algo == "a"]["mean"], [0.5, 0.4, 0.3])
    empty = aggregate_over_seeds(df.assign(reward_mean=np.nan), "reward_mean", by=["algo"])
    assert empty.empty and empty["mean"].dtype == np.float64 and empty["step"].dtype == df["step"].dtype
    with pytest.raises(KeyError, match=r"columns \['nope'\] not in the frame"):
        aggregate_over_seeds(df, "nope")


# ----------------------------------------------------------------------------- IQM


def test_iqm_exact():
    assert iqm(np.arange(1.0, 9.0)) == 4.5  # trims 2 from each end: mean(3, 4, 5, 6)
    assert iqm(np.arange(1.0, 9.0).reshape(4, 2)) == 4.5  # runs x tasks pooled
    assert iqm(np.array([1.0, 2.0, 10.0])) == pytest.approx(13 / 3)  # n < 4: nothing trimmed
    assert iqm(np.array([0.0, 0.0, 0.0, 0.0, 100.0, 100.0, 100.0, 100.0])) == 50.0
    with pytest.raises(ValueError, match="NaN/inf"):
        iqm(np.array([1.0, np.nan]))


def test_iqm_ci_constant_scores_have_no_spread():
    assert iqm_ci(np.full((5, 1), 0.7)) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))


def test_stratified_bootstrap_keeps_tasks_apart():
    # task 0 always scores 0, task 1 always 1: resampling within tasks keeps half zeros, half
    # ones in every replicate -> IQM exactly 0.5 every time (pooled resampling would spread)
    scores = np.column_stack([np.zeros(6), np.ones(6)])
    assert stratified_bootstrap_ci(scores, n_boot=500) == (0.5, 0.5)


def test_iqm_ci_brackets_the_point_and_is_seeded():
    scores = np.random.default_rng(0).uniform(size=(10, 1))
    point, low, high = iqm_ci(scores, seed=1)
    assert low <= point <= high and high - low > 0
    assert iqm_ci(scores, seed=1) == (point, low, high)


# ----------------------------------------------------------------------------- probability of improvement


def test_probability_of_improvement_exact():
    # x=[1,2], y=[0,3]: pairs (1>0) (1<3) (2>0) (2<3) -> 2/4
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([0.0, 3.0])) == 0.5
    assert probability_of_improvement(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    # ties count half: x=[1,2], y=[1,1]: 0.5 + 0.5 + 1 + 1 over 4
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == 0.75
    # two tasks averaged: task 0 -> 1.0, task 1 -> 0.0
    assert probability_of_improvement(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == 0.5
    with pytest.raises(ValueError, match=r"2 task\(s\), scores_y 3"):
        probability_of_improvement(np.ones((2, 2)), np.ones((2, 3)))


def test_probability_of_improvement_ci():
    point, low, high = probability_of_improvement_ci(np.array([2.0, 3.0, 4.0]), np.array([0.0, 1.0]))
    assert (point, low, high) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.5, 1, size=(8, 2)), rng.normal(0, 1, size=(6, 2))
    point, low, high = probability_of_improvement_ci(x, y)
    assert 0 <= low <= point <= high <= 1


def test_batched_improvement_matches_rliable():
    from rliable import metrics
    from analysis.stats import _poi_batched

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, size=(7, 3)).astype(float), rng.integers(0, 4, size=(5, 3)).astype(float)
    assert _poi_batched(x[None], y[None])[0] == pytest.approx(metrics.probability_of_improvement(x, y))


# ----------------------------------------------------------------------------- steps to threshold


def test_steps_to_threshold():
    steps = np.array([10, 20, 30, 40])
    values = np.array([[0.1, 0.5, 0.2, 0.9],
                       [0.3, 0.5, 0.4, 0.9]])  # mean [0.2, 0.5, 0.3, 0.9]
    assert steps_to_threshold(steps, values, 0.5) == 20
    # trailing mean of 2 points: [0.35, 0.4, 0.6] ending at steps 20, 30, 40
    assert steps_to_threshold(steps, values, 0.5, window=2) == 40
    assert math.isnan(steps_to_threshold(steps, values, 0.95))
    assert math.isnan(steps_to_threshold(steps, values, 0.1, window=5))  # fewer points than a window


def test_steps_to_threshold_skips_unlogged_steps():
    steps = np.arange(1, 7)
    values = np.array([[np.nan, 0.2, np.nan, 0.6, np.nan, 0.8],
                       [np.nan, 0.4, np.nan, np.nan, np.nan, 0.8]])  # eval every 2nd step; one seed missed step 4
    # logged means: step 2 -> 0.3, step 4 -> 0.6, step 6 -> 0.8; window 2: [0.45, 0.7]
    assert steps_to_threshold(steps, values, 0.6) == 4
    assert steps_to_threshold(steps, values, 0.7, window=2) == 6


def test_final_values():
    df = pd.DataFrame({"run": ["a", "a", "a", "b", "b"], "step": [1, 2, 3, 1, 2],
                       "eval_accuracy": [0.1, 0.5, np.nan, np.nan, np.nan]})
    out = final_values(df, "eval_accuracy")
    assert out.to_dict() == {"a": 0.5}
    df.loc[df.run == "b", "eval_accuracy"] = [0.2, 0.4]
    assert final_values(df, "eval_accuracy", last=2).to_dict() == pytest.approx({"a": 0.3, "b": 0.3})

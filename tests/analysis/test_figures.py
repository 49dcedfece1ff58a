"""analysis.figures on synthetic runs with known values: each figure's returned data is checked
against hand-computed numbers, and figures the runs cannot support are skipped with a message."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from analysis import load_groups, load_runs
from analysis.__main__ import main
from analysis.figures import (
    PRESET_COLORS,
    SkipFigure,
    algo_order,
    algo_palette,
    fig_clip,
    fig_critic,
    fig_curves,
    fig_degenerate,
    fig_k4_advantages,
    fig_length,
    fig_memory,
    fig_std_norm,
    make_all,
    summary_table,
    theory_std_gain,
    write_summary,
)
from tests.analysis.synthetic_runs import group_rows, write_run

MB = 2**20


def _files_written(out, name):
    return all((out / f"{name}.{ext}").stat().st_size > 0 for ext in ("png", "pdf", "csv"))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Two seeds each of ppo, grpo, dr_grpo, dapo on model tiny (3 steps, eval at step 2 and 3),
    one seed each on model small (memory only), two grpo seeds with scale=none."""
    root = tmp_path_factory.mktemp("runs")
    rewards = {  # per algo: seed 0, seed 1
        "ppo": ([0.1, 0.2, 0.3], [0.3, 0.4, 0.5]),
        "grpo": ([0.2, 0.4, 0.6], [0.4, 0.6, 0.8]),
        "dr_grpo": ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]),
        "dapo": ([0.5, 0.5, 0.5], [0.7, 0.7, 0.7]),
    }
    for algo, seeds in rewards.items():
        for seed, reward in enumerate(seeds):
            metrics = {
                "reward_mean": reward,
                "eval_accuracy": [None, reward[1], reward[2]],
                "groups_degenerate_frac": [0.5, 0.25, 0.0] if algo != "dapo" else [0.1, 0.1, 0.1],
                "groups_degenerate_frac_sampled": [0.5, 0.25, 0.0] if algo != "dapo" else [0.6, 0.5, 0.4],
                "resp_len_mean": [10 + seed, 11 + seed, 12 + seed],
                "resp_len_correct_mean": [8, 8, 8],
                "resp_len_incorrect_mean": [12, 14, 16],
                "clip_frac_low": [0.01, 0.02, 0.03],
                "clip_frac_high": [0.05 if algo != "dapo" else 0.01] * 3,
                "entropy_mean": [1.0, 0.9, 0.8],
                "critic_explained_var": [-0.5 + seed, 0.0 + seed, 0.5] if algo == "ppo" else [None] * 3,
                "mem_peak_rollout_bytes": [100 * MB, 110 * MB, 105 * MB + seed * MB],
                "mem_peak_reference_bytes": [120 * MB] * 3 if algo in ("ppo", "grpo") else [None] * 3,
                "mem_peak_critic_bytes": [150 * MB] * 3 if algo == "ppo" else [None] * 3,
                "mem_peak_update_bytes": [200 * MB + seed * 2 * MB] * 3,
                "mem_peak_bytes": [210 * MB + seed * 2 * MB] * 3,
                "mem_params_bytes": [2 * MB] * 3, "mem_grads_bytes": [2 * MB] * 3,
                "mem_optimizer_bytes": [4 * MB] * 3,
                "tokens_per_s": [100.0, 200.0, 300.0],
            }
            groups = None
            if algo != "ppo":
                scale = "none" if algo == "dr_grpo" else "group_std"
                groups = group_rows(1, [[1, 0, 0, 0], [1, 1, 0, 0]], scale=scale)
            write_run(root / "tiny", f"{algo}_s{seed}", metrics=metrics, groups=groups, algo=algo, seed=seed,
                      model="tiny", group_size=1 if algo == "ppo" else 4)
        small = {"mem_peak_rollout_bytes": [300 * MB], "mem_peak_update_bytes": [500 * MB],
                 "mem_params_bytes": [20 * MB], "mem_grads_bytes": [20 * MB], "mem_optimizer_bytes": [40 * MB],
                 "reward_mean": [0.5]}
        write_run(root / "small", f"{algo}_small", metrics=small, algo=algo, model="small")
    for seed in (0, 1):
        write_run(root / "tiny", f"grpo_none_s{seed}", metrics={"reward_mean": [0.1, 0.1, 0.1]},
                  groups=group_rows(1, [[1, 0, 0, 0], [1, 1, 0, 0]], scale="none"), algo="grpo", scale="none",
                  seed=seed, model="tiny", group_size=4)
    return root


@pytest.fixture(scope="module")
def runs(runs_dir):
    return load_runs(runs_dir)


@pytest.fixture(scope="module")
def tiny(runs):
    return runs[runs["model.name"] == "tiny"]


# ----------------------------------------------------------------------------- palette


def test_palette_fixes_preset_colours_and_gives_variants_their_own():
    palette = algo_palette(["grpo scale=none", "dapo", "grpo", "ppo", "rloo", "dr_grpo"])
    for name, color in PRESET_COLORS.items():
        assert palette[name] == color
    assert palette["grpo scale=none"] not in PRESET_COLORS.values()
    assert algo_palette(["grpo scale=none"]) == {"grpo scale=none": palette["grpo scale=none"]}
    assert algo_order(["dapo", "grpo scale=none", "zeta", "ppo", "grpo"]) == [
        "ppo", "grpo", "grpo scale=none", "dapo", "zeta"]


# ----------------------------------------------------------------------------- fig 2


def test_fig_curves_mean_and_interval_over_seeds(tiny, tmp_path):
    data = fig_curves(tiny, tmp_path, n_boot=500)
    assert _files_written(tmp_path, "fig2_curves")
    grpo = data[(data.metric == "reward_mean") & (data.algo == "grpo")].sort_values("step")
    np.testing.assert_allclose(grpo["mean"], [0.3, 0.5, 0.7])  # mean of [0.2,0.4,0.6] and [0.4,0.6,0.8]
    np.testing.assert_allclose(grpo["low"], [0.2, 0.4, 0.6])  # resampling two seeds: extremes are the seeds
    np.testing.assert_allclose(grpo["high"], [0.4, 0.6, 0.8])
    assert grpo["n"].tolist() == [2, 2, 2]
    dr = data[(data.metric == "reward_mean") & (data.algo == "dr_grpo")]
    np.testing.assert_allclose(dr[["low", "high"]].to_numpy(), dr[["mean", "mean"]].to_numpy())  # identical seeds
    evals = data[(data.metric == "eval_accuracy") & (data.algo == "grpo")]
    assert evals.step.tolist() == [2, 3]  # only eval steps
    np.testing.assert_allclose(evals["mean"], [0.5, 0.7])
    assert set(data.algo) == {"ppo", "grpo", "grpo scale=none", "dr_grpo", "dapo"}


def test_fig_curves_skips_without_rewards(tmp_path):
    write_run(tmp_path / "r", "empty", metrics={"loss": [1.0]})
    with pytest.raises(SkipFigure, match="needs runs that logged reward_mean"):
        fig_curves(load_runs(tmp_path / "r"), tmp_path / "out")


# ----------------------------------------------------------------------------- fig 1


def test_fig_memory_peak_is_max_over_steps_then_mean_over_seeds(runs, tmp_path):
    data = fig_memory(runs, tmp_path)
    assert _files_written(tmp_path, "fig1_memory")
    d = data.set_index(["model.name", "algo", "quantity"])["bytes"]
    # rollout peaks: seed 0 max(100,110,105) = 110 MiB, seed 1 max(100,110,106) = 110 MiB
    assert d[("tiny", "grpo", "rollout")] == 110 * MB
    assert d[("tiny", "grpo", "update")] == 201 * MB  # mean of 200 and 202
    assert d[("tiny", "ppo", "critic")] == 150 * MB
    assert math.isnan(d[("tiny", "grpo", "critic")]) and math.isnan(d[("tiny", "dapo", "reference")])
    assert d[("small", "dapo", "optimizer")] == 40 * MB
    assert set(data.quantity) == {"rollout", "reference", "critic", "update", "parameters", "gradients", "optimizer"}
    assert "grpo scale=none" not in set(data.algo)  # no memory logged


def test_fig_memory_needs_two_model_sizes(tiny, tmp_path):
    with pytest.raises(SkipFigure, match=r"needs runs of ≥2 model sizes .* \(found 1: tiny\)"):
        fig_memory(tiny, tmp_path)


# ----------------------------------------------------------------------------- fig 3


def test_theory_gain():
    # K=4, p=1/2: std = sqrt(4/3 * 1/4) = sqrt(1/3) -> gain sqrt(3); p = 1/K: gain sqrt(K)
    assert theory_std_gain(0.5, 4, eps=0.0) == pytest.approx(math.sqrt(3))
    assert theory_std_gain(1 / 16, 16, eps=0.0) == pytest.approx(4.0)


def test_fig_std_norm_theory_measured_and_weight_share(runs_dir, tiny, tmp_path):
    groups = load_groups(runs_dir)
    data = fig_std_norm(tiny, groups, tmp_path, n_boot=200)
    assert _files_written(tmp_path, "fig3_std_norm")
    theory = data[data.panel == "theory"]
    assert sorted(theory.K.unique()) == [4, 8, 16]
    assert len(theory[theory.K == 8]) == 7  # p = 1/8 .. 7/8
    measured = data[data.panel == "measured"].set_index("success_rate")
    # [1,0,0,0]: unbiased std 0.5 -> gain 1/(0.5 + 1e-6); [1,1,0,0]: std sqrt(1/3)
    assert measured.loc[0.25, "gain"] == pytest.approx(1 / (0.5 + 1e-6))
    assert measured.loc[0.5, "gain"] == pytest.approx(1 / (math.sqrt(1 / 3) + 1e-6))
    share = data[data.panel == "weight_share"].set_index(["algo", "bin"])["mean"]
    # with std: mean |A| 0.75 (p=.25) and sqrt(3)/2 (p=.5) -> shares 0.75/(0.75+0.866)
    with_std = 0.75 / (0.75 + math.sqrt(3) / 2)
    assert share[("grpo", "0.25")] == pytest.approx(with_std, abs=1e-5)
    assert share[("grpo", "0.5")] == pytest.approx(1 - with_std, abs=1e-5)
    # without: mean |A| 0.375 and 0.5 -> 3/7, 4/7
    assert share[("grpo scale=none", "0.25")] == pytest.approx(3 / 7)
    assert share[("dr_grpo", "0.5")] == pytest.approx(4 / 7)
    assert share[("groups (count share)", "0.25")] == pytest.approx(0.5)
    assert data.attrs["notes"] == []


def test_fig_std_norm_notes_a_missing_scale_and_skips_without_groups(runs_dir, tiny, tmp_path):
    groups = load_groups(runs_dir)
    only_std = groups[groups["algo.scale"] == "group_std"]
    data = fig_std_norm(tiny, only_std, tmp_path, n_boot=50)
    assert any("needs runs with algo.scale=none" in n for n in data.attrs["notes"])
    with pytest.raises(SkipFigure, match="needs runs with groups.jsonl rows"):
        fig_std_norm(tiny, groups.iloc[0:0], tmp_path)


# ----------------------------------------------------------------------------- figs 4-7


def test_fig_degenerate_with_and_without_dynamic_sampling(tiny, tmp_path):
    data = fig_degenerate(tiny, tmp_path, n_boot=100)
    assert _files_written(tmp_path, "fig4_degenerate")
    assert "ppo" not in set(data.algo)  # group_size 1: every group degenerate by definition
    batch = data[data.metric == "groups_degenerate_frac"]
    dapo = batch[batch.algo == "dapo"]
    assert dapo.filter_groups.all() and np.allclose(dapo["mean"], 0.1)
    grpo = batch[batch.algo == "grpo"]
    assert not grpo.filter_groups.any() and np.allclose(grpo["mean"], [0.5, 0.25, 0.0])
    sampled = data[(data.metric == "groups_degenerate_frac_sampled") & (data.algo == "dapo")]
    np.testing.assert_allclose(sampled["mean"], [0.6, 0.5, 0.4])  # before dynamic sampling dropped them
    with pytest.raises(SkipFigure, match=r"dynamic sampling on and off .* \(found: off\)"):
        fig_degenerate(tiny[tiny["algo.name"] != "dapo"], tmp_path)


def test_fig_length_grpo_vs_dr_grpo(tiny, tmp_path):
    data = fig_length(tiny, tmp_path, n_boot=100)
    assert _files_written(tmp_path, "fig5_length")
    assert set(data.algo) == {"grpo", "dr_grpo"}  # grpo scale=none logged no lengths
    assert set(data.metric) == {"resp_len_mean", "resp_len_correct_mean", "resp_len_incorrect_mean"}
    grpo = data[(data.algo == "grpo") & (data.metric == "resp_len_mean")]
    np.testing.assert_allclose(grpo["mean"], [10.5, 11.5, 12.5])
    no_correct = fig_length(tiny.assign(resp_len_correct_mean=np.nan), tmp_path, n_boot=50)  # nothing solved yet
    assert "resp_len_correct_mean" not in set(no_correct.metric) and no_correct["mean"].dtype == np.float64
    with pytest.raises(SkipFigure, match=r"both grpo and dr_grpo .* \(found: grpo\)"):
        fig_length(tiny[tiny["algo.name"] == "grpo"], tmp_path)


def test_fig_length_adds_grpo_with_another_aggregation(tmp_path):
    """GRPO with Dr.GRPO's sum/L (the length knob alone) is drawn beside the two presets; a GRPO
    variant that keeps the per-sequence mean (scale=none) is not."""
    root = tmp_path / "runs"
    variants = {"grpo": ("grpo", {}), "dr_grpo": ("dr_grpo", {}),
                "grpo_sumnorm": ("grpo", {"aggregation": "seq_mean_token_sum_norm"}),
                "grpo_none": ("grpo", {"scale": "none"})}
    for i, (name, (algo, knobs)) in enumerate(variants.items()):
        for seed in (0, 1):
            metrics = {"resp_len_mean": [10 + i, 9 + i], "resp_len_correct_mean": [8, 8],
                       "resp_len_incorrect_mean": [12, 10 + i]}
            write_run(root, f"{name}_s{seed}", metrics=metrics, algo=algo, seed=seed, **knobs)
    data = fig_length(load_runs(root), tmp_path, n_boot=50)
    assert set(data.algo) == {"grpo", "dr_grpo", "grpo aggregation=seq_mean_token_sum_norm"}
    sumnorm = data[(data.algo == "grpo aggregation=seq_mean_token_sum_norm") & (data.metric == "resp_len_mean")]
    np.testing.assert_allclose(sumnorm.sort_values("step")["mean"], [12, 11])


def test_fig_clip_by_eps_high(tiny, tmp_path):
    data = fig_clip(tiny, tmp_path, n_boot=100)
    assert _files_written(tmp_path, "fig6_clip")
    high = data[data.metric == "clip_frac_high"].groupby("algo.eps_high")["mean"].mean()
    assert high[0.28] == pytest.approx(0.01) and high[0.2] == pytest.approx(0.05)
    with pytest.raises(SkipFigure, match=r"≥2 values of algo.eps_high .* \(found 1: 0.2\)"):
        fig_clip(tiny[tiny["algo.name"] != "dapo"], tmp_path)


def test_fig_critic(tiny, tmp_path):
    data = fig_critic(tiny, tmp_path, n_boot=100)
    assert _files_written(tmp_path, "fig7_critic")
    ev = data[data.metric == "critic_explained_var"]
    assert set(ev.algo) == {"ppo"}
    np.testing.assert_allclose(ev["mean"], [0.0, 0.5, 0.5])  # seeds [-0.5, 0, 0.5] and [0.5, 1, 0.5]
    assert set(data[data.metric == "reward_mean"].algo) == {"ppo", "grpo"}
    with pytest.raises(SkipFigure, match="needs ppo runs that logged critic_explained_var"):
        fig_critic(tiny[tiny["algo.name"] == "grpo"], tmp_path)


# ----------------------------------------------------------------------------- fig 8


def test_fig_k4_advantages_from_algos(tmp_path):
    data = fig_k4_advantages(None, tmp_path)
    assert _files_written(tmp_path, "fig8_k4_advantages")
    adv = data.set_index(["rewards", "scale", "rollout"])["advantage"]

    def vec(rewards, scale):
        return [adv[(rewards, scale, i)] for i in range(1, 5)]

    np.testing.assert_allclose(vec("[1, 1, 1, 1]", "group_std"), [0, 0, 0, 0])
    np.testing.assert_allclose(vec("[1, 0, 0, 0]", "group_std"), [1.5, -0.5, -0.5, -0.5], atol=1e-5)
    np.testing.assert_allclose(vec("[1, 0, 0, 0]", "none"), [0.75, -0.25, -0.25, -0.25], atol=1e-6)
    np.testing.assert_allclose(vec("[0, 1, 1, 1]", "group_std"), [-1.5, 0.5, 0.5, 0.5], atol=1e-5)
    # a 0.1 shortfall gets the same normalized advantage as a full failure: std scales with it
    np.testing.assert_allclose(vec("[0.9, 1, 1, 1]", "group_std"), [-1.5, 0.5, 0.5, 0.5], atol=1e-3)
    np.testing.assert_allclose(vec("[0.9, 1, 1, 1]", "none"), [-0.075, 0.025, 0.025, 0.025], atol=1e-6)


# ----------------------------------------------------------------------------- summary


def test_summary_table_numbers(tmp_path):
    for seed, final in enumerate([0.1, 0.2, 0.3, 0.4]):
        write_run(tmp_path / "runs", f"grpo{seed}", algo="grpo", seed=seed,
                  metrics={"eval_accuracy": [None, final / 2, final], "mem_peak_bytes": [MB, 3 * MB, 2 * MB],
                           "tokens_per_s": [10.0, 20.0, 30.0], "eval_pass@4": [None, 0.5, final + 0.5]})
        write_run(tmp_path / "runs", f"dapo{seed}", algo="dapo", seed=seed,
                  metrics={"eval_accuracy": [None, 0.6, 0.9], "mem_peak_bytes": [MB] * 3,
                           "tokens_per_s": [5.0] * 3},
                  state="running" if seed == 3 else "completed")
    runs = load_runs(tmp_path / "runs")
    table = summary_table(runs, threshold=0.15, n_boot=300).set_index("algo")
    grpo, dapo = table.loc["grpo"], table.loc["dapo"]
    assert grpo.final_acc_iqm == pytest.approx(0.25)  # IQM of 0.1..0.4 = mean(0.2, 0.3)
    assert grpo.final_acc_low <= 0.25 <= grpo.final_acc_high
    assert grpo.steps_to_threshold == 3  # mean eval at step 2: 0.125, at step 3: 0.25
    assert dapo.steps_to_threshold == 2
    assert grpo.peak_mem_bytes == 3 * MB and grpo.tokens_per_s == 20.0
    assert (grpo.n_runs, grpo.n_completed, dapo.n_completed) == (4, 4, 3)
    assert dapo.final_acc_iqm == pytest.approx(0.9)  # completed runs only
    assert dapo.p_improve == 1.0 and math.isnan(grpo.p_improve)
    assert grpo["final_eval_pass@4"] == pytest.approx(0.75)   # mean of 0.6..0.9
    assert math.isnan(dapo["final_eval_pass@4"])              # dapo runs logged no pass@k
    out = write_summary(runs, tmp_path / "fig", threshold=0.15, n_boot=100)
    text = (tmp_path / "fig" / "summary.md").read_text()
    assert "| grpo | 4 (4) | 0.250 [" in text and "| dapo | 4 (3) | 0.900 [0.900, 0.900] | — | 1.00 [1.00, 1.00] | 2 |" in text
    assert len(out) == 2


def test_summary_gain_is_last_eval_minus_the_warm_start_per_run(tmp_path):
    # gains 0.1, 0.2, 0.3 (start 0.2, 0.3, 0.1); a run without a step-0 eval has no gain
    for seed, (start, end) in enumerate([(0.2, 0.3), (0.3, 0.5), (0.1, 0.4)]):
        write_run(tmp_path / "runs", f"grpo{seed}", algo="grpo", seed=seed, step_numbers=[0, 1, 2],
                  metrics={"eval_accuracy": [start, None, end], "mem_peak_bytes": [MB] * 3, "tokens_per_s": [1.0] * 3})
    write_run(tmp_path / "runs", "ppo0", algo="ppo", seed=0,
              metrics={"eval_accuracy": [None, 0.5], "mem_peak_bytes": [MB] * 2, "tokens_per_s": [1.0] * 2})
    runs = load_runs(tmp_path / "runs")
    table = summary_table(runs, n_boot=500).set_index("algo")
    grpo = table.loc["grpo"]
    assert grpo.gain_mean == pytest.approx(0.2)
    assert 0.1 - 1e-9 <= grpo.gain_low < 0.2 < grpo.gain_high <= 0.3 + 1e-9  # bootstrap of the mean of three gains
    assert math.isnan(table.loc["ppo"].gain_mean)
    write_summary(runs, tmp_path / "fig", n_boot=100)
    assert "| 0.200 [" in (tmp_path / "fig" / "summary.md").read_text()


# ----------------------------------------------------------------------------- all figures, CLI


def test_make_all_says_what_it_skipped_and_why(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "runs", f"grpo{seed}", algo="grpo", seed=seed, metrics={"reward_mean": [0.1, 0.2]})
    runs = load_runs(tmp_path / "runs")
    lines = []
    report = make_all(runs, load_groups(tmp_path / "runs"), tmp_path / "fig",
                      only=["fig1_memory", "fig3_std_norm", "fig5_length", "fig8_k4_advantages"], n_boot=50,
                      log=lines.append)
    assert report["fig8_k4_advantages"] == "wrote"
    assert lines[0].startswith("skipped fig1_memory: needs runs of ≥2 model sizes")
    assert "(found 0)" in lines[0]  # no memory metrics logged
    assert lines[1] == "skipped fig3_std_norm: needs runs with groups.jsonl rows (found none)"
    assert lines[2] == "skipped fig5_length: needs runs of both grpo and dr_grpo that logged resp_len_mean (found: none)"
    assert set(report) == {"fig1_memory", "fig3_std_norm", "fig5_length", "fig8_k4_advantages"}
    with pytest.raises(ValueError, match="unknown figure"):
        make_all(runs, None, tmp_path, only=["fig9"])


def test_cli_reports_no_runs_and_bad_paths(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["figures", str(tmp_path / "empty"), "--out", str(tmp_path / "fig"), "--only", "fig2_curves,summary"]) == 0
    out = capsys.readouterr().out
    assert "no runs found under" in out
    assert "skipped fig2_curves: needs runs that logged reward_mean (found none)" in out
    assert "skipped summary: needs at least one run (found none)" in out
    assert main(["figures", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        assert main(["figures", str(tmp_path / "empty"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out") and "is a file, not a folder" in err and err.count("\n") == 1
    assert afile.read_text() == "x"


@pytest.mark.slow
def test_cli_draws_every_figure(runs_dir, tmp_path, capsys):
    assert main(["figures", str(runs_dir), "--out", str(tmp_path), "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out, out
    for name in ("fig1_memory", "fig2_curves", "fig3_std_norm", "fig4_degenerate", "fig5_length", "fig6_clip",
                 "fig7_critic", "fig8_k4_advantages"):
        assert _files_written(tmp_path, name), name
    assert (tmp_path / "summary.md").exists()
    assert main(["runs", str(runs_dir)]) == 0
    assert "grpo scale=none" in capsys.readouterr().out


def test_long_variant_labels_wrap_at_spaces_and_equals_into_columns():
    from analysis.figures import _legend_layout, _short_rate_label, _wrap_label
    assert _wrap_label("grpo aggregation=seq_mean_token_sum_norm norm_len=8", 24) == (
        "grpo aggregation=\nseq_mean_token_sum_norm\nnorm_len=8")
    assert _wrap_label("grpo scale=none", 24) == "grpo scale=none"
    labels = ["ppo", "grpo", "grpo aggregation=seq_mean_token_sum_norm norm_len=8",
              "grpo aggregation=seq_mean_token_sum_norm norm_len=8 scale=none", "grpo scale=none", "dr_grpo", "dapo"]
    ncol, wrapped, tallest = _legend_layout(labels, 7.0)
    # 2 columns of (7/2 - 0.5)/0.075 = 40 characters: the two long labels take 2 lines each;
    # column 0 holds entries 0, 2, 4, 6 -> 1 + 2 + 1 + 1 = 5 lines
    assert (ncol, tallest) == (2, 5)
    assert all(len(line) <= 40 for w in wrapped for line in w.split("\n"))
    assert [w.replace("\n", " ") for w in wrapped] == labels  # nothing lost, only line breaks added
    assert _legend_layout(["ppo", "grpo"], 7.0) == (2, ["ppo", "grpo"], 1)
    assert [_short_rate_label(b) for b in ["0", "0.125", "1", "0.1–0.2"]] == ["0", ".125", "1", ".1–.2"]


# ----------------------------------------------------------------------------- experiments kept apart

def _sweep(root, name, *, steps, figures=None, algos=("grpo", "ppo"), reward=0.5):
    """A sweep folder as `python -m experiments sweep` leaves it: sweep.json (with the grid's
    `figures:` when given) and one run folder per (algo, seed)."""
    folder = root / name
    folder.mkdir(parents=True)
    grid = {"name": name, "axes": {"algo": list(algos), "seed": [0, 1]}, **({"figures": figures} if figures else {})}
    (folder / "sweep.json").write_text(json.dumps({"name": name, "grid": grid, "cells": []}))
    for algo in algos:
        for seed in (0, 1):
            write_run(folder, f"{algo}-s{seed}", algo=algo, seed=seed, steps=steps,
                      metrics={"reward_mean": [reward + 0.1 * seed] * steps,
                               "eval_accuracy": [None] * (steps - 1) + [reward],
                               "mem_peak_rollout_bytes": [MB] * steps})
    return folder


def test_two_sweeps_are_never_pooled_and_figures_come_from_the_sweeps_that_declare_them(tmp_path):
    """A 60-step learning sweep and a 2-step memory sweep of the same presets: no curve or summary
    row mixes them, and a figure a sweep declares is drawn only from the sweeps declaring it."""
    root = tmp_path / "runs"
    _sweep(root, "learning", steps=6, figures=["fig2_curves", "summary"], reward=0.5)
    _sweep(root, "memory", steps=2, figures=["fig1_memory"], reward=0.0)
    runs = load_runs(root)
    assert set(runs.experiment) == {"learning", "memory"} and set(runs.algo) == {"grpo", "ppo"}
    out = tmp_path / "fig"
    report = make_all(runs, None, out, only=["fig2_curves", "summary"], n_boot=50, log=lambda _: None)
    assert report["fig2_curves"] == "wrote" and report["summary"] == "wrote"
    curves = pd.read_csv(out / "fig2_curves.csv")
    assert set(curves.experiment) == {"learning"}          # the memory sweep does not declare fig2
    assert curves.loc[curves.metric == "reward_mean", "n"].eq(2).all()  # two seeds, one sweep
    assert curves.step.max() == 6
    text = (out / "summary.md").read_text()
    assert "## learning · task arithmetic · model tiny" in text and "memory ·" not in text
    # without `figures:` both sweeps feed every figure, each in its own panel, never one curve
    sweep_json = root / "memory" / "sweep.json"
    sweep_json.write_text(json.dumps({"name": "memory", "grid": {}, "cells": []}))
    os.utime(sweep_json, ns=(sweep_json.stat().st_atime_ns, sweep_json.stat().st_mtime_ns + 10**9))
    runs = load_runs(root)  # the rewritten sweep.json is read again (the cache is keyed by its mtime)
    make_all(runs, None, out, only=["fig2_curves", "summary"], n_boot=50, log=lambda _: None)
    curves = pd.read_csv(out / "fig2_curves.csv")
    per_curve = curves.groupby(["experiment", "algo", "metric"])["step"].max()
    assert per_curve.xs("memory").max() == 2 and per_curve.xs("learning").min() == 6
    table = summary_table(runs, n_boot=50)
    assert sorted(zip(table.experiment, table.algo)) == [("learning", "grpo"), ("learning", "ppo"),
                                                         ("memory", "grpo"), ("memory", "ppo")]
    assert (table.n_runs == 2).all()


def test_runs_outside_sweeps_that_differ_in_more_than_the_seed_get_their_own_label(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"long{seed}", algo="grpo", seed=seed, steps=60, metrics={"reward_mean": [0.5]})
    write_run(tmp_path, "short", algo="grpo", seed=0, steps=2, metrics={"reward_mean": [0.1]})
    labels = load_runs(tmp_path).drop_duplicates("run").set_index("run_name")["algo"]
    # the value most runs share is left out of the label
    assert (labels["long0"], labels["long1"], labels["short"]) == ("grpo", "grpo", "grpo steps=2")


def test_curve_panels_draw_each_settings_curves(tmp_path, monkeypatch):
    """The drawn figure (not only its CSV) holds one line per algorithm in each experiment's panel."""
    import analysis.draw_curves as draw

    figures = []
    monkeypatch.setattr(draw, "_save", lambda fig, out, name, data: figures.append(fig) or data)
    root = tmp_path / "runs"
    _sweep(root, "one", steps=4)
    _sweep(root, "two", steps=3)
    fig_curves(load_runs(root), tmp_path)
    axes = [ax for ax in figures[0].axes if ax.get_title()]
    assert len(axes) == 4  # 2 metrics x 2 experiments
    for ax in axes:
        labels = {line.get_label() for line in ax.get_lines()}
        assert {"grpo", "ppo"} <= labels, (ax.get_title(), labels)  # never "no run logged a value"
        assert not ax.texts

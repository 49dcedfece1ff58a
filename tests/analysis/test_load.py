"""analysis.load on synthetic run folders: layout, tolerance of runs being written, cache, labels."""
import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

import analysis.load as load_module
from analysis import algo_labels, find_runs, list_runs, load_groups, load_runs
from analysis.load import METRIC_KEYS
from tests.analysis.synthetic_runs import append_rows, group_rows, make_config, write_run


def test_one_row_per_run_and_step_with_flattened_knobs(tmp_path):
    write_run(tmp_path, "a", metrics={"reward_mean": [0.1, 0.2, 0.3]}, algo="grpo", seed=1)
    write_run(tmp_path, "b", metrics={"reward_mean": [0.5, 0.6]}, algo="dr_grpo", seed=2, model="small")
    df = load_runs(tmp_path)
    assert len(df) == 5
    assert list(df.columns[:7]) == ["run", "run_name", "algo", "experiment", "experiment.figures", "state", "step"]
    assert set(df["experiment"]) == {"—"}  # runs outside any sweep share one experiment
    a = df[df.run_name == "a"]
    assert a.step.tolist() == [1, 2, 3]
    assert a.reward_mean.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert set(a["algo.name"]) == {"grpo"} and set(a["algo.scale"]) == {"group_std"}
    b = df[df.run_name == "b"]
    assert set(b["model.name"]) == {"small"} and set(b["seed"]) == {2} and set(b["algo.scale"]) == {"none"}
    assert set(b["run"]) == {str((tmp_path / "b").resolve())}
    assert set(df.state) == {"completed"}
    assert df.step.dtype == np.int64
    for key in METRIC_KEYS[1:]:
        assert df[key].dtype == np.float64, key
    assert df.critic_explained_var.isna().all()  # null in every row -> NaN, not None
    assert df["meta.versions.torch"].iloc[0] == "2.13.0"  # nested dicts flatten with dots


def test_search_is_recursive_and_accepts_run_folders_and_files(tmp_path):
    write_run(tmp_path / "sweep1" / "grid", "r1", metrics={"reward_mean": [1.0]})
    write_run(tmp_path / "sweep2", "r2", metrics={"reward_mean": [2.0]})
    # a folder with only a config (never started) and a checkpoint folder are not runs
    (tmp_path / "sweep2" / "notrun").mkdir()
    (tmp_path / "sweep2" / "notrun" / "config.yaml").write_text("name: x\n")
    assert [p.name for p in find_runs(tmp_path)] == ["r1", "r2"]
    assert [p.name for p in find_runs([tmp_path / "sweep2" / "r2", tmp_path / "sweep2"])] == ["r2"]
    assert [p.name for p in find_runs(tmp_path / "sweep1" / "grid" / "r1" / "metrics.jsonl")] == ["r1"]
    assert find_runs(tmp_path / "sweep2" / "notrun") == []


def test_missing_path_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory; pass run folders"):
        load_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no paths given"):
        load_runs([])


def test_empty_folder_gives_empty_frame_with_metric_columns(tmp_path):
    df = load_runs(tmp_path)
    assert df.empty
    assert {"run", "algo", "step", "reward_mean", "eval_accuracy"} <= set(df.columns)


def test_torn_last_line_is_ignored_silently(tmp_path):
    write_run(tmp_path, "r", metrics={"reward_mean": [0.1, 0.2]}, state="running",
              torn_tail='{"step": 3, "reward_mean": 0.')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = load_runs(tmp_path)
    assert df.step.tolist() == [1, 2]
    assert set(df.state) == {"running"}


def test_complete_last_object_without_newline_is_kept(tmp_path):
    write_run(tmp_path, "r", metrics={"reward_mean": [0.1]}, torn_tail=json.dumps({"step": 2, "reward_mean": 0.7}))
    df = load_runs(tmp_path)
    assert df.step.tolist() == [1, 2]
    assert df.reward_mean.iloc[1] == 0.7


def test_unparsable_middle_line_is_skipped_with_a_warning_naming_it(tmp_path):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1, 0.2, 0.3]})
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = '{"step": 2, "reward_me\n'  # a crash mid-line, then the writer carried on
    (run / "metrics.jsonl").write_text("".join(lines))
    with pytest.warns(UserWarning, match=r"skipped 1 unparsable line\(s\) \(line 2\)"):
        df = load_runs(tmp_path, cache=False)
    assert df.step.tolist() == [1, 3]
    assert df.reward_mean.tolist() == pytest.approx([0.1, 0.3])


def test_failed_running_and_statusless_runs_load(tmp_path):
    write_run(tmp_path, "failed", metrics={"reward_mean": [0.1]}, state="failed", error="RuntimeError: NaN loss")
    write_run(tmp_path, "running", metrics={"reward_mean": [0.1, 0.2]}, state="running")
    write_run(tmp_path, "nostatus", metrics={"reward_mean": [0.3]}, state=None)
    run = write_run(tmp_path, "tornstatus", metrics={"reward_mean": [0.3]})
    (run / "status.json").write_text('{"state": "runn')
    with pytest.warns(UserWarning, match="not valid JSON"):
        df = load_runs(tmp_path)
    states = df.groupby("run_name").state.first().to_dict()
    assert states == {"failed": "failed", "running": "running", "nostatus": "unknown", "tornstatus": "unknown"}
    with pytest.warns(UserWarning, match="not valid JSON"):
        runs = list_runs(tmp_path).set_index("run_name")
    assert runs.loc["failed", "status.error"] == "RuntimeError: NaN loss"
    assert runs.loc["running", "status.step"] == 2


def test_list_runs_includes_runs_without_steps(tmp_path):
    write_run(tmp_path, "fresh", metrics={}, state="running")
    assert load_runs(tmp_path).empty
    runs = list_runs(tmp_path)
    assert runs.run_name.tolist() == ["fresh"] and runs.state.tolist() == ["running"]
    assert runs["algo.name"].tolist() == ["grpo"]


def test_resumed_run_keeps_the_last_row_of_a_repeated_step(tmp_path):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1, 0.2, 0.3]})
    append_rows(run, {"reward_mean": [0.25, 0.35, 0.45]}, steps=[2, 3, 4])  # resumed from step 1's checkpoint
    df = load_runs(tmp_path)
    assert df.step.tolist() == [1, 2, 3, 4]
    assert df.reward_mean.tolist() == pytest.approx([0.1, 0.25, 0.35, 0.45])


def test_nan_and_infinity_literals_parse(tmp_path):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1]})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "reward_mean": NaN, "grad_norm": Infinity}\n')
    df = load_runs(tmp_path)
    assert math.isnan(df.reward_mean.iloc[1]) and df.grad_norm.iloc[1] == math.inf


def test_extra_metric_keys_are_kept(tmp_path):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1]})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "reward_mean": 0.2, "new_metric": 5}\n')
    df = load_runs(tmp_path)
    assert df.new_metric.tolist()[1] == 5


def test_config_key_named_like_a_metric_is_prefixed(tmp_path):
    config = make_config("r")
    config["loss"] = "custom"  # collides with the metric `loss`
    write_run(tmp_path, "r", metrics={"loss": [1.5]}, config=config)
    df = load_runs(tmp_path)
    assert df["loss"].tolist() == [1.5] and df["config.loss"].tolist() == ["custom"]


# ----------------------------------------------------------------------------- cache


def _count_parses(monkeypatch):
    calls = []
    real = load_module.read_jsonl

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(load_module, "read_jsonl", counting)
    return calls


def _count_config_parses(monkeypatch):
    calls = []
    real = load_module._parse_config

    def counting(path):
        calls.append(os.path.basename(os.path.dirname(path)))
        return real(path)

    monkeypatch.setattr(load_module, "_parse_config", counting)
    return calls


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    write_run(tmp_path, "r", metrics={"reward_mean": [0.1, 0.2]})
    calls, config_calls = _count_parses(monkeypatch), _count_config_parses(monkeypatch)
    first = load_runs(tmp_path)
    assert calls == ["metrics.jsonl"] and config_calls == ["r"]
    assert (tmp_path / "r" / ".metrics.cache.arrow").exists()
    second = load_runs(tmp_path)
    assert calls == ["metrics.jsonl"] and config_calls == ["r"]  # neither the jsonl nor the YAML parsed again
    pd.testing.assert_frame_equal(first, second)
    assert list_runs(tmp_path).seed.tolist() == [0] and config_calls == ["r"]  # listing uses the cached config


def test_cached_and_uncached_loads_agree(tmp_path):
    groups = group_rows(1, [[1, 0, 0, 0]]) + group_rows(2, [[1, 1, 0, 0]])
    write_run(tmp_path, "a", metrics={"reward_mean": [0.1, None, 0.3], "grad_norm": [1.0, 2.0, 3.0]}, groups=groups)
    write_run(tmp_path, "b", metrics={"reward_mean": [0.5]}, algo="dapo", state="running")
    for loader in (load_runs, load_groups):
        uncached = loader(tmp_path, cache=False)
        pd.testing.assert_frame_equal(loader(tmp_path), uncached)  # writes the cache
        pd.testing.assert_frame_equal(loader(tmp_path), uncached)  # reads it
    assert (tmp_path / "a" / ".groups.cache.arrow").exists() and (tmp_path / "b" / ".groups.cache.arrow").exists()


def test_status_is_read_afresh_when_the_data_is_cached(tmp_path):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1]}, state="running")
    assert set(load_runs(tmp_path).state) == {"running"}
    (run / "status.json").write_text(json.dumps({"state": "failed", "step": 1, "error": "OOM"}))
    assert set(load_runs(tmp_path).state) == {"failed"}


def test_cache_is_invalidated_when_metrics_grow(tmp_path, monkeypatch):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1, 0.2]}, state="running")
    calls = _count_parses(monkeypatch)
    assert load_runs(tmp_path).step.tolist() == [1, 2]
    append_rows(run, {"reward_mean": [0.3]}, steps=[3])
    df = load_runs(tmp_path)
    assert df.step.tolist() == [1, 2, 3] and df.reward_mean.iloc[-1] == pytest.approx(0.3)
    assert calls == ["metrics.jsonl", "metrics.jsonl"]
    assert load_runs(tmp_path).step.tolist() == [1, 2, 3]
    assert len(calls) == 2


def test_cache_is_invalidated_when_config_changes(tmp_path, monkeypatch):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1]}, seed=1)
    assert load_runs(tmp_path).seed.tolist() == [1]
    config = make_config("r", seed=12345)  # rewritten, longer file; metrics.jsonl untouched
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    calls = _count_parses(monkeypatch)
    assert load_runs(tmp_path).seed.tolist() == [12345]
    assert list_runs(tmp_path).seed.tolist() == [12345]
    assert calls == []  # the cached table stays valid


def test_groups_file_appearing_later_is_read(tmp_path):
    run = write_run(tmp_path, "r", metrics={"reward_mean": [0.1]})
    assert load_groups(tmp_path).empty  # caches the empty table and the config
    (run / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in group_rows(1, [[1, 0]])))
    assert load_groups(tmp_path).success_rate.tolist() == [0.5]


def test_corrupt_cache_is_rebuilt(tmp_path):
    write_run(tmp_path, "r", metrics={"reward_mean": [0.1]})
    load_runs(tmp_path)
    (tmp_path / "r" / ".metrics.cache.arrow").write_bytes(b"garbage")
    assert load_runs(tmp_path).reward_mean.tolist() == [0.1]


def test_cache_false_writes_nothing(tmp_path):
    write_run(tmp_path, "r", metrics={"reward_mean": [0.1]})
    load_runs(tmp_path, cache=False)
    load_groups(tmp_path, cache=False)
    list_runs(tmp_path)  # listing reads the cache when there is one, never writes it
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.yaml", "metrics.jsonl", "status.json"]


# ----------------------------------------------------------------------------- algorithm labels


def test_labels_name_only_the_knobs_that_differ_from_the_preset(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"grpo{seed}", metrics={"reward_mean": [0.0]}, algo="grpo", seed=seed)
        write_run(tmp_path, f"grpo_none{seed}", metrics={"reward_mean": [0.0]}, algo="grpo", seed=seed, scale="none")
    write_run(tmp_path, "dr", metrics={"reward_mean": [0.0]}, algo="dr_grpo")
    write_run(tmp_path, "dapo", metrics={"reward_mean": [0.0]}, algo="dapo")
    write_run(tmp_path, "dapo_sym", metrics={"reward_mean": [0.0]}, algo="dapo", eps_high=0.2)
    labels = load_runs(tmp_path).set_index("run_name").algo.to_dict()
    assert labels == {"grpo0": "grpo", "grpo1": "grpo", "grpo_none0": "grpo scale=none",
                      "grpo_none1": "grpo scale=none", "dr": "dr_grpo", "dapo": "dapo", "dapo_sym": "dapo eps_high=0.2"}


def test_a_knob_every_run_shares_stays_out_of_the_label():
    configs = [{"algo.name": "grpo", "algo.kl_coef": 0.0, "seed": s} for s in range(3)]  # preset has 0.04
    assert algo_labels(configs) == ["grpo"] * 3


def test_a_knob_that_differs_only_between_models_stays_out_of_the_label():
    configs = [{"algo.name": "grpo", "algo.group_size": 4, "model.name": "tiny"},
               {"algo.name": "grpo", "algo.group_size": 16, "model.name": "small"},
               {"algo.name": "grpo", "algo.group_size": 16, "model.name": "tiny"}]
    # tiny: 4 and 16 both differ from the preset (8); small has one run, nothing varies there
    assert algo_labels(configs) == ["grpo group_size=4", "grpo", "grpo group_size=16"]
    assert algo_labels(configs[:2]) == ["grpo", "grpo"]


def test_labels_without_a_known_preset_use_the_majority_value():
    configs = [{"algo.name": "mine", "algo.lr": 1.0}, {"algo.name": "mine", "algo.lr": 1.0},
               {"algo.name": "mine", "algo.lr": 2.0}, {"algo.name": "mine", "algo.lr": 2.0, "algo.flag": True},
               {"seed": 3}]
    assert algo_labels(configs) == ["mine", "mine", "mine lr=2", "mine flag=true lr=2", "unknown"]


# ----------------------------------------------------------------------------- groups


def test_load_groups(tmp_path):
    groups = group_rows(1, [[1, 0, 0, 0], [1, 1, 1, 1]]) + group_rows(2, [[1, 1, 0, 0], [0, 0, 0, 0]])
    write_run(tmp_path, "g", metrics={"reward_mean": [0.3, 0.4]}, groups=groups, algo="grpo")
    write_run(tmp_path, "nogroups", metrics={"reward_mean": [0.3]}, algo="ppo")
    df = load_groups(tmp_path)
    assert len(df) == 4 and set(df.run_name) == {"g"}
    assert df.step.tolist() == [1, 1, 2, 2] and df.group.tolist() == [0, 1, 0, 1]
    assert df.degenerate.tolist() == [False, True, False, True] and df.degenerate.dtype == bool
    assert df.success_rate.tolist() == [0.25, 1.0, 0.5, 0.0]
    assert math.isnan(df.std_gain.iloc[1])  # null for a degenerate group
    assert df.std_gain.iloc[0] == pytest.approx(1 / (0.5 + 1e-6))  # unbiased std of [1,0,0,0] is 0.5
    assert set(df["algo.scale"]) == {"group_std"} and set(df.algo) == {"grpo"}
    small = load_groups(tmp_path, config_columns=["algo.scale"])
    assert [c for c in small.columns if "." in c and c != "experiment.figures"] == ["algo.scale"]
    with pytest.raises(KeyError, match="not in any loaded run's config"):
        load_groups(tmp_path, config_columns=["algo.nope"])

"""Tracker sinks: TensorBoard event files read back with tensorboard's own reader, and a W&B
offline run holding the same metrics; a missing package is a one-line config error."""
import json

import pytest

from experiments.config import load_config
from experiments.trackers import check_installed
from tests.conftest import run_cli
from tests.experiments.test_train import FAST, rows


def test_tensorboard_and_wandb_offline_get_the_metrics_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    run_cli("train", "algo=grpo", "steps=2", "log.tensorboard=true", "log.wandb=rlvr-test", f"out={out}", *FAST)
    logged = rows(out)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    reward = [(e.step, e.value) for e in events.Scalars("reward_mean")]
    assert reward == [(r["step"], pytest.approx(r["reward_mean"])) for r in logged if r["reward_mean"] is not None]
    assert [e.step for e in events.Scalars("eval_accuracy")] == [0, 2]
    assert "step" not in events.Tags()["scalars"]

    # W&B offline: one run directory whose transaction log (run-ID.wandb, protobuf records holding
    # each history item's key and JSON value) has every step's distinctive values under their names
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert len(data) < 32768  # one LevelDB-log block: no record is split across blocks
    for row in logged[1:]:
        for key in ("time_step_s", "tokens_per_s"):
            assert key.encode() in data and json.dumps(row[key]).encode() in data, (key, row[key])


def test_a_requested_sink_that_is_not_installed_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match=r"log.tensorboard=True needs the tensorboard package: pip install '.\[tensorboard\]'"):
        load_config(["log.tensorboard=true"])
    check_installed(False, "")  # nothing requested: nothing needed

"""lr schedules: hand-computed factors; a run logs the scheduled lr (a pure function of the step, so
a resumed run follows it: the resume itself is tested in test_train/test_runfolder)."""
import math

import pytest

from experiments.schedule import lr_factor
from tests.conftest import run_cli
from tests.experiments.test_train import FAST, rows


def test_factors_hand_computed():
    assert [lr_factor(s, 5) for s in range(1, 6)] == [1.0] * 5
    # linear over 5 steps: progress 0, 1/4, 2/4, 3/4, 1
    assert [lr_factor(s, 5, "linear") for s in range(1, 6)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    # 2 warm-up steps (1/2, 1), then cosine over steps 3..5: progress 0, 1/2, 1
    got = [lr_factor(s, 5, "cosine", warmup_steps=2) for s in range(1, 6)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 2)), 0.0])
    assert lr_factor(3, 3, "linear", warmup_steps=3) == 1.0  # all warm-up: nothing left to decay
    with pytest.raises(ValueError, match="valid: constant, linear, cosine"):
        lr_factor(1, 5, "step")


def test_run_logs_the_scheduled_lr_and_another_schedule_is_another_config(tmp_path):
    args = ["algo=ppo", "lr=1e-3", "lr_schedule=linear", "lr_warmup_steps=1", *FAST]
    out = tmp_path / "run"
    run_cli("train", *args, "steps=4", f"out={out}")
    expected = [1e-3 * lr_factor(s, 4, "linear", 1) for s in range(1, 5)]
    assert [r["lr"] for r in rows(out)[1:]] == pytest.approx(expected)   # 1, 1, 0.5, 0 x 1e-3
    assert expected == pytest.approx([1e-3, 1e-3, 5e-4, 0.0])
    result = run_cli("train", "algo=ppo", "lr=1e-3", "lr_schedule=cosine", *FAST, "steps=4", f"out={out}", check=False)
    assert result.returncode == 2 and "lr_schedule: 'linear' -> 'cosine'" in result.stderr

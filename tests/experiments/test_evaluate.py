"""Evaluation extras: pass@k (hand-computed, and consistent with greedy accuracy at a near-zero
temperature) and the samples log with its reader."""
import json
import math

import pytest

from experiments.evaluate import parse_ks, pass_at_k
from tests.conftest import run_cli
from tests.experiments.test_train import FAST, rows


def test_pass_at_k_hand_computed():
    # n=4, c=1: pass@1 = 1 - 3/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6; pass@4 = 1 (some sample is right)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    # against the binomial-coefficient form for a larger n
    n, c, k = 50, 7, 10
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_parse_ks():
    assert parse_ks("8, 1,4", 8) == [1, 4, 8]
    with pytest.raises(ValueError, match="eval_pass_k='1,16': every k must be in 1..eval_samples=8"):
        parse_ks("1,16", 8)
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_ks("one", 8)


def test_run_logs_pass_at_k_and_samples_and_the_cli_reads_them(tmp_path):
    out = tmp_path / "run"
    run_cli("train", "algo=grpo", "steps=2", "eval_samples=4", "eval_pass_k=1,4", f"out={out}", *FAST)
    metrics = rows(out)
    for row in metrics:
        assert {"eval_pass@1", "eval_pass@4"} <= set(row)
    assert metrics[0]["eval_pass@1"] is not None and metrics[1]["eval_pass@1"] is None  # eval steps only
    assert all(r["eval_pass@4"] >= r["eval_pass@1"] for r in metrics if r["eval_pass@1"] is not None)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    train = [s for s in samples if s["kind"] == "train"]
    evals = [s for s in samples if s["kind"] == "eval"]
    assert [s["step"] for s in train] == [1] * 4 + [2] * 4            # log.samples_per_step = 4
    assert [s["step"] for s in evals] == [0] * 4 + [2] * 4            # evals at steps 0 and 2
    assert set(train[0]) == {"step", "kind", "prompt", "answer", "response", "reward", "correct", "length", "truncated"}
    assert len({s["prompt"] for s in train[:4]}) == 2                 # spread over both groups of 8
    shown = run_cli("samples", str(out), "--step", "2", "--kind", "eval").stdout
    assert shown.count("step    2 eval") == 4 and "prompt:" in shown and "response:" in shown
    assert run_cli("samples", str(out), "--incorrect", "--last", "1").stdout.count("✗") == 1
    missing = run_cli("samples", str(tmp_path), check=False)
    assert missing.returncode == 2 and "samples.jsonl does not exist" in missing.stderr


@pytest.mark.slow
def test_pass_at_1_at_a_near_zero_temperature_is_the_greedy_accuracy(tmp_path, warm_tiny):
    """With eval_temperature -> 0 every sample is the greedy completion, so pass@1 = pass@8 =
    eval_accuracy; at temperature 1 pass@8 >= pass@1 and pass@1 ~ the sampled training accuracy."""
    out = tmp_path / "cold"
    run_cli("train", "algo=grpo", "steps=1", "eval_samples=8", "eval_temperature=1e-4", "eval_every=100",
            f"out={out}", timeout=600)
    first = rows(out)[0]
    assert first["eval_pass@1"] == pytest.approx(first["eval_accuracy"], abs=0.01)
    assert first["eval_pass@8"] == pytest.approx(first["eval_accuracy"], abs=0.01)
    out = tmp_path / "warm"
    run_cli("train", "algo=grpo", "steps=1", "eval_samples=8", "eval_every=100", f"out={out}", timeout=600)
    first = rows(out)[0]
    assert first["eval_pass@8"] > first["eval_pass@1"] + 0.05

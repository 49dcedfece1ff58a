"""Verifier: hard per-check time limit, a pool that survives kills, truncation, format reward.

The test-only tasks below are defined at module level so they pickle into the workers.
"""
import os
import sys
import time
from pathlib import Path

import pytest

from experiments.tasks import ArithmeticTask, Example, TaskConfig, make_task
from experiments.verify import Verifier, VerifyResult, combine_reward

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TIMEOUT_S = 0.5


class HangingTask(ArithmeticTask):
    """Arithmetic, except that the completion "hang" never finishes checking."""

    def check(self, completion, example):
        if completion == "hang":
            time.sleep(60)
        return super().check(completion, example)


class FailingTask(ArithmeticTask):
    """"boom" raises inside the check; "exit" kills the worker process."""

    def check(self, completion, example):
        if completion == "boom":
            raise KeyError("boom")
        if completion == "exit":
            os._exit(3)
        return super().check(completion, example)


class LengthTask(ArithmeticTask):
    """Scores 1 iff the worker received exactly `example.answer` characters."""

    def check(self, completion, example):
        return float(len(completion) == int(example.answer))


class OutOfRangeTask(ArithmeticTask):
    def check(self, completion, example):
        return 2.0


class ImportProbeTask(ArithmeticTask):
    """Scores 1 iff torch is imported in the worker."""

    def check(self, completion, example):
        return float("torch" in sys.modules)


class BadSetupTask(ArithmeticTask):
    def worker_setup(self):
        raise RuntimeError("setup failed")


EX = Example(prompt="3+5=", answer="8", target="8")


def verifier(task_cls=ArithmeticTask, **kwargs):
    kwargs = {"timeout_s": TIMEOUT_S, "workers": 2, **kwargs}
    return Verifier(task_cls(TaskConfig()), **kwargs)


def test_scores_hand_checked():
    with verifier() as v:
        result = v.score(["8", " 8\n", "9", "x"], [EX] * 4)
    assert result == VerifyResult(rewards=[1.0, 1.0, 0.0, 0.0], correct=[True, True, False, False],
                                  format_ok=[True, True, True, False], timeouts=0, errors=0)


def test_format_reward_mixes_in():
    with verifier(format_reward=0.25) as v:
        result = v.score(["8", "9", "x"], [EX] * 3)
    assert result.rewards == [1.0, 0.25, 0.0]       # (1-w)*1 + w*1, (1-w)*0 + w*1, 0
    assert combine_reward(0.5, True, 0.2) == pytest.approx(0.6)


def test_hung_check_is_killed_scores_0_and_the_next_batch_works():
    with verifier(HangingTask) as v:
        start = time.monotonic()
        result = v.score(["8", "hang", "9", "8"], [EX] * 4)
        elapsed = time.monotonic() - start
        assert result.rewards == [1.0, 0.0, 0.0, 1.0]
        assert result.timeouts == 1 and result.errors == 0
        assert result.format_ok == [True, False, True, True]
        assert elapsed < 10 * TIMEOUT_S
        # the killed worker was replaced: the next batch runs, with both workers
        result = v.score(["8", "hang", "hang", "8"], [EX] * 4)
        assert result.rewards == [1.0, 0.0, 0.0, 1.0] and result.timeouts == 2
        result = v.score(["8"] * 6, [EX] * 6)
        assert result.rewards == [1.0] * 6 and result.timeouts == 0


def test_raising_check_and_dead_worker_score_0_and_are_counted(caplog):
    with verifier(FailingTask) as v:
        result = v.score(["boom", "8", "exit", "8"], [EX] * 4)
        assert result.rewards == [0.0, 1.0, 0.0, 1.0]
        assert (result.errors, result.timeouts) == (2, 0)
        assert "KeyError" in caplog.text
        assert v.score(["8", "8"], [EX] * 2).rewards == [1.0, 1.0]
    with verifier(OutOfRangeTask) as v:
        assert v.score(["8"], [EX]).errors == 1
        assert "outside [0, 1]" in caplog.text


def test_long_completion_is_truncated_before_the_worker():
    megabyte = 1_000_000
    with verifier(LengthTask, max_chars=100) as v:
        result = v.score(["a" * megabyte, "a" * 100, "a" * 7],
                         [Example("p", "100", "t"), Example("p", "100", "t"), Example("p", "7", "t")])
    assert result.rewards == [1.0, 1.0, 1.0]
    with verifier() as v:                                   # default max_chars = 10_000
        start = time.monotonic()
        result = v.score(["8" + " " * megabyte, "1" * megabyte], [EX, EX])
        assert time.monotonic() - start < 5
    assert result.rewards == [1.0, 0.0] and result.timeouts == 0


def test_workers_do_not_import_torch():
    with verifier(ImportProbeTask) as v:
        assert v.score(["8"], [EX]).rewards == [0.0]


def test_countdown_attacks_through_the_pool():
    task = make_task(TaskConfig(name="countdown"))
    ex = Example(prompt="3 5 7->22:", answer="22", target="3*5+7", meta={"numbers": [3, 5, 7], "target": 22})
    attacks = ["__import__('os').system('true')", "9**9**9**9", "(3).real", "3*5+7"]
    with Verifier(task, timeout_s=TIMEOUT_S, workers=2) as v:
        result = v.score(attacks, [ex] * 4)
    assert result.rewards == [0.0, 0.0, 0.0, 1.0] and result.timeouts == 0 and result.errors == 0


def test_math_task_through_the_pool():
    cfg = TaskConfig(name="math", path=str(FIXTURES / "math_tiny.jsonl"))
    ex = Example(prompt="p", answer=r"\frac{1}{2}", target=r"\boxed{\frac{1}{2}}")
    with Verifier.from_config(make_task(cfg), cfg) as v:
        result = v.score([r"\boxed{0.5}", r"\boxed{2}", "no"], [ex] * 3)
    assert result.correct == [True, False, False] and result.format_ok == [True, True, False]


def test_from_config_and_empty_batch():
    cfg = TaskConfig(format_reward=0.5, verify_timeout_s=1.5, verify_workers=1)
    with Verifier.from_config(make_task(cfg), cfg) as v:
        assert (v.timeout_s, v.workers, v.format_reward) == (1.5, 1, 0.5)
        assert v.score([], []) == VerifyResult(rewards=[], correct=[], format_ok=[], timeouts=0)


def test_closed_verifier_and_mismatched_lengths():
    v = verifier()
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        v.score(["8", "8"], [EX])
    v.close()
    v.close()                                               # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        v.score(["8"], [EX])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"timeout_s": 0}, "timeout_s=0"),
    ({"workers": 0}, "workers=0"),
    ({"format_reward": -0.1}, "format_reward=-0.1"),
    ({"max_chars": 0}, "max_chars=0"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        verifier(**kwargs)


def test_unpicklable_task_is_refused_up_front():
    task = ArithmeticTask(TaskConfig())
    task.helper = lambda x: x
    with pytest.raises(TypeError, match="must be picklable"):
        Verifier(task, timeout_s=TIMEOUT_S, workers=1)


def test_workers_that_cannot_start_raise_a_clear_error():
    with verifier(BadSetupTask, workers=1) as v:
        with pytest.raises(RuntimeError, match="worker processes cannot run"):
            v.score(["8"], [EX])

"""The one verifier backend: scores completions with `Task.check` in worker processes.

Every check runs in a `pebble.ProcessPool` worker under a hard time limit: a check that runs
past `timeout_s` has its worker killed (pebble starts a fresh one), scores 0 and is counted in
`VerifyResult.timeouts`; the next batch runs normally. A check that raises or whose worker
dies scores 0 and is counted in `VerifyResult.errors` (the first message is logged).

The pool is created once and reused across batches. Workers start from a `forkserver`, so
they do not copy the trainer's memory, and they import only this module and
`experiments.tasks` (no torch). As with any non-fork start method, a program run as a script
(`python path/to/script.py`) must keep its top level under `if __name__ == "__main__":`; the
forkserver imports such a script once (with its imports), while `python -m package` entry
points are not re-imported. Completions longer than `max_chars` are cut to their first
`max_chars` characters before they are sent to a worker.

    with Verifier(task, timeout_s=2.0, workers=2, format_reward=0.1) as verifier:
        result = verifier.score(completions, examples)   # result.rewards[i] in [0, 1]
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
import weakref
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from pebble import ProcessPool

from experiments.tasks import Example, Task, TaskConfig

log = logging.getLogger(__name__)

START_METHOD = "forkserver"


@dataclass
class VerifyResult:
    """Scores of one batch, aligned with the completions given to `Verifier.score`."""

    rewards: list[float]      # in [0, 1]: (1-format_reward)*check + format_reward*format_ok
    correct: list[bool]       # check == 1
    format_ok: list[bool]     # Task.format_ok (False for a check that timed out or failed)
    timeouts: int             # checks killed for running past timeout_s (they score 0)
    errors: int = 0           # checks that raised or whose worker died (they score 0)


# ---------------------------------------------------------------- worker side
_WORKER_TASK: Task | None = None


def _init_worker(task: Task) -> None:
    """Pool initializer: runs once in every worker, including those started after a kill."""
    global _WORKER_TASK
    _WORKER_TASK = task
    task.worker_setup()


def _check_one(completion: str, example: Example) -> tuple[float, bool]:
    """(check score, format_ok) of one completion, computed in a worker."""
    task = _WORKER_TASK
    assert task is not None, "verifier worker used before its initializer ran"
    score = float(task.check(completion, example))
    if not 0.0 <= score <= 1.0:      # also catches NaN
        raise ValueError(f"{type(task).__name__}.check returned {score!r}, outside [0, 1]")
    return score, bool(task.format_ok(completion, example))


# ---------------------------------------------------------------- parent side
def combine_reward(score: float, format_ok: bool, format_reward: float) -> float:
    """(1 - w) * score + w * format_ok, with w = format_reward in [0, 1]."""
    return (1.0 - format_reward) * score + format_reward * float(format_ok)


class Verifier:
    """Scores completions against examples with `task.check` in a pool of worker processes."""

    def __init__(self, task: Task, *, timeout_s: float, workers: int, format_reward: float = 0.0,
                 max_chars: int = 10_000):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r} is invalid: expected a number of seconds > 0")
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers={workers!r} is invalid: expected an integer >= 1")
        if not 0.0 <= format_reward <= 1.0:
            raise ValueError(f"format_reward={format_reward!r} is invalid: expected a number in [0, 1]")
        if not (isinstance(max_chars, int) and max_chars >= 1):
            raise ValueError(f"max_chars={max_chars!r} is invalid: expected an integer >= 1")
        try:
            pickle.dumps(task)
        except Exception as e:  # noqa: BLE001 (pickle raises several kinds)
            raise TypeError(f"the task {task!r} must be picklable to run in verifier workers "
                            f"(define its class at module level): {e}") from e
        self.task = task
        self.timeout_s = float(timeout_s)
        self.workers = workers
        self.format_reward = float(format_reward)
        self.max_chars = max_chars
        self._pool: ProcessPool | None = ProcessPool(
            max_workers=workers, initializer=_init_worker, initargs=(task,),
            context=multiprocessing.get_context(START_METHOD))
        self._finalizer = weakref.finalize(self, _stop_pool, self._pool)

    @classmethod
    def from_config(cls, task: Task, cfg: TaskConfig, *, max_chars: int = 10_000) -> Verifier:
        """A verifier with the time limit, worker count and format reward of `cfg`."""
        return cls(task, timeout_s=cfg.verify_timeout_s, workers=cfg.verify_workers,
                   format_reward=cfg.format_reward, max_chars=max_chars)

    def score(self, completions: list[str], examples: list[Example]) -> VerifyResult:
        """Check completion i against example i; blocks until every check has finished or been killed."""
        if self._pool is None:
            raise RuntimeError("this Verifier is closed; create a new one")
        if len(completions) != len(examples):
            raise ValueError(f"got {len(completions)} completions but {len(examples)} examples; "
                             f"pass one example per completion")
        futures = [self._pool.schedule(_check_one, args=(str(c)[:self.max_chars], ex), timeout=self.timeout_s)
                   for c, ex in zip(completions, examples)]
        rewards, correct, format_ok = [], [], []
        timeouts = errors = 0
        for i, future in enumerate(futures):
            score, fmt = 0.0, False
            try:
                score, fmt = future.result()
            except FutureTimeoutError:
                timeouts += 1
            except BrokenProcessPool as e:
                raise RuntimeError(
                    f"the verifier's worker processes cannot run ({e}). If the program is a script, "
                    f"put its top level under `if __name__ == '__main__':` (workers start from a "
                    f"{START_METHOD} server that re-imports the main module); otherwise check that "
                    f"{type(self.task).__name__}.worker_setup() works in a fresh process") from e
            except Exception as e:  # noqa: BLE001 (a failing check scores 0; the run goes on)
                if errors == 0:
                    log.warning("verifier check %d failed (%s: %s); it scores 0%s", i, type(e).__name__, e,
                                f"\n{e.traceback}" if hasattr(e, "traceback") else "")
                errors += 1
            rewards.append(combine_reward(score, fmt, self.format_reward))
            correct.append(score == 1.0)
            format_ok.append(fmt)
        return VerifyResult(rewards=rewards, correct=correct, format_ok=format_ok,
                            timeouts=timeouts, errors=errors)

    def close(self) -> None:
        """Stop the workers (killing any running check). Idempotent."""
        if self._pool is not None:
            self._pool = None
            self._finalizer()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _stop_pool(pool: ProcessPool) -> None:
    pool.stop()
    pool.join(timeout=10)

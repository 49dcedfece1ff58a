r"""Verifiable-reward tasks: arithmetic, countdown, gsm8k, math.

A task makes `Example`s (prompt, canonical answer, an ideal response for warm-start SFT)
and checks a completion against one. `Task.check` is pure and picklable: the verifier
(`experiments/verify.py`) runs it in worker processes under a hard time limit.

Splits. `examples("train")`, `examples("val")` and `examples("eval")` never share a problem,
nor two problems with the same canonical form (`Task.canonical`: arithmetic's operand and
operator multisets, so "3+5+1=" and "1+3+5=" land in the same split). A problem goes to eval iff a
SHA-256 hash of its canonical form, read as u in [0, 1), is below `eval_fraction`, to val iff it
is below `eval_fraction + val_fraction`, else to train, so the splits depend on neither the seed
nor `n_train`/`n_eval`, and eval's membership not on `val_fraction`. Val is for stopping rules
(the warm-start's): it is never trained on and never reported as held-out accuracy. Dataset files
are split the same way by the text of their key field; a folder with train/test files keeps its
test file as eval and takes val out of its train file.
Train examples are drawn and ordered from `seed`; the eval examples do not depend on the seed,
so runs with different seeds are scored on the same problems. Generated examples are distinct
problems: a split whose problem space is smaller than `n_train`/`n_eval` returns all of them
(e.g. 1-digit `+-` with 2 terms has 200 problems in all).

Formats (prompt -> target):  arithmetic "3+5=" -> "8";  countdown "3 5 7->22:" -> "3*5+7";
gsm8k "Question: ...\nAnswer:" -> " ...\n#### N";  math "Problem: ...\nSolution:" -> " ...\boxed{x}".
Generated prompts and targets use only the ASCII characters "0123456789+-*/()=:> ".

This module imports nothing heavy (no torch): verifier workers import it at start-up.
`math_verify` is imported only by the math task, and `datasets` only to load a hub dataset.
"""

from experiments.tasks.arithmetic import ArithmeticTask, arithmetic_value, parse_int_answer
from experiments.tasks.base import (
    ARITHMETIC_OPS, COUNTDOWN_OPS, SPLITS, DatasetError, Example, Task, TaskConfig, hash_split,
)
from experiments.tasks.countdown import CountdownTask, ExpressionError, evaluate_expression
from experiments.tasks.datasets import (
    GSM8KTask, MathTask, _looks_like_path, extract_final_number, extract_last_boxed, parse_number,
)
from experiments.tasks.registry import ENTRY_POINT_GROUP, TASKS, make_task, task_class

__all__ = [
    "ARITHMETIC_OPS", "COUNTDOWN_OPS", "SPLITS", "ENTRY_POINT_GROUP", "TASKS", "ArithmeticTask", "CountdownTask",
    "DatasetError", "Example", "ExpressionError", "GSM8KTask", "MathTask", "Task", "TaskConfig",
    "arithmetic_value", "evaluate_expression", "extract_final_number", "extract_last_boxed", "hash_split",
    "make_task", "parse_int_answer", "parse_number", "task_class", "_looks_like_path",
]

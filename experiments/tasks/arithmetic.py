"""Arithmetic: "3+5=" -> "8", with operands, operators and terms from the TaskConfig; split by
the operand and operator multisets, so no eval problem has a permutation in train. With
``task.scratchpad`` the target works one operation at a time, "12+7+5=" -> "19+5=24", and any
completion whose last "="-separated part is the value is correct; ``task.scratchpad_frac`` < 1 writes
that share of targets with the scratchpad and the rest as the bare answer, so response length is
free to change under RL."""

import itertools
import random
import re
from typing import Iterator, Sequence

from experiments.tasks.base import _ENUMERATE_LIMIT, Example, Task, _sample_distinct, hash_unit


_INT_ANSWER = re.compile(r"[+-]?[0-9]{1,60}")


def parse_int_answer(completion: str) -> int | None:
    """The integer a completion states (surrounding whitespace ignored), or None if it is not one."""
    text = completion.strip()
    if not _INT_ANSWER.fullmatch(text):
        return None
    return int(text)


def reduction_steps(operands: Sequence[int], ops: Sequence[str]) -> list[str]:
    """The expression after each single operation, * first (left to right), then + and - left to
    right; the last is the value: ([12, 7, 5], "++") -> ["19+5", "24"], ([2, 3, 4], "+*") -> ["2+12", "14"]."""
    operands, ops, steps = list(operands), list(ops), []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        a, b, op = operands[i], operands[i + 1], ops[i]
        operands[i : i + 2] = [a * b if op == "*" else a + b if op == "+" else a - b]
        del ops[i]
        steps.append(str(operands[0]) + "".join(o + str(x) for o, x in zip(ops, operands[1:])))
    return steps


_SCRATCH_STEP = re.compile(r"\s*[+-]?[0-9]{1,60}(?:[+*-][0-9]{1,60})*\s*")


def parse_scratchpad_answer(completion: str) -> int | None:
    """The value a scratchpad completion ends with ("19+5=24" -> 24; "24" -> 24), or None if it is
    not a chain of expressions separated by "=" ending with an integer."""
    parts = completion.split("=")
    if not all(_SCRATCH_STEP.fullmatch(part) for part in parts[:-1]):
        return None
    return parse_int_answer(parts[-1])


def arithmetic_value(operands: Sequence[int], ops: Sequence[str]) -> int:
    """Value of operands[0] ops[0] operands[1] ... with * before + and -, e.g. ([2, 3, 4], "+*") -> 14."""
    total, sign, term = 0, 1, operands[0]
    for op, x in zip(ops, operands[1:]):
        if op == "*":
            term *= x
        else:
            total += sign * term
            sign, term = (1 if op == "+" else -1), x
    return total + sign * term


class ArithmeticTask(Task):
    """Prompts like "3+5=" with answer and target "8". Operands in 0..10^digits-1, operators
    drawn from `ops` with normal precedence; answers may be negative ("3-5=" -> "-2").
    Correct iff the whitespace-stripped completion is exactly that integer; with
    ``task.scratchpad`` the target is the chain of intermediate expressions ("12+7+5=" ->
    "19+5=24") and correct iff the completion's last "="-separated part is the value."""

    name = "arithmetic"

    def _make_examples(self, split: str) -> list[Example]:
        cfg = self.cfg
        n = self._split_size(split)
        rng = self._rng(split)
        in_split = lambda ex: self.split_of(ex) == split
        n_operands = 10 ** cfg.digits
        space = n_operands ** cfg.n_terms * len(set(cfg.ops)) ** (cfg.n_terms - 1)
        if space <= _ENUMERATE_LIMIT:
            problems = [ex for ex in self._enumerate() if in_split(ex)]
            rng.shuffle(problems)
            return problems[:n]
        return _sample_distinct(self._draw, rng, n, in_split)

    def _enumerate(self) -> Iterator[Example]:
        cfg = self.cfg
        ops = sorted(set(cfg.ops))
        for operands in itertools.product(range(10 ** cfg.digits), repeat=cfg.n_terms):
            for chosen in itertools.product(ops, repeat=cfg.n_terms - 1):
                yield self._example(operands, chosen)

    def _draw(self, rng: random.Random) -> Example:
        cfg = self.cfg
        operands = [rng.randrange(10 ** cfg.digits) for _ in range(cfg.n_terms)]
        chosen = [rng.choice(cfg.ops) for _ in range(cfg.n_terms - 1)]
        return self._example(operands, chosen)

    def _example(self, operands: Sequence[int], ops: Sequence[str]) -> Example:
        expr = str(operands[0]) + "".join(op + str(x) for op, x in zip(ops, operands[1:]))
        answer = str(arithmetic_value(operands, ops))
        target = "=".join(reduction_steps(operands, ops)) if self._shows_scratchpad(expr) else answer
        return Example(prompt=expr + "=", answer=answer, target=target,
                       meta={"operands": list(operands), "ops": "".join(ops)})

    def _shows_scratchpad(self, expr: str) -> bool:
        """Whether the target of problem `expr` is the scratchpad chain: with task.scratchpad, for
        scratchpad_frac of the problems by hash (every one at 1, as hash_unit < 1)."""
        return self.cfg.scratchpad and hash_unit(f"scratchpad:{expr}") < self.cfg.scratchpad_frac

    def canonical(self, example: Example) -> str:
        """The operand multiset and the operator multiset: "3+5+1=" and "1+3+5=" (same answer)
        share a key, and so do "7-2=" and "2-7=" (a conservative grouping: never a leak)."""
        operands = sorted(example.meta["operands"])
        return f"{','.join(map(str, operands))}|{''.join(sorted(example.meta['ops']))}"

    def _parse(self, completion: str) -> int | None:
        return parse_scratchpad_answer(completion) if self.cfg.scratchpad else parse_int_answer(completion)

    def check(self, completion: str, example: Example) -> float:
        value = self._parse(completion)
        return float(value is not None and value == int(example.answer))

    def format_ok(self, completion: str, example: Example) -> bool:
        return self._parse(completion) is not None



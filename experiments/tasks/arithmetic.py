"""Arithmetic: "3+5=" -> "8", with operands, operators and terms from the TaskConfig; split by
the operand and operator multisets, so no eval problem has a permutation in train."""

import itertools
import random
import re
from typing import Iterator, Sequence

from experiments.tasks.base import _ENUMERATE_LIMIT, Example, Task, _sample_distinct


_INT_ANSWER = re.compile(r"[+-]?[0-9]{1,60}")


def parse_int_answer(completion: str) -> int | None:
    """The integer a completion states (surrounding whitespace ignored), or None if it is not one."""
    text = completion.strip()
    if not _INT_ANSWER.fullmatch(text):
        return None
    return int(text)


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
    Correct iff the whitespace-stripped completion is exactly that integer."""

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

    @staticmethod
    def _example(operands: Sequence[int], ops: Sequence[str]) -> Example:
        expr = str(operands[0]) + "".join(op + str(x) for op, x in zip(ops, operands[1:]))
        answer = str(arithmetic_value(operands, ops))
        return Example(prompt=expr + "=", answer=answer, target=answer,
                       meta={"operands": list(operands), "ops": "".join(ops)})

    def canonical(self, example: Example) -> str:
        """The operand multiset and the operator multiset: "3+5+1=" and "1+3+5=" (same answer)
        share a key, and so do "7-2=" and "2-7=" (a conservative grouping: never a leak)."""
        operands = sorted(example.meta["operands"])
        return f"{','.join(map(str, operands))}|{''.join(sorted(example.meta['ops']))}"

    def check(self, completion: str, example: Example) -> float:
        value = parse_int_answer(completion)
        return float(value is not None and value == int(example.answer))

    def format_ok(self, completion: str, example: Example) -> bool:
        return parse_int_answer(completion) is not None



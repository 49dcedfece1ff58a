"""Countdown: "3 5 7->22:" -> an expression over the given numbers (each at most once) worth the
target, checked by an exact evaluator that never calls `eval`."""

import ast
import random
import re
from fractions import Fraction
from typing import Callable, Sequence

from experiments.tasks.base import COUNTDOWN_OPS, Example, Task, _sample_distinct

# ----------------------------------------------------------------------------------------------
# Safe expressions: + - * / and parentheses over integer literals, exact Fraction arithmetic.

class ExpressionError(ValueError):
    """The text is not an expression of the allowed form."""


_EXPR_CHARS = re.compile(r"[0-9+\-*/() \t]+")
_MAX_EXPR_CHARS = 1000
_BINOPS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,     # ZeroDivisionError on b == 0
}


def evaluate_expression(text: str, numbers: Sequence[int] | None = None,
                        ops: str = COUNTDOWN_OPS) -> Fraction:
    """Evaluate `text` exactly, allowing only integer literals, the binary operators in `ops`
    and parentheses (never `eval`; no unary minus, `**`, `//`, names, calls or attributes).

    If `numbers` is given, every literal must be one of them, each used at most as often as it is given.
    Raises ExpressionError for anything else and ZeroDivisionError on division by zero.
    """
    if len(text) > _MAX_EXPR_CHARS:
        raise ExpressionError(f"expression longer than {_MAX_EXPR_CHARS} characters")
    if not _EXPR_CHARS.fullmatch(text):
        raise ExpressionError("only digits, + - * / ( ) and spaces are allowed")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"not an expression: {e}") from None
    allowed = {_op_node(op) for op in ops}
    remaining = list(numbers) if numbers is not None else None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp):
            if type(node.op) not in allowed:
                raise ExpressionError(f"operator {type(node.op).__name__} is not allowed (allowed: {' '.join(ops)})")
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            if remaining is not None:
                if node.value not in remaining:
                    raise ExpressionError(f"{node.value} is not among the remaining numbers {remaining}")
                remaining.remove(node.value)
            return Fraction(node.value)
        raise ExpressionError(f"{type(node).__name__} is not allowed")

    try:
        return ev(tree.body)
    except RecursionError:
        raise ExpressionError("expression nested too deeply") from None


def _op_node(op: str) -> type:
    return {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}[op]




_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class CountdownTask(Task):
    """Prompts like "3 5 7->22:" (the numbers, then the target); the answer is the target
    number and a completion is an expression such as "3*5+7" using + - * / and parentheses,
    each given number at most once. Correct iff it evaluates exactly (Fraction) to the target.

    Instances are solvable by construction: the target is the value of a random expression
    over all the numbers with non-negative integer intermediate results and a value in
    1..10^(digits+1), and that expression is the example's `target` (the ideal response)."""

    name = "countdown"

    def _make_examples(self, split: str) -> list[Example]:
        in_split = lambda ex: self.split_of(ex) == split
        return _sample_distinct(self._draw, self._rng(split), self._split_size(split), in_split)

    def _draw(self, rng: random.Random) -> Example:
        hi = 10 ** self.cfg.digits - 1
        while True:
            numbers = sorted(rng.randint(1, hi) for _ in range(self.cfg.countdown_numbers))
            built = _random_expression(rng, rng.sample(numbers, len(numbers)))
            if built is None:
                continue
            expr, value, _ = built
            if 0 < value <= 10 ** (self.cfg.digits + 1):
                prompt = " ".join(map(str, numbers)) + f"->{value}:"
                return Example(prompt=prompt, answer=str(value), target=expr,
                               meta={"numbers": numbers, "target": value})

    def check(self, completion: str, example: Example) -> float:
        try:
            value = evaluate_expression(completion.strip(), example.meta["numbers"])
        except (ExpressionError, ZeroDivisionError):
            return 0.0
        return float(value == example.meta["target"])

    def format_ok(self, completion: str, example: Example) -> bool:
        try:
            evaluate_expression(completion.strip(), example.meta["numbers"])
        except ExpressionError:
            return False
        except ZeroDivisionError:
            return True
        return True


def _random_expression(rng: random.Random, numbers: Sequence[int]) -> tuple[str, int, str] | None:
    """A random binary expression over all `numbers` in order: (text, value, top operator), or
    None if an intermediate result is negative or a division is not exact."""
    if len(numbers) == 1:
        return str(numbers[0]), numbers[0], ""
    cut = rng.randrange(1, len(numbers))
    left = _random_expression(rng, numbers[:cut])
    right = _random_expression(rng, numbers[cut:])
    if left is None or right is None:
        return None
    (ltext, lval, lop), (rtext, rval, rop) = left, right
    op = rng.choice(COUNTDOWN_OPS)
    if op == "+":
        value = lval + rval
    elif op == "-":
        value = lval - rval
    elif op == "*":
        value = lval * rval
    else:
        if rval == 0 or lval % rval:
            return None
        value = lval // rval
    if value < 0:
        return None
    if lop and _PRECEDENCE[lop] < _PRECEDENCE[op]:
        ltext = f"({ltext})"
    if rop and (_PRECEDENCE[rop] < _PRECEDENCE[op] or (_PRECEDENCE[rop] == _PRECEDENCE[op] and op in "-/")):
        rtext = f"({rtext})"
    return f"{ltext}{op}{rtext}", value, op



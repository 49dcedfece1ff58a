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

import ast
import hashlib
import importlib
import importlib.metadata
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

SPLITS = ("train", "val", "eval")
ARITHMETIC_OPS = "+-*"
COUNTDOWN_OPS = "+-*/"
_EVAL_SEED = "eval"          # the eval split is the same for every cfg.seed
_ENUMERATE_LIMIT = 200_000   # problem spaces up to this size are enumerated, larger ones sampled
_SAMPLE_PATIENCE = 5_000     # stop sampling after this many draws in a row gave no new problem


@dataclass
class TaskConfig:
    """Which task to train and evaluate on, and how its examples are made and scored."""

    name: str = field(default="arithmetic", metadata={
        "help": "task: arithmetic | countdown | gsm8k | math | package.module:ClassName (a Task subclass) "
                "| a name registered in the rlvr.tasks entry-point group"})
    digits: int = field(default=1, metadata={
        "help": "arithmetic: max digits per operand (operands in 0..10^digits-1); "
                "countdown: max digits of each given number (numbers in 1..10^digits-1)"})
    ops: str = field(default="+", metadata={
        "help": "arithmetic: operators to draw from, any of '+-*' (normal precedence)"})
    n_terms: int = field(default=3, metadata={
        "help": "arithmetic: operands per problem (>= 2)"})
    countdown_numbers: int = field(default=3, metadata={
        "help": "countdown: how many numbers are given (2..6); each may be used at most once"})
    n_train: int = field(default=2000, metadata={
        "help": "number of train examples (fewer if the task has fewer distinct train problems)"})
    n_eval: int = field(default=200, metadata={
        "help": "number of eval examples (fewer if the task has fewer distinct eval problems)"})
    eval_fraction: float = field(default=0.2, metadata={
        "help": "share of the problem space held out for eval, chosen by a hash of the problem's "
                "canonical form (generated tasks and single-file datasets)"})
    val_fraction: float = field(default=0.1, metadata={
        "help": "share held out as validation, for the warm-start's stopping rule (never trained on, "
                "never reported as eval); up to n_eval examples"})
    seed: int = field(default=0, metadata={
        "help": "seed for drawing and ordering the train examples (eval examples do not depend on it)"})
    path: str | None = field(default=None, metadata={
        "help": "gsm8k/math: a JSONL file (split by hash), a folder with train.jsonl and "
                "test.jsonl, or a `datasets` hub name where a hub is reachable"})
    format_reward: float = field(default=0.0, metadata={
        "help": "weight w of the format reward in [0,1]: reward = (1-w)*correct + w*format_ok"})
    verify_timeout_s: float = field(default=2.0, metadata={
        "help": "hard time limit per check; a check running longer is killed and scores 0"})
    verify_workers: int = field(default=2, metadata={
        "help": "verifier worker processes"})

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, its value and what is allowed."""
        task_class(self.name)  # raises for an unknown name or an import path that is not a Task
        _check(self.digits >= 1, "digits", self.digits, "an integer >= 1")
        _check(bool(self.ops) and set(self.ops) <= set(ARITHMETIC_OPS), "ops", self.ops,
               f"a non-empty string of operators from {ARITHMETIC_OPS!r}")
        _check(self.n_terms >= 2, "n_terms", self.n_terms, "an integer >= 2")
        _check(2 <= self.countdown_numbers <= 6, "countdown_numbers", self.countdown_numbers,
               "an integer in 2..6")
        _check(self.n_train >= 1, "n_train", self.n_train, "an integer >= 1")
        _check(self.n_eval >= 1, "n_eval", self.n_eval, "an integer >= 1")
        _check(0.0 < self.eval_fraction < 1.0, "eval_fraction", self.eval_fraction,
               "a number strictly between 0 and 1")
        _check(0.0 <= self.val_fraction < 1.0 - self.eval_fraction, "val_fraction", self.val_fraction,
               f"a number in [0, 1 - eval_fraction) = [0, {1.0 - self.eval_fraction:g})")
        _check(0.0 <= self.format_reward <= 1.0, "format_reward", self.format_reward,
               "a number in [0, 1]")
        _check(self.verify_timeout_s > 0, "verify_timeout_s", self.verify_timeout_s, "a number > 0")
        _check(self.verify_workers >= 1, "verify_workers", self.verify_workers, "an integer >= 1")
        if self.name in ("gsm8k", "math") and not self.path:
            raise ValueError(f"task {self.name!r} needs task.path: a JSONL file, a folder with "
                             f"train.jsonl and test.jsonl, or a `datasets` hub name")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"task.{key}={value!r} is invalid: expected {allowed}")


@dataclass(frozen=True)
class Example:
    """One problem. `meta` holds task-specific data (countdown: numbers and target)."""

    prompt: str      # text given to the model, e.g. "12+7="
    answer: str      # canonical ground truth, e.g. "19"
    target: str      # an ideal response (used by warm-start SFT), e.g. "19"
    meta: dict = field(default_factory=dict, hash=False)


class DatasetError(ValueError):
    """A dataset file or row is malformed; the message names the file, the line and the fault."""


class Task:
    """Base class. Subclasses set `name` and implement `_make_examples`, `check`, `format_ok`.

    `check` and `format_ok` must be pure functions of their arguments and the task's config:
    the verifier pickles the task into worker processes (the example cache is not pickled).
    """

    name: str = ""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self._cache: dict[str, list[Example]] = {}

    def examples(self, split: str) -> list[Example]:
        """The examples of `split` ("train", "val" or "eval"): deterministic, disjoint across
        splits by canonical form."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if split not in self._cache:
            self._cache[split] = self._make_examples(split)
        return list(self._cache[split])

    def check(self, completion: str, example: Example) -> float:
        """Correctness of `completion` for `example` in [0, 1] (1 = correct). Never raises on bad text."""
        raise NotImplementedError

    def format_ok(self, completion: str, example: Example) -> bool:
        """Whether `completion` has the answer format the task expects, right or wrong."""
        raise NotImplementedError

    def worker_setup(self) -> None:
        """Called once in each verifier worker before any check (import heavy checkers here)."""

    def canonical(self, example: Example) -> str:
        """The key that decides `example`'s split: problems with equal keys share a split. The
        prompt by default; a task whose problems have equivalent variants (permuted operands)
        returns one key for all of them."""
        return example.prompt

    def split_of(self, example: Example) -> str:
        """"train", "val" or "eval" (see the module docstring)."""
        return hash_split(f"{self.name}:{self.canonical(example)}", self.cfg.eval_fraction, self.cfg.val_fraction)

    def _split_size(self, split: str) -> int:
        return self.cfg.n_train if split == "train" else self.cfg.n_eval

    def _make_examples(self, split: str) -> list[Example]:
        raise NotImplementedError

    def _rng(self, split: str) -> random.Random:
        seed = self.cfg.seed if split == "train" else _EVAL_SEED  # val and eval: the same for every seed
        return random.Random(f"{self.name}:{split}:{seed}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


def hash_split(key: str, eval_fraction: float, val_fraction: float = 0.0) -> str:
    """With u the SHA-256 of `key` read as a number in [0, 1): "eval" if u < eval_fraction,
    "val" if u < eval_fraction + val_fraction, else "train"."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < eval_fraction:
        return "eval"
    return "val" if u < eval_fraction + val_fraction else "train"


def _sample_distinct(draw: Callable[[random.Random], Example], rng: random.Random, n: int,
                     keep: Callable[[Example], bool]) -> list[Example]:
    """Draw examples until `n` distinct prompts pass `keep`, or `_SAMPLE_PATIENCE` draws in a row add none."""
    seen: set[str] = set()
    out: list[Example] = []
    misses = 0
    while len(out) < n and misses < _SAMPLE_PATIENCE:
        ex = draw(rng)
        if ex.prompt in seen or not keep(ex):
            misses += 1
            continue
        seen.add(ex.prompt)
        out.append(ex)
        misses = 0
    return out


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


# ----------------------------------------------------------------------------------------------
# arithmetic

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


# ----------------------------------------------------------------------------------------------
# countdown

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


# ----------------------------------------------------------------------------------------------
# dataset files (gsm8k, math)

def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".jsonl", ".json")) or spec.startswith(("/", ".", "~"))


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """Rows of a JSONL file as (where, row), where = "file:line"; blank lines are skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: bad JSON ({e.msg} at column {e.colno}); "
                                   f"each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            rows.append((where, row))
    if not rows:
        raise DatasetError(f"{path}: no rows; expected one JSON object per line")
    return rows


def _load_hub(name: str, split: str, config: str | None) -> list[tuple[str, dict]]:
    try:
        import datasets  # noqa: PLC0415 (optional, heavy)
    except ImportError:
        raise DatasetError(f"task.path={name!r} is not a local file or folder, and the `datasets` "
                           f"package is not installed to load it from a hub: pass a local JSONL "
                           f"path, or `pip install datasets` where a hub is reachable") from None
    hub_split = "train" if split == "train" else "test"
    try:
        rows = datasets.load_dataset(name, config, split=hub_split)
    except Exception as e:  # noqa: BLE001 (the hub raises many kinds)
        raise DatasetError(f"could not load {name!r} (config {config!r}, split {hub_split!r}) "
                           f"with `datasets`: {type(e).__name__}: {e}; pass a local JSONL path "
                           f"if no hub is reachable") from e
    return [(f"{name}[{hub_split}]:{i}", dict(row)) for i, row in enumerate(rows)]


class _DatasetTask(Task):
    """Examples read from JSONL rows; subclasses turn one row into an Example (or raise DatasetError)."""

    hub_config: str | None = None
    key_field: str = ""              # the row field whose text decides the hash split

    def _make_examples(self, split: str) -> list[Example]:
        rows = self._rows(split)
        examples = [self._example(row, where) for where, row in rows]
        if split == "train":
            self._rng(split).shuffle(examples)
        return examples[:self._split_size(split)]

    def _rows(self, split: str) -> list[tuple[str, dict]]:
        spec = str(self.cfg.path)
        path = Path(spec).expanduser()
        if path.is_dir():
            names = ["test.jsonl", "eval.jsonl"] if split == "eval" else ["train.jsonl"]
            for file_name in names:
                if (path / file_name).is_file():
                    rows = _read_jsonl(path / file_name)
                    return rows if split == "eval" else self._hashed(rows, split, eval_fraction=0.0)
            raise DatasetError(f"{path}: no {' or '.join(names)} for the {split} split")
        if path.is_file():
            rows = _read_jsonl(path)
            for where, row in rows:      # validate every row, whichever split it lands in
                self._example(row, where)
            return self._hashed(rows, split, eval_fraction=self.cfg.eval_fraction)
        if _looks_like_path(spec):
            raise DatasetError(f"task.path={spec!r}: no such file or folder")
        if split == "eval":
            return _load_hub(spec, split, self.hub_config)
        return self._hashed(_load_hub(spec, "train", self.hub_config), split, eval_fraction=0.0)

    def _hashed(self, rows: list[tuple[str, dict]], split: str, *, eval_fraction: float) -> list[tuple[str, dict]]:
        """The rows whose key field hashes into `split` (eval_fraction 0: a file without an eval share)."""
        val = self.cfg.val_fraction
        return [(where, row) for where, row in rows
                if hash_split(f"{self.name}:{row[self.key_field]}", eval_fraction, val) == split]

    def _example(self, row: dict, where: str) -> Example:
        raise NotImplementedError


def _require_str(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DatasetError(f"{where}: missing key {key!r} (keys present: {sorted(row)})")
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {key!r} must be a non-empty string, got {value!r:.80}")
    return value


# One rule for numbers in every task: ASCII digits only, commas only as thousands separators
# ("1,234" but not "4,2" or ",42"), an optional sign and decimal part. A number-like run of text
# that breaks the rule is not a number (it is never read as a different one).
_NUMBER_RUN = re.compile(r"-?[0-9.,]*[0-9][0-9.,]*")
_STRICT_NUMBER = re.compile(r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|-?\.[0-9]+")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def parse_number(text: str) -> Fraction | None:
    """A number like "1,234", "-5", "3.50" or ".5" as an exact Fraction; None if it is not one
    (non-ASCII digits, misplaced commas such as "4,2" or ",42")."""
    text = text.strip()
    if not _STRICT_NUMBER.fullmatch(text):
        return None
    return Fraction(text.replace(",", ""))


def _number_runs(text: str) -> list[str]:
    """Number-like runs of `text`, with sentence punctuation after them ("7." "7,") removed."""
    return [run.rstrip(".,") for run in _NUMBER_RUN.findall(text)]


def extract_final_number(completion: str) -> Fraction | None:
    """The first number after the last "####" if there is one, else the last number in the text;
    None where that run of digits is not a well-formed number (see `parse_number`)."""
    if "####" in completion:
        runs = _number_runs(completion.rsplit("####", 1)[1])
        return parse_number(runs[0]) if runs else None
    runs = _number_runs(completion)
    return parse_number(runs[-1]) if runs else None


class GSM8KTask(_DatasetTask):
    """GSM8K-format rows {"question", "answer"} whose answer ends in "#### N". Prompt
    "Question: ...\\nAnswer:", target the worked answer (calculator annotations removed).
    Correct iff the final number of the completion (after "####" if present, else its last
    number) equals N."""

    name = "gsm8k"
    hub_config = "main"
    key_field = "question"

    def _example(self, row: dict, where: str) -> Example:
        question = _require_str(row, "question", where)
        solution = _require_str(row, "answer", where)
        if "####" not in solution:
            raise DatasetError(f"{where}: 'answer' has no final '#### N' line: {solution[-80:]!r}")
        final = solution.rsplit("####", 1)[1].strip()
        value = parse_number(final)
        if value is None:
            raise DatasetError(f"{where}: 'answer' ends in '#### {final[:40]}', which is not a number")
        answer = final.replace(",", "")
        worked = _CALCULATOR.sub("", solution.rsplit("####", 1)[0]).strip()
        target = f" {worked}\n#### {answer}" if worked else f" #### {answer}"
        return Example(prompt=f"Question: {question.strip()}\nAnswer:", answer=answer, target=target, meta={})

    def check(self, completion: str, example: Example) -> float:
        value = extract_final_number(completion)
        return float(value is not None and value == parse_number(example.answer))

    def format_ok(self, completion: str, example: Example) -> bool:
        return "####" in completion and extract_final_number(completion) is not None


def extract_last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` (braces balanced) or `\boxed x` in `text`, else None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1:j]
        return None
    match = re.match(r"\s+([^\s$]+)", text[i:])
    return match.group(1) if match else None


class MathTask(_DatasetTask):
    r"""MATH-format rows {"problem", "solution"} (answer = the last \boxed{} of the solution)
    or {"problem", "answer"}. Prompt "Problem: ...\nSolution:", target the solution (or
    "\boxed{answer}"). Checked with math-verify: `verify(parse(gold), parse(completion))`."""

    name = "math"
    key_field = "problem"

    def _example(self, row: dict, where: str) -> Example:
        problem = _require_str(row, "problem", where)
        if "answer" in row and row["answer"] is not None and str(row["answer"]).strip():
            answer = str(row["answer"]).strip()
            solution = row.get("solution")
            target = f" {solution.strip()}" if isinstance(solution, str) and solution.strip() else f" \\boxed{{{answer}}}"
        elif "solution" in row:
            solution = _require_str(row, "solution", where)
            answer = extract_last_boxed(solution)
            if answer is None or not answer.strip():
                raise DatasetError(f"{where}: 'solution' has no \\boxed{{...}} answer and there is "
                                   f"no 'answer' key: {solution[-80:]!r}")
            answer = answer.strip()
            target = f" {solution.strip()}"
        else:
            raise DatasetError(f"{where}: missing key 'solution' or 'answer' (keys present: {sorted(row)})")
        return Example(prompt=f"Problem: {problem.strip()}\nSolution:", answer=answer, target=target, meta={})

    def worker_setup(self) -> None:
        # The slow import happens once per worker, not inside a timed check. math-verify's own
        # signal-based timeouts are turned off in `check` (the verifier kills a hung check), so
        # silence its one-time warning that they are off.
        import math_verify.grader  # noqa: PLC0415
        import math_verify.parser  # noqa: PLC0415
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True

    def check(self, completion: str, example: Example) -> float:
        from math_verify import parse, verify  # noqa: PLC0415
        gold = parse(f"\\boxed{{{example.answer}}}", parsing_timeout=None)
        pred = parse(completion, parsing_timeout=None)
        if not gold or not pred:
            return 0.0
        return float(bool(verify(gold, pred, timeout_seconds=None)))

    def format_ok(self, completion: str, example: Example) -> bool:
        return extract_last_boxed(completion) is not None


# ----------------------------------------------------------------------------------------------

TASKS: dict[str, type[Task]] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "gsm8k": GSM8KTask,
    "math": MathTask,
}


ENTRY_POINT_GROUP = "rlvr.tasks"


def task_class(name: str) -> type[Task]:
    """The Task class `name` stands for: a built-in name, a `package.module:ClassName` path, or a
    name another installed package registers in the `rlvr.tasks` entry-point group (ValueError
    naming what is wrong otherwise)."""
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"task.name={name!r}: cannot import module {module_name!r} ({error}); "
                             "is it on PYTHONPATH?") from None
        cls = getattr(module, attr, None)
        if cls is None:
            raise ValueError(f"task.name={name!r}: module {module_name!r} has no {attr!r}")
    else:
        found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            plugins = sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
            raise ValueError(f"unknown task {name!r}; valid names: {', '.join([*TASKS, *plugins])}, "
                             "or package.module:ClassName for a Task subclass of your own")
        cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"task.name={name!r} is not a subclass of experiments.tasks.Task")
    return cls


def make_task(cfg: TaskConfig) -> Task:
    """The task named by `cfg.name`, after validating `cfg` (ValueError lists valid names/values)."""
    cfg.validate()
    return task_class(cfg.name)(cfg)

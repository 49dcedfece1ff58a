r"""Dataset-file tasks: gsm8k-format ("#### N" answers) and MATH-format (\boxed{} answers, checked
with math-verify) rows from a JSONL file, a folder with train/test files, or a hub name; every
row is validated with a message naming the file and line."""

import json
import re
from fractions import Fraction
from pathlib import Path

from experiments.tasks.base import DatasetError, Example, Task, hash_split


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



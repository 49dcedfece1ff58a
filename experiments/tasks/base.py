"""The task contract: `TaskConfig`, `Example`, the `Task` base class and the leak-free split rule
(see the package docstring). No torch: verifier workers import this at start-up."""

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable

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
    scratchpad: bool = field(default=False, metadata={
        "help": "arithmetic: the target works one operation at a time ('12+7+5=' -> '19+5=24'); correct iff the "
                "last '='-separated part of the completion is the value (give rollout.max_new_tokens room)"})
    scratchpad_frac: float = field(default=1.0, metadata={
        "help": "arithmetic with task.scratchpad: share of problems whose target shows the scratchpad, the "
                "rest the bare answer (chosen by a hash of the prompt); both check correct, so a warm start "
                "on a mix leaves RL free to lengthen or shorten responses"})
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
    template: str = field(default="plain", metadata={
        "help": "plain: the prompt text as it is | chat: wrapped in the tokenizer's chat template "
                "(apply_chat_template, generation prompt added), as Instruct models expect"})
    system_prompt: str = field(default="", metadata={
        "help": "task.template=chat: a system message before the prompt ('' = none: the template's "
                "own default, e.g. Qwen2.5's)"})
    format_reward: float = field(default=0.0, metadata={
        "help": "weight w of the format reward in [0,1]: reward = (1-w)*correct + w*format_ok"})
    verify_timeout_s: float = field(default=2.0, metadata={
        "help": "hard time limit per check; a check running longer is killed and scores 0"})
    verify_workers: int = field(default=2, metadata={
        "help": "verifier worker processes"})

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, its value and what is allowed."""
        from experiments.tasks import task_class

        task_class(self.name)  # raises for an unknown name or an import path that is not a Task
        _check(self.digits >= 1, "digits", self.digits, "an integer >= 1")
        _check(bool(self.ops) and set(self.ops) <= set(ARITHMETIC_OPS), "ops", self.ops,
               f"a non-empty string of operators from {ARITHMETIC_OPS!r}")
        _check(self.n_terms >= 2, "n_terms", self.n_terms, "an integer >= 2")
        _check(0.0 <= self.scratchpad_frac <= 1.0, "scratchpad_frac", self.scratchpad_frac, "a number in [0, 1]")
        _check(self.scratchpad or self.scratchpad_frac == 1.0, "scratchpad_frac", self.scratchpad_frac,
               "1.0 without task.scratchpad=true (the mix needs the scratchpad on)")
        _check(2 <= self.countdown_numbers <= 6, "countdown_numbers", self.countdown_numbers,
               "an integer in 2..6")
        _check(self.n_train >= 1, "n_train", self.n_train, "an integer >= 1")
        _check(self.n_eval >= 1, "n_eval", self.n_eval, "an integer >= 1")
        _check(0.0 < self.eval_fraction < 1.0, "eval_fraction", self.eval_fraction,
               "a number strictly between 0 and 1")
        _check(0.0 <= self.val_fraction < 1.0 - self.eval_fraction, "val_fraction", self.val_fraction,
               f"a number in [0, 1 - eval_fraction) = [0, {1.0 - self.eval_fraction:g})")
        _check(self.template in ("plain", "chat"), "template", self.template, "plain or chat")
        _check(self.template == "chat" or not self.system_prompt, "system_prompt", self.system_prompt,
               "'' with task.template=plain (a system prompt needs task.template=chat)")
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


def hash_unit(key: str) -> float:
    """The SHA-256 of `key` read as a number in [0, 1): the same on every machine and run."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(key: str, eval_fraction: float, val_fraction: float = 0.0) -> str:
    """With u = hash_unit(key): "eval" if u < eval_fraction, "val" if u < eval_fraction +
    val_fraction, else "train"."""
    u = hash_unit(key)
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



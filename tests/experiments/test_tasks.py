"""Tasks: deterministic disjoint splits, hand-checked answers, checks that never raise on bad text."""
import dataclasses
import itertools
import json
import re
from fractions import Fraction
from pathlib import Path

import pytest

from experiments.tasks import (
    TASKS, DatasetError, arithmetic_value, Example, ExpressionError, TaskConfig, evaluate_expression,
    extract_final_number, extract_last_boxed, hash_split, make_task, parse_int_answer,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GSM8K = FIXTURES / "gsm8k_tiny.jsonl"
MATH = FIXTURES / "math_tiny.jsonl"


def prompts(examples):
    return [ex.prompt for ex in examples]


# ---------------------------------------------------------------- config

def test_every_config_field_has_help():
    for f in dataclasses.fields(TaskConfig):
        assert f.metadata.get("help"), f"TaskConfig.{f.name} has no help text"


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown task 'sudoku'") as err:
        make_task(TaskConfig(name="sudoku"))
    for name in TASKS:
        assert name in str(err.value)


@pytest.mark.parametrize("key, value, fragment", [
    ("digits", 0, "task.digits=0 is invalid"),
    ("ops", "+/", "'+-*'"),
    ("ops", "", "task.ops=''"),
    ("n_terms", 1, "task.n_terms=1"),
    ("countdown_numbers", 7, "2..6"),
    ("eval_fraction", 1.0, "strictly between 0 and 1"),
    ("format_reward", 1.5, "[0, 1]"),
    ("verify_timeout_s", 0, "> 0"),
])
def test_bad_config_values_are_rejected_with_the_allowed_range(key, value, fragment):
    with pytest.raises(ValueError, match=None) as err:
        make_task(dataclasses.replace(TaskConfig(), **{key: value}))
    assert fragment in str(err.value)


def test_dataset_task_needs_a_path():
    with pytest.raises(ValueError, match="task 'gsm8k' needs task.path"):
        make_task(TaskConfig(name="gsm8k"))


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="valid splits: train, val, eval"):
        make_task(TaskConfig()).examples("test")


def test_hash_split_is_stable_and_roughly_proportional():
    keys = [f"k{i}" for i in range(4000)]
    assert [hash_split(k, 0.2) for k in keys] == [hash_split(k, 0.2) for k in keys]
    share = sum(hash_split(k, 0.2) == "eval" for k in keys) / len(keys)
    assert 0.17 < share < 0.23
    assert hash_split("k0", 1e-12) == "train"
    three = [hash_split(k, 0.2, 0.1) for k in keys]
    assert 0.07 < three.count("val") / len(keys) < 0.13
    # eval's membership does not depend on val_fraction
    assert [s == "eval" for s in three] == [hash_split(k, 0.2) == "eval" for k in keys]


def test_val_fraction_is_validated():
    with pytest.raises(ValueError, match=r"task.val_fraction=0.9 is invalid: expected a number in \[0, 1 - eval_fraction\)"):
        make_task(TaskConfig(val_fraction=0.9))


# ---------------------------------------------------------------- arithmetic

def test_arithmetic_same_seed_same_examples_other_seed_other_train_order():
    a = make_task(TaskConfig(digits=2, seed=1))
    b = make_task(TaskConfig(digits=2, seed=1))
    c = make_task(TaskConfig(digits=2, seed=2))
    assert a.examples("train") == b.examples("train")
    assert a.examples("train") != c.examples("train")
    # the eval set does not depend on the seed: every seed is scored on the same problems
    assert a.examples("eval") == c.examples("eval")


@pytest.mark.parametrize("cfg", [
    TaskConfig(digits=1, ops="+-", n_terms=2, n_train=5000, n_eval=5000),
    TaskConfig(digits=2, ops="+-*", n_terms=3, n_train=3000, n_eval=500),   # sampled, not enumerated
    TaskConfig(digits=3, ops="*", n_terms=2, n_train=500, n_eval=500),
])
def test_arithmetic_splits_are_disjoint_and_distinct(cfg):
    task = make_task(cfg)
    splits = {s: prompts(task.examples(s)) for s in ("train", "val", "eval")}
    for a, b in [("train", "val"), ("train", "eval"), ("val", "eval")]:
        assert not set(splits[a]) & set(splits[b])
    assert all(len(set(p)) == len(p) for p in splits.values())


def test_arithmetic_splits_are_leak_free_by_canonical_form():
    """No eval (or val) problem has an operand permutation in train: 1-digit a+b+c, where every
    permutation has the same answer, is split by the operand multiset."""
    task = make_task(TaskConfig(n_train=5000, n_eval=5000))
    canonical = {s: {task.canonical(ex) for ex in task.examples(s)} for s in ("train", "val", "eval")}
    assert not canonical["train"] & canonical["eval"]
    assert not canonical["train"] & canonical["val"] and not canonical["val"] & canonical["eval"]
    assert task.canonical(Example("3+5+1=", "9", "9", {"operands": [3, 5, 1], "ops": "++"})) == \
        task.canonical(Example("1+3+5=", "9", "9", {"operands": [1, 3, 5], "ops": "++"})) == "1,3,5|++"
    # every permutation of an eval problem is in eval too: the split is whole by multiset
    evals = set(prompts(task.examples("eval")))
    for ex in task.examples("eval"):
        for perm in itertools.permutations(ex.meta["operands"]):
            assert "+".join(map(str, perm)) + "=" in evals


def test_arithmetic_small_space_is_split_whole():
    # 1-digit operands, 2 terms, 2 operators: 10 * 10 * 2 = 200 problems in all
    task = make_task(TaskConfig(digits=1, ops="+-", n_terms=2, n_train=1000, n_eval=1000))
    train, val, evals = task.examples("train"), task.examples("val"), task.examples("eval")
    assert len(train) + len(val) + len(evals) == 200
    assert 0.1 < len(evals) / 200 < 0.3            # eval_fraction = 0.2
    assert len(make_task(TaskConfig(n_train=10, n_eval=3)).examples("eval")) == 3


def test_arithmetic_answers_hand_checked():
    task = make_task(TaskConfig(digits=1, ops="+-", n_terms=2, n_train=1000, n_eval=1000))
    by_prompt = {ex.prompt: ex for s in ("train", "val", "eval") for ex in task.examples(s)}
    assert {p: by_prompt[p].answer for p in ["3+5=", "3-5=", "0-9=", "9+9="]} == \
        {"3+5=": "8", "3-5=": "-2", "0-9=": "-9", "9+9=": "18"}
    assert by_prompt["3+5="].target == "8"

    task = make_task(TaskConfig(digits=1, ops="+*", n_terms=3, n_train=5000, n_eval=5000))
    by_prompt = {ex.prompt: ex.answer for s in ("train", "val", "eval") for ex in task.examples(s)}
    assert (by_prompt["2+3*4="], by_prompt["2*3+4="], by_prompt["9*9*9="]) == ("14", "10", "729")


def test_arithmetic_value_matches_the_exact_expression_evaluator():
    import random
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(2, 5)
        operands = [rng.randrange(100) for _ in range(n)]
        ops = [rng.choice("+-*") for _ in range(n - 1)]
        text = str(operands[0]) + "".join(o + str(x) for o, x in zip(ops, operands[1:]))
        assert arithmetic_value(operands, ops) == evaluate_expression(text, ops="+-*"), text
    assert arithmetic_value([2, 3, 4], "+*") == 14 and arithmetic_value([7, 2, 3], "-*") == 1


def test_arithmetic_operands_respect_digits():
    for ex in make_task(TaskConfig(digits=2, ops="+", n_terms=2, n_train=300)).examples("train"):
        a, b = ex.prompt[:-1].split("+")
        assert 0 <= int(a) <= 99 and 0 <= int(b) <= 99


@pytest.mark.parametrize("completion, score", [
    ("8", 1.0), (" 8\n", 1.0), ("+8", 1.0), ("08", 1.0),
    ("9", 0.0), ("-8", 0.0), ("8.0", 0.0), ("eight", 0.0), ("", 0.0), ("8 8", 0.0),
    ("8_0", 0.0), ("\uff18", 0.0), ("1" * 5000, 0.0), ("8=8", 0.0),
])
def test_arithmetic_check(completion, score):
    task = make_task(TaskConfig())
    ex = Example(prompt="3+5=", answer="8", target="8")
    assert task.check(completion, ex) == score
    assert task.format_ok(completion, ex) == (completion.strip() in ("8", "+8", "08", "9", "-8"))


def test_arithmetic_negative_answer():
    task = make_task(TaskConfig())
    ex = Example(prompt="3-5=", answer="-2", target="-2")
    assert task.check("-2", ex) == 1.0 and task.check("2", ex) == 0.0


@pytest.mark.parametrize("operands, ops, steps", [
    ([12, 7, 5], "++", ["19+5", "24"]),
    ([2, 3, 4], "+*", ["2+12", "14"]),
    ([2, 3, 4, 5], "*-*", ["6-4*5", "6-20", "-14"]),
    ([3, 9, 1], "-+", ["-6+1", "-5"]),
    ([4, 7], "*", ["28"]),
])
def test_scratchpad_reduction_steps_by_hand(operands, ops, steps):
    from experiments.tasks.arithmetic import reduction_steps

    assert reduction_steps(operands, ops) == steps
    assert int(steps[-1]) == arithmetic_value(operands, ops)


@pytest.mark.parametrize("completion, score", [
    ("19+5=24", 1.0), ("24", 1.0), (" 19+5 = 24 ", 1.0), ("12+12=24", 1.0),  # checked on the final value
    ("19+5=25", 0.0), ("24=19+5", 0.0), ("19+5=", 0.0), ("nineteen=24", 0.0), ("19+5==24", 0.0), ("", 0.0),
    ("19+5=24=", 0.0), ("19+5 24", 0.0),
])
def test_scratchpad_check_reads_the_last_value_of_a_chain(completion, score):
    task = make_task(TaskConfig(scratchpad=True))
    ex = task._example([12, 7, 5], "++")
    assert (ex.prompt, ex.target, ex.answer) == ("12+7+5=", "19+5=24", "24")
    assert task.check(completion, ex) == score
    assert make_task(TaskConfig()).check("19+5=24", ex) == 0.0  # without scratchpad: the bare integer only


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.5])
def test_scratchpad_frac_mixes_bare_and_chained_targets(frac):
    """scratchpad_frac of the targets show the chain, the rest the bare answer; both check correct,
    the examples (prompts, answers, splits) are those of scratchpad_frac=1, and the choice is a
    property of the problem (same prompt, same format in every split and seed)."""
    base = TaskConfig(n_terms=4, n_train=2000, scratchpad=True)
    full, mixed = make_task(base), make_task(dataclasses.replace(base, scratchpad_frac=frac))
    for split in ("train", "eval"):
        chained = [ex.target != ex.answer for ex in mixed.examples(split)]
        assert all(m.target in (f.target, m.answer) for m, f in zip(mixed.examples(split), full.examples(split)))
        assert [ex.prompt for ex in mixed.examples(split)] == [ex.prompt for ex in full.examples(split)]
        assert [ex.target for ex in full.examples(split)] != [ex.answer for ex in full.examples(split)]
        assert abs(sum(chained) / len(chained) - frac) < 0.05, (split, sum(chained) / len(chained))
        for ex in mixed.examples(split):
            assert mixed.check(ex.target, ex) == 1.0 and mixed.check(ex.answer, ex) == 1.0
    reseeded = make_task(dataclasses.replace(base, scratchpad_frac=frac, seed=1))
    fmt = {ex.prompt: ex.target for ex in mixed.examples("train")}
    shared = [ex for ex in reseeded.examples("train") if ex.prompt in fmt]
    assert len(shared) > 100 and all(fmt[ex.prompt] == ex.target for ex in shared)


@pytest.mark.parametrize("overrides, message", [
    (dict(scratchpad=True, scratchpad_frac=1.5), "task.scratchpad_frac=1.5 is invalid: expected a number in [0, 1]"),
    (dict(scratchpad_frac=0.5), "task.scratchpad_frac=0.5 is invalid: expected 1.0 without task.scratchpad=true"),
])
def test_scratchpad_frac_is_validated(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TaskConfig(**overrides).validate()


def test_every_target_checks_correct():
    for cfg in [TaskConfig(digits=2, ops="+-*", n_terms=3, n_train=300),
                TaskConfig(digits=2, ops="+-*", n_terms=4, n_train=300, scratchpad=True),
                TaskConfig(name="countdown", n_train=300),
                TaskConfig(name="countdown", digits=2, countdown_numbers=4, n_train=300)]:
        task = make_task(cfg)
        for ex in task.examples("train") + task.examples("eval"):
            assert task.check(ex.target, ex) == 1.0, ex
            assert task.format_ok(ex.target, ex), ex


# ---------------------------------------------------------------- countdown

COUNTDOWN = Example(prompt="3 5 7->22:", answer="22", target="3*5+7", meta={"numbers": [3, 5, 7], "target": 22})


@pytest.mark.parametrize("completion", ["3*5+7", "7+3*5", "(3*5)+7", " 3 * 5 + 7 \n", "((7))+5*3"])
def test_countdown_valid_expression_scores_1(completion):
    task = make_task(TaskConfig(name="countdown"))
    assert task.check(completion, COUNTDOWN) == 1.0
    assert task.format_ok(completion, COUNTDOWN)


@pytest.mark.parametrize("completion", [
    "3*5+7+3",                       # 3 used twice
    "3*5+7+0",                       # 0 not given
    "22",                            # 22 not given
    "3**2+13",                       # power
    "3//5",                          # floor division
    "-3+25",                         # unary minus
    "abs(3)",                        # function call
    "x",                             # name
    "(3).real",                      # attribute access
    "__import__('os').system('true')",
    "3*5+7=22",                      # only the expression
    "3.0*5+7",                       # float literal
    "1e1+12",
    "True+21",
    "",
    "(" * 300 + "3" + ")" * 300,     # nested past the parser's limit
    "3*5+7\x00",
    "3" * 2000,
])
def test_countdown_bad_expressions_score_0_without_raising(completion):
    task = make_task(TaskConfig(name="countdown"))
    assert task.check(completion, COUNTDOWN) == 0.0


def test_countdown_division_is_exact_and_zero_division_scores_0():
    task = make_task(TaskConfig(name="countdown"))
    ex = Example(prompt="2 3 4->6:", answer="6", target="3/2*4", meta={"numbers": [2, 3, 4], "target": 6})
    assert task.check("3/2*4", ex) == 1.0           # 3/2 is not an integer; Fraction keeps it exact
    assert evaluate_expression("1/3") == Fraction(1, 3)
    ex = Example(prompt="3 3 5->1:", answer="1", target="5-3-...", meta={"numbers": [3, 3, 5], "target": 1})
    assert task.check("5/(3-3)", ex) == 0.0
    assert task.format_ok("5/(3-3)", ex)            # well formed, just undefined
    assert task.format_ok("3+5", COUNTDOWN)         # well formed, wrong value
    assert task.check("3+5", COUNTDOWN) == 0.0
    assert not task.format_ok("3+8", COUNTDOWN)


def test_evaluate_expression_rejects_with_reason():
    with pytest.raises(ExpressionError, match="8 is not among the remaining numbers"):
        evaluate_expression("3+8", [3, 5])
    with pytest.raises(ExpressionError, match="Pow is not allowed"):
        evaluate_expression("3**5")
    with pytest.raises(ZeroDivisionError):
        evaluate_expression("3/(5-5)")


def test_countdown_examples_are_solvable_deterministic_and_disjoint():
    cfg = TaskConfig(name="countdown", countdown_numbers=3, digits=1, n_train=400, n_eval=100, seed=3)
    task = make_task(cfg)
    train, evals = task.examples("train"), task.examples("eval")
    assert (len(train), len(evals)) == (400, 100)
    assert train == make_task(cfg).examples("train")
    assert train != make_task(dataclasses.replace(cfg, seed=4)).examples("train")
    assert not set(prompts(train)) & set(prompts(evals))
    for ex in train + evals:
        numbers, target = ex.meta["numbers"], ex.meta["target"]
        assert len(numbers) == 3 and all(1 <= x <= 9 for x in numbers) and numbers == sorted(numbers)
        assert 1 <= target <= 100 and ex.answer == str(target)
        assert ex.prompt == " ".join(map(str, numbers)) + f"->{target}:"
        assert evaluate_expression(ex.target, numbers) == target


# ---------------------------------------------------------------- gsm8k

def test_gsm8k_fixture_parses_and_splits_disjoint():
    task = make_task(TaskConfig(name="gsm8k", path=str(GSM8K), n_train=100, n_eval=100))
    train, val, evals = task.examples("train"), task.examples("val"), task.examples("eval")
    assert len(train) + len(val) + len(evals) == 8
    assert not set(prompts(train)) & set(prompts(evals)) and not set(prompts(val)) & set(prompts(train) + prompts(evals))
    by_question = {ex.prompt: ex for ex in train + val + evals}
    tom = by_question["Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:"]
    assert tom.answer == "7"
    assert tom.target == " Tom has 3 + 4 = 7 apples.\n#### 7"       # calculator annotation removed
    answers = sorted(ex.answer for ex in train + val + evals)
    assert answers == sorted(["7", "60", "12", "3000", "4.5", "-5", "105", "24"])


def test_gsm8k_folder_with_train_and_test_files(tmp_path):
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[5:]) + "\n")
    task = make_task(TaskConfig(name="gsm8k", path=str(tmp_path), n_train=100, n_eval=2))
    # val is hashed out of train.jsonl; test.jsonl is eval whole
    assert sorted(ex.answer for s in ("train", "val") for ex in task.examples(s)) == \
        sorted(["7", "60", "12", "3000", "4.5"])
    assert not set(prompts(task.examples("train"))) & set(prompts(task.examples("val")))
    assert [ex.answer for ex in task.examples("eval")] == ["-5", "105"]     # file order, first n_eval


@pytest.mark.parametrize("completion, score", [
    ("3 + 4 = 7 apples.\n#### 7", 1.0),
    ("#### 7.0", 1.0),
    ("#### $7", 1.0),
    ("so 3 + 4 = 7", 1.0),             # no ####: the last number
    ("7 apples, or #### 8", 0.0),      # after #### wins
    ("#### 8\nwait, 7", 0.0),
    ("no number here", 0.0),
    ("####", 0.0),
    ("", 0.0),
    ("the answer is 7.", 1.0),          # sentence punctuation is not part of the number
    # one rule for every task: ASCII digits, commas only as thousands separators
    ("#### \u0667", 0.0),               # Arabic-Indic 7
    ("#### \uff17", 0.0),               # fullwidth 7
    ("#### \u096d", 0.0),               # Devanagari 7
    ("#### 0,7", 0.0),
    ("#### ,7", 0.0),
])
def test_gsm8k_check(completion, score):
    task = make_task(TaskConfig(name="gsm8k", path=str(GSM8K)))
    assert task.check(completion, Example(prompt="q", answer="7", target="t")) == score


def test_gsm8k_numbers_with_commas_and_signs():
    assert extract_final_number("they sold 1,234 eggs") == 1234
    assert extract_final_number("#### -5 degrees") == -5
    assert extract_final_number("#### 4.50") == Fraction(9, 2)
    task = make_task(TaskConfig(name="gsm8k", path=str(GSM8K)))
    ex = Example(prompt="q", answer="3000", target="t")
    assert task.check("#### 3,000", ex) == 1.0
    assert task.format_ok("#### 3,000", ex) and not task.format_ok("3000", ex)
    # commas anywhere else, or other scripts' digits, are not numbers (arithmetic agrees)
    ex42 = Example(prompt="q", answer="42", target="t")
    for text in ["#### \u0664\u0662", "#### \uff14\uff12", "#### \u096a\u096b", "#### 4,2", "#### ,42", "#### 42,0"]:
        assert task.check(text, ex42) == 0.0, text
        assert parse_int_answer(text.removeprefix("#### ")) is None, text
    assert task.check("#### 42", ex42) == 1.0 and task.check("#### 1,042", Example("q", "1042", "t")) == 1.0


@pytest.mark.parametrize("bad_line, fault", [
    ('{"question": "q", "answer": "a\\n#### 1"', "bad JSON"),
    ('{"question": "q"}', "missing key 'answer'"),
    ('{"answer": "#### 1"}', "missing key 'question'"),
    ('{"question": "q", "answer": "it is 5"}', "no final '#### N' line"),
    ('{"question": "q", "answer": "#### five"}', "is not a number"),
    ('{"question": "", "answer": "#### 5"}', "must be a non-empty string"),
    ('[1, 2]', "expected a JSON object"),
])
def test_gsm8k_malformed_line_names_file_and_line(tmp_path, bad_line, fault):
    good = GSM8K.read_text().splitlines()[0]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([good, "", bad_line, good]) + "\n")   # the bad row is line 3
    with pytest.raises(DatasetError) as err:
        make_task(TaskConfig(name="gsm8k", path=str(path))).examples("train")
    assert f"{path}:3:" in str(err.value) and fault in str(err.value)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file or folder"):
        make_task(TaskConfig(name="gsm8k", path=str(tmp_path / "nope.jsonl"))).examples("train")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match="no rows"):
        make_task(TaskConfig(name="gsm8k", path=str(tmp_path / "empty.jsonl"))).examples("train")
    with pytest.raises(DatasetError, match="no train.jsonl for the train split"):
        make_task(TaskConfig(name="gsm8k", path=str(tmp_path))).examples("train")


def test_hub_name_without_a_reachable_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError, match="could not load 'no-such-org/no-such-gsm8k'|`datasets` package is not installed"):
        make_task(TaskConfig(name="gsm8k", path="no-such-org/no-such-gsm8k")).examples("train")


# ---------------------------------------------------------------- math

def test_extract_last_boxed():
    assert extract_last_boxed(r"so $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert extract_last_boxed(r"\boxed{1} then \boxed{\sqrt{2}}") == r"\sqrt{2}"
    assert extract_last_boxed(r"\boxed 5$") == "5"
    assert extract_last_boxed(r"\boxed{unclosed") is None
    assert extract_last_boxed("none") is None


def test_math_fixture_answers():
    task = make_task(TaskConfig(name="math", path=str(MATH), n_train=100, n_eval=100))
    examples = [ex for s in ("train", "val", "eval") for ex in task.examples(s)]
    by_prompt = {ex.prompt: ex for ex in examples}
    assert len(by_prompt) == 4
    assert by_prompt["Problem: What is $\\frac{1}{4} + \\frac{1}{4}$?\nSolution:"].answer == r"\frac{1}{2}"
    assert by_prompt["Problem: Compute $\\sqrt{8}/2$.\nSolution:"].answer == r"\sqrt{2}"    # the last \boxed
    three = by_prompt["Problem: What is $3 \\cdot 4$?\nSolution:"]
    assert (three.answer, three.target) == ("12", r" \boxed{12}")
    assert by_prompt["Problem: Solve $x^2 = 9$ for $x > 0$.\nSolution:"].answer == "3"


@pytest.mark.parametrize("completion, score", [
    (r"The sum is $\boxed{\frac{1}{2}}$.", 1.0),
    (r"\boxed{0.5}", 1.0),          # math-verify treats 0.5 and 1/2 as equal
    ("0.5", 1.0),                   # and extracts a bare number without \boxed
    (r"\boxed{1/2}", 1.0),
    (r"\boxed{2}", 0.0),
    ("garbage", 0.0),
    ("", 0.0),
])
def test_math_check_with_math_verify(completion, score):
    task = make_task(TaskConfig(name="math", path=str(MATH)))
    ex = Example(prompt="p", answer=r"\frac{1}{2}", target=r"\boxed{\frac{1}{2}}")
    assert task.check(completion, ex) == score


def test_math_format_ok_needs_boxed():
    task = make_task(TaskConfig(name="math", path=str(MATH)))
    ex = Example(prompt="p", answer="3", target=r"\boxed{3}")
    assert task.format_ok(r"\boxed{4}", ex) and not task.format_ok("4", ex)


def test_math_solution_without_boxed_is_an_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "it is 4"}) + "\n")
    with pytest.raises(DatasetError, match=r"m.jsonl:1: 'solution' has no \\boxed"):
        make_task(TaskConfig(name="math", path=str(path))).examples("eval")
    path.write_text(json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(DatasetError, match="m.jsonl:1: missing key 'solution' or 'answer'"):
        make_task(TaskConfig(name="math", path=str(path))).examples("eval")


def test_task_pickles_without_its_example_cache():
    import pickle
    task = make_task(TaskConfig(digits=2, n_train=2000))
    task.examples("train")
    blob = pickle.dumps(task)
    assert len(blob) < 2000
    assert pickle.loads(blob).examples("train") == task.examples("train")

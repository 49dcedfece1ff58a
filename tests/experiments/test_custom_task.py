"""A task of the user's own, defined here (not in experiments/tasks/), trained on through the CLI
as `task.name=tests.experiments.test_custom_task:SortTask`: the contract a user task keeps."""
import itertools
import json

import pytest

from experiments.tasks import Example, Task, TaskConfig, make_task, task_class
from tests.conftest import run_cli


class SortTask(Task):
    """Prompts like "sort 312:" with target "123"; partial credit: the share of positions right."""

    name = "sort"

    def _make_examples(self, split):
        problems = [Example(f"sort {''.join(p)}:", "".join(sorted(p)), "".join(sorted(p)), {"digits": "".join(p)})
                    for p in itertools.permutations("0123456", 3)]
        return [ex for ex in problems if self.split_of(ex) == split][: self._split_size(split)]

    def canonical(self, example):
        return "".join(sorted(example.meta["digits"]))   # permutations share a split

    def check(self, completion, example):
        text = completion.strip()
        return sum(a == b for a, b in zip(text, example.answer)) / len(example.answer) if text else 0.0

    def format_ok(self, completion, example):
        return completion.strip().isdigit()


PATH = "tests.experiments.test_custom_task:SortTask"


def test_import_path_names_a_user_task_and_bad_paths_say_why():
    assert task_class(PATH) is SortTask
    task = make_task(TaskConfig(name=PATH))
    assert task.check(" 123", Example("sort 312:", "123", "123")) == 1.0
    assert task.check("13", Example("sort 312:", "123", "123")) == pytest.approx(1 / 3)
    train, evals = task.examples("train"), task.examples("eval")
    assert train and evals and not {task.canonical(e) for e in train} & {task.canonical(e) for e in evals}
    for name, message in [("tests.nope:X", "cannot import module 'tests.nope'"),
                          ("tests.experiments.test_custom_task:Nope", "has no 'Nope'"),
                          ("tests.experiments.test_custom_task:PATH", "is not a subclass of experiments.tasks.Task"),
                          ("chess", "valid names: arithmetic, countdown, gsm8k, math")]:
        with pytest.raises(ValueError, match=message):
            TaskConfig(name=name).validate()


def test_train_on_a_user_task_through_the_cli(tmp_path):
    out = tmp_path / "run"
    run_cli("train", f"task.name={PATH}", "model.warmstart=false", "rollouts_per_step=32", "eval_size=16",
            "steps=3", "eval_every=3", f"out={out}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(s["prompt"].startswith("sort ") for s in samples)
    # rewards are the task's own partial-credit check, in [0, 1]
    task = make_task(TaskConfig(name=PATH))
    for s in samples:
        assert s["reward"] == pytest.approx(task.check(s["response"], Example(s["prompt"], s["answer"], s["answer"])))
    assert "sort" not in str(out) and (out / "config.yaml").read_text().count(PATH) == 1


def test_a_task_registered_in_the_entry_point_group_is_found_by_name(tmp_path, monkeypatch):
    """What `[project.entry-points."rlvr.tasks"] sort = "mypkg.tasks:SortTask"` in another
    package's pyproject.toml installs: a dist-info with an entry_points.txt."""
    dist = tmp_path / "mytasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mytasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[rlvr.tasks]\nsort = {PATH}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert task_class("sort") is SortTask
    with pytest.raises(ValueError, match="valid names: arithmetic, countdown, gsm8k, math, sort"):
        task_class("chess")

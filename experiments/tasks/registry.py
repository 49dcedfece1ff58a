"""Task names: the built-in tasks, `package.module:ClassName` paths, and the `rlvr.tasks`
entry-point group other packages register in."""

import importlib
import importlib.metadata

from experiments.tasks.arithmetic import ArithmeticTask
from experiments.tasks.base import Task, TaskConfig
from experiments.tasks.countdown import CountdownTask
from experiments.tasks.datasets import GSM8KTask, MathTask

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


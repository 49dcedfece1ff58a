"""experiments.sweep without SLURM: grid files (schema, names, ids, errors naming the line),
validation through the train config, relaunch decisions, status, and the local executor."""
import fcntl
import hashlib
import json
import pickle
import re
import textwrap
from pathlib import Path

import pytest
import submitit

from experiments import sweep
from experiments.sweep import Cell, CellJob, GridError, parse_grid

REPO = Path(__file__).resolve().parents[2]


def grid(text: str, path: str = "g.yaml"):
    return parse_grid(textwrap.dedent(text), path)


def error_of(text: str) -> str:
    with pytest.raises(GridError) as info:
        grid(text).cells()
    return str(info.value)


# --------------------------------------------------------------------------- cells
def test_product_order_precedence_and_names():
    g = grid("""\
        name: demo
        base: {task.name: arithmetic, steps: 40, seed: 9}
        axes:
          algo: [ppo, grpo]
          algo.scale: [group_std, none]
        zip:
          - {algo.eps_high: [0.2, 0.28], label: [sym, higher]}
        """)
    with pytest.raises(GridError, match=r"g.yaml:\d+: key 'seed' is set by both base"):
        grid("base: {seed: 1}\naxes: {seed: [0, 1]}\n")
    cells = g.cells({"steps": "5"})
    assert len(cells) == 2 * 2 * 2
    # the last axis varies fastest; the zip group counts as the last axis
    assert [c.name for c in cells[:4]] == [
        "ppo-scale=group_std-sym", "ppo-scale=group_std-higher", "ppo-scale=none-sym", "ppo-scale=none-higher"]
    assert [c.index for c in cells] == list(range(8))
    first = cells[0]
    # base < command line < axes, and the preset first
    assert first.overrides == {"algo": "ppo", "task.name": "arithmetic", "steps": "5", "seed": "9",
                               "algo.scale": "group_std", "algo.eps_high": "0.2"}
    assert list(first.overrides)[0] == "algo"
    assert first.argv("/s") == ["algo=ppo", "task.name=arithmetic", "steps=5", "seed=9", "algo.scale=group_std",
                                "algo.eps_high=0.2", "name=ppo-scale=group_std-sym", f"out={Path('/s') / first.folder}"]


def test_seed_last_in_names_and_name_keys_show_their_value():
    g = grid("axes:\n  seed: [3]\n  model.name: [tiny, small]\n  algo: [grpo]\n")
    assert [c.name for c in g.cells()] == ["grpo-tiny-s3", "grpo-small-s3"]
    # two varied keys with the same last component are named by their full key
    g = grid("axes:\n  task.seed: [1]\n  seed: [0]\n  algo.eps: [0.1]\n  rollout.top_p: [0.9]\n  task.digits: [2]\n")
    assert g.cells()[0].name == "task.seed=1-eps=0.1-top_p=0.9-digits=2-s0"


def test_cell_id_is_sha1_of_sorted_overrides_without_bookkeeping_keys():
    overrides = {"algo": "grpo", "seed": "0", "steps": "5"}
    expected = hashlib.sha1(json.dumps([["algo", "grpo"], ["seed", "0"], ["steps", "5"]]).encode()).hexdigest()[:8]
    assert sweep.cell_id_of(overrides) == expected
    assert sweep.cell_id_of({"steps": "5", "seed": "0", "algo": "grpo"}) == expected        # order-free
    assert sweep.cell_id_of({**overrides, "cache_dir": "/x", "threads": "2", "name": "n", "out": "o"}) == expected
    assert sweep.cell_id_of({**overrides, "steps": "6"}) != expected


def test_yaml_scalars_become_cli_text():
    g = grid("base: {algo.filter_groups: true, algo.tis_cap: null, lr: 0.0001, steps: 3, task.ops: '+-'}\n")
    assert g.base == {"algo.filter_groups": "true", "algo.tis_cap": "null", "lr": "0.0001", "steps": "3",
                      "task.ops": "+-"}


def test_nested_base_mapping_is_flattened():
    g = grid("base:\n  algo: grpo\n  task: {name: countdown, digits: 2}\n")
    assert g.base == {"algo": "grpo", "task.name": "countdown", "task.digits": "2"}


def test_grid_without_axes_is_one_cell_named_after_the_grid():
    cells = grid("name: single\nbase: {algo: grpo}\n").cells()
    assert [(c.name, c.overrides) for c in cells] == [("single", {"algo": "grpo"})]


def test_shipped_grids_parse_and_validate():
    sizes = {"ppo_vs_grpo": 20, "std_ablation": 20, "length": 15, "memory": 12, "clip_higher": 6, "dynamic_sampling": 6,
             "dr_grpo_knobs": 15}
    assert {p.stem for p in (REPO / "experiments" / "grids").glob("*.yaml")} == set(sizes)
    for name, size in sizes.items():
        g = sweep.load_grid(REPO / "experiments" / "grids" / f"{name}.yaml")
        cells = g.cells()
        assert g.name == name and len(cells) == size
        assert len({c.folder for c in cells}) == size
        sweep.validate_cells(cells, "/tmp/never-written")
    names = {c.name for c in sweep.load_grid(REPO / "experiments/grids/std_ablation.yaml").cells()}
    assert "scale=none-sumnorm-s2" in names and "scale=group_std-seqmean-s0" in names


# --------------------------------------------------------------------------- malformed grids
@pytest.mark.parametrize("text, message", [
    ("name: x\naxes: {seed: [0]}\nbase_: {}\n", r"g.yaml:3: unknown top-level key 'base_'; valid: name, description"),
    ("axes:\n  algo: [grpo]\n  seed: []\n", r"g.yaml:3: axis 'seed' is empty"),
    ("axes:\n  algo: grpo\n", r"g.yaml:2: axis 'algo' must be a list of values, e.g. algo: \[a, b\]"),
    ("axes:\n  seed:\n    - 0\n    - 1\n    - 0\n", r"g.yaml:5: axis 'seed' repeats 0 \(first at line 3\)"),
    ("axes:\n  algo: [grpo]\n  algo: [ppo]\n", r"g.yaml:3: axes repeats key 'algo' \(first at line 2\)"),
    ("axes: {seed: [0]}\nzip:\n  - {algo.eps_high: [0.2, 0.28], algo.eps_low: [0.2]}\n",
     r"g.yaml:3: zip group 1: 'algo.eps_low' has 1 values but the keys before it have 2"),
    ("zip:\n  - {algo.eps_high: [0.2, 0.2], label: [a, b]}\n", r"g.yaml:2: zip group 1 repeats 0.2"),
    ("axes: {seed: [0]}\nzip:\n  - {seed: [1, 2]}\n", r"g.yaml:3: key 'seed' is set by both axes \(line 1\) and zip group 1"),
    ("axes:\n  algo: [[grpo]]\n", r"g.yaml:2: each value of axis 'algo' must be a single value"),
    ("base: {out: /x}\n", r"g.yaml:1: 'out' is set by the sweep for each cell"),
    ("axes: {seed: [0}\n", r"g.yaml:1: not valid YAML"),
    ("- a\n- b\n", r"g.yaml:1: the grid file must be a mapping"),
    ("", r"g.yaml:1: the grid file is empty"),
    ("zip: {seed: [0]}\n", r"g.yaml:1: zip must be a list of groups"),
    ("axes:\n  'algo eps': [1]\n", r"g.yaml:2: 'algo eps' is not a dotted config key"),
])
def test_malformed_grid_names_the_line(text, message):
    assert re.search(message, error_of(text)), error_of(text)


def test_command_line_override_of_an_axis_key_is_refused():
    g = grid("axes:\n  algo: [grpo]\n  seed: [0, 1]\n")
    with pytest.raises(GridError, match=r"g.yaml:3: seed=4 would override axes key 'seed'"):
        g.cells({"seed": "4"})
    with pytest.raises(GridError, match="name= is set by the sweep"):
        g.cells({"name": "x"})


def test_duplicate_cells_are_refused_even_past_the_parser():
    # the parser refuses repeated values per axis; cells() checks the resolved overrides again
    g = grid("axes:\n  algo: [grpo, dapo]\n")
    g.axes[0] = sweep.Axis(keys=("algo",), points=(("grpo",), ("grpo",)), labels=None, lines=(2, 3), line=2,
                           source="axes")
    with pytest.raises(GridError, match=r"g.yaml:3: cells 0 and 1 are the same run \(algo=grpo\)"):
        g.cells()


def test_validation_reports_the_train_config_error_before_anything_runs(tmp_path):
    bad = grid("axes:\n  algo: [grpo, ppo]\n  algo.scael: [none]\n").cells()
    with pytest.raises(GridError, match=r"unknown key 'algo.scael'.*Did you mean algo.scale.*cells: grpo-scael=none"):
        sweep.validate_cells(bad, tmp_path)
    path = tmp_path / "g.yaml"
    path.write_text("axes:\n  algo: [grpo, nope]\n")
    assert sweep.main_sweep([str(path), f"out={tmp_path / 's'}", "executor=local"]) == 2
    assert not (tmp_path / "s").exists()


def test_cells_that_resolve_to_one_config_are_refused(tmp_path):
    # 1e-6 is a string to YAML 1.1 and 0.000001 a float: different text, same eps
    cells = grid("axes:\n  algo.eps: [1e-6, 0.000001]\n").cells()
    assert [c.overrides["algo.eps"] for c in cells] == ["1e-6", "1e-06"]
    with pytest.raises(GridError, match="resolve to the same training config"):
        sweep.validate_cells(cells, tmp_path)


# --------------------------------------------------------------------------- command line
def test_parse_sweep_args_splits_settings_from_train_overrides():
    args = sweep.parse_sweep_args(["g.yaml", "steps=5", "executor=slurm", "out=/s", "slurm.time=7",
                                   "slurm.partition=gpu", "slurm.gpus_per_task=1", "slurm.extra=--qos=high",
                                   "local.parallel=3", "--wait", "--cell", "2"])
    assert (args.grid, args.executor, args.out, args.parallel, args.wait, args.cell) == ("g.yaml", "slurm", "/s", 3, True, 2)
    assert (args.slurm.time, args.slurm.partition, args.slurm.gpus_per_task, args.slurm.extra) == (7, "gpu", 1, "--qos=high")
    assert args.overrides == {"steps": "5"}
    with pytest.raises(GridError, match=r"unknown key 'slurm.gpus'; valid: slurm.partition, slurm.time"):
        sweep.parse_sweep_args(["g.yaml", "slurm.gpus=1"])
    with pytest.raises(GridError, match=r"slurm.time='1h': expected a non-negative integer \(minutes\)"):
        sweep.parse_sweep_args(["g.yaml", "slurm.time=1h"])
    with pytest.raises(GridError, match="executor='ray': valid: local, slurm"):
        sweep.parse_sweep_args(["g.yaml", "executor=ray"])
    with pytest.raises(GridError, match="no grid file given"):
        sweep.parse_sweep_args(["steps=3"])


def test_parse_extra_flags():
    assert sweep.parse_extra_flags("--qos=high --exclusive -A lab --constraint 'a100|h100'") == {
        "qos": "high", "exclusive": True, "A": "lab", "constraint": "a100|h100"}
    with pytest.raises(GridError, match="expected sbatch flags"):
        sweep.parse_extra_flags("qos=high")


def test_count_and_list(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("name: t\naxes:\n  algo: [grpo, dapo]\n  seed: [0, 1, 2]\n")
    assert sweep.main_sweep([str(path), "--count"]) == 0
    assert capsys.readouterr().out == "6\n"
    assert sweep.main_sweep([str(path), "--list", "steps=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[5].startswith("5\tdapo-s2-") and lines[5].endswith("algo=dapo steps=2 seed=2")


def test_slurm_executor_without_slurm_says_what_to_do(tmp_path, monkeypatch, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("axes:\n  algo: [grpo]\n")
    monkeypatch.setenv("PATH", str(tmp_path))                 # no sbatch, no sinfo
    assert not sweep.slurm_available()
    assert sweep.main_sweep([str(path), "executor=slurm", f"out={tmp_path / 's'}"]) == 2
    assert "executor=slurm, but sbatch is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- relaunch decisions
def write_status(run_dir: Path, state: str, step: int, steps: int, **extra) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({"state": state, "step": step, "steps": steps, **extra}))


def test_plan_cell(tmp_path):
    cell = Cell(index=0, name="grpo-s0", id="abcd1234", overrides={"algo": "grpo"})
    run_dir = cell.run_dir(tmp_path)
    assert sweep.plan_cell(cell, tmp_path, {}) == ("new", "")
    write_status(run_dir, "completed", 5, 5)
    assert sweep.plan_cell(cell, tmp_path, {}) == ("skip", "completed (5/5 steps)")
    write_status(run_dir, "completed", 5, 8)          # completed short of its steps: train goes on
    assert sweep.plan_cell(cell, tmp_path, {})[0] == "resume"
    write_status(run_dir, "failed", 3, 5)
    assert sweep.plan_cell(cell, tmp_path, {}) == ("resume", "resume: was failed at step 3/5")
    assert sweep.plan_cell(cell, tmp_path, {cell.folder: "12_0"}) == ("skip", "still in SLURM's queue as job 12_0")
    write_status(run_dir, "running", 2, 5, pid=4242, host="nodeA")
    with open(run_dir / "lock", "a+") as holder:      # a second open file description conflicts, as another process would
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        action, why = sweep.plan_cell(cell, tmp_path, {})
        assert action == "skip" and why.startswith("running elsewhere (pid 4242 on nodeA")
    assert sweep.plan_cell(cell, tmp_path, {})[0] == "resume"      # lock released: a dead run resumes


def test_mark_preempted_only_changes_a_running_run(tmp_path):
    write_status(tmp_path, "running", 4, 10, pid=1)
    assert sweep.mark_preempted(tmp_path)
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["step"], status["pid"]) == ("preempted", 4, 1)
    write_status(tmp_path, "completed", 10, 10)
    assert not sweep.mark_preempted(tmp_path)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]     # no temporary left behind


def test_cell_job_pickles_and_checkpoint_requeues_the_same_cell(tmp_path):
    job = CellJob(str(tmp_path), ["algo=grpo", f"out={tmp_path}"])
    clone = pickle.loads(pickle.dumps(job))
    assert (clone.run_dir, clone.argv) == (job.run_dir, job.argv)
    write_status(tmp_path, "running", 2, 9)
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, CellJob) and delayed.function.argv == job.argv
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "preempted"
    pickle.dumps(delayed)


# --------------------------------------------------------------------------- status
def test_status_table_from_run_folders(tmp_path, capsys):
    run = tmp_path / "grpo-s0-abcd1234"
    write_status(run, "running", 2, 5, job_id="7_0", host="elsewhere")
    rows = [{"step": 0, "reward_mean": None, "accuracy": None, "eval_accuracy": 0.25},
            {"step": 1, "reward_mean": 0.5, "accuracy": 0.375, "eval_accuracy": None},
            {"step": 2, "reward_mean": 0.75, "accuracy": 0.625, "eval_accuracy": None}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "rew')
    write_status(tmp_path / "ppo-s0-00000000", "completed", 5, 5)
    table = sweep.status_rows(tmp_path, {"7_0": "RUNNING"})
    assert table[0] == {"run": "grpo-s0-abcd1234", "state": "running", "step": "2/5", "reward": "0.750",
                        "acc": "0.625", "eval_acc": "0.250", "job": "7_0", "slurm": "RUNNING"}
    assert table[1]["state"] == "completed" and table[1]["reward"] == "-"
    assert sweep.main_status([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 runs (1 completed, 1 running)" in out and "grpo-s0-abcd1234  running    2/5" in out
    assert sweep.main_status([str(tmp_path / "nope")]) == 2


# --------------------------------------------------------------------------- local executor
FAST = ("task.name=arithmetic", "model.name=tiny", "model.warmstart=false", "rollouts_per_step=8",
        "eval_size=8", "threads=1")


@pytest.mark.slow
def test_local_executor_runs_the_grid_and_relaunch_skips(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\naxes:\n  algo: [grpo, dr_grpo]\n")
    out = tmp_path / "sweep"
    assert sweep.main_sweep([str(path), "executor=local", "local.parallel=2", f"out={out}", "steps=3", *FAST]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in record["cells"]] == ["grpo", "dr_grpo"]
    assert all(job.startswith("local:") for job in record["launches"][0]["jobs"].values())
    for cell in record["cells"]:
        run = out / cell["folder"]
        assert json.loads((run / "status.json").read_text())["state"] == "completed"
        assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
        assert "completed at step 3" in (out / "logs" / f"{cell['folder']}.log").read_text()
    capsys.readouterr()
    assert sweep.main_sweep([str(path), "executor=local", f"out={out}", "steps=3", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "2 cells, 0 to run, 2 skipped" in printed and "skip, completed (3/3 steps)" in printed
    assert json.loads((out / "sweep.json").read_text())["launches"][1]["jobs"] == {}


def test_task_layout_of_a_cell():
    from experiments.sweep.launch import SlurmSettings, task_layout

    assert task_layout(SlurmSettings()) == {}
    assert task_layout(SlurmSettings(gpus_per_task=1)) == {"slurm_gpus_per_task": 1}
    # the interface: gpus_per_task=N is one run on N ranks per node, one GPU each
    assert task_layout(SlurmSettings(gpus_per_task=4)) == {"slurm_gpus_per_task": 1, "nodes": 1, "tasks_per_node": 4}
    assert task_layout(SlurmSettings(gpus_per_task=8, nodes=2)) == {"slurm_gpus_per_task": 1, "nodes": 2,
                                                                   "tasks_per_node": 8}
    assert task_layout(SlurmSettings(tasks_per_node=2)) == {"nodes": 1, "tasks_per_node": 2}  # CPU ranks
    assert task_layout(SlurmSettings(tasks_per_node=2, gpus_per_task=1)) == {"slurm_gpus_per_task": 1, "nodes": 1,
                                                                            "tasks_per_node": 2}

"""The train CLI's config: every key documented, unknown keys and bad values rejected up front."""
import pytest

from experiments.config import _valid_keys, help_text, load_config
from tests.conftest import run_cli


def test_defaults_and_overrides():
    cfg = load_config(["algo=grpo", "algo.scale=none", "steps=5", "task.digits=2", "rollout.temperature=0.7"])
    assert cfg.algo.name == "grpo" and cfg.algo.scale == "none"
    assert cfg.steps == 5 and cfg.task.digits == 2 and cfg.rollout.temperature == 0.7
    assert cfg.name == "grpo-arithmetic-tiny-s0" and cfg.out.endswith("runs/grpo-arithmetic-tiny-s0")


def test_dr_grpo_L_is_the_generation_budget_unless_set():
    # norm_len stays None in the config (so it is not a knob that differs between runs); the loop
    # passes rollout.max_new_tokens to the loss as L.
    cfg = load_config(["algo=dr_grpo", "rollout.max_new_tokens=9"])
    assert cfg.algo.norm_len is None and cfg.rollout.max_new_tokens == 9
    assert load_config(["algo=dr_grpo", "algo.norm_len=4"]).algo.norm_len == 4


def test_ppo_uses_more_prompts_same_samples():
    ppo, grpo = load_config(["algo=ppo"]), load_config(["algo=grpo"])
    assert ppo.rollouts_per_step == grpo.rollouts_per_step
    assert ppo.prompts_per_step == grpo.prompts_per_step * grpo.algo.group_size


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["algo.scaling=none"], "unknown key 'algo.scaling'. Did you mean algo.scale"),
        (["stepz=3"], "unknown key 'stepz'. Did you mean steps"),
        (["task.nam=x"], "Did you mean task.name"),
        (["steps=ten"], "steps='ten': expected int"),
        (["algo=ppo2"], "unknown algorithm 'ppo2'; valid: ppo, grpo, dr_grpo, dapo, rloo, gspo"),
        (["algo.scale=whiten"], "valid: group_std, batch_std, batch_whiten, none"),
        (["algo.group_size=1"], "needs algo.group_size >= 2"),
        (["rollout.backend=sglang"], "valid: hf, vllm"),
        (["task.name=chess"], "valid names: arithmetic, countdown, gsm8k, math"),
        (["model.name=huge"], "neither a size preset"),
        (["rollouts_per_step=30"], "not a multiple of algo.group_size=8"),
        (["algo=dapo", "algo.overlong_cache_len=20"], "exceeds rollout.max_new_tokens"),
        (["steps"], "expected key=value"),
        (["lr=nan"], "lr='nan': expected a finite number"),
        (["rollout.temperature=inf"], "rollout.temperature='inf': expected a finite number"),
        (["algo.kl_coef=nan"], "algo.kl_coef='nan': expected a finite number"),
        (["algo.eps_high=-inf"], "algo.eps_high='-inf': expected a finite number"),
        (["algo.tis_cap=inf"], "algo.tis_cap='inf': expected a finite number"),
        (["grad_clip=-1"], "grad_clip=-1.0 is invalid: must be > 0"),
        (["weight_decay=-0.1"], "weight_decay=-0.1 is invalid: must be >= 0"),
        (["threads=-1"], "threads=-1 is invalid: must be >= 0"),
        (["model.warmstart_steps=-1"], "model.warmstart_steps=-1 is invalid"),
        (["model.warmstart_lr=-1"], "model.warmstart_lr=-1.0 is invalid: must be > 0"),
        (["rollout.vllm_max_model_len=0"], "rollout.vllm_max_model_len=0 is invalid: must be >= 1"),
        (["algo.name=ppo"], "algo.name='ppo' is not a knob: pick a preset with algo=ppo"),
        (["algo=grpo", "algo.critic=true"], "unknown key 'algo.critic'"),
        (["task.name=gsm8k", "task.path=missing.jsonl"], "task.path='missing.jsonl': no such file or folder"),
    ],
)
def test_bad_config_fails_with_guidance(overrides, message):
    with pytest.raises(ValueError) as info:
        load_config(overrides)
    assert message in str(info.value)


def test_help_lists_every_key():
    text = help_text()
    for key in _valid_keys():
        assert key in text, key


def test_cli_rejects_unknown_key_before_any_work(tmp_path):
    result = run_cli("train", "algo.scaling=none", f"out={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    assert "unknown key 'algo.scaling'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_help():
    out = run_cli("train", "--help").stdout
    assert "algo.scale" in out and "rollout.backend" in out and "task.verify_timeout_s" in out


def test_readme_documents_every_metric_and_knob(repo):
    from algos import knob_names
    from experiments.train import METRIC_KEYS

    readme = (repo / "README.md").read_text()
    missing = [key for key in METRIC_KEYS if f"`{key}`" not in readme]
    assert not missing, f"README does not document metrics {missing}"
    table = run_cli("--help").stdout  # the package help lists the commands the README shows
    assert "sweep" in table and "status" in table
    for knob in knob_names():
        if knob != "name":
            assert f"| {knob} |" in readme or f"| **{knob}** |" in readme, knob


def _train_main(args, capsys):
    from experiments.train import main

    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("", "no rows"),
    ("{not json\n", "bad JSON"),
    ('{"q": "x", "a": "#### 1"}\n', "missing key 'question'"),
    ('{"question": "q", "answer": "five"}\n', "no final '#### N' line"),
])
def test_bad_dataset_file_fails_before_the_run_folder_exists(tmp_path, capsys, content, message):
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    out = tmp_path / "run"
    code, err = _train_main(["task.name=gsm8k", f"task.path={data}", f"out={out}"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_out_and_model_paths_that_cannot_work_fail_in_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        ([f"out={afile}"], "is a file, not a run folder"),
        ([f"out={afile}/run"], "is a file, so the run folder cannot be created there"),
        ([f"model.name={empty}", f"out={tmp_path / 'r'}"], "has no config.json"),
    ]:
        code, err = _train_main(args, capsys)
        assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "empty"]

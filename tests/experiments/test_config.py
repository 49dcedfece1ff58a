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
        (["algo=ppo2"], "unknown algorithm 'ppo2'; valid: ppo, grpo, dr_grpo, dapo, rloo"),
        (["algo.scale=whiten"], "valid: group_std, batch_std, batch_whiten, none"),
        (["algo.group_size=1"], "needs algo.group_size >= 2"),
        (["rollout.backend=sglang"], "valid: hf, vllm"),
        (["task.name=chess"], "valid names: arithmetic, countdown, gsm8k, math"),
        (["model.name=huge"], "neither a size preset"),
        (["rollouts_per_step=30"], "not a multiple of algo.group_size=8"),
        (["algo=dapo", "algo.overlong_cache_len=20"], "exceeds rollout.max_new_tokens"),
        (["steps"], "expected key=value"),
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

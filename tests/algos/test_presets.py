"""Presets, knob validation, and the composed loss (`policy_loss`, `compute_advantages`)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from algos import PRESETS, AlgoConfig, compute_advantages, parse_knob, policy_loss, preset, shape_rewards


def diff(a: AlgoConfig, b: AlgoConfig) -> set[str]:
    return {k for k, v in a.to_dict().items() if b.to_dict()[k] != v} - {"name"}


def test_ppo_vs_grpo_differ_only_in_the_baseline():
    # ALGORITHMS.md: baseline (critic/GAE vs group), scaling, rollouts per prompt.
    assert diff(preset("ppo"), preset("grpo")) == {"baseline", "scale", "group_size"}
    assert preset("ppo").uses_critic and not preset("grpo").uses_critic  # derived from the baseline


def test_preset_rows_match_algorithms_md():
    assert diff(preset("grpo"), preset("dr_grpo")) == {"scale", "aggregation", "kl_coef"}
    assert diff(preset("grpo"), preset("dapo")) == {
        "eps_high", "filter_groups", "aggregation", "soft_punish", "mask_truncated", "kl_coef"
    }
    assert preset("dapo").eps_high == 0.28 and preset("dapo").eps_low == 0.2
    assert preset("grpo").kl_coef == 0.04 and preset("ppo").kl_coef == 0.04
    assert diff(preset("grpo"), preset("rloo")) == {"baseline", "scale"}
    assert diff(preset("grpo"), preset("gspo")) == {"ratio_level", "eps_low", "eps_high", "kl_coef"}
    assert (preset("gspo").eps_low, preset("gspo").eps_high) == (3e-4, 4e-4)


def test_override_returns_new_config():
    grpo = preset("grpo")
    ablated = preset("grpo", scale="none")
    assert ablated.scale == "none" and grpo.scale == "group_std"
    assert grpo.replace(eps_high=0.28).eps_high == 0.28
    with pytest.raises(Exception):
        grpo.scale = "none"  # frozen


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: preset("ppo2"), "unknown algorithm 'ppo2'; valid: ppo, grpo, dr_grpo, dapo, rloo, gspo"),
        (lambda: preset("grpo", scaling="none"), "unknown algo knob"),
        (lambda: preset("grpo", scale="whiten"), "valid: group_std, batch_std, batch_whiten, none"),
        (lambda: preset("grpo", group_size=1), "needs algo.group_size >= 2"),
        (lambda: preset("ppo", critic=False), "unknown algo knob"),   # derived from baseline=critic
        (lambda: preset("grpo", eps=float("nan")), "algo.eps=nan: expected a finite number"),
        (lambda: preset("grpo", tis_cap=float("inf")), "algo.tis_cap=inf: expected a finite number"),
        (lambda: preset("ppo", value_clip=float("nan")), "algo.value_clip=nan"),
        (lambda: preset("grpo", eps_low=-0.1), "eps_low must be >= 0"),
        (lambda: preset("grpo", kl_coef=-1.0), "kl_coef must be >= 0"),
        (lambda: preset("ppo", scale="group_std"), "use scale=batch_whiten"),
        (lambda: preset("grpo", kl_placement="reward"), "only a critic"),
        (lambda: preset("ppo", filter_groups=True), "needs a group baseline"),
        (lambda: preset("grpo", norm_len=0), "norm_len must be >= 1"),
    ],
)
def test_invalid_configs_raise_with_guidance(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_sum_norm_without_max_len_fails_at_loss_time():
    cfg = preset("dr_grpo")
    batch = dict(logp=torch.zeros(2, 3), old_logp=torch.zeros(2, 3), advantages=torch.ones(2), response_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="needs max_len"):
        policy_loss(batch, cfg)
    loss, _ = policy_loss({**batch, "max_len": 6}, cfg)
    assert loss.item() == pytest.approx(-6 / (2 * 6))  # each token -1; sum -6 over 2 seqs * L=6


def test_parse_knob_types():
    assert parse_knob("eps_high", "0.28") == 0.28
    assert parse_knob("filter_groups", "true") is True
    assert parse_knob("norm_len", "null") is None and parse_knob("norm_len", "16") == 16
    assert parse_knob("scale", "none") == "none"
    with pytest.raises(ValueError, match="algo.epochs='two': expected int"):
        parse_knob("epochs", "two")


def test_policy_loss_grpo_hand_computed():
    # two rollouts, ratio 1, advantages +1/-1, lengths 2 and 1, KL 0 (ref == logp)
    logp = torch.zeros(2, 2, requires_grad=True)
    batch = dict(
        logp=logp, old_logp=torch.zeros(2, 2), ref_logp=torch.zeros(2, 2),
        advantages=torch.tensor([1.0, -1.0]), response_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
    )
    loss, metrics = policy_loss(batch, preset("grpo"))
    assert loss.item() == pytest.approx(0.0)  # (-1 + 1)/2
    assert metrics["kl_loss"] == 0.0 and metrics["ratio_mean"] == 1.0
    loss.backward()
    # d/dlogp of -ratio*A: -A per token, / len, / 2 seqs
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25], [0.5, 0.0]]))


def test_policy_loss_mask_truncated_and_tis():
    batch = dict(
        logp=torch.zeros(2, 2), old_logp=torch.zeros(2, 2), advantages=torch.tensor([1.0, 3.0]),
        response_mask=torch.ones(2, 2), truncated=torch.tensor([False, True]),
        sampler_logp=torch.tensor([[0.0, 0.0], [-5.0, -5.0]]),
    )
    loss, _ = policy_loss(batch, preset("dapo"))
    assert loss.item() == pytest.approx(-1.0)  # the truncated rollout (A=3) is masked out
    # TIS: weight exp(old - sampler) = exp(5) capped at 2 on the second rollout
    loss, metrics = policy_loss(batch, preset("grpo", kl_coef=0.0, tis_cap=2.0))
    assert loss.item() == pytest.approx((-1.0 + -3.0 * 2) / 2)
    assert metrics["tis_weight_mean"] == pytest.approx(1.5)


def test_entropy_bonus_hand_computed():
    # ratio 1, A = +1 over 2 tokens: pg = -1 (seq_mean_token_mean); entropies 0.5 and 1.5 -> mean 1.0;
    # loss = -1 - 0.1 * 1.0 = -1.1; d loss / d entropy_t = -0.1 / 2 per token
    entropy = torch.tensor([[0.5, 1.5]], requires_grad=True)
    batch = dict(logp=torch.zeros(1, 2), old_logp=torch.zeros(1, 2), advantages=torch.tensor([1.0]),
                 response_mask=torch.ones(1, 2), entropy=entropy)
    loss, metrics = policy_loss(batch, preset("grpo", kl_coef=0.0, entropy_coef=0.1))
    assert loss.item() == pytest.approx(-1.1) and metrics["entropy_bonus"] == pytest.approx(1.0)
    loss.backward()
    assert entropy.grad[0].tolist() == pytest.approx([-0.05, -0.05])
    assert policy_loss({**batch, "entropy": None}, preset("grpo", kl_coef=0.0))[0].item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="entropy_coef > 0 needs batch"):
        policy_loss({**batch, "entropy": None}, preset("grpo", kl_coef=0.0, entropy_coef=0.1))


def test_minibatch_with_no_token_in_the_loss_reports_no_statistics():
    """Every rollout truncated under mask_truncated: the loss is 0 and ratio/clip/pg statistics
    are None (left out of the step's means), not 0."""
    batch = dict(
        logp=torch.zeros(2, 2), old_logp=torch.zeros(2, 2), advantages=torch.tensor([1.0, -1.0]),
        response_mask=torch.ones(2, 2), truncated=torch.tensor([True, True]),
    )
    loss, metrics = policy_loss(batch, preset("dapo"))
    assert loss.item() == 0.0
    assert metrics["ratio_mean"] is None and metrics["pg_loss"] is None and metrics["clip_frac_low"] is None
    batch["truncated"] = torch.tensor([True, False])
    _, metrics = policy_loss(batch, preset("dapo"))
    assert metrics["ratio_mean"] == 1.0 and metrics["pg_loss"] == pytest.approx(1.0)


def test_compute_advantages_group_and_critic():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    adv, returns = compute_advantages(rewards, mask, preset("grpo", group_size=4, eps=0.0))
    assert returns is None
    assert torch.allclose(adv, torch.tensor([[1.5, 1.5], [-0.5, 0.0], [-0.5, -0.5], [-0.5, -0.5]]))
    # critic with zero values, gamma=lam=1, scale none: A_t = R for every token, returns = R
    cfg = preset("ppo", scale="none", lam=1.0)
    adv, returns = compute_advantages(rewards, mask, cfg, values=torch.zeros(4, 2))
    assert torch.allclose(adv, torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(returns, adv)


def test_shape_rewards_soft_punish():
    lengths = torch.tensor([4, 7, 8, 9])
    shaped = shape_rewards(torch.ones(4), lengths, preset("dapo"), max_len=8)  # cache 4: soft zone (4, 8]
    assert torch.allclose(shaped, torch.tensor([1.0, 0.25, 0.0, 0.0]))
    assert torch.equal(shape_rewards(torch.ones(4), lengths, preset("grpo"), max_len=8), torch.ones(4))


def test_python_m_algos_prints_table():
    out = subprocess.run([sys.executable, "-m", "algos"], capture_output=True, text=True, check=True).stdout
    for name in PRESETS:
        assert name in out
    assert "| **baseline** | critic | group | group | group | leave_one_out |" in out


def test_config_presets_and_analysis_import_without_torch():
    """Labelling runs needs the knobs and presets, not tensors: algos.config, algos (its tensor
    functions load on first use) and analysis.load never import torch."""
    code = ("import sys, algos.config, algos, analysis.load; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert algos.preset('gspo').ratio_level == 'sequence'; "
            "algos.policy_loss; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])

"""Invariances of the algorithm math, as hypothesis property tests, and loop-vs-vectorized checks."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algos import aggregate, clipped_surrogate, gae, group_advantages, kl_estimate

settings.register_profile("ci", deadline=None, max_examples=60)
settings.load_profile("ci")

reward_values = st.floats(min_value=-5, max_value=5, allow_nan=False, width=32)


@st.composite
def grouped_rewards(draw, binary=False):
    group_size = draw(st.integers(2, 8))
    groups = draw(st.integers(1, 5))
    elements = st.sampled_from([0.0, 1.0]) if binary else reward_values
    values = draw(st.lists(elements, min_size=group_size * groups, max_size=group_size * groups))
    return torch.tensor(values, dtype=torch.float32), group_size


@given(grouped_rewards(), st.sampled_from(["group_std", "batch_std", "none"]), st.sampled_from(["group", "leave_one_out"]))
def test_advantages_sum_to_zero_per_group(data, scale, baseline):
    rewards, k = data
    adv = group_advantages(rewards, k, baseline=baseline, scale=scale)
    assert torch.allclose(adv.view(-1, k).sum(1), torch.zeros(rewards.numel() // k), atol=1e-3)


@given(grouped_rewards(), st.floats(0.1, 10), st.floats(-3, 3))
def test_group_std_invariant_to_affine_rewards(data, scale_by, shift):
    rewards, k = data
    base = group_advantages(rewards, k, scale="group_std", eps=0.0)
    moved = group_advantages(rewards * scale_by + shift, k, scale="group_std", eps=0.0)
    # Groups whose rewards are nearly equal are numerically ill-conditioned; compare the others.
    spread = rewards.view(-1, k).std(1)
    well_conditioned = (spread > 1e-2).repeat_interleave(k)
    assert torch.allclose(base[well_conditioned], moved[well_conditioned], atol=1e-2)


@given(grouped_rewards(), st.floats(0.1, 10))
def test_scale_none_is_linear(data, scale_by):
    rewards, k = data
    base = group_advantages(rewards, k, scale="none")
    scaled = group_advantages(rewards * scale_by, k, scale="none")
    assert torch.allclose(scaled, base * scale_by, atol=1e-3 * scale_by)


@given(st.integers(2, 8), st.integers(1, 4), st.sampled_from([0.0, 1.0, 0.1, -2.5]))
def test_degenerate_groups_give_exact_zero(group_size, groups, value):
    rewards = torch.full((group_size * groups,), value)
    for scale in ("group_std", "batch_std", "none"):
        adv = group_advantages(rewards, group_size, scale=scale)
        assert torch.equal(adv, torch.zeros_like(adv))


@given(grouped_rewards())
def test_leave_one_out_is_scaled_group_mean(data):
    rewards, k = data
    loo = group_advantages(rewards, k, baseline="leave_one_out", scale="none")
    plain = group_advantages(rewards, k, baseline="group", scale="none")
    assert torch.allclose(loo, plain * k / (k - 1), atol=1e-4)
    # and literally r_i - mean of the others
    grouped = rewards.view(-1, k)
    others = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    degenerate = (grouped == grouped[:, :1]).all(1, keepdim=True)
    expected = torch.where(degenerate, torch.zeros_like(grouped), grouped - others)
    assert torch.allclose(loo, expected.view(-1), atol=1e-4)


@given(st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=12))
def test_surrogate_at_ratio_one_is_minus_advantage(adv_values):
    adv = torch.tensor(adv_values)[:, None].expand(-1, 3)
    logp = torch.randn(adv.shape)
    loss, stats = clipped_surrogate(logp, logp.clone(), adv)
    assert torch.allclose(loss, -adv)
    assert stats["clip_low"].sum() == 0 and stats["clip_high"].sum() == 0


def test_no_gradient_through_tokens_clipped_on_active_side():
    torch.manual_seed(0)
    old = torch.zeros(64, 5)
    logp = (torch.rand(64, 5) - 0.5).requires_grad_()  # ratios in [0.61, 1.65]
    adv = torch.randn(64, 5)
    loss, stats = clipped_surrogate(logp, old, adv, eps_low=0.2, eps_high=0.28)
    loss.sum().backward()
    clipped = (stats["clip_low"] + stats["clip_high"]).bool()
    assert clipped.any() and (~clipped).any()
    assert torch.all(logp.grad[clipped] == 0)
    assert torch.all(logp.grad[~clipped] != 0)


@settings(deadline=None)
@given(st.lists(st.floats(-50, 50, width=32), min_size=1, max_size=16), st.floats(-5, 5, width=32),
       st.sampled_from([None, 3.0]), st.sampled_from(["k1", "k2", "k3"]), st.sampled_from([None, 10.0]))
def test_policy_loss_stays_finite_for_log_ratios_up_to_50(log_ratios, adv, dual_clip, kl_kind, kl_clamp):
    """Any log ratio in [-50, 50] (trainer vs old policy, and vs reference) and |A| <= 5: the loss
    and its gradient are finite, with and without dual-clip and the KL clamp."""
    from algos import policy_loss, preset

    cfg = preset("grpo", dual_clip=dual_clip, kl_kind=kl_kind, kl_clamp=kl_clamp, tis_cap=2.0)
    old = torch.zeros(1, len(log_ratios))
    logp = torch.tensor([log_ratios], requires_grad=True)
    batch = {"logp": logp, "old_logp": old, "ref_logp": -logp.detach(), "advantages": torch.tensor([adv]),
             "response_mask": torch.ones_like(old), "sampler_logp": logp.detach().flip(1), "max_len": 8}
    loss, metrics = policy_loss(batch, cfg)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert all(v is None or math.isfinite(v) for v in metrics.values())


@given(st.integers(1, 6), st.integers(1, 8))
def test_token_mean_equals_seq_mean_when_lengths_equal(batch, length):
    per_token = torch.randn(batch, length + 2)
    mask = torch.zeros(batch, length + 2)
    mask[:, :length] = 1
    a = aggregate(per_token, mask, "token_mean")
    b = aggregate(per_token, mask, "seq_mean_token_mean")
    assert torch.allclose(a, b, atol=1e-5)


@given(st.lists(st.floats(-8, 0, width=32), min_size=1, max_size=20), st.lists(st.floats(-8, 0, width=32), min_size=1, max_size=20))
def test_k3_nonnegative_zero_iff_equal(logps, refs):
    n = min(len(logps), len(refs))
    logp, ref = torch.tensor(logps[:n]).double(), torch.tensor(refs[:n]).double()
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.all(k3 >= 0)
    apart = (logp - ref).abs() > 1e-6  # below that exp(d) - d - 1 underflows float64
    assert torch.all(k3[apart] > 0)
    assert torch.all(kl_estimate(logp, logp, "k3") == 0)


def test_kl_estimators_match_exact_kl_monte_carlo():
    """k1 and k3 are unbiased for KL(p||q); k2 is close for nearby distributions.

    200k samples from a 5-way categorical: the Monte Carlo standard error of the mean is about
    std/sqrt(n) ~ 1e-3, so a 5e-3 tolerance is ~5 standard errors (k2: 10% relative, its bias).
    """
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    exact = float((p * (p / q).log()).sum())
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    logp, ref = p.log()[samples], q.log()[samples]
    assert abs(kl_estimate(logp, ref, "k1").mean().item() - exact) < 5e-3
    assert abs(kl_estimate(logp, ref, "k3").mean().item() - exact) < 5e-3
    assert abs(kl_estimate(logp, ref, "k2").mean().item() - exact) < 0.1 * exact


def _gae_loop(rewards, values, mask, gamma, lam):
    """The textbook per-row loop, as plain Python floats."""
    out_adv, out_ret = [], []
    for row in range(len(rewards)):
        length = int(sum(mask[row]))
        adv = [0.0] * len(rewards[row])
        last = 0.0
        for t in reversed(range(length)):
            next_value = values[row][t + 1] if t + 1 < length else 0.0
            delta = rewards[row][t] + gamma * next_value - values[row][t]
            last = delta + gamma * lam * last
            adv[t] = last
        out_adv.append(adv)
        out_ret.append([a + v if t < length else 0.0 for t, (a, v) in enumerate(zip(adv, values[row]))])
    return out_adv, out_ret


@given(st.integers(0, 10_000), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_gae_matches_python_loop_on_ragged_masks(seed, gamma, lam):
    gen = torch.Generator().manual_seed(seed)
    batch, length = 4, 7
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length)[None] < lengths[:, None]).double()
    values = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    rewards = torch.randn(batch, length, generator=gen, dtype=torch.float64) * mask
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    loop_adv, loop_ret = _gae_loop(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    assert torch.allclose(adv, torch.tensor(loop_adv, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(ret, torch.tensor(loop_ret, dtype=torch.float64), atol=1e-9)


def test_std_gain_grows_like_inverse_sqrt_p_one_minus_p():
    """For 0/1 rewards with success p in a group of K the gain is 1/sqrt(K/(K-1) p (1-p))."""
    k = 16
    for successes in (1, 4, 8, 12, 15):
        rewards = torch.tensor([1.0] * successes + [0.0] * (k - successes))
        p = successes / k
        std = rewards.std().item()
        assert math.isclose(std, math.sqrt(k / (k - 1) * p * (1 - p)), rel_tol=1e-5)

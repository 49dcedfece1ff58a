"""Hand-computed values for every function of algos.core (each number worked out in the comment)."""
import math

import pytest
import torch

from algos import (
    LOG_RATIO_CLAMP,
    advantage_stats,
    clamp_kl,
    aggregate,
    clipped_surrogate,
    degenerate_groups,
    explained_variance,
    gae,
    group_advantages,
    informative_groups,
    kl_estimate,
    masked_whiten,
    overlong_penalty,
    value_loss,
)


def close(actual, expected, tol=1e-5):
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float32), torch.tensor(expected, dtype=torch.float32), atol=tol)


# ----------------------------------------------------------------- group_advantages
def test_group_std_one_outlier():
    # mean 0.25, unbiased std = sqrt((0.5625 + 3*0.0625)/3) = 0.5 -> (r - 0.25)/0.5
    adv = group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, eps=0.0)
    assert close(adv, [1.5, -0.5, -0.5, -0.5])


def test_group_std_with_eps_and_two_groups():
    # group 2: [1, 1, 0, 0]: mean .5, std = sqrt(4*.25/3) = 0.57735 -> +-0.5/(0.57735+1e-6)
    adv = group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 4)
    half = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    # group 1: [1, 0, 0, 0]: (r - 0.25) / (0.5 + 1e-6)
    assert close(adv[:4], [0.75 / (0.5 + 1e-6)] + [-0.25 / (0.5 + 1e-6)] * 3)
    assert close(adv[4:], [half, half, -half, -half])


def test_scale_none_and_batch_std():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])
    assert close(group_advantages(rewards, 4, scale="none"), [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])
    # batch std of [1,0,0,0,1,1,0,0]: mean 3/8, var = (3*(5/8)^2 + 5*(3/8)^2)/7 = (75/64+45/64)/7 = 120/448
    batch_std = math.sqrt(120 / 448)
    expected = [v / (batch_std + 1e-6) for v in [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]]
    assert close(group_advantages(rewards, 4, scale="batch_std"), expected)


def test_leave_one_out():
    # r_0 - mean(others) = 1 - 0 = 1; r_1 - mean(1, 0, 0) = -1/3
    adv = group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, baseline="leave_one_out", scale="none")
    assert close(adv, [1.0, -1 / 3, -1 / 3, -1 / 3])


def test_degenerate_group_is_exactly_zero():
    # 0.1 * 3 has a rounding error in its mean; the group must still give exact zeros.
    adv = group_advantages(torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 1.0]), 3)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert not torch.isnan(adv).any()


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.tensor([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.tensor([1.0, 0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="valid: group_std, batch_std, none"):
        group_advantages(torch.tensor([1.0, 0.0]), 2, scale="whatever")


def test_informative_groups_judge_accuracy_not_shaped_reward():
    # group 0: 3 wrong answers and one correct but in the overlong zone (shaped reward 0.5 - 0.5 = 0)
    #   -> all shaped rewards equal (0), yet one answer is right: informative on accuracy only
    # group 1: 3 wrong + 1 wrong-and-truncated (shaped -1) -> informative on reward only (DAPO §3.2
    #   and verl keep only the first kind: its wrong answers would get positive advantage)
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    correct = torch.tensor([False, False, False, True, False, False, False, False])
    assert informative_groups(rewards, correct, 4).tolist() == [True, False]
    assert informative_groups(rewards, correct, 4, filter_on="reward").tolist() == [False, True]
    with pytest.raises(ValueError, match="valid: accuracy, reward"):
        informative_groups(rewards, correct, 4, filter_on="score")


def test_success_rate_counts_correct_answers_not_shaped_reward():
    rewards = torch.tensor([0.75, 0.0, 1.0, 0.0])          # a correct answer shaped down to 0.75
    correct = torch.tensor([True, False, True, False])
    stats = advantage_stats(rewards, torch.zeros(4), 2, correct=correct)
    assert stats["group_success_rate"].tolist() == [0.5, 0.5]
    assert advantage_stats(rewards, torch.zeros(4), 2)["group_success_rate"].tolist() == [0.0, 0.5]


def test_degenerate_groups():
    flags = degenerate_groups(torch.tensor([1.0, 1, 0, 1, 0.5, 0.5]), 2)
    assert flags.tolist() == [True, False, True]


# ----------------------------------------------------------------- gae
def test_gae_hand_computed():
    # T=3, gamma=1, lam=0.5, reward 1 at the last token, V = [0.5, 0.25, 0.75]
    # delta_2 = 1 - 0.75 = 0.25; delta_1 = 0 + 0.75 - 0.25 = 0.5; delta_0 = 0 + 0.25 - 0.5 = -0.25
    # A_2 = 0.25; A_1 = 0.5 + 0.5*0.25 = 0.625; A_0 = -0.25 + 0.5*0.625 = 0.0625
    values = torch.tensor([[0.5, 0.25, 0.75, 9.0]])
    token_rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0]])
    adv, ret = gae(token_rewards, values, mask, gamma=1.0, lam=0.5)
    assert close(adv, [[0.0625, 0.625, 0.25, 0.0]])
    assert close(ret, [[0.5625, 0.875, 1.0, 0.0]])


def test_gae_gamma_lambda_one_is_return_minus_value():
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    token_rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.5, 0.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    adv, _ = gae(token_rewards, values, mask, gamma=1.0, lam=1.0)
    # R = sum of rewards from t on: row 0: 1,1,1; row 1: 0.5, 0.5
    assert close(adv, [[0.9, 0.8, 0.7], [0.1, 0.0, 0.0]])


# ----------------------------------------------------------------- KL
def test_kl_estimators_hand_computed():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    # delta = log(0.25/0.5) = -log 2
    d = -math.log(2)
    assert close(kl_estimate(logp, ref, "k1"), [[-d]])
    assert close(kl_estimate(logp, ref, "k2"), [[d * d / 2]])
    assert close(kl_estimate(logp, ref, "k3"), [[0.5 - d - 1]])
    with pytest.raises(ValueError, match="valid: k1, k2, k3"):
        kl_estimate(logp, ref, "k4")


# ----------------------------------------------------------------- surrogate
def test_clipped_surrogate_cases():
    # ratios: 1.5 (A=+1, high side clips at 1.2), 0.5 (A=-1, low side clips at 0.8),
    # 1.5 (A=-1, not clipped: -min(-1.5, -1.2) = 1.5), 1.0 (A=2)
    ratio = torch.tensor([[1.5, 0.5, 1.5, 1.0]])
    old = torch.zeros(1, 4)
    logp = ratio.log()
    adv = torch.tensor([[1.0, -1.0, -1.0, 2.0]])
    loss, stats = clipped_surrogate(logp, old, adv, eps_low=0.2, eps_high=0.2)
    assert close(loss, [[-1.2, 0.8, 1.5, -2.0]])
    assert stats["clip_high"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert stats["clip_low"].tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_clip_higher_widens_high_side_only():
    logp = torch.tensor([[math.log(1.25), math.log(0.75)]])
    adv = torch.tensor([[1.0, -1.0]])
    loss, stats = clipped_surrogate(logp, torch.zeros(1, 2), adv, eps_low=0.2, eps_high=0.28)
    assert close(loss, [[-1.25, 0.8]])  # 1.25 < 1.28 not clipped; 0.75 < 0.8 clipped
    assert stats["clip_high"].sum() == 0 and stats["clip_low"].sum() == 1


def test_dual_clip_caps_negative_advantage_tokens():
    # c = 3. ratio 5, A=-1: clipped surrogate -min(-5, -1.2) = 5, capped at 3|A| = 3 (dual clip);
    # ratio 2, A=-1: 2 < 3, untouched; ratio 5, A=+1: the high side clips at 1.2, no dual clip
    # (positive A); ratio 4, A=-0.5: 2 > 1.5 = 3 * 0.5, capped.
    logp = torch.tensor([[5.0, 2.0, 5.0, 4.0]]).log()
    adv = torch.tensor([[-1.0, -1.0, 1.0, -0.5]])
    loss, stats = clipped_surrogate(logp, torch.zeros(1, 4), adv, dual_clip=3.0)
    assert close(loss, [[3.0, 2.0, -1.2, 1.5]])
    assert stats["clip_dual"].tolist() == [[1.0, 0.0, 0.0, 1.0]]
    # the cap is a constant: no gradient through a dual-clipped token
    logp = logp.clone().requires_grad_(True)
    clipped_surrogate(logp, torch.zeros(1, 4), adv, dual_clip=3.0)[0].sum().backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0 and close(logp.grad[0, 1], 2.0)  # d(-r*A)/dlogp = r
    # off: the same call without dual_clip is the plain surrogate
    plain, stats = clipped_surrogate(logp.detach(), torch.zeros(1, 4), adv)
    assert close(plain, [[5.0, 2.0, -1.2, 2.0]]) and stats["clip_dual"].sum() == 0
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        clipped_surrogate(logp, torch.zeros(1, 4), adv, dual_clip=1.0)


def test_log_ratio_is_clamped_before_exp():
    # log ratio 25 with A=-1: unclamped the loss would be e^25 ~ 7.2e10; clamped at 20 it is e^20
    logp = torch.tensor([[25.0, -30.0]], requires_grad=True)
    loss, stats = clipped_surrogate(logp, torch.zeros(1, 2), torch.tensor([[-1.0, 1.0]]))
    assert LOG_RATIO_CLAMP == 20.0
    assert close(loss[0, 0] / math.exp(20.0), 1.0) and torch.isfinite(loss).all()
    assert close(stats["ratio"][0, 1] / math.exp(-20.0), 1.0)
    loss.sum().backward()
    assert logp.grad.tolist() == [[0.0, 0.0]]  # outside the clamp: no gradient


def test_clamp_kl_hand_computed():
    kl = torch.tensor([[46.0, -12.0, 3.0]])
    clamped, hit = clamp_kl(kl, 10.0)
    assert clamped.tolist() == [[10.0, -10.0, 3.0]] and hit.tolist() == [[1.0, 1.0, 0.0]]
    same, none = clamp_kl(kl, None)
    assert same is kl and none.sum() == 0
    with pytest.raises(ValueError, match="> 0 or None"):
        clamp_kl(kl, 0.0)


def test_gspo_sequence_ratio_hand_computed():
    # rollout 0: token log-ratios [log 2, 0, (masked) 5] -> mean log 2 / 2 -> s = sqrt 2 ~ 1.414;
    #   A = +1 > 0 and s > 1.2: clipped high, loss -1.2 at each token, no gradient
    # rollout 1: log-ratios log 0.5 x 3 -> s = 0.5; A = -1 and s < 0.8: clipped low, loss 0.8
    old = torch.zeros(2, 3)
    logp = torch.tensor([[math.log(2), 0.0, 5.0], [math.log(0.5)] * 3])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, stats = clipped_surrogate(logp, old, torch.tensor([1.0, -1.0]), ratio_level="sequence", response_mask=mask)
    assert close(loss[0, :2], [-1.2, -1.2]) and close(loss[1], [0.8, 0.8, 0.8])
    assert close(stats["ratio"][0, :2], [math.sqrt(2)] * 2) and close(stats["ratio"][1], [0.5] * 3)
    assert stats["clip_high"][0, :2].tolist() == [1.0, 1.0] and stats["clip_low"][1].tolist() == [1.0] * 3
    # unclipped: s = exp((0.1 + 0.05) / 2) = exp(0.075); loss_t = -s*A at every token, and the
    # gradient of the rollout's mean loss reaches each unmasked token as -s * A / |o| (Eq. 10)
    logp = torch.tensor([[0.1, 0.05, 9.0]], requires_grad=True)
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 3), torch.tensor([1.0]), ratio_level="sequence",
                                response_mask=mask[:1])
    s = math.exp(0.075)
    assert close(loss[0, :2], [-s, -s])
    (loss * mask[:1]).sum().div(2).backward()
    assert close(logp.grad, [[-s / 2, -s / 2, 0.0]])
    with pytest.raises(ValueError, match="needs response_mask"):
        clipped_surrogate(logp, torch.zeros(1, 3), torch.tensor([1.0]), ratio_level="sequence")
    with pytest.raises(ValueError, match="valid: token, sequence"):
        clipped_surrogate(logp, torch.zeros(1, 3), torch.tensor([1.0]), ratio_level="seq")


def test_surrogate_broadcasts_sequence_advantages():
    logp = torch.zeros(2, 3)
    loss, _ = clipped_surrogate(logp, logp, torch.tensor([1.0, -2.0]))
    assert close(loss, [[-1.0] * 3, [2.0] * 3])


# ----------------------------------------------------------------- aggregation
def test_aggregation_modes_hand_computed():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    # seq means: 2 and 4 -> 3
    assert aggregate(per_token, mask, "seq_mean_token_mean").item() == pytest.approx(3.0)
    # (1+2+3+4)/4 tokens = 2.5
    assert aggregate(per_token, mask, "token_mean").item() == pytest.approx(2.5)
    # (10)/(2 seqs * L=5) = 1.0
    assert aggregate(per_token, mask, "seq_mean_token_sum_norm", max_len=5).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs max_len"):
        aggregate(per_token, mask, "seq_mean_token_sum_norm")


def test_aggregation_ignores_fully_masked_rows_and_empty_mask():
    per_token = torch.tensor([[1.0, 3.0], [100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert aggregate(per_token, mask, "seq_mean_token_mean").item() == pytest.approx(2.0)
    assert aggregate(per_token, torch.zeros(2, 2), "token_mean").item() == 0.0


# ----------------------------------------------------------------- value loss
def test_value_loss_hand_computed():
    # token 0: V=1.0, V_old=0.5, G=0.0: unclipped (1)^2=1, clipped V=0.7 -> 0.49; max=1 -> 0.5
    # token 1: V=0.0, V_old=0.5, G=1.0: unclipped 1, clipped 0.3 -> 0.49, max=1 -> 0.5
    # token 2: V=0.6, V_old=0.5, G=2.0: unclipped 1.96, clipped (0.6) same 1.96 -> 0.98
    values = torch.tensor([[1.0, 0.0, 0.6, 7.0]])
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0]])
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx((0.5 + 0.5 + 0.98) / 3)
    # clipped branch wins: V=1, V_old=0, G=2: unclipped (1-2)^2 = 1, clipped V=0.2 -> (0.2-2)^2 = 3.24
    assert value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.ones(1, 1)).item() == pytest.approx(0.5 * 3.24)


def test_explained_variance():
    mask = torch.ones(1, 4)
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 4) + 2.5, returns, mask) == pytest.approx(0.0)


def test_masked_whiten():
    values = torch.tensor([[1.0, 3.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # mean 2, unbiased std sqrt(2) -> +-1/sqrt(2)
    assert close(masked_whiten(values, mask, eps=0.0), [[-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0]])


# ----------------------------------------------------------------- overlong
@pytest.mark.parametrize(
    "length,expected",
    [(10, 0.0), (12, 0.0), (13, -0.25), (15, -0.75), (16, -1.0), (17, -1.0), (100, -1.0)],
)
def test_overlong_penalty_boundaries(length, expected):
    # L_max = 16, L_cache = 4: soft zone (12, 16]: (12 - L)/4; beyond 16: -1
    assert overlong_penalty(torch.tensor([length]), max_len=16, cache_len=4).item() == pytest.approx(expected)


def test_overlong_penalty_bad_cache():
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(torch.tensor([3]), max_len=8, cache_len=9)


# ----------------------------------------------------------------- stats
def test_advantage_stats_hand_computed():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1])
    adv = group_advantages(rewards, 4)
    stats = advantage_stats(rewards, adv, 4)
    assert stats["groups_degenerate_frac"] == 0.5
    assert stats["adv_zero_frac"] == 0.5
    # only group 0 is informative: std 0.5 -> gain 1/(0.5+1e-6)
    assert stats["std_gain_mean"] == pytest.approx(1 / (0.5 + 1e-6))
    assert stats["std_gain_max"] == pytest.approx(1 / (0.5 + 1e-6))
    assert stats["group_success_rate"].tolist() == [0.25, 1.0]
    assert math.isnan(stats["group_std_gain"][1].item())
    assert stats["group_adv_abs_mean"][0].item() == pytest.approx((1.5 + 0.5 * 3) / 4 * 0.5 / (0.5 + 1e-6), rel=1e-5)


def test_advantage_stats_all_degenerate():
    stats = advantage_stats(torch.ones(4), torch.zeros(4), 2)
    assert stats["std_gain_mean"] is None and stats["groups_degenerate_frac"] == 1.0

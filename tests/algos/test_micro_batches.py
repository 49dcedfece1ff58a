"""Micro-batches: for every aggregation mode (with a KL term, an entropy bonus and truncated
rollouts masked out) and for PPO's value loss, gradients accumulated over micro-batches of 1, 3
and all rollouts equal the unsplit minibatch's within 1e-5 (fp32), because each micro-batch's
loss is normalised by the whole minibatch's counts."""
import pytest
import torch

from algos import loss_mask_counts, policy_loss, preset, value_loss

B, T, V, H = 7, 5, 11, 6  # rollouts, response tokens, vocabulary, features


def _setup(seed: int):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(B, T, H, generator=gen)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    lengths = torch.tensor([5, 1, 3, 5, 2, 4, 5])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # ragged responses
    truncated = lengths == T  # three rollouts hit the budget
    weight = torch.randn(H, V, generator=gen, requires_grad=True)
    value_head = torch.randn(H, generator=gen, requires_grad=True)
    fixed = {"old_logp": -torch.rand(B, T, generator=gen) * 2, "ref_logp": -torch.rand(B, T, generator=gen) * 2,
             "advantages": torch.randn(B, generator=gen), "returns": torch.randn(B, T, generator=gen),
             "old_values": torch.randn(B, T, generator=gen)}
    return features, tokens, mask, truncated, weight, value_head, fixed


def _loss(rows, features, tokens, mask, truncated, weight, value_head, fixed, cfg, counts, value_tokens):
    logits = features[rows] @ weight  # (b, T, V)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, tokens[rows, :, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    batch = {"logp": logp, "old_logp": fixed["old_logp"][rows], "ref_logp": fixed["ref_logp"][rows],
             "advantages": fixed["advantages"][rows], "response_mask": mask[rows], "truncated": truncated[rows],
             "entropy": entropy, "max_len": T, **(counts or {})}
    loss, _ = policy_loss(batch, cfg)
    values = features[rows] @ value_head
    critic = value_loss(values, fixed["old_values"][rows], fixed["returns"][rows], mask[rows],
                        num_tokens=value_tokens)
    return loss + critic


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("mask_truncated", [False, True])
def test_micro_batched_gradients_equal_the_unsplit_minibatch(aggregation, mask_truncated):
    features, tokens, mask, truncated, weight, value_head, fixed = _setup(0)
    cfg = preset("grpo", aggregation=aggregation, mask_truncated=mask_truncated, entropy_coef=0.01,
                 kl_coef=0.1, group_size=1, baseline="critic", scale="none")
    everything = torch.arange(B)
    full = _loss(everything, features, tokens, mask, truncated, weight, value_head, fixed, cfg, None, None)
    full_grads = torch.autograd.grad(full, [weight, value_head])
    counts = loss_mask_counts(mask, truncated, cfg)
    for size in (1, 3, B):
        weight.grad = value_head.grad = None
        total = 0.0
        for rows in everything.split(size):
            loss = _loss(rows, features, tokens, mask, truncated, weight, value_head, fixed, cfg, counts, mask.sum())
            loss.backward()
            total += loss.item()
        assert total == pytest.approx(full.item(), abs=1e-5), size
        torch.testing.assert_close(weight.grad, full_grads[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(value_head.grad, full_grads[1], atol=1e-5, rtol=1e-5)

"""One step's training batch: which prompts, their rollouts, the verifier's scores, shaped rewards,
and DAPO's dynamic sampling (more rounds of prompts until enough groups are informative).

    BatchCollector(...).collect(step) -> Batch

The order of prompts (`PromptSampler`) and each round's sampling seed are functions of the seed,
the step and the round, so a resumed run draws exactly what an uninterrupted one would. Under
torchrun each rank samples and verifies its share of a round's groups, then the round is
gathered: the rest (dynamic sampling, statistics) sees the whole round on every rank
(`experiments.distributed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from algos import degenerate_groups, informative_groups, shape_rewards
from experiments.distributed import SINGLE, World, gather_rollouts, gather_rows, reduce_sum, shard_range
from experiments.rollout import Rollouts, Sampling


class PromptSampler:
    """Deterministic prompt order over the train split: a fresh permutation per pass over the
    data, seeded by (seed, pass). Its state (pass, cursor) is saved in the checkpoint."""

    def __init__(self, num_examples: int, seed: int):
        self.num_examples, self.seed = num_examples, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return torch.randperm(self.num_examples, generator=gen).tolist()

    def take(self, count: int) -> list[int]:
        picked = []
        while len(picked) < count:
            if self.cursor == self.num_examples:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
            picked.append(self._order[self.cursor])
            self.cursor += 1
        return picked

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation()


def sampling(cfg, step: int, round_: int, greedy: bool = False) -> Sampling:
    """The rollout settings of (step, round): its own seed, so a resumed run samples the same."""
    rollout = cfg.rollout
    return Sampling(
        max_new_tokens=rollout.max_new_tokens,
        temperature=0.0 if greedy else rollout.temperature,
        top_p=1.0 if greedy else rollout.top_p,
        seed=(cfg.seed * 1_000_003 + step * 1009 + round_) % (2**31 - 1),
    )


@dataclass
class Batch:
    """One step's training batch: rollouts of `groups` prompts x group_size, with their scores."""

    rollouts: Rollouts
    examples: list  # (B,) the example of each rollout
    rewards: torch.Tensor  # (B,) shaped rewards
    correct: torch.Tensor  # (B,) bool
    stats: dict  # sampling statistics (dynamic sampling, verifier timeouts, sampled-batch rewards)


@dataclass
class _Round:
    """One round of sampling: every group drawn, and which of them the batch keeps."""

    rollouts: Rollouts
    examples: list  # (B,)
    rewards: torch.Tensor  # (B,)
    correct: torch.Tensor  # (B,)
    degenerate: torch.Tensor  # (groups,) equal shaped rewards
    keep: list[int] = field(default_factory=list)  # kept group indices
    timeouts: int = 0
    uninformative: int = 0  # groups dynamic sampling judged uninformative (dropped)


class BatchCollector:
    """Draws prompts, samples K rollouts each, scores and shapes them (the rollout and verify phases)."""

    def __init__(self, cfg, sampler: PromptSampler, train_examples: list, rollout, verifier, tracker, pad_id: int,
                 world: World = SINGLE):
        self.cfg, self.algo = cfg, cfg.algo
        self.sampler, self.train_examples = sampler, train_examples
        self.rollout, self.verifier, self.tracker, self.pad_id = rollout, verifier, tracker, pad_id
        self.world = world

    def collect(self, step: int) -> Batch:
        """Sample groups and score them; with `filter_groups` (DAPO dynamic sampling) keep drawing
        prompts until the batch has `prompts_per_step` informative groups or the round cap is hit."""
        wanted, k = self.cfg.prompts_per_step, self.algo.group_size
        rounds: list[_Round] = []
        kept_groups = 0
        while True:
            round_ = self._round(step, len(rounds), wanted if not kept_groups else max(wanted - kept_groups, 1),
                                 room=wanted - kept_groups)
            rounds.append(round_)
            kept_groups += len(round_.keep)
            if not self.algo.filter_groups or kept_groups >= wanted or len(rounds) > self.algo.filter_max_rounds:
                break
        kept = [r for r in rounds if r.keep]
        if not kept:  # every group degenerate even after the extra rounds: a zero-advantage step
            last = rounds[-1]
            last.keep = list(range(len(last.examples) // k))
            kept = [last]
        rows = [[g * k + i for g in r.keep for i in range(k)] for r in kept]
        return Batch(
            rollouts=Rollouts.concat([r.rollouts.select(idx) for r, idx in zip(kept, rows)], self.pad_id),
            examples=[r.examples[i] for r, idx in zip(kept, rows) for i in idx],
            rewards=torch.cat([r.rewards[idx] for r, idx in zip(kept, rows)]),
            correct=torch.cat([r.correct[idx] for r, idx in zip(kept, rows)]),
            stats=self._stats(rounds),
        )

    def _round(self, step: int, index: int, prompts: int, *, room: int) -> _Round:
        """Draw `prompts` prompts, sample and score them; keep up to `room` groups (all of them
        without dynamic sampling, the informative ones with it)."""
        k = self.algo.group_size
        examples = [self.train_examples[i] for i in self.sampler.take(prompts)]
        rollouts, per_rollout, raw_rewards, correct, timeouts = self._sample_and_score(examples, step, index)
        rewards = shape_rewards(raw_rewards, rollouts.lengths, self.algo, max_len=self.cfg.rollout.max_new_tokens)
        degenerate = degenerate_groups(rewards, k) if k > 1 else torch.zeros(len(examples), dtype=torch.bool)
        uninformative = 0
        if self.algo.filter_groups:
            informative = informative_groups(rewards, correct, k, filter_on=self.algo.filter_on)
            keep = informative.nonzero().flatten().tolist()[:room]
            uninformative = int((~informative).sum())
        else:
            keep = list(range(len(examples)))
        return _Round(rollouts, per_rollout, rewards, correct, degenerate, keep, timeouts, uninformative)

    def _sample_and_score(self, examples: list, step: int, index: int):
        """Rollouts of the round's `examples` (k each) and the verifier's rewards (B,), verdicts (B,)
        and timeouts. Each rank samples and verifies its share of the groups, with the seeds one
        process would use for them; the shares are then gathered in rank order."""
        k, world = self.algo.group_size, self.world
        lo, hi = shard_range(len(examples), world)
        mine = examples[lo:hi] or examples[:1]  # an empty share samples a placeholder group, dropped below:
        # generate's FSDP all-gathers must run on every rank
        with self.tracker.phase("rollout"):
            rollouts = self.rollout.generate([e.prompt for e in mine], k,
                                             replace(sampling(self.cfg, step, index), first_row=lo * k))
        per_rollout = [e for e in mine for _ in range(k)]
        with self.tracker.phase("verify"):
            scored = self.verifier.score(rollouts.texts, per_rollout)
        rewards = torch.tensor(scored.rewards, dtype=torch.float32)
        correct = torch.tensor(scored.correct, dtype=torch.bool)
        if not world.sharded:
            return rollouts, per_rollout, rewards, correct, scored.timeouts
        rows = list(range(len(per_rollout) if hi > lo else 0))
        per_rollout = [e for e in examples for _ in range(k)]
        return (gather_rollouts(rollouts.select(rows), world, self.pad_id), per_rollout,
                gather_rows(rewards[rows], world), gather_rows(correct[rows], world),
                reduce_sum(scored.timeouts if hi > lo else 0, world))

    def _stats(self, rounds: list[_Round]) -> dict:
        """Statistics of everything sampled this step, dropped groups included."""
        k = self.algo.group_size
        rewards = torch.cat([r.rewards for r in rounds])
        correct = torch.cat([r.correct for r in rounds])
        lengths = torch.cat([r.rollouts.lengths for r in rounds]).float()
        return {
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
            "accuracy": correct.float().mean().item(),
            "resp_len_mean": lengths.mean().item(),
            "resp_len_max": lengths.max().item(),
            "resp_len_correct_mean": lengths[correct].mean().item() if correct.any() else None,
            "resp_len_incorrect_mean": lengths[~correct].mean().item() if (~correct).any() else None,
            "groups_degenerate_frac_sampled": torch.cat([r.degenerate for r in rounds]).float().mean().item()
            if k > 1 else None,
            "verify_timeouts": sum(r.timeouts for r in rounds),
            "filter_rounds": len(rounds),
            "filter_prompts_drawn": sum(len(r.examples) // k for r in rounds),
            "filter_groups_dropped": sum(r.uninformative for r in rounds),
        }

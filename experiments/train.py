"""The one training loop, shared by every algorithm.

    rollout -> verify -> reference logprobs (only when beta > 0) -> critic values (only with a
    critic) -> advantages -> `epochs` x `minibatches` of policy_loss (+ value loss) -> log

Nothing here branches on an algorithm's name: behaviour comes from the knobs of `cfg.algo`
(see `algos/`). The run folder (docs/DESIGN.md) is the contract with sweeps and analysis.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from algos import (
    advantage_stats,
    compute_advantages,
    degenerate_groups,
    explained_variance,
    informative_groups,
    kl_estimate,
    masked_mean,
    policy_loss,
    shape_rewards,
    value_loss,
)
from experiments.config import TrainConfig, help_text, load_config
from experiments.memory import PhaseTracker
from experiments.metrics import METRIC_KEYS
from experiments.runfolder import RunFolder, RunFolderBusy, RunFolderError, numpy_rng_state, set_numpy_rng_state
from experiments.schedule import lr_factor
from experiments.trackers import Trackers


class Preempted(Exception):
    """SIGTERM arrived (SLURM preemption or a user's kill): state is saved, the run resumes later."""


class NonFiniteLoss(RuntimeError):
    pass


class ConfigMismatch(ValueError):
    """The run folder holds a run with another config (a user error: exit 2)."""


# --------------------------------------------------------------------------- data order
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


# --------------------------------------------------------------------------- rollout batches
def select_rollouts(rollouts, index: list[int]):
    """The rollouts at `index` (a list of rows), as a new Rollouts."""
    from experiments.rollout import Rollouts

    rows = torch.tensor(index, dtype=torch.long)
    return Rollouts(
        input_ids=rollouts.input_ids[rows],
        attention_mask=rollouts.attention_mask[rows],
        response_mask=rollouts.response_mask[rows],
        sampler_logp=rollouts.sampler_logp[rows],
        lengths=rollouts.lengths[rows],
        truncated=rollouts.truncated[rows],
        texts=[rollouts.texts[i] for i in index],
        prompt_index=rollouts.prompt_index[rows],
    )


def concat_rollouts(parts: list, pad_id: int):
    """Concatenate Rollouts of different prompt widths P and response widths T: prompts are
    left-padded and responses right-padded to the widest."""
    from experiments.rollout import Rollouts

    if len(parts) == 1:
        return parts[0]
    widths = [(r.input_ids.shape[1] - r.response_mask.shape[1], r.response_mask.shape[1]) for r in parts]
    prompt_width = max(p for p, _ in widths)
    response_width = max(t for _, t in widths)

    def pad(tensor, left: int, right: int, value):
        return torch.nn.functional.pad(tensor, (left, right), value=value)

    ids, attn, resp_mask, sampler_logp = [], [], [], []
    for r, (p, t) in zip(parts, widths):
        left, right = prompt_width - p, response_width - t
        ids.append(torch.cat([pad(r.input_ids[:, :p], left, 0, pad_id), pad(r.input_ids[:, p:], 0, right, pad_id)], 1))
        attn.append(torch.cat([pad(r.attention_mask[:, :p], left, 0, 0), pad(r.attention_mask[:, p:], 0, right, 0)], 1))
        resp_mask.append(pad(r.response_mask, 0, right, 0))
        sampler_logp.append(pad(r.sampler_logp, 0, right, 0.0))
    return Rollouts(
        input_ids=torch.cat(ids),
        attention_mask=torch.cat(attn),
        response_mask=torch.cat(resp_mask),
        sampler_logp=torch.cat(sampler_logp),
        lengths=torch.cat([r.lengths for r in parts]),
        truncated=torch.cat([r.truncated for r in parts]),
        texts=[t for r in parts for t in r.texts],
        prompt_index=torch.cat([r.prompt_index for r in parts]),
    )


@dataclass
class Batch:
    """One step's training batch: rollouts of `groups` prompts x group_size, with their scores."""

    rollouts: object
    examples: list  # (B,) the example of each rollout
    rewards: torch.Tensor  # (B,) shaped rewards
    correct: torch.Tensor  # (B,) bool
    stats: dict  # sampling statistics (dynamic sampling, verifier timeouts, sampled-batch rewards)


# --------------------------------------------------------------------------- model + backend
def resolve_policy_dir(cfg: TrainConfig, task) -> tuple[Path, dict]:
    """The HF directory the policy starts from: a local path as given, or a size preset built
    (and, with model.warmstart, supervised-trained into the accuracy band) in the cache."""
    from experiments.models import SIZES, built_model_dir

    model = cfg.model
    if model.name not in SIZES:
        return Path(model.name), {}
    if not model.warmstart:
        return built_model_dir(model.name, seed=model.init_seed, cache_dir=cfg.cache_dir), {}
    from experiments.warmstart import warmstart

    low, high = (float(v) for v in model.warmstart_band.split(","))
    path = Path(warmstart(
        task, model.name, cache_dir=cfg.cache_dir, steps=model.warmstart_steps,
        lr=model.warmstart_lr, seed=0, init_seed=model.init_seed, target_band=(low, high),
    ))
    info_file = path / "warmstart.json"
    return path, (json.loads(info_file.read_text()) if info_file.exists() else {})


def build_rollout(cfg: TrainConfig, policy, tokenizer, policy_dir: Path):
    """The rollout backend of cfg.rollout.backend (hf shares the trainer's model object)."""
    from experiments.rollout import make_rollout

    rollout = cfg.rollout
    if rollout.backend == "hf":
        return make_rollout("hf", model=policy, tokenizer=tokenizer)
    return make_rollout(
        "vllm", model_dir=policy_dir, gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
        max_model_len=rollout.vllm_max_model_len, seed=cfg.seed, sleep=rollout.vllm_sleep,
        kv_cache_gib=rollout.vllm_kv_cache_gib, dtype=cfg.model.dtype,
    )


# --------------------------------------------------------------------------- the trainer
class Trainer:
    def __init__(self, cfg: TrainConfig, run: RunFolder):
        from experiments.models import ValueModel, load_policy
        from experiments.tasks import make_task
        from experiments.verify import Verifier

        self.cfg, self.run, self.algo = cfg, run, cfg.algo
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        )
        self.tracker = PhaseTracker(self.device)
        self.task = make_task(cfg.task)
        self.train_examples = self.task.examples("train")
        self.eval_examples = self.task.examples("eval")[: cfg.eval_size]
        self.verifier = Verifier(
            self.task, timeout_s=cfg.task.verify_timeout_s, workers=cfg.task.verify_workers,
            format_reward=cfg.task.format_reward,
        )
        self.policy_dir, self.warmstart_info = resolve_policy_dir(cfg, self.task)
        loaded = load_policy(self.policy_dir, dtype=cfg.model.dtype, device=self.device)
        self.policy, self.tokenizer = loaded.model, loaded.tokenizer
        self.policy.eval()  # no dropout anywhere: old_logp must equal logp at ratio 1
        # The reference model exists only when its KL is used (beta > 0).
        self.reference = None
        if self.algo.kl_coef > 0:
            self.reference = load_policy(self.policy_dir, dtype=cfg.model.dtype, device=self.device).model
            self.reference.eval().requires_grad_(False)
        self.critic = None
        if self.algo.uses_critic:
            self.critic = ValueModel.from_policy(self.policy_dir, dtype=cfg.model.dtype, device=self.device)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.critic_optimizer = (
            torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay)
            if self.critic is not None else None
        )
        self.rollout = build_rollout(cfg, self.policy, self.tokenizer, self.policy_dir)
        self.sampler = PromptSampler(len(self.train_examples), cfg.seed)
        self.step = 0
        self.samples = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.trackers = Trackers(run.path)  # TensorBoard / W&B sinks, set by train(); none by default
        self.stop_requested: str | None = None  # set by a preemption signal; honoured at the step's end
        self.last_step_s = 0.0  # wall time of the last step (with its eval), for the preemption grace

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "samples": self.samples,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "critic_optimizer": self.critic_optimizer.state_dict() if self.critic_optimizer else None,
            "sampler": self.sampler.state_dict(),
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_rng_state()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples = state["step"], state["samples"]
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        self.nonfinite_total = state["nonfinite_total"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        set_numpy_rng_state(state["rng"]["numpy"])
        self.rollout.load_weights(self.policy.state_dict())

    # ------------------------------------------------------------------ rollout + verify
    def _sampling(self, step: int, round_: int, greedy: bool = False):
        from experiments.rollout import Sampling

        rollout = self.cfg.rollout
        return Sampling(
            max_new_tokens=rollout.max_new_tokens,
            temperature=0.0 if greedy else rollout.temperature,
            top_p=1.0 if greedy else rollout.top_p,
            # Each (step, round) has its own seed, so a resumed run samples exactly what an
            # uninterrupted one would.
            seed=(self.cfg.seed * 1_000_003 + step * 1009 + round_) % (2**31 - 1),
        )

    def collect(self, step: int) -> Batch:
        """Sample groups and score them; with `filter_groups` (DAPO dynamic sampling) keep drawing
        prompts until the batch has `prompts_per_step` informative groups or the round cap is hit."""
        k, wanted = self.algo.group_size, self.cfg.prompts_per_step
        kept_parts, kept_examples, kept_rewards, kept_correct = [], [], [], []
        all_rewards, all_correct, all_lengths, all_degenerate = [], [], [], []
        timeouts, drawn, dropped, rounds, kept_groups = 0, 0, 0, 0, 0
        last = None
        while True:
            indices = self.sampler.take(wanted if not kept_groups else max(wanted - kept_groups, 1))
            examples = [self.train_examples[i] for i in indices]
            drawn += len(examples)
            with self.tracker.phase("rollout"):
                rollouts = self.rollout.generate([e.prompt for e in examples], k, self._sampling(step, rounds))
            per_rollout = [e for e in examples for _ in range(k)]
            with self.tracker.phase("verify"):
                scored = self.verifier.score(rollouts.texts, per_rollout)
            timeouts += scored.timeouts
            rewards = shape_rewards(
                torch.tensor(scored.rewards, dtype=torch.float32), rollouts.lengths, self.algo,
                max_len=self.cfg.rollout.max_new_tokens,
            )
            correct = torch.tensor(scored.correct, dtype=torch.bool)
            degenerate = degenerate_groups(rewards, k) if k > 1 else torch.zeros(len(examples), dtype=torch.bool)
            all_rewards.append(rewards), all_correct.append(correct)
            all_lengths.append(rollouts.lengths), all_degenerate.append(degenerate)
            last = (rollouts, per_rollout, rewards, correct)
            if self.algo.filter_groups:
                informative = informative_groups(rewards, correct, k, filter_on=self.algo.filter_on)
                keep_groups = informative.nonzero().flatten().tolist()[: wanted - kept_groups]
                dropped += int((~informative).sum())
            else:
                keep_groups = list(range(len(examples)))
            rows = [g * k + i for g in keep_groups for i in range(k)]
            if rows:
                kept_parts.append(select_rollouts(rollouts, rows))
                kept_examples += [per_rollout[r] for r in rows]
                kept_rewards.append(rewards[rows]), kept_correct.append(correct[rows])
                kept_groups += len(keep_groups)
            rounds += 1
            if not self.algo.filter_groups or kept_groups >= wanted or rounds > self.algo.filter_max_rounds:
                break
        if not kept_parts:  # every group degenerate even after the extra rounds: a zero-advantage step
            rollouts, per_rollout, rewards, correct = last
            kept_parts, kept_examples, kept_rewards, kept_correct = [rollouts], per_rollout, [rewards], [correct]
        sampled_rewards = torch.cat(all_rewards)
        sampled_correct = torch.cat(all_correct)
        sampled_lengths = torch.cat(all_lengths).float()
        stats = {
            "reward_mean": sampled_rewards.mean().item(),
            "reward_std": sampled_rewards.std().item() if sampled_rewards.numel() > 1 else 0.0,
            "accuracy": sampled_correct.float().mean().item(),
            "resp_len_mean": sampled_lengths.mean().item(),
            "resp_len_max": sampled_lengths.max().item(),
            "resp_len_correct_mean": sampled_lengths[sampled_correct].mean().item() if sampled_correct.any() else None,
            "resp_len_incorrect_mean": sampled_lengths[~sampled_correct].mean().item() if (~sampled_correct).any() else None,
            "groups_degenerate_frac_sampled": torch.cat(all_degenerate).float().mean().item() if k > 1 else None,
            "verify_timeouts": timeouts,
            "filter_rounds": rounds,
            "filter_prompts_drawn": drawn,
            "filter_groups_dropped": dropped,
        }
        pad_id = self.tokenizer.pad_token_id
        return Batch(
            rollouts=concat_rollouts(kept_parts, pad_id), examples=kept_examples,
            rewards=torch.cat(kept_rewards), correct=torch.cat(kept_correct), stats=stats,
        )

    # ------------------------------------------------------------------ one step
    def _forward_logp(self, model, rollouts, rows=None, **kw):
        from experiments.models import response_logprobs

        ids, attn = rollouts.input_ids, rollouts.attention_mask
        if rows is not None:
            ids, attn = ids[rows], attn[rows]
        return response_logprobs(
            model, ids.to(self.device), attn.to(self.device), rollouts.response_mask.shape[1],
            temperature=self.cfg.rollout.temperature, **kw,
        )

    def train_step(self, step: int) -> tuple[dict, list[dict], list[dict]]:
        from experiments.models import grad_bytes, optimizer_state_bytes, param_bytes

        cfg, algo = self.cfg, self.algo
        self.tracker.start_step()
        step_start = time.perf_counter()
        batch = self.collect(step)
        rollouts = batch.rollouts
        mask = rollouts.response_mask.float().to(self.device)  # (B, T)
        num_rollouts = mask.shape[0]

        # old_logp: the policy that the advantages are for, computed once before the first update
        # (counted in the update phase: same model, same memory).
        with torch.no_grad(), self.tracker.phase("update"):
            old_logp, _ = self._forward_logp(self.policy, rollouts)
        ref_logp = None
        if self.reference is not None:
            with torch.no_grad(), self.tracker.phase("reference"):
                ref_logp = self._forward_logp(self.reference, rollouts)[0]
        values = returns = None
        if self.critic is not None:
            with torch.no_grad(), self.tracker.phase("critic"):
                values = self.critic.values(
                    rollouts.input_ids.to(self.device), rollouts.attention_mask.to(self.device), mask.shape[1]
                ) * mask
        kl_reward = None  # per-token k1 in the reward: only PPO/InstructGPT-style placement
        if ref_logp is not None and algo.kl_placement == "reward":
            kl_reward = kl_estimate(old_logp, ref_logp, "k1")
        rewards = batch.rewards.to(self.device)
        advantages, returns = compute_advantages(rewards, mask, algo, values=values, kl_per_token=kl_reward)
        per_rollout_adv = masked_mean(advantages, mask, dim=1)  # (B,)
        adv_stats = advantage_stats(rewards.cpu(), per_rollout_adv.cpu(), algo.group_size, eps=algo.eps,
                                    correct=batch.correct.cpu())

        # ---- update: epochs x minibatches
        update_metrics: dict[str, list[float]] = {}
        grads_peak = 0
        gen = torch.Generator().manual_seed(cfg.seed * 31 + step)
        with self.tracker.phase("update"):
            for _ in range(algo.epochs):
                order = torch.randperm(num_rollouts, generator=gen)
                for rows in order.chunk(algo.minibatches):
                    metrics = self._minibatch(rollouts, rows, old_logp, ref_logp, advantages, returns, values, mask)
                    grads_peak = max(grads_peak, grad_bytes(self.policy) + (grad_bytes(self.critic) if self.critic else 0))
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.critic_optimizer:
                        self.critic_optimizer.zero_grad(set_to_none=True)
                    for key, value in metrics.items():
                        update_metrics.setdefault(key, []).append(value)
        self.rollout.load_weights(self.policy.state_dict())
        self.samples += num_rollouts

        def mean_of(key):
            values_ = [v for v in update_metrics.get(key, []) if v is not None and math.isfinite(v)]
            return sum(values_) / len(values_) if values_ else None

        sampler_diff = (rollouts.sampler_logp.to(self.device) - old_logp).abs() * mask
        step_time = time.perf_counter() - step_start
        response_tokens = int(rollouts.response_mask.sum())
        models = [self.policy, self.critic, self.reference]
        metrics = {
            "step": step,
            "samples": self.samples,
            **{k: batch.stats[k] for k in ("reward_mean", "reward_std", "accuracy")},
            **{k: adv_stats[k] for k in (
                "adv_mean", "adv_std", "adv_abs_mean", "adv_zero_frac", "groups_degenerate_frac",
                "std_gain_mean", "std_gain_max")},
            "groups_degenerate_frac_sampled": batch.stats["groups_degenerate_frac_sampled"],
            "kl_ref_mean": masked_mean(kl_estimate(old_logp, ref_logp, algo.kl_kind), mask).item()
            if ref_logp is not None else None,
            "clip_frac_low": mean_of("clip_frac_low"),
            "clip_frac_high": mean_of("clip_frac_high"),
            "clip_frac_dual": mean_of("clip_frac_dual"),
            "kl_clamp_frac": mean_of("kl_clamp_frac"),
            "ratio_mean": mean_of("ratio_mean"),
            "entropy_mean": mean_of("entropy_mean"),
            "pg_loss": mean_of("pg_loss"),
            "loss": mean_of("loss"),
            "grad_norm": mean_of("grad_norm"),
            "tis_weight_mean": mean_of("tis_weight_mean"),
            "value_loss": mean_of("value_loss"),
            "value_mean": masked_mean(values, mask).item() if values is not None else None,
            "critic_explained_var": explained_variance(values, returns, mask) if values is not None else None,
            **{k: batch.stats[k] for k in (
                "resp_len_mean", "resp_len_max", "resp_len_correct_mean", "resp_len_incorrect_mean")},
            "truncated_frac": rollouts.truncated.float().mean().item(),
            **{k: batch.stats[k] for k in ("filter_rounds", "filter_prompts_drawn", "filter_groups_dropped", "verify_timeouts")},
            "nonfinite_skipped": self.nonfinite_total,
            "sampler_logp_diff_mean": (sampler_diff.sum() / mask.sum().clamp(min=1)).item(),
            "sampler_logp_diff_max": sampler_diff.max().item(),
            **self.tracker.metrics(),
            "mem_params_bytes": sum(param_bytes(m) for m in models if m is not None),
            "mem_policy_params_bytes": param_bytes(self.policy),
            "mem_critic_params_bytes": param_bytes(self.critic) if self.critic is not None else 0,
            "mem_reference_params_bytes": param_bytes(self.reference) if self.reference is not None else 0,
            "mem_grads_bytes": grads_peak,
            "mem_optimizer_bytes": optimizer_state_bytes(self.optimizer)
            + (optimizer_state_bytes(self.critic_optimizer) if self.critic_optimizer else 0),
            "time_step_s": step_time,
            "tokens_per_s": response_tokens / step_time if step_time > 0 else None,
            "response_tokens": response_tokens,
            "lr": self.optimizer.param_groups[0]["lr"],
            "eval_accuracy": None,
            **{f"eval_pass@{k}": None for k in cfg.pass_ks},
        }
        groups = []
        if algo.group_size > 1:
            for g in range(num_rollouts // algo.group_size):
                groups.append({
                    "step": step,
                    "group": g,
                    "success_rate": adv_stats["group_success_rate"][g].item(),
                    "reward_mean": adv_stats["group_reward_mean"][g].item(),
                    "reward_std": adv_stats["group_reward_std"][g].item(),
                    "std_gain": adv_stats["group_std_gain"][g].item(),
                    "adv_abs_mean": adv_stats["group_adv_abs_mean"][g].item(),
                    "degenerate": bool(adv_stats["group_degenerate"][g]),
                })
        return metrics, groups, self._sample_rows(batch, step)

    def _sample_rows(self, batch: Batch, step: int) -> list[dict]:
        """`log.samples_per_step` rollouts of this step for samples.jsonl, one per group from the
        first groups on (spread over prompts), with their shaped reward and verdict."""
        from experiments.evaluate import sample_row

        keep, rollouts = self.cfg.log.samples_per_step, batch.rollouts
        stride = max(1, min(self.algo.group_size, len(batch.examples) // max(keep, 1)))
        rows = list(range(0, len(batch.examples), stride))[:keep]
        return [{"step": step, "kind": "train", **sample_row(
            batch.examples[i], rollouts.texts[i], batch.rewards[i].item(), bool(batch.correct[i]),
            int(rollouts.lengths[i]), bool(rollouts.truncated[i]))} for i in rows]

    def _minibatch(self, rollouts, rows, old_logp, ref_logp, advantages, returns, old_values, mask) -> dict:
        cfg, algo = self.cfg, self.algo
        logp, entropy = self._forward_logp(self.policy, rollouts, rows, entropy_grad=algo.entropy_coef > 0)
        mb_mask = mask[rows]
        batch = {
            "logp": logp,
            "old_logp": old_logp[rows],
            "ref_logp": ref_logp[rows] if ref_logp is not None else None,
            "advantages": advantages[rows],
            "response_mask": mb_mask,
            "sampler_logp": rollouts.sampler_logp[rows].to(self.device),
            "truncated": rollouts.truncated[rows].to(self.device),
            "entropy": entropy,
            "max_len": cfg.rollout.max_new_tokens,
        }
        loss, metrics = policy_loss(batch, algo)
        has_tokens = metrics["pg_loss"] is not None  # None: no token of this minibatch is in the loss
        metrics["loss"] = loss.item() if has_tokens else None
        metrics["entropy_mean"] = masked_mean(entropy.detach(), mb_mask).item() if has_tokens else None
        value_loss_value = None
        if self.critic is not None:
            new_values = self.critic.values(
                rollouts.input_ids[rows].to(self.device), rollouts.attention_mask[rows].to(self.device), mask.shape[1]
            )
            critic_loss = value_loss(new_values, old_values[rows], returns[rows], mb_mask, clip=algo.value_clip)
            value_loss_value = critic_loss.item()
            loss = loss + critic_loss  # separate parameters and optimizers: the sum backprops each into its own
        metrics["value_loss"] = value_loss_value
        if not math.isfinite(loss.item()):
            return self._skip_nonfinite(metrics, f"loss={loss.item()}")
        loss.backward()
        if has_tokens:  # no token in the loss: no policy step (Adam would still move on momentum)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip).item()
            metrics["grad_norm"] = grad_norm
            if not math.isfinite(grad_norm):
                return self._skip_nonfinite(metrics, f"grad_norm={grad_norm}")
            self.optimizer.step()
        if self.critic is not None:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.grad_clip)
            self.critic_optimizer.step()
        self.nonfinite_in_a_row = 0
        return metrics

    def _skip_nonfinite(self, metrics: dict, what: str) -> dict:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        print(f"[train] step {self.step}: non-finite {what}; update skipped "
              f"({self.nonfinite_in_a_row} in a row)", file=sys.stderr)
        if self.nonfinite_in_a_row >= self.cfg.max_nonfinite:
            raise NonFiniteLoss(
                f"{self.nonfinite_in_a_row} consecutive updates had a non-finite {what.split('=')[0]} "
                f"(last: {what}); stopped. Lower lr (now {self.cfg.lr}) or grad_clip, or check the rewards; "
                "the last good checkpoint is in checkpoint/"
            )
        return {k: v for k, v in metrics.items() if k in ("value_loss",)}

    def _set_lr(self, step: int) -> None:
        """This step's lr for the policy and the critic (`experiments.schedule`)."""
        factor = lr_factor(step, self.cfg.steps, self.cfg.lr_schedule, self.cfg.lr_warmup_steps)
        for optimizer, base in ((self.optimizer, self.cfg.lr), (self.critic_optimizer, self.cfg.critic_lr)):
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = base * factor

    # ------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self):
        """Greedy eval accuracy (and pass@k with eval_samples) on the held-out split: an EvalResult."""
        from experiments.evaluate import evaluate

        cfg = self.cfg
        sampled = dataclasses.replace(self._sampling(0, 0), temperature=cfg.eval_temperature, top_p=1.0)
        return evaluate(self.rollout, self.verifier, self.eval_examples, greedy=self._sampling(0, 0, greedy=True),
                        sampled=sampled, n_samples=cfg.eval_samples, ks=cfg.pass_ks,
                        keep=cfg.log.samples_per_step)

    def _log_eval(self, metrics: dict, samples: list[dict], step: int) -> None:
        result = self.evaluate()
        metrics["eval_accuracy"] = result.accuracy
        for k, value in result.pass_at.items():
            metrics[f"eval_pass@{k}"] = value
        samples += [{"step": step, "kind": "eval", **row} for row in result.samples]

    # ------------------------------------------------------------------ loop
    def fit(self, checkpoint: dict | None) -> None:
        """Train from `checkpoint` (a loaded state, or None: from step 0) to cfg.steps. A SIGTERM or
        SIGUSR2 (preemption) lets the current step finish, saves a checkpoint, then raises Preempted."""
        cfg, run = self.cfg, self.run
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            dropped = run.truncate_after(self.step)
            print(f"[train] resumed {run.path} from step {self.step}{_dropped_text(dropped)}", file=sys.stderr)
        else:
            dropped = run.truncate_after(-1)
            if any(dropped.values()):
                print(f"[train] {run.path} has no checkpoint yet (killed before its first one): restarting "
                      f"from step 0{_dropped_text(dropped)}", file=sys.stderr)
            eval_row = dict.fromkeys([*METRIC_KEYS, *(f"eval_pass@{k}" for k in cfg.pass_ks)])
            eval_row.update(step=0, samples=0)
            eval_samples: list[dict] = []
            self._log_eval(eval_row, eval_samples, 0)
            run.log_step(eval_row, [], eval_samples)
            self.trackers.log(eval_row)
            print(f"[train] step 0: eval_accuracy {eval_row['eval_accuracy']:.3f} (before RL)", file=sys.stderr)
        run.set_status("running", step=self.step, steps=cfg.steps)
        while self.step < cfg.steps:
            step = self.step + 1
            started = time.perf_counter()
            self._set_lr(step)
            metrics, groups, samples = self.train_step(step)
            self.step = step
            if step % cfg.eval_every == 0 or step == cfg.steps:
                self._log_eval(metrics, samples, step)
            run.log_step(metrics, groups, samples)
            self.trackers.log(metrics)
            preempted = self.stop_requested is not None
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or preempted:
                run.save_checkpoint(self.state_dict())
            run.set_status("running", step=step, steps=cfg.steps)
            self.last_step_s = time.perf_counter() - started
            eval_text = f" eval {metrics['eval_accuracy']:.3f}" if metrics["eval_accuracy"] is not None else ""
            print(f"[train] step {step}/{cfg.steps} reward {metrics['reward_mean']:.3f} "
                  f"acc {metrics['accuracy']:.3f}{eval_text} ({metrics['time_step_s']:.2f}s)", file=sys.stderr)
            if preempted and step < cfg.steps:
                raise Preempted(f"{self.stop_requested}: checkpoint saved at step {step}")

    def close(self) -> None:
        self.trackers.close()
        self.verifier.close()
        close = getattr(self.rollout, "close", None)
        if close:
            close()


def config_record(cfg: TrainConfig, warmstart_info: dict | None = None) -> dict:
    """config.yaml: the resolved config plus library versions and the git commit."""
    import platform
    import socket
    import subprocess

    import transformers

    record = cfg.to_dict()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "transformers": str(transformers.__version__)}
    try:
        import vllm  # noqa: F401

        versions["vllm"] = str(vllm.__version__)
    except Exception:
        pass
    record["meta"] = {
        "versions": versions,
        "git_commit": commit,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": socket.gethostname(),
        "warmstart": warmstart_info or {},
    }
    return record


def resume_point(cfg: TrainConfig, run: RunFolder) -> tuple[str, dict | None]:
    """Read the run folder and decide how to start, changing nothing in it.

    Returns ("completed", None) for a completed run of cfg.steps, ("resume", state) with the loaded
    checkpoint, or ("start", None). Raises ConfigMismatch when the folder holds another config,
    and RunFolderError when it cannot be resumed as it is: an unreadable config.yaml, metrics.jsonl
    or checkpoint; metric rows or a checkpoint without config.yaml; metric rows past the first
    checkpoint but no checkpoint (it was deleted: resuming would silently restart the run).
    """
    previous = run.read_config()
    metric_rows = run.read_metrics()
    has_checkpoint = run.checkpoint_path.exists()
    if previous is None:
        if metric_rows or has_checkpoint:
            held = f"{len(metric_rows)} metric rows" + (" and a checkpoint" if has_checkpoint else "")
            raise RunFolderError(f"{run.path} holds {held} but no config.yaml, so its settings cannot be "
                                 "checked; restore config.yaml, or choose another out=")
    else:
        mismatch = _config_mismatch(previous, cfg.to_dict())
        if mismatch:
            raise ConfigMismatch(f"{run.path} holds a run with a different config ({mismatch}); "
                                 "resume it with the same settings or choose another out=")
    status = run.status()
    last_step = max((row["step"] for row in metric_rows), default=0)
    if status.get("state") == "completed" and status.get("step") == cfg.steps == last_step:
        return "completed", None
    if has_checkpoint:
        return "resume", run.load_checkpoint()
    every = (previous or {}).get("checkpoint_every", cfg.checkpoint_every)
    if last_step >= every:
        raise RunFolderError(f"{run.checkpoint_path} is missing, but the run logged steps up to {last_step} "
                             f"and wrote a checkpoint every {every} steps; restore checkpoint/ to resume, "
                             "or choose another out= (nothing was changed)")
    return "start", None


def _dropped_text(dropped: dict[str, list[int]]) -> str:
    """'; dropped 3 metric rows (steps 5-7) and 24 group rows, recomputed from here' or ''."""
    metrics, groups = dropped.get("metrics.jsonl", []), dropped.get("groups.jsonl", [])
    if not metrics and not groups:
        return ""
    steps = f" (steps {min(metrics)}-{max(metrics)})" if metrics else ""
    return f"; dropped {len(metrics)} metric rows{steps} and {len(groups)} group rows, recomputed from here"


PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run into cfg.out; returns the final status dict."""
    run = RunFolder(cfg.out)
    run.acquire()
    try:
        start, checkpoint = resume_point(cfg, run)  # raises before anything is written
        if start == "completed":
            print(f"[train] {run.path} is already completed; nothing to do", file=sys.stderr)
            return run.status()
        step = checkpoint["step"] if checkpoint else 0
        run.set_status("running", step=step, steps=cfg.steps)
        trainer = None
        previous_handlers = {}

        def on_preempt(signum, frame):
            # Finish the step and checkpoint it when the last step fits in the grace time;
            # otherwise stop now and resume from the last periodic checkpoint.
            name = signal.Signals(signum).name
            if trainer is None or trainer.stop_requested or trainer.last_step_s > cfg.preempt_grace_s:
                raise Preempted(name)
            trainer.stop_requested = name
            print(f"[train] {name}: finishing step {trainer.step + 1}, then checkpointing", file=sys.stderr)

        if not os.environ.get("SUBMITIT_EXECUTOR"):  # under submitit, its own USR2 handler requeues
            previous_handlers = {sig: signal.signal(sig, on_preempt) for sig in PREEMPT_SIGNALS}
        try:
            trainer = Trainer(cfg, run)
            record = config_record(cfg, trainer.warmstart_info)
            run.write_config(record)
            trainer.trackers = Trackers(run.path, tensorboard=cfg.log.tensorboard, wandb_project=cfg.log.wandb,
                                        name=cfg.name, config=record)
            trainer.fit(checkpoint)
            run.set_status("completed", step=trainer.step, steps=cfg.steps)
        except (Preempted, SystemExit) as error:
            if isinstance(error, SystemExit) and not os.environ.get("SUBMITIT_EXECUTOR"):
                run.set_status("failed", step=trainer.step if trainer else step, steps=cfg.steps,
                               error=f"SystemExit({error.code})")
                raise
            # SIGTERM/SIGUSR2, or submitit's exit after it requeued the job (SIGUSR2 at the time limit)
            run.set_status("preempted", step=trainer.step if trainer else step, steps=cfg.steps,
                           error=f"{error}: resumes from the last checkpoint when run again")
            raise
        except BaseException as error:
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            run.set_status("failed", step=trainer.step if trainer else step, steps=cfg.steps, error=text)
            raise
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            if trainer is not None:
                trainer.close()
        return run.status()
    finally:
        run.release()


def _config_mismatch(previous: dict, current: dict) -> str:
    """Keys (other than run-length and bookkeeping ones) whose value differs, as 'key: old -> new'."""
    # run length, bookkeeping, and where the folder and the model cache are (a copied or moved
    # run folder resumes; so does one whose cache moved)
    ignore = {"steps", "meta", "eval_every", "checkpoint_every", "threads", "device", "out", "cache_dir",
              "preempt_grace_s", "log"}
    diffs = []

    def walk(a, b, prefix=""):
        for key in sorted(set(a) | set(b)):
            if key in ignore and not prefix:
                continue
            va, vb = a.get(key), b.get(key)
            if isinstance(va, dict) and isinstance(vb, dict):
                walk(va, vb, f"{prefix}{key}.")
            elif va != vb:
                diffs.append(f"{prefix}{key}: {va!r} -> {vb!r}")

    walk(previous, current)
    return "; ".join(diffs[:5])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    try:
        cfg = load_config(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        status = train(cfg)
    except (RunFolderError, ConfigMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunFolderBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except Preempted:
        print(f"[train] preempted; run the same command again to resume {cfg.out}", file=sys.stderr)
        return 143
    except NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"[train] {cfg.out}: {status.get('state')} at step {status.get('step')}", file=sys.stderr)
    return 0


def main_warmstart(argv: list[str]) -> int:
    """`python -m experiments warmstart task.name=... model.name=...`: build and warm-start the
    policy a run with these settings would start from, and print where it is cached."""
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m experiments warmstart [task.* model.* cache_dir=...]  (keys as for train --help)")
        return 0
    try:
        cfg = load_config(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from experiments.tasks import make_task

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path, info = resolve_policy_dir(cfg, make_task(cfg.task))
    print(json.dumps({"path": str(path), **info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

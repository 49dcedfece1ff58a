"""The one training loop, shared by every algorithm.

    rollout -> verify -> reference logprobs (only when beta > 0) -> critic values (only with a
    critic) -> advantages -> `epochs` x `minibatches` of policy_loss (+ value loss) -> log

Nothing here branches on an algorithm's name: behaviour comes from the knobs of `cfg.algo`
(see `algos/`). `Trainer.fit` writes the run folder (docs/DESIGN.md) through `RunFolder`.
Under torchrun the models are FSDP2-sharded and each rank runs the passes of its share of the
batch's rows; everything else sees the whole batch (`experiments.distributed`).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time

import torch

from algos import (
    advantage_stats, compute_advantages, kl_estimate, loss_mask, loss_mask_counts, masked_mean, policy_loss, value_loss,
)
from experiments.batch import Batch, BatchCollector, PromptSampler, sampling
from experiments.checkpoint import restore as restore_checkpoint
from experiments.checkpoint import save as save_checkpoint
from experiments.config import TrainConfig
from experiments.distributed import (
    SINGLE, World, full_norm, gather_objects, gather_passes, gathered, gpu_index, lockstep, main_first, reduce_max,
    shard_range,
)
from experiments.memory import PhaseTracker
from experiments.metrics import METRIC_KEYS
from experiments.models.lora import merged
from experiments.models.training import build_models, train_mode, trainable
from experiments.passes import ModelPasses
from experiments.rollout import build_rollout
from experiments.runfolder import RunFolder, dropped_text
from experiments.schedule import lr_factor
from experiments.step_metrics import (
    ADV_KEYS, BATCH_STAT_KEYS, StepTensors, combine_micro_metrics, group_rows, policy_rows, train_sample_rows,
    update_means,
)
from experiments.trackers import Trackers


class Preempted(Exception):
    """SIGTERM arrived (SLURM preemption or a user's kill): state is saved, the run resumes later."""


class NonFiniteLoss(RuntimeError):
    pass


class Trainer(ModelPasses):
    def __init__(self, cfg: TrainConfig, run: RunFolder, world: World = SINGLE):
        from experiments.tasks import make_task
        from experiments.verify import Verifier
        from experiments.warmstart import resolve_policy_dir

        self.cfg, self.run, self.algo, self.world = cfg, run, cfg.algo, world
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        )
        if self.device.type == "cuda" and world.sharded:
            self.device = torch.device("cuda", gpu_index(world))
        self.tracker = PhaseTracker(self.device)
        self.task = make_task(cfg.task)
        self.train_examples = self.task.examples("train")
        self.eval_examples = self.task.examples("eval")[: cfg.eval_size]
        self.verifier = Verifier(self.task, timeout_s=cfg.task.verify_timeout_s, workers=cfg.task.verify_workers,
                                 format_reward=cfg.task.format_reward)
        # rank 0 builds (and warm-starts) the policy into the cache before the others read it
        self.policy_dir, self.warmstart_info = main_first(world, lambda: resolve_policy_dir(cfg, self.task))
        self.policy, self.tokenizer, self.reference, self.critic = build_models(cfg, self.policy_dir, self.device,
                                                                                world)
        self.optimizer = torch.optim.AdamW(trainable(self.policy), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.critic_optimizer = (
            torch.optim.AdamW(trainable(self.critic), lr=cfg.critic_lr, weight_decay=cfg.weight_decay)
            if self.critic is not None else None
        )
        self.rollout = build_rollout(cfg, self.policy, self.tokenizer, self.policy_dir)
        self.rollout.synced = world.sharded
        self.sampler = PromptSampler(len(self.train_examples), cfg.seed)
        self.collector = BatchCollector(cfg, self.sampler, self.train_examples, self.rollout, self.verifier,
                                        self.tracker, self.tokenizer.pad_token_id, world)
        self.step = 0
        self.samples = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.trackers = Trackers(run.path)  # TensorBoard / W&B sinks, set by train(); none by default
        self.stop_requested: str | None = None  # set by a preemption signal; honoured at the step's end
        self.last_step_s = 0.0  # wall time of the last step (with its eval), for the preemption grace

    # ------------------------------------------------------------------ one step
    def _old_logp_pass_needed(self) -> bool:
        """Whether old_logp needs its own pass. With one epoch of one minibatch the update is exactly
        on-policy (the ratio is identically 1): its own forward pass gives old_logp, detached, and
        none is run before it — unless the KL is in the reward, which needs it before the advantages."""
        algo = self.algo  # (several ranks: each update pass holds only its rank's rows, so the pass runs)
        return (algo.epochs > 1 or algo.minibatches > 1 or (algo.kl_coef > 0 and algo.kl_placement == "reward")
                or self.world.size > 1)

    @torch.no_grad()
    def _no_grad_passes(self, batch: Batch) -> StepTensors:
        """old_logp (the policy the advantages are for, once before the first update; counted in the
        update phase: same model, same memory) unless the update is exactly on-policy, the
        reference's and the critic's passes. Each rank runs its share of the rows (in micro-batches),
        then the rows are gathered: (B, T) each."""
        rollouts = batch.rollouts
        mask = rollouts.response_mask.float().to(self.device)  # (B, T)
        lo, hi = self._my_rows(len(rollouts))
        mine = torch.arange(lo, hi).split(self.cfg.micro_batch_size or hi - lo) if hi > lo else []
        chunks = lockstep(mine, self.world)  # this rank's rows, in micro-batches

        def rows_pass(forward):  # (B, T)
            return gather_passes(forward, chunks, self.world)

        old_logp_pass = self._old_logp_pass_needed()
        if old_logp_pass:
            with self.tracker.phase("update"):
                old_logp = rows_pass(lambda rows: self._forward_logp(self.policy, rollouts, rows)[0])
        else:  # filled by the update's own forward pass (`_micro_step`), before any optimizer step
            old_logp = torch.full(mask.shape, math.nan, device=self.device)
        ref_logp = values = None
        if self.algo.kl_coef > 0:
            with self.tracker.phase("reference"):
                ref_logp = rows_pass(lambda rows: self._reference_logp(rollouts, rows))
        if self.critic is not None:
            with self.tracker.phase("critic"):
                values = rows_pass(lambda rows: self._values(rollouts, rows, mask.shape[1])) * mask
        return StepTensors(mask=mask, old_logp=old_logp, ref_logp=ref_logp, values=values, returns=None,
                           old_logp_from_update=not old_logp_pass)

    def _my_rows(self, size: int) -> tuple[int, int]:
        """[lo, hi): the batch rows whose passes this rank runs (whole groups)."""
        k = self.algo.group_size
        lo, hi = shard_range(size // k, self.world)
        return lo * k, hi * k

    def _advantages(self, batch: Batch, passes: StepTensors):
        """Token advantages (B, T) (and GAE returns into `passes`), with their statistics."""
        algo = self.algo
        kl_reward = None  # per-token k1 in the reward: only PPO/InstructGPT-style placement
        if passes.ref_logp is not None and algo.kl_placement == "reward":
            kl_reward = kl_estimate(passes.old_logp, passes.ref_logp, "k1")
        rewards = batch.rewards.to(self.device)
        advantages, passes.returns = compute_advantages(rewards, passes.mask, algo, values=passes.values,
                                                        kl_per_token=kl_reward)
        per_rollout = masked_mean(advantages, passes.mask, dim=1)  # (B,)
        stats = advantage_stats(rewards.cpu(), per_rollout.cpu(), algo.group_size, eps=algo.eps,
                                correct=batch.correct.cpu())
        return advantages, stats

    def train_step(self, step: int) -> tuple[dict, list[dict], list[dict]]:
        from experiments.models import optimizer_state_bytes, param_bytes

        self.tracker.start_step()
        step_start = time.perf_counter()
        with gathered(self.policy, self.world):  # FSDP: all-gather once for generate's many forwards
            batch = self.collector.collect(step)
        passes = self._no_grad_passes(batch)
        advantages, adv_stats = self._advantages(batch, passes)
        per_minibatch, grads_peak = self._update(step, batch, passes, advantages)
        self.rollout.load_weights(self._sampler_weights())
        self.samples += len(batch.rollouts)
        step_time = time.perf_counter() - step_start
        response_tokens = int(batch.rollouts.response_mask.sum())
        models = [m for m in (self.policy, self.critic, self.reference) if m is not None]
        metrics = {
            "step": step,
            "samples": self.samples,
            **{k: batch.stats[k] for k in BATCH_STAT_KEYS},
            **{k: adv_stats[k] for k in ADV_KEYS},
            **update_means(per_minibatch),
            **policy_rows(passes, batch.rollouts.sampler_logp, self.algo.kl_kind),
            "truncated_frac": batch.rollouts.truncated.float().mean().item(),
            "nonfinite_skipped": self.nonfinite_total,
            **self.tracker.metrics(),
            "mem_params_bytes": sum(param_bytes(m) for m in models),
            "mem_policy_params_bytes": param_bytes(self.policy),
            "mem_critic_params_bytes": param_bytes(self.critic) if self.critic is not None else 0,
            "mem_reference_params_bytes": param_bytes(self.reference) if self.reference is not None else 0,
            "mem_grads_bytes": grads_peak,
            "mem_optimizer_bytes": sum(optimizer_state_bytes(o) for o in (self.optimizer, self.critic_optimizer) if o),
            "time_step_s": step_time,
            "tokens_per_s": response_tokens / step_time if step_time > 0 else None,
            "response_tokens": response_tokens,
            "lr": self.optimizer.param_groups[0]["lr"],
            "eval_accuracy": None,
            **{f"eval_pass@{k}": None for k in self.cfg.pass_ks},
        }
        assert set(METRIC_KEYS) <= set(metrics), set(METRIC_KEYS) - set(metrics)
        samples = train_sample_rows(batch, step, self.cfg.log.samples_per_step, self.algo.group_size)
        return metrics, group_rows(adv_stats, step, self.algo.group_size), samples

    def _update(self, step: int, batch: Batch, passes: StepTensors, advantages) -> tuple[list[dict], int]:
        """epochs x minibatches of updates; returns each minibatch's metrics and the gradient bytes' peak."""
        from experiments.models import grad_bytes

        per_minibatch, grads_peak = [], 0
        gen = torch.Generator().manual_seed(self.cfg.seed * 31 + step)
        checkpointing = self.cfg.model.gradient_checkpointing  # transformers checkpoints only in train mode
        with self.tracker.phase("update"), train_mode(self.policy, self.critic, enabled=checkpointing):
            for _ in range(self.algo.epochs):
                order = torch.randperm(len(batch.rollouts), generator=gen)
                for rows in order.chunk(self.algo.minibatches):
                    per_minibatch.append(self._minibatch(batch.rollouts, rows, passes, advantages))
                    grads_peak = max(grads_peak, sum(grad_bytes(m) for m in (self.policy, self.critic) if m))
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.critic_optimizer:
                        self.critic_optimizer.zero_grad(set_to_none=True)
        return per_minibatch, grads_peak

    def _minibatch(self, rollouts, rows, passes: StepTensors, advantages) -> dict:
        """One optimizer step on the minibatch `rows`, its forward/backward passes in micro-batches
        of `micro_batch_size` rollouts whose losses are normalised by the whole minibatch's counts,
        so the accumulated gradient equals the unsplit minibatch's."""
        cfg, algo = self.cfg, self.algo
        counts = loss_mask_counts(passes.mask[rows], rollouts.truncated[rows].to(self.device), algo)
        value_tokens = passes.mask[rows].sum().clamp(min=1)
        lo, hi = self._my_rows(len(rollouts))
        mine = rows[(rows >= lo) & (rows < hi)]  # this rank's rows of the minibatch
        chunks = lockstep(mine.split(cfg.micro_batch_size or len(mine)) if len(mine) else [], self.world)
        parts = [self._micro_step(rollouts, chunk, passes, advantages, counts, value_tokens) if chunk is not None
                 else self._dummy_step(rollouts) for chunk in chunks]
        parts = gather_objects([p for p in parts if p is not None], self.world)  # the whole minibatch's
        metrics = combine_micro_metrics(parts)
        has_tokens = metrics["pg_loss"] is not None  # None: no token of this minibatch is in the loss
        loss = sum(part["loss_value"] for part in parts)
        if not math.isfinite(loss):
            return self._skip_nonfinite(metrics, f"loss={loss}")
        if has_tokens:  # no token in the loss: no policy step (Adam would still move on momentum)
            grad_norm = full_norm(torch.nn.utils.clip_grad_norm_(trainable(self.policy), cfg.grad_clip))
            metrics["grad_norm"] = grad_norm
            if not math.isfinite(grad_norm):
                return self._skip_nonfinite(metrics, f"grad_norm={grad_norm}")
            self.optimizer.step()
        if self.critic is not None:
            torch.nn.utils.clip_grad_norm_(trainable(self.critic), cfg.grad_clip)
            self.critic_optimizer.step()
        self.nonfinite_in_a_row = 0
        return metrics

    def _micro_step(self, rollouts, rows, passes: StepTensors, advantages, counts: dict, value_tokens) -> dict:
        """Forward and backward of one micro-batch; returns its metrics with their token weights."""
        cfg, algo = self.cfg, self.algo
        logp, entropy = self._forward_logp(self.policy, rollouts, rows, entropy_grad=algo.entropy_coef > 0)
        if passes.old_logp_from_update:  # exactly on-policy: this pass is the policy the advantages are for
            passes.old_logp[rows] = logp.detach()
        mb_mask = passes.mask[rows]
        batch = {
            "logp": logp,
            "old_logp": passes.old_logp[rows],
            "ref_logp": passes.ref_logp[rows] if passes.ref_logp is not None else None,
            "advantages": advantages[rows],
            "response_mask": mb_mask,
            "sampler_logp": rollouts.sampler_logp[rows].to(self.device),
            "truncated": rollouts.truncated[rows].to(self.device),
            "entropy": entropy,
            "max_len": cfg.rollout.max_new_tokens,
            **counts,
        }
        loss, metrics = policy_loss(batch, algo)
        metrics["loss_tokens"] = loss_mask(mb_mask, batch["truncated"], algo).sum().item()
        metrics["response_tokens"] = mb_mask.sum().item()
        metrics["entropy_mean"] = masked_mean(entropy.detach(), mb_mask).item()
        metrics["value_loss"] = None
        if self.critic is not None:
            new_values = self._values(rollouts, rows, mb_mask.shape[1])
            critic_loss = value_loss(new_values, passes.values[rows], passes.returns[rows], mb_mask,
                                     clip=algo.value_clip, num_tokens=value_tokens)
            metrics["value_loss"] = critic_loss.item()
            loss = loss + critic_loss  # separate parameters and optimizers: the sum backprops each into its own
        metrics["loss_value"] = loss.item()
        if math.isfinite(metrics["loss_value"]) or self.world.sharded:  # FSDP: every rank runs every backward
            loss.backward()
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
        sampled = dataclasses.replace(sampling(cfg, 0, 0), temperature=cfg.eval_temperature, top_p=1.0)
        with gathered(self.policy, self.world):  # every rank evaluates every problem (same result)
            return evaluate(self.rollout, self.verifier, self.eval_examples, greedy=sampling(cfg, 0, 0, greedy=True),
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
            restore_checkpoint(self, checkpoint)
            self.rollout.load_weights(self._sampler_weights())
            dropped = run.truncate_after(self.step)
            print(f"[train] resumed {run.path} from step {self.step}{dropped_text(dropped)}", file=sys.stderr)
        else:
            self._start(run)
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
            preempted = reduce_max(int(self.stop_requested is not None), self.world) > 0  # all ranks stop together
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or preempted:
                save_checkpoint(self)
            run.set_status("running", step=step, steps=cfg.steps)
            self.last_step_s = time.perf_counter() - started
            eval_text = f" eval {metrics['eval_accuracy']:.3f}" if metrics["eval_accuracy"] is not None else ""
            print(f"[train] step {step}/{cfg.steps} reward {metrics['reward_mean']:.3f} "
                  f"acc {metrics['accuracy']:.3f}{eval_text} ({metrics['time_step_s']:.2f}s)", file=sys.stderr)
            if preempted and step < cfg.steps:
                raise Preempted(f"{self.stop_requested}: checkpoint saved at step {step}")

    def _start(self, run: RunFolder) -> None:
        """A run from step 0: drop rows of an attempt killed before its first checkpoint (saying
        so), then log the eval of the starting policy as step 0."""
        dropped = run.truncate_after(-1)
        if any(dropped.values()):
            print(f"[train] {run.path} has no checkpoint yet (killed before its first one): restarting "
                  f"from step 0{dropped_text(dropped)}", file=sys.stderr)
        eval_row = dict.fromkeys([*METRIC_KEYS, *(f"eval_pass@{k}" for k in self.cfg.pass_ks)])
        eval_row.update(step=0, samples=0)
        eval_samples: list[dict] = []
        self._log_eval(eval_row, eval_samples, 0)
        run.log_step(eval_row, [], eval_samples)
        self.trackers.log(eval_row)
        print(f"[train] step 0: eval_accuracy {eval_row['eval_accuracy']:.3f} (before RL)", file=sys.stderr)

    def export_final(self) -> None:
        """RUN/final/: the trained policy as an HF directory (see `experiments.export`)."""
        from experiments.export import FINAL_DIR, save_policy, save_sharded_policy

        info = {"run": str(self.run.path), "step": self.step, "policy_dir": str(self.policy_dir)}
        if self.world.sharded:
            save_sharded_policy(self.policy, self.tokenizer, self.run.path / FINAL_DIR, info=info, world=self.world,
                                policy_dir=self.policy_dir, dtype=self.cfg.model.dtype)
        else:
            save_policy(merged(self.policy), self.tokenizer, self.run.path / FINAL_DIR, info=info)

    def close(self) -> None:
        self.trackers.close()
        self.verifier.close()
        close = getattr(self.rollout, "close", None)
        if close:
            close()

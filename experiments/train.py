"""Run (or resume) one training run from the command line: the config checked, the run folder
read and checked before anything is written, preemption signals, exit codes.

    python -m experiments train algo=grpo task.name=arithmetic out=runs/x    # see --help

The loop itself is `experiments.trainer.Trainer`; one step's batch is `experiments.batch`.
Exit codes: 0 done (or already completed), 1 non-finite loss, 2 a user error (bad key or value,
a run folder that cannot be resumed as it is), 3 the folder is being written by another process,
143 preempted (run the same command again to resume).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from experiments.config import TrainConfig, help_text, load_config
from experiments.distributed import close as close_distributed
from experiments.distributed import init as init_distributed
from experiments.distributed import world_from_env
from experiments.metrics import METRIC_KEYS  # noqa: F401 - the row contract, re-exported
from experiments.runfolder import RunFolder, RunFolderBusy, RunFolderError
from experiments.trackers import Trackers
from experiments.trainer import NonFiniteLoss, Preempted, Trainer


class ConfigMismatch(ValueError):
    """The run folder holds a run with another config (a user error: exit 2)."""


def config_record(cfg: TrainConfig, warmstart_info: dict | None = None, policy_dir: Path | None = None) -> dict:
    """config.yaml: the resolved config plus library versions, the git commit and the directory the
    policy started from (what `export` loads the checkpoint into)."""
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
        "policy_dir": str(Path(policy_dir).resolve()) if policy_dir else None,
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


PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run into cfg.out; returns the final status dict. Under torchrun
    every rank runs this; rank 0 alone writes the run folder."""
    world = world_from_env()
    init_distributed(world, cfg.device)
    run = RunFolder(cfg.out, writer=world.is_main)
    run.acquire()
    try:
        start, checkpoint = resume_point(cfg, run)  # raises before anything is written
        if checkpoint is not None and bool(checkpoint.get("sharded")) != world.sharded:
            raise RunFolderError(f"{run.checkpoint_path} was written by a run on "
                                 f"{checkpoint.get('sharded') or 1} process(es); resume it on "
                                 f"{'one process' if not checkpoint.get('sharded') else 'several ranks (torchrun)'}, "
                                 "or choose another out=")
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
            trainer = Trainer(cfg, run, world)
            record = config_record(cfg, trainer.warmstart_info, trainer.policy_dir)
            run.write_config(record)
            if world.is_main:
                trainer.trackers = Trackers(run.path, tensorboard=cfg.log.tensorboard, wandb_project=cfg.log.wandb,
                                            name=cfg.name, config=record)
            trainer.fit(checkpoint)
            trainer.export_final()
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
        close_distributed(world)


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
    world = world_from_env()
    if world.sharded and (cfg.model.lora_rank or cfg.rollout.backend != "hf"):
        print("error: a run on several ranks (torchrun) supports rollout.backend=hf without LoRA "
              "(model.lora_rank=0) for now", file=sys.stderr)
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
    from experiments.warmstart import resolve_policy_dir

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path, info = resolve_policy_dir(cfg, make_task(cfg.task))
    print(json.dumps({"path": str(path), **info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

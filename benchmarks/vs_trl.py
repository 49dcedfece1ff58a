"""Step time and peak memory of one GRPO step: this harness vs TRL's `GRPOTrainer`, same model, same batch.

    python benchmarks/vs_trl.py --quick                                  # smoke check: tiny, 1 round, 4 steps
    python benchmarks/vs_trl.py --sizes tiny,base --rounds 3 --new-tokens 16
    python benchmarks/vs_trl.py --sizes base --new-tokens 16 --checkpointing off,on   # both trainers alike
    python benchmarks/vs_trl.py --trl-path /work/.trl-site               # TRL installed with pip --target
    python benchmarks/vs_trl.py --out r.json ...; python benchmarks/vs_trl.py --from-json r.json  # re-print

TRL is not a dependency of the harness: install it with `pip install '.[bench]'` (trl==1.16.0 and
`datasets`), or into a separate folder (`pip install --target DIR --no-deps trl==1.16.0 datasets
'multiprocess<0.70.20'`) passed as `--trl-path DIR` (default: $RLVR_TRL_PATH). The folder is appended to
`sys.path` of the TRL process only, so torch and transformers still come from the environment.

What is compared. For each size preset, one model directory is built (`built_model_dir(size, seed=0)`,
untrained: `model.warmstart=false`), and both trainers load that same directory. The configuration is the
issue's: 16 prompts x 8 rollouts = 128 rollouts per step, up to `--new-tokens` new tokens (16, and a
longer-response 64), beta = 0.04 (k3 KL to a frozen reference), one optimizer step per batch, lr 1e-4
(constant), grad clip 1.0, no weight decay, sampling at temperature 1 / top_p 1 / no top-k, fp32, CPU,
the same `--threads` (torch threads, OMP_NUM_THREADS, MKL_NUM_THREADS) in both, and gradient checkpointing
set alike (`--checkpointing off,on`; off by default: TRL's GRPOConfig turns it on unless told, the harness's
model.gradient_checkpointing is off unless told). The prompts are the arithmetic task's train split; TRL's
reward function is that task's own `check`. `--micro-batch M` splits the update into forward/backward passes
of M rollouts in both (gradient accumulation; still one generation and one optimizer step per batch).

- harness: `python -m experiments train algo=grpo model.name=<dir> algo.epochs=1 algo.minibatches=1
  algo.kl_coef=0.04 lr=1e-4 rollouts_per_step=128 algo.group_size=8 rollout.max_new_tokens=N ...`;
  step time = `time_step_s` of RUN/metrics.jsonl (rollout + verify + reference + update; no eval).
- TRL: `GRPOTrainer` with `num_generations=8, per_device_train_batch_size=128, max_completion_length=N,
  beta=0.04, loss_type="grpo", scale_rewards="group", num_iterations=1, steps_per_generation=1`; step time =
  wall time from `on_step_begin` to `on_step_end` of a `TrainerCallback` (generation, reward, reference
  pass, loss, backward, optimizer step; logging is after `on_step_end`, so excluded like the harness's).

Each run is a fresh process, interleaved (harness, TRL, harness, TRL, ... for `--rounds` rounds) so that
machine noise hits both alike. Step time: the median over steps 2..steps-1 (step 1 is a warm-up; the last
step is dropped too) pooled over the rounds, with the spread of the per-round medians; on a shared machine
other jobs only ever slow a step down, so the 25th percentile (column "p25") is the steadier comparison. Peak RSS: the
process's `ru_maxrss` from `os.wait4` (what `/usr/bin/time -v` reports: the largest single process of the
run's process tree, not a sum), median over rounds. It includes the Python process with its imports: TRL
imports much more than the harness (datasets, accelerate, ...). vllm is hidden from the TRL process unless
`--trl-allow-vllm` (TRL imports an installed vllm at start-up even with `use_vllm=False`, ~+180 MB RSS and
seconds of start-up; the `bench` extra does not install it).

Known differences that remain (see the report printed under the table):
- neither computes old log-probs in a pass of their own here: with one epoch of one minibatch (harness) or
  num_iterations=1 and steps_per_generation=1 (TRL) the update is exactly on-policy and takes them from
  its own forward, detached (ratio 1, same gradient).
- TRL computes per-token entropies in the loss forward (for logging); the harness's grpo preset does too
  (entropy is logged), so both pay for it.
- the harness verifies rewards in `task.verify_workers` worker processes; TRL calls the reward function
  in-process. On arithmetic, either cost is negligible.
- advantage: (r - mean) / (std + eps) with eps 1e-6 (harness) vs 1e-4 (TRL); both per group.
The machine may be shared and noisy: read the load average printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH_PROMPTS, GROUP_SIZE = 16, 8
BETA, LR = 0.04, 1e-4
INSTALL_HINT = ("TRL not found: pip install '.[bench]'  (or pip install --target DIR --no-deps trl==1.16.0 "
                "datasets 'multiprocess<0.70.20' and pass --trl-path DIR / set RLVR_TRL_PATH=DIR)")


# --------------------------------------------------------------------------- pure helpers
def measured(times_by_step: dict[int, float], steps: int) -> list[float]:
    """Step times of steps 2..steps-1 (1-based): step 1 is a warm-up, the last step is dropped."""
    return [times_by_step[s] for s in range(2, steps) if s in times_by_step]


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_child(command: list[str], env: dict, timeout: float, log_path: Path) -> tuple[int, float, int]:
    """Run `command`; returns (exit code, wall seconds, peak RSS bytes of the process, from wait4)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss * 1024  # Linux: KiB


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


# --------------------------------------------------------------------------- harness side
def harness_command(model_dir: Path, out_dir: Path, cache_dir: Path, *, steps: int, new_tokens: int,
                    threads: int, checkpointing: bool = False, micro_batch: int | None = None) -> list[str]:
    return [sys.executable, "-m", "experiments", "train", "algo=grpo", f"model.name={model_dir}",
            "model.warmstart=false", f"steps={steps}", f"rollouts_per_step={BATCH_PROMPTS * GROUP_SIZE}",
            f"algo.group_size={GROUP_SIZE}", "algo.epochs=1", "algo.minibatches=1", f"algo.kl_coef={BETA}",
            f"lr={LR}", "lr_schedule=constant", "weight_decay=0.0", "grad_clip=1.0", "seed=0",
            f"rollout.max_new_tokens={new_tokens}", "rollout.temperature=1.0", "rollout.top_p=1.0",
            f"model.gradient_checkpointing={str(checkpointing).lower()}",
            *([f"micro_batch_size={micro_batch}"] if micro_batch else []),
            f"threads={threads}", "eval_every=1000", "eval_size=8", "checkpoint_every=1000",
            "log.samples_per_step=0", f"out={out_dir}", f"cache_dir={cache_dir}"]


def run_harness(model_dir: Path, work: Path, cache_dir: Path, tag: str, args, new_tokens: int,
                checkpointing: bool) -> dict:
    out_dir = work / f"harness-{tag}"
    command = harness_command(model_dir, out_dir, cache_dir, steps=args.steps, new_tokens=new_tokens,
                              threads=args.threads, checkpointing=checkpointing, micro_batch=args.micro_batch)
    log = work / f"harness-{tag}.log"
    code, wall, rss = run_child(command, thread_env(args.threads), args.timeout, log)
    if code != 0:
        return {"error": f"harness exit {code}; log tail:\n{tail(log)}"}
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = {r["step"]: r["time_step_s"] for r in rows if r.get("step", 0) >= 1 and r.get("time_step_s") is not None}
    resp = [r["resp_len_mean"] for r in rows if r.get("step", 0) >= 1 and r.get("resp_len_mean") is not None]
    return {"times": measured(times, args.steps), "rss": rss, "wall": wall,
            "resp_len": statistics.mean(resp) if resp else None, "command": " ".join(map(str, command))}


# --------------------------------------------------------------------------- TRL side
def trl_command(model_dir: Path, result: Path, args, new_tokens: int, trl_path: str | None,
                checkpointing: bool) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve().with_name("trl_grpo_run.py")), "--model-dir", str(model_dir),
               "--child-out", str(result), "--steps", str(args.steps), "--threads", str(args.threads),
               "--new-tokens", str(new_tokens)]
    if checkpointing:
        command.append("--gradient-checkpointing")
    if args.micro_batch:
        command += ["--micro-batch", str(args.micro_batch)]
    if trl_path:
        command += ["--trl-path", trl_path]
    if args.trl_allow_vllm:
        command.append("--trl-allow-vllm")
    return command


def run_trl(model_dir: Path, work: Path, tag: str, args, new_tokens: int, trl_path: str | None,
            checkpointing: bool) -> dict:
    result = work / f"trl-{tag}.json"
    command = trl_command(model_dir, result, args, new_tokens, trl_path, checkpointing)
    log = work / f"trl-{tag}.log"
    code, wall, rss = run_child(command, thread_env(args.threads), args.timeout, log)
    if code != 0 or not result.exists():
        return {"error": f"TRL exit {code}; log tail:\n{tail(log)}"}
    out = json.loads(result.read_text())
    times = {int(k): v for k, v in out["step_times"].items()}
    return {"times": measured(times, args.steps), "rss": rss, "wall": wall, "resp_len": out.get("resp_len"),
            "versions": out["versions"], "command": " ".join(map(str, command))}


def trl_available(trl_path: str | None) -> bool:
    """Whether a fresh process finds trl (on its import path or in trl_path)."""
    code = ("import sys; p = sys.argv[1]; p and sys.path.append(p); sys.modules['vllm'] = None; "
            "import importlib.util as u; sys.exit(0 if u.find_spec('trl') and u.find_spec('datasets') else 1)")
    return subprocess.run([sys.executable, "-c", code, trl_path or ""], cwd=REPO).returncode == 0


# --------------------------------------------------------------------------- report
def machine() -> dict:
    import torch
    import transformers

    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def _s(v):
    return "–" if v is None else f"{v:.3f}"


def _mb(v):
    return "–" if v is None else f"{v / 2**20:.0f}"


def _x(v):
    return "–" if v is None else f"{v:.2f}x"


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"] if runs else "no run"}
    pooled = [t for r in ok for t in r["times"]]
    per_round = [statistics.median(r["times"]) for r in ok if r["times"]]
    lens = [r["resp_len"] for r in ok if r.get("resp_len") is not None]
    return {"step": statistics.median(pooled) if pooled else None, "step_p25": float(np.percentile(pooled, 25)) if pooled else None,
            "step_min": min(pooled) if pooled else None,
            "round_min": min(per_round) if per_round else None, "round_max": max(per_round) if per_round else None,
            "rss": statistics.median(r["rss"] for r in ok), "n_runs": len(ok), "n_steps": len(pooled),
            "resp_len": statistics.mean(lens) if lens else None, "errors": len(runs) - len(ok)}


def format_table(cells: list[dict]) -> str:
    lines = ["| size | new tokens | grad. ckpt | harness step (s) | TRL step (s) | harness/TRL time | harness/TRL time, p25 "
             "| harness peak RSS (MB) | TRL peak RSS (MB) | harness/TRL RSS | round medians harness / TRL (s) "
             "| mean resp len h / T |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        h, t = c["harness"], c["trl"]
        if "error" in h or "error" in t:
            lines.append(f"| {c['size']} | {c['new_tokens']} | {c.get('checkpointing', 'off')} | {'error' if 'error' in h else _s(h['step'])} | "
                         f"{'error' if 'error' in t else _s(t['step'])} | – | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {c['size']} | {c['new_tokens']} | {c.get('checkpointing', 'off')} | {_s(h['step'])} | {_s(t['step'])} | {_x(ratio(h['step'], t['step']))} "
            f"| {_s(h['step_p25'])} / {_s(t['step_p25'])} = {_x(ratio(h['step_p25'], t['step_p25']))} "
            f"| {_mb(h['rss'])} | {_mb(t['rss'])} | {_x(ratio(h['rss'], t['rss']))} "
            f"| {_s(h['round_min'])}–{_s(h['round_max'])} / {_s(t['round_min'])}–{_s(t['round_max'])} "
            f"| {h['resp_len'] or 0:.1f} / {t['resp_len'] or 0:.1f} |")
    return "\n".join(lines)


def print_report(result: dict) -> None:
    """The header (configuration, machine, load), the markdown table and the TRL side's provenance."""
    info, versions, args = result["machine"], result["versions"], result["args"]
    lb, la = result["load_before"], result["load_after"]
    total = f", total {result['total_s']:.0f} s" if result.get("total_s") is not None else ""
    print(f"\nGRPO step, harness vs TRL {versions.get('trl', '?')} GRPOTrainer: {BATCH_PROMPTS} prompts x "
          f"{GROUP_SIZE} rollouts, beta {BETA}, lr {LR:g}, 1 optimizer step per batch, "
          f"forward/backward in micro-batches of {args.get('micro_batch') or BATCH_PROMPTS * GROUP_SIZE} rollouts, untrained size presets "
          f"(seed 0), fp32, threads={args['threads']}; step time = median (and 25th percentile) of steps "
          f"2..{args['steps'] - 1} pooled over {args['rounds']} interleaved round(s) of fresh processes; peak RSS "
          f"= median over rounds of the process's ru_maxrss.\n"
          f"Machine: nproc {info['nproc']} ({info['cpu']}), python {info['python']}, torch {info['torch']}, "
          f"transformers {info['transformers']}; started {result['date'][:16].replace('T', ' ')} UTC{total}; "
          f"load average before {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, after {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}.\n")
    print(format_table(result["cells"]))
    if versions:
        print(f"\nTRL side: trl {versions.get('trl')} ({versions.get('trl_file')}), torch from "
              f"{versions.get('torch_file')}, transformers from {versions.get('transformers_file')}, "
              f"vllm imported: {versions.get('vllm_imported')}")


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,base", help="comma-separated size presets")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (harness, TRL) per cell")
    parser.add_argument("--steps", type=int, default=12, help="steps per run; steps 2..steps-1 are measured")
    parser.add_argument("--threads", type=int, default=2, help="torch/OMP/MKL threads of every run")
    parser.add_argument("--new-tokens", default="16,64", help="comma-separated max new tokens per response")
    parser.add_argument("--checkpointing", default="off",
                        help="comma-separated off|on: gradient checkpointing in both trainers (TRL's GRPOConfig "
                             "default is on; the harness's model.gradient_checkpointing default is off)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="rollouts per forward/backward in both (harness micro_batch_size=M; TRL "
                             "per_device_train_batch_size=M with gradient_accumulation_steps = steps_per_generation "
                             "= 128/M: one generation, one optimizer step); default: the whole batch of 128")
    parser.add_argument("--quick", action="store_true", help="smoke check: tiny only, 1 round, 4 steps")
    parser.add_argument("--trl-path", default=os.environ.get("RLVR_TRL_PATH") or None,
                        help="folder holding trl (pip install --target); default $RLVR_TRL_PATH")
    parser.add_argument("--trl-allow-vllm", action="store_true",
                        help="let TRL import an installed vllm (hidden by default: use_vllm=False anyway)")
    parser.add_argument("--cache-dir", default=None, help="model cache (default $RLVR_CACHE or ./.cache/rlvr)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--keep", action="store_true", help="keep the run folders and logs (path printed)")
    parser.add_argument("--out", help="also write all measurements as JSON here")
    parser.add_argument("--from-json", metavar="FILE", help="print the report of a saved --out file and exit")
    args = parser.parse_args(argv)

    if args.from_json:  # re-print the report of a saved --out file (summaries recomputed from its runs)
        result = json.loads(Path(args.from_json).read_text())
        for cell in result["cells"]:
            cell["harness"], cell["trl"] = summarise(cell["runs"]["harness"]), summarise(cell["runs"]["trl"])
        print_report(result)
        return 0
    if args.quick:
        args.sizes, args.rounds, args.steps = "tiny", 1, 4
    if args.steps < 3:
        parser.error("--steps must be >= 3 (step 1 is a warm-up and the last step is dropped)")
    if args.micro_batch is not None and (args.micro_batch < 1 or (BATCH_PROMPTS * GROUP_SIZE) % args.micro_batch):
        parser.error(f"--micro-batch must divide {BATCH_PROMPTS * GROUP_SIZE}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    sizes = [s for s in args.sizes.split(",") if s]
    new_tokens = [int(n) for n in args.new_tokens.split(",") if n]
    checkpointing = [c for c in args.checkpointing.split(",") if c]
    if not checkpointing or set(checkpointing) - {"off", "on"}:
        parser.error(f"--checkpointing takes off, on or off,on; got {args.checkpointing!r}")

    sys.path.insert(0, str(REPO))
    from experiments.models import SIZES, built_model_dir
    from experiments.models.presets import resolve_cache_dir

    bad = [s for s in sizes if s not in SIZES]
    if bad:
        parser.error(f"unknown size(s) {', '.join(bad)}; valid: {', '.join(SIZES)}")
    if not trl_available(args.trl_path):
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    cache_dir = resolve_cache_dir(args.cache_dir)

    load_before = os.getloadavg()
    started_at = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    cells, versions = [], {}
    work = Path(tempfile.mkdtemp(prefix="vs-trl-"))
    try:
        for size in sizes:
            model_dir = built_model_dir(size, seed=0, cache_dir=cache_dir)
            for n, ckpt in [(n, c) for n in new_tokens for c in checkpointing]:
                runs = {"harness": [], "trl": []}
                for r in range(args.rounds):
                    tag = f"{size}-{n}-{ckpt}-r{r}"
                    for side in ("harness", "trl"):
                        res = (run_harness(model_dir, work, cache_dir, tag, args, n, ckpt == "on") if side == "harness"
                               else run_trl(model_dir, work, tag, args, n, args.trl_path, ckpt == "on"))
                        res["load_after"] = os.getloadavg()  # the machine may be shared: keep its load per run
                        runs[side].append(res)
                        versions.update(res.get("versions", {}))
                        if "error" in res:
                            print(f"[vs_trl] {size} {n} round {r + 1} {side}: {res['error']}", file=sys.stderr)
                        else:
                            print(f"[vs_trl] {size} new_tokens={n} ckpt={ckpt} round {r + 1}/{args.rounds} {side:>7}: "
                                  f"median step {statistics.median(res['times']):.3f} s, "
                                  f"peak RSS {res['rss'] / 2**20:.0f} MB, run {res['wall']:.0f} s, "
                                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
                cells.append({"size": size, "new_tokens": n, "checkpointing": ckpt, "model_dir": str(model_dir),
                              "harness": summarise(runs["harness"]), "trl": summarise(runs["trl"]),
                              "runs": runs})
    finally:
        if args.keep:
            print(f"[vs_trl] run folders and logs kept in {work}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    result = {"machine": machine(), "versions": versions, "load_before": load_before,
              "load_after": os.getloadavg(), "date": started_at.isoformat(), "total_s": time.perf_counter() - t_start,
              "args": {k: v for k, v in vars(args).items()}, "cells": cells}
    print_report(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0 if all("error" not in c["harness"] and "error" not in c["trl"] for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())

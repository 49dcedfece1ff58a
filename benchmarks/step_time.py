"""Per-phase time and memory of one training step, per algorithm preset and model size, side by side.

    python benchmarks/step_time.py                                   # ppo, grpo, dr_grpo, dapo at tiny, small
    python benchmarks/step_time.py --sizes tiny,small,base --steps 5 --repeats 2 --out results.json
    python benchmarks/step_time.py --set device=cuda --set rollout.backend=vllm      # on a GPU machine

Every (preset, size) cell is one run of the real CLI in its own subprocess, one after another:

    python -m experiments train algo=<preset> model.name=<size> model.warmstart=false threads=1
        steps=<steps> rollouts_per_step=<n> eval_every=1000 eval_size=8 checkpoint_every=1000 out=<tmp>

then `<tmp>/metrics.jsonl` is read: step 0 (the eval-only row) and step 1 (warm-up) are skipped and
each metric is the median over the remaining steps (pooled over `--repeats` runs of the cell).

What the numbers mean:
- `model.warmstart=false`: the size presets are randomly initialised, so they almost never emit EOS
  and every response runs to `rollout.max_new_tokens` — the worst case for rollout and update time,
  and independent of the (cached) warm-start. Every correctness reward is 0, so nearly every group is
  degenerate: DAPO's dynamic sampling draws its extra rounds (column `filter rounds`, up to
  1 + algo.filter_max_rounds, i.e. several times GRPO's rollouts) and trains on the few groups that
  its soft overlong penalty makes non-degenerate (column `rollouts/step`: rollouts trained on).
- `--rollouts-per-step` is the same for every preset (GRPO: prompts x 8; PPO: that many prompts x 1).
- time_*_s: wall time per phase (`update` includes computing the old log-probs and, for PPO, the
  critic's training; `critic` is the critic's forward pass for the values).
- mem_peak_<phase>_bytes: GPU max_memory_allocated, or on CPU the process's peak RSS within the phase
  (so on CPU it is dominated by the ~0.5 GB of the Python/torch process itself).
- mem_params/grads/optimizer_bytes: exact byte counts (params of policy + critic + reference).
The machine may be shared and noisy: read comparisons as the ratios vs GRPO at the same size.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = ("rollout", "verify", "reference", "critic", "update")
TIME_KEYS = ("time_step_s",) + tuple(f"time_{p}_s" for p in PHASES)
PEAK_KEYS = ("mem_peak_bytes",) + tuple(f"mem_peak_{p}_bytes" for p in PHASES)
STATIC_KEYS = ("mem_params_bytes", "mem_policy_params_bytes", "mem_critic_params_bytes",
               "mem_reference_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes")
OTHER_KEYS = ("tokens_per_s", "response_tokens", "samples_per_step", "filter_rounds", "resp_len_mean")
SUMMARY_KEYS = TIME_KEYS + OTHER_KEYS + PEAK_KEYS + STATIC_KEYS
DEFAULT_PRESETS = "ppo,grpo,dr_grpo,dapo"
WARMUP_STEPS = 1  # training steps skipped at the start of each run (step 0, the eval row, is always skipped)


# --------------------------------------------------------------------------- pure helpers
def measured_rows(rows: list[dict], warmup_steps: int = WARMUP_STEPS) -> list[dict]:
    """The metric rows that count: training rows (step >= 1, not the step-0 eval row) after the
    first `warmup_steps` of them. Adds `samples_per_step` (rollouts trained on in that step)."""
    train = sorted((r for r in rows if r.get("step", 0) >= 1), key=lambda r: r["step"])
    kept, previous_samples = [], 0
    for row in train:
        row = {**row, "samples_per_step": row["samples"] - previous_samples
               if row.get("samples") is not None else None}
        previous_samples = row["samples"] if row.get("samples") is not None else previous_samples
        if row["step"] > warmup_steps:
            kept.append(row)
    return kept


def median_metrics(rows: list[dict], keys=SUMMARY_KEYS) -> dict:
    """Median of each key over `rows`, ignoring nulls; None where a key is null on every row
    (e.g. time_critic_s without a critic)."""
    if not rows:
        raise ValueError("no measured steps: use --steps >= 2 (step 1 is a warm-up and is skipped)")
    out = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["measured_steps"] = len(rows)
    return out


def static_bytes(cell: dict) -> int | None:
    """params + grads + optimizer state bytes of a summarised cell (exact byte counts)."""
    parts = [cell.get(k) for k in ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes")]
    return None if any(p is None for p in parts) else int(sum(parts))


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def ratios_vs(cells: list[dict], reference: str = "grpo") -> dict[tuple[str, str], dict]:
    """{(preset, size): {step_time, static_bytes}} relative to `reference` at the same size
    (missing where the reference cell is absent or failed)."""
    ref = {c["size"]: c for c in cells if c["preset"] == reference and not c.get("error")}
    out = {}
    for c in cells:
        r = ref.get(c["size"])
        if r is None or c.get("error"):
            continue
        out[(c["preset"], c["size"])] = {
            "step_time": ratio(c["time_step_s"], r["time_step_s"]),
            "static_bytes": ratio(static_bytes(c), static_bytes(r)),
        }
    return out


# --------------------------------------------------------------------------- formatting
def _s(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _mb(value) -> str:
    return "–" if value is None else f"{value / 2**20:,.1f}"


def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}x"


def format_tables(cells: list[dict]) -> str:
    """Markdown: a time table, a memory table and the ratios vs GRPO."""
    ok = [c for c in cells if not c.get("error")]
    lines = ["### Time per step (median seconds)", "",
             "| size | preset | step | rollout | verify | reference | critic | update | tokens/s "
             "| rollouts/step | filter rounds | resp len |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in ok:
        lines.append(
            f"| {c['size']} | {c['preset']} | {_s(c['time_step_s'])} | {_s(c['time_rollout_s'])} "
            f"| {_s(c['time_verify_s'])} | {_s(c['time_reference_s'])} | {_s(c['time_critic_s'])} "
            f"| {_s(c['time_update_s'])} | {c['tokens_per_s']:,.0f} | {c['samples_per_step']:.0f} "
            f"| {c['filter_rounds']:.0f} | {c['resp_len_mean']:.1f} |")
    lines += ["", "### Memory (MiB; peaks per phase: GPU allocated or CPU process peak RSS; "
              "params/grads/optimizer: exact bytes)", "",
              "| size | preset | peak rollout | peak reference | peak critic | peak update "
              "| params (policy+critic+ref) | grads | optimizer | params+grads+opt |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in ok:
        params = (f"{_mb(c['mem_params_bytes'])} ({_mb(c['mem_policy_params_bytes'])}"
                  f"+{_mb(c['mem_critic_params_bytes'])}+{_mb(c['mem_reference_params_bytes'])})")
        lines.append(
            f"| {c['size']} | {c['preset']} | {_mb(c['mem_peak_rollout_bytes'])} "
            f"| {_mb(c['mem_peak_reference_bytes'])} | {_mb(c['mem_peak_critic_bytes'])} "
            f"| {_mb(c['mem_peak_update_bytes'])} | {params} | {_mb(c['mem_grads_bytes'])} "
            f"| {_mb(c['mem_optimizer_bytes'])} | {_mb(static_bytes(c))} |")
    rel = ratios_vs(ok)
    lines += ["", "### Ratios vs GRPO at the same size", "",
              "| size | preset | step time | params+grads+optimizer bytes |", "|---|---|---|---|"]
    for c in ok:
        r = rel.get((c["preset"], c["size"]))
        if r is not None:
            lines.append(f"| {c['size']} | {c['preset']} | {_x(r['step_time'])} | {_x(r['static_bytes'])} |")
    failed = [c for c in cells if c.get("error")]
    if failed:
        lines += ["", "### Failed cells", ""]
        lines += [f"- {c['preset']} / {c['size']}: {c['error']}" for c in failed]
    return "\n".join(lines)


# --------------------------------------------------------------------------- running
def cell_command(preset: str, size: str, out_dir: Path, *, steps: int, rollouts_per_step: int,
                 cache_dir: Path, overrides: list[str]) -> list[str]:
    """The CLI line of one cell (the real `python -m experiments train`)."""
    return [sys.executable, "-m", "experiments", "train", f"algo={preset}", f"model.name={size}",
            "model.warmstart=false", "threads=1", f"steps={steps}", f"rollouts_per_step={rollouts_per_step}",
            "eval_every=1000", "eval_size=8", "checkpoint_every=1000", f"cache_dir={cache_dir}",
            f"out={out_dir}", *overrides]


def run_cell(preset: str, size: str, args, workdir: Path) -> dict:
    """Run one (preset, size) cell `args.repeats` times; summarise the pooled measured steps."""
    rows, wall, command = [], [], None
    for repeat in range(args.repeats):
        out_dir = workdir / f"{preset}-{size}-r{repeat}"
        command = cell_command(preset, size, out_dir, steps=args.steps, rollouts_per_step=args.rollouts_per_step,
                               cache_dir=workdir / "cache", overrides=args.set)
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"preset": preset, "size": size, "error": f"timed out after {args.timeout:.0f} s (--timeout)"}
        wall.append(time.perf_counter() - started)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
            print(proc.stderr[-3000:], file=sys.stderr)
            return {"preset": preset, "size": size, "error": f"exit {proc.returncode}: {tail[0]}"}
        with open(out_dir / "metrics.jsonl") as f:
            rows += measured_rows([json.loads(line) for line in f if line.strip()])
    return {"preset": preset, "size": size, **median_metrics(rows), "wall_s": statistics.median(wall),
            "command": " ".join(str(part) for part in command)}


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def check_names(presets: list[str], sizes: list[str]) -> None:
    from algos import PRESETS
    from experiments.models import SIZES

    bad = [p for p in presets if p not in PRESETS]
    if bad:
        raise SystemExit(f"unknown preset(s) {', '.join(bad)} in --presets; valid: {', '.join(PRESETS)}")
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise SystemExit(f"unknown size(s) {', '.join(bad)} in --sizes; valid: {', '.join(SIZES)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small", help="comma-separated size presets (e.g. tiny,small,base)")
    parser.add_argument("--presets", default=DEFAULT_PRESETS, help="comma-separated algorithm presets")
    parser.add_argument("--steps", type=int, default=5,
                        help="training steps per run; step 1 is a warm-up, the rest are measured (>= 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; their measured steps are pooled")
    parser.add_argument("--rollouts-per-step", type=int, default=64,
                        help="rollouts per step, same for every preset (the trainer's default is 256)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra train override for every cell, e.g. --set device=cuda (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--out", help="write the summarised cells and the machine as JSON here")
    args = parser.parse_args(argv)

    presets = [p for p in args.presets.split(",") if p]
    sizes = [s for s in args.sizes.split(",") if s]
    if args.steps < WARMUP_STEPS + 1:
        parser.error(f"--steps {args.steps}: need >= {WARMUP_STEPS + 1} (step 1 is a warm-up and is skipped)")
    if args.repeats < 1 or args.rollouts_per_step < 1:
        parser.error("--repeats and --rollouts-per-step must be >= 1")
    bad = [s for s in args.set if "=" not in s]
    if bad:
        parser.error(f"--set {bad[0]!r}: expected KEY=VALUE, e.g. --set device=cuda")
    check_names(presets, sizes)

    cells, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="step-time-") as tmp:
        for size in sizes:
            for preset in presets:
                cell = run_cell(preset, size, args, Path(tmp))
                cells.append(cell)
                summary = cell.get("error") or f"step {cell['time_step_s']:.3f} s (run {cell['wall_s']:.0f} s)"
                print(f"{size:>6} {preset:>8}: {summary}", file=sys.stderr, flush=True)
    info = machine()
    load = os.getloadavg()
    print(f"\nStep time per phase: {args.rollouts_per_step} rollouts/step, {args.steps} steps per run "
          f"(step 1 warm-up skipped, median of {args.steps - WARMUP_STEPS} x {args.repeats} steps), "
          f"untrained models (model.warmstart=false), threads=1{', ' + ' '.join(args.set) if args.set else ''}; "
          f"{info['cpus']} CPUs ({info['cpu']}), python {info['python']}, torch {info['torch']}"
          f"{', GPU ' + info['cuda'] if info['cuda'] else ''}; load average at the end "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; total {time.perf_counter() - started:.0f} s\n")
    print(format_tables(cells))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": info, "load_average": load, "args": vars(args),
                                              "cells": cells}, indent=2))
    return 1 if any(c.get("error") for c in cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())

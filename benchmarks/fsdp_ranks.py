"""Per-rank memory and step time of one run on 1 vs N ranks (FSDP2 under torchrun, gloo on CPU).

    python benchmarks/fsdp_ranks.py [--ranks 2] [--out /tmp/fsdp_bench] [train key=value ...]

Runs `train` once in one process and once under torchrun, then prints rank 0's bytes of
parameters, gradients (peak) and AdamW state, its peak resident set in the update and the time of
the last step, from each run's metrics.jsonl (a markdown table for BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["algo=grpo", "model.name=medium", "model.warmstart=false", "steps=2", "rollouts_per_step=16",
           "eval_size=4", "threads=1"]
COLUMNS = ("mem_policy_params_bytes", "mem_reference_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes",
           "mem_peak_rollout_bytes", "mem_peak_update_bytes", "time_rollout_s", "time_update_s", "time_step_s")


def run(ranks: int, out: Path, overrides: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    subprocess.run([sys.executable, *launcher, "-m", "experiments", "train", *overrides, f"out={out}"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", default="/tmp/fsdp_bench")
    args, overrides = parser.parse_known_args()
    overrides = DEFAULT + overrides
    results = {n: run(n, Path(args.out) / f"ranks{n}", overrides) for n in (1, args.ranks)}
    print(" ".join(overrides))
    print("| ranks | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for n, row in results.items():
        cells = [f"{row[k] / 2**20:.1f} MiB" if k.startswith("mem_") and row[k] is not None else
                 f"{row[k]:.2f}" if row[k] is not None else "-" for k in COLUMNS]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

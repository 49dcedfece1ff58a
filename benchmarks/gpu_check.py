"""GPU check: PPO and GRPO at the `large` shape (Qwen2.5-0.5B-like), 3 steps each, bf16-mixed,
vLLM rollouts, micro-batched, the output head in chunks of 256 response positions, prompts in the
BPE tokenizer's chat template; prints peak memory per phase and step time per preset.

    python benchmarks/gpu_check.py                 # on a CUDA machine (a cluster node: srun --gres=gpu:1 ...)
    python benchmarks/gpu_check.py --backend hf    # without vLLM
    python benchmarks/gpu_check.py --set model.name=/models/Qwen2.5-0.5B-Instruct --set model.tokenizer=char

Each preset runs in its own process (`python -m experiments train`), so one's memory never
counts toward the other's. On a machine without CUDA it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("rollout", "reference", "critic", "update")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large")
    parser.add_argument("--backend", default="vllm", choices=("vllm", "hf"))
    parser.add_argument("--presets", default="ppo,grpo")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra train setting (repeatable; later ones win)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to measure (run it on a GPU node)")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"| preset | step time (median) | {' | '.join(f'peak {p}' for p in PHASES)} | params | grads | optimizer |")
    print("|---|---|" + "---|" * (len(PHASES) + 3))
    for preset in args.presets.split(","):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "experiments", "train", f"algo={preset}", f"model.name={args.size}",
                   "model.warmstart=false", "model.precision=bf16-mixed", f"rollout.backend={args.backend}",
                   f"micro_batch_size={args.micro_batch_size}", f"steps={args.steps}", "eval_every=1000",
                   "eval_size=32", "device=cuda", "threads=0", "logprob_token_chunk=256", "model.tokenizer=bpe",
                   "task.template=chat", "rollout.vllm_max_model_len=512", *args.set, f"out={out}/run"]
            result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"| {preset} | failed (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]} |")
                continue
            rows = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
            steps = [r for r in rows if r["step"] > 0]
            times = sorted(r["time_step_s"] for r in steps)
            peak = {p: max((r.get(f"mem_peak_{p}_bytes") or 0) for r in steps) for p in PHASES}
            last = steps[-1]
            gib = lambda b: f"{(b or 0) / 2**30:.2f} GiB"  # noqa: E731
            print(f"| {preset} | {times[len(times) // 2]:.2f} s | " + " | ".join(gib(peak[p]) for p in PHASES)
                  + f" | {gib(last['mem_params_bytes'])} | {gib(last['mem_grads_bytes'])} | "
                    f"{gib(last['mem_optimizer_bytes'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

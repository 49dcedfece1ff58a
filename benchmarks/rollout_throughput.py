"""Rollout throughput: HF ``generate`` vs in-process vLLM, side by side, at several model sizes.

    python benchmarks/rollout_throughput.py                          # tiny, small, base
    python benchmarks/rollout_throughput.py --sizes tiny --prompts 8 --repeats 1

Every (size, backend) cell runs in a fresh subprocess (vLLM changes process-wide thread settings
and holds its engine until exit) with OMP_NUM_THREADS = --threads or the CPU count, on the same arithmetic prompts with the same n, max_new_tokens,
temperature and seeds, with randomly initialised size presets in float32 (they almost never emit
EOS, so nearly every response is max_new_tokens long). One untimed warm-up call, then ``--repeats``
timed calls; tokens/s counts generated response tokens (EOS included) and is reported for the best
call (least disturbed by other load on the machine) and the median call. Engine startup is reported
separately and not included. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prompts_for(count: int) -> list[str]:
    from experiments.tasks import TaskConfig, make_task

    examples = make_task(TaskConfig()).examples("train")
    return [examples[i % len(examples)].prompt for i in range(count)]


def run_cell(size: str, backend: str, args) -> dict:
    """Time one backend on one size in this process; returns the measurements."""
    import torch

    from experiments.models import count_params, load_policy
    from experiments.rollout import Sampling, make_rollout

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    policy = load_policy(size, cache_dir=cache, seed=0)
    started = time.perf_counter()
    if backend == "hf":
        rollout = make_rollout("hf", model=policy.model, tokenizer=policy.tokenizer)
    else:
        rollout = make_rollout("vllm", model_dir=policy.path, dtype="float32", gpu_memory_utilization=0.05,
                               kv_cache_gib=args.kv_cache_gib, max_model_len=args.max_new_tokens + 32, seed=0)
    startup = time.perf_counter() - started
    prompts = prompts_for(args.prompts)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    rollout.generate(prompts, args.n, sampling)  # warm-up
    times, tokens = [], []
    for r in range(args.repeats):
        sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=r + 1)
        t = time.perf_counter()
        out = rollout.generate(prompts, args.n, sampling)
        times.append(time.perf_counter() - t)
        tokens.append(int(out.lengths.sum()))
    speeds = [n / t for n, t in zip(tokens, times)]
    return {
        "size": size,
        "backend": backend,
        "params": count_params(policy.model),
        "sequences": len(prompts) * args.n,
        "tokens": statistics.median(tokens),
        "tokens_per_s": max(speeds),
        "tokens_per_s_median": statistics.median(speeds),
        "startup_s": startup,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small,base", help="comma-separated size presets")
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated: hf, vllm")
    parser.add_argument("--prompts", type=int, default=32, help="distinct prompts per call")
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (best and median reported)")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM CPU KV cache")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per cell (0: torch's default)")
    parser.add_argument("--cache-dir", default=None, help="where built models go (default: a temp dir)")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print("RESULT " + json.dumps(run_cell(*args.one, args)), flush=True)
        return 0

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="rollout-bench-")
    # vLLM drops torch to 1 thread "for serving" unless OMP_NUM_THREADS is set: give both backends the same
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(args.threads or os.cpu_count()))}
    rows = []
    for size in args.sizes.split(","):
        for backend in args.backends.split(","):
            cmd = [sys.executable, __file__, "--one", size, backend, "--cache-dir", cache_dir,
                   "--prompts", str(args.prompts), "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens),
                   "--repeats", str(args.repeats), "--kv-cache-gib", str(args.kv_cache_gib),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{size}/{backend} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            row = json.loads(lines[-1][len("RESULT ") :])
            rows.append(row)
            print(f"{size:>6} {backend:>4}: {row['tokens_per_s']:,.0f} tokens/s", file=sys.stderr, flush=True)

    print(f"\nRollout throughput: {args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
          f"temperature 1, float32, {args.repeats} timed calls per cell; {os.cpu_count()} CPUs, "
          f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| size | params | backend | torch threads | sequences | tokens/call | tokens/s best | tokens/s median "
          "| best vs hf | engine startup s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    hf_speed = {r["size"]: r["tokens_per_s"] for r in rows if r["backend"] == "hf"}
    for r in rows:
        ratio = r["tokens_per_s"] / hf_speed[r["size"]] if r["size"] in hf_speed else float("nan")
        print(f"| {r['size']} | {r['params'] / 1e6:.2f}M | {r['backend']} | {r['torch_threads']} | {r['sequences']} "
              f"| {r['tokens']:.0f} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_median']:,.0f} | {ratio:.2f}x "
              f"| {r['startup_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

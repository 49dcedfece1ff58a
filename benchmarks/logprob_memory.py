"""Peak memory and time of the log-prob pass (forward + backward) at a Qwen2.5-like 152K vocabulary:
the whole minibatch at once, micro-batches, and micro-batches with the output head run on a chunk of
response positions at a time (``logprob_token_chunk``), side by side in one invocation.

    python benchmarks/logprob_memory.py                       # 2 rollouts x 2048 response tokens
    python benchmarks/logprob_memory.py --rows 8 --micro 2 --response 256 --token-chunk 128

The model is Qwen2.5-0.5B's shape (hidden 896, 14/2 heads, MLP 4864, vocabulary 151,936, tied
embeddings) with ``--layers`` decoder layers (2 by default: the trunk is not what is measured; the
output head and its logits are), randomly initialised. Each variant runs in a fresh subprocess:
one forward + backward of ``experiments.models.response_logprobs`` (what the trainer's update calls),
with gradients accumulated over the micro-batches. Peak = the process's VmHWM during the pass minus
its resident set just before (Linux /proc; reset with clear_refs), so it counts what the pass
allocates: logits, their fp32 copy, the softmax for the entropy, activations and gradients.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

def variants(micro: int, token_chunk: int) -> dict:
    """name -> (micro-batch rows, token chunk)"""
    return {
        "whole minibatch": (None, None),
        f"micro-batch {micro}": (micro, None),
        f"micro-batch {micro} + token chunk {token_chunk}": (micro, token_chunk),
    }


def _measure(rows: int, prompt: int, response: int, layers: int, micro: int | None, token_chunk: int | None) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from experiments.memory import _read_status_kib, _reset_cpu_peak
    from experiments.models import response_logprobs

    config = Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=layers, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True,
                         max_position_embeddings=prompt + response + 8)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    ids = torch.randint(0, 151936, (rows, prompt + response))
    mask = torch.ones_like(ids)
    for p in model.parameters():  # gradients exist before the pass (as in the trainer's second minibatch)
        p.grad = torch.zeros_like(p)
    before = (_read_status_kib("VmRSS") or 0) * 1024
    _reset_cpu_peak()
    start = time.perf_counter()
    for chunk in torch.arange(rows).split(micro or rows):
        logp, _ = response_logprobs(model, ids[chunk], mask[chunk], response, token_chunk=token_chunk)
        (logp.sum() / rows).backward()
    seconds = time.perf_counter() - start
    peak = (_read_status_kib("VmHWM") or 0) * 1024
    return {"peak_bytes": peak - before, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2, help="rollouts in the minibatch")
    parser.add_argument("--micro", type=int, default=1, help="rollouts per micro-batch")
    parser.add_argument("--token-chunk", type=int, default=256, help="response positions per head chunk")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--response", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        micro, chunk = json.loads(args.child)
        print(json.dumps(_measure(args.rows, args.prompt, args.response, args.layers, micro, chunk)))
        return 0
    load = os.getloadavg()
    results = {}
    for name, (micro, chunk) in variants(args.micro, args.token_chunk).items():
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps([micro, chunk]), "--rows", str(args.rows),
                              "--prompt", str(args.prompt), "--response", str(args.response), "--layers",
                              str(args.layers), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    import torch

    logits = args.rows * args.response * 151936 * 4
    print(f"# log-prob pass, vocabulary 151,936, {args.rows} rollouts x ({args.prompt} prompt + {args.response} "
          f"response) tokens, {args.layers} layers, fp32, {args.threads} threads")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, load average {load[0]:.2f} (before) {os.getloadavg()[0]:.2f} (after)")
    print(f"# fp32 logits of the whole minibatch: {logits / 2**30:.2f} GiB")
    print("| variant | peak during the pass | vs whole | time |")
    print("|---|---|---|---|")
    whole = results["whole minibatch"]["peak_bytes"]
    for name, r in results.items():
        print(f"| {name} | {r['peak_bytes'] / 2**30:.2f} GiB | {r['peak_bytes'] / whole:.2f}x | {r['seconds']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

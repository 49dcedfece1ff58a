"""`python -m experiments samples RUN [--step N] [--incorrect] [--kind train|eval] [--last K]`:
print a run's samples.jsonl readably, to see what the policy writes (format failures, reward
hacking) without opening JSON."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.runfolder import RunFolder, RunFolderError, read_jsonl


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (holds samples.jsonl)")
    parser.add_argument("--step", type=int, help="only this step (default: every step)")
    parser.add_argument("--incorrect", action="store_true", help="only completions the verifier marked wrong")
    parser.add_argument("--kind", choices=("train", "eval"), help="only training rollouts or only eval completions")
    parser.add_argument("--last", type=int, default=0, help="only the last K matching samples")
    return parser


def format_sample(row: dict) -> str:
    mark = "✓" if row["correct"] else "✗"
    flags = " truncated" if row.get("truncated") else ""
    return (f"step {row['step']:>4} {row['kind']:<5} {mark} reward {row['reward']:+.3f} len {row['length']}{flags}\n"
            f"    prompt:   {row['prompt']!r}\n    response: {row['response']!r}\n    answer:   {row['answer']!r}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    path = RunFolder(args.run).samples_path
    if not Path(args.run).is_dir():
        print(f"error: {args.run} is not a folder; give a run folder", file=sys.stderr)
        return 2
    if not path.exists():
        print(f"error: {path} does not exist (runs log samples with log.samples_per_step > 0)", file=sys.stderr)
        return 2
    try:
        rows = read_jsonl(path, require_step=True)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = [r for r in rows if (args.step is None or r["step"] == args.step)
            and (not args.incorrect or not r["correct"]) and (args.kind is None or r["kind"] == args.kind)]
    if args.last:
        rows = rows[-args.last:]
    print("\n".join(format_sample(r) for r in rows) if rows else "(no samples match)")
    return 0

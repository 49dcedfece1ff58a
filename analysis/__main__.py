"""`python -m analysis figures RUNS... --out figures/`: regenerate every figure and summary.md.
`python -m analysis runs RUNS...`: list the runs found (state, step, algorithm label).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from analysis.load import list_runs, load_groups, load_runs


def _parser() -> argparse.ArgumentParser:
    from analysis.figures import FIGURES

    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fig = sub.add_parser("figures", help="draw every figure the runs support into --out, say what was skipped and why")
    fig.add_argument("runs", nargs="+", help="run folders or folders containing them (searched recursively)")
    fig.add_argument("--out", default="figures", help="output folder (default: figures/)")
    fig.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(n for n, _ in FIGURES)}")
    fig.add_argument("--smooth", type=int, default=1, help="trailing mean over N steps of each run's curve (default 1: none)")
    fig.add_argument("--threshold", type=float, default=0.5, help="eval accuracy for 'steps to threshold' (default 0.5)")
    fig.add_argument("--window", type=int, default=1, help="evals averaged for 'steps to threshold' (default 1)")
    fig.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per interval (default 2000)")
    fig.add_argument("--no-cache", action="store_true", help="neither read nor write the per-run parquet cache")
    runs = sub.add_parser("runs", help="list the runs found: name, algorithm label, state, steps logged")
    runs.add_argument("runs", nargs="+", help="run folders or folders containing them")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "runs":
            table = list_runs(args.runs)
            if table.empty:
                print(f"no runs found under {', '.join(args.runs)} (a run folder holds config.yaml and metrics.jsonl)")
                return 0
            with pd.option_context("display.max_rows", None, "display.width", 200):
                print(table[["run_name", "algo", "state", "status.step", "run"]].to_string(index=False))
            return 0
        from analysis.figures import make_all

        out = Path(args.out)
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            print(f"error: --out {args.out}: {blocker} is a file, not a folder; choose another --out", file=sys.stderr)
            return 2
        start = time.perf_counter()
        runs = load_runs(args.runs, cache=not args.no_cache)
        groups = load_groups(args.runs, cache=not args.no_cache,
                             config_columns=None if runs.empty else
                             [c for c in ("algo.group_size", "algo.scale", "algo.baseline", "task.name", "model.name")
                              if c in runs.columns])
        n_runs = runs["run"].nunique() if len(runs) else 0
        print(f"loaded {n_runs} runs ({len(runs)} steps, {len(groups)} group rows) in {time.perf_counter() - start:.1f} s"
              + (f"; algorithms: {', '.join(sorted(runs['algo'].unique()))}" if n_runs else
                 f" — no runs found under {', '.join(args.runs)}"))
        only = [s.strip() for s in args.only.split(",") if s.strip()] or None
        make_all(runs, groups, args.out, only=only, smooth=args.smooth, threshold=args.threshold,
                 window=args.window, n_boot=args.n_boot)
        return 0
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

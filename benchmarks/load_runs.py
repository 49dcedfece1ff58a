"""Time `analysis.load_runs` on a synthetic sweep: cold (no analysis cache) and warm (cached).

    python benchmarks/load_runs.py                      # 1,000 runs x 100 steps in a temp folder
    python benchmarks/load_runs.py --runs 200 --steps 500 --groups --keep /tmp/sweep
    git worktree add --detach /tmp/base HEAD~3          # compare against an older version:
    python benchmarks/load_runs.py --baseline /tmp/base # same folder, timings interleaved

Each timing runs in a fresh Python process, as `python -m analysis figures` would, and measures
the load_runs (or load_groups) call only — not the import of pandas/pyarrow — in wall-clock
seconds and in CPU seconds (user + system) of that process, which a busy machine inflates less. The run folders
follow docs/DESIGN.md: nested config.yaml, every metric key on every row, eval_accuracy every
10th step, status.json; five algorithm labels (ppo, grpo, grpo scale=none, dr_grpo, dapo) so the
labelling path that consults `algos.PRESETS` (and imports torch) is part of the cost.

"Cold" means no analysis caches in the run folders (the OS page cache still holds the files: the jsonl parse,
YAML parse and cache writes are what is timed). With `--baseline`, the two checkouts take turns
on the same folder, so a machine loaded by other work slows both alike: compare the ratios. Every
cold timing starts from a folder with no caches of either version (`clear_cache`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.load import METRIC_KEYS  # noqa: E402

VARIANTS = (("ppo", {}), ("grpo", {}), ("grpo", {"scale": "none"}), ("dr_grpo", {}), ("dapo", {}))


def build(root: Path, n_runs: int, n_steps: int, *, groups: bool, seed: int = 0) -> None:
    from algos import preset  # the builder's own import; not timed

    rng = np.random.default_rng(seed)
    metric_keys = [k for k in METRIC_KEYS if k not in ("step", "eval_accuracy")]
    for i in range(n_runs):
        algo, overrides = VARIANTS[i % len(VARIANTS)]
        name = f"{algo}{'_' + '_'.join(f'{k}-{v}' for k, v in overrides.items()) if overrides else ''}_s{i}"
        run = root / f"sweep{i // 100:02d}" / name
        run.mkdir(parents=True)
        config = {"name": name, "seed": i, "steps": n_steps, "out_dir": str(run),
                  "algo": preset(algo, **overrides).to_dict(),
                  "task": {"name": "arithmetic", "max_operand": 20, "train_size": 2000, "eval_size": 200},
                  "model": {"name": "tiny", "lr": 1e-5, "weight_decay": 0.0, "dtype": "float32"},
                  "rollout": {"backend": "hf", "max_new_tokens": 16, "temperature": 1.0, "top_p": 1.0,
                              "prompts_per_step": 8},
                  "meta": {"versions": {"torch": "2.13.0", "transformers": "4.57"}, "git_commit": "0" * 40,
                           "created": "2025-01-01T00:00:00", "host": "bench"}}
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        values = rng.random((n_steps, len(metric_keys)))
        with open(run / "metrics.jsonl", "w") as f:
            for s in range(n_steps):
                row = {"step": s + 1, **dict(zip(metric_keys, values[s].round(6).tolist()))}
                row["eval_accuracy"] = float(values[s, 0].round(4)) if (s + 1) % 10 == 0 else None
                f.write(json.dumps(row) + "\n")
        if groups:
            with open(run / "groups.jsonl", "w") as f:
                for s in range(n_steps):
                    for g in range(8):
                        p = float(rng.integers(0, 9)) / 8
                        f.write(json.dumps({"step": s + 1, "group": g, "success_rate": p, "reward_mean": p,
                                            "reward_std": 0.5, "std_gain": 2.0, "adv_abs_mean": 0.7,
                                            "degenerate": p in (0.0, 1.0)}) + "\n")
        (run / "status.json").write_text(json.dumps({"state": "completed", "step": n_steps, "steps": n_steps,
                                                     "error": None, "updated": "2025-01-01T00:00:00",
                                                     "job_id": None, "host": "bench", "pid": 1}))


def timed_load(root: Path, function: str, repo: Path = REPO) -> tuple[float, float, float, int]:
    """One `analysis.<function>(root)` call in a fresh process with `repo` first on the path:
    (wall seconds of the call, CPU seconds of it (user + system), seconds of the one-off
    `import algos` (torch) done before it, rows returned). The labels need the presets of
    `algos` whenever a knob varies within a preset; `python -m analysis figures` imports it
    anyway for fig8, so it is reported apart."""
    code = (f"import os, time, analysis; t = time.perf_counter(); import algos; i = time.perf_counter() - t; "
            f"c = os.times(); t = time.perf_counter(); df = analysis.{function}({str(root)!r}); "
            "w = time.perf_counter() - t; d = os.times(); "
            "print(w, d.user - c.user + d.system - c.system, i, len(df))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    if out.returncode != 0:
        raise RuntimeError(f"load in {repo} failed:\n{out.stderr[-3000:]}")
    seconds, cpu_s, import_s, rows = out.stdout.split()[-4:]
    return float(seconds), float(cpu_s), float(import_s), int(rows)


def clear_cache(root: Path) -> None:
    """Delete every analysis cache under `root`: RUN/.*.cache.arrow, and RUN/.cache/ of older versions."""
    for cache in root.rglob(".*.cache.arrow"):
        cache.unlink()
    for cache in root.rglob(".cache"):
        shutil.rmtree(cache)


def measure(root: Path, function: str, repos: dict[str, Path], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of cold and warm loads per checkout, the checkouts taking turns
    `rounds` times."""
    times = {name: {"cold": [], "cold_cpu": [], "warm": [], "warm_cpu": [], "import": []} for name in repos}
    rows: dict[str, int] = {}
    for _ in range(rounds):
        for name, repo in repos.items():
            clear_cache(root)
            seconds, cpu_s, import_s, rows[name] = timed_load(root, function, repo)
            times[name]["cold"].append(seconds)
            times[name]["cold_cpu"].append(cpu_s)
            times[name]["import"].append(import_s)
    for repo in repos.values():
        timed_load(root, function, repo)  # fill every checkout's cache
    for _ in range(rounds):
        for name, repo in repos.items():
            seconds, cpu_s, _, _ = timed_load(root, function, repo)
            times[name]["warm"].append(seconds)
            times[name]["warm_cpu"].append(cpu_s)
    if len(set(rows.values())) > 1:
        raise RuntimeError(f"the checkouts loaded different row counts: {rows}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--groups", action="store_true", help="also write groups.jsonl (8 groups/step), time load_groups")
    parser.add_argument("--rounds", type=int, default=3, help="cold and warm loads to time per checkout (medians reported)")
    parser.add_argument("--keep", type=Path, help="build the sweep here and keep it (default: a temp folder)")
    parser.add_argument("--baseline", type=Path,
                        help="another checkout of this repository (e.g. a git worktree of an older commit) to time "
                             "on the same folder, interleaved with this one")
    args = parser.parse_args()
    repos = {"this": REPO}
    if args.baseline is not None:
        if not (args.baseline / "analysis" / "load.py").exists():
            parser.error(f"--baseline {args.baseline}: no analysis/load.py there; pass a checkout of this repository, "
                         "e.g. made with `git worktree add --detach /tmp/base HEAD~1`")
        repos = {"baseline": args.baseline.resolve(), **repos}

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_load_runs_"))
    try:
        if not root.exists() or not any(root.iterdir()):
            start = time.perf_counter()
            build(root, args.runs, args.steps, groups=args.groups)
            print(f"built {args.runs} runs x {args.steps} steps in {root} ({time.perf_counter() - start:.1f} s)")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        functions = ["load_runs"] + (["load_groups"] if args.groups else [])
        for function in functions:
            times = measure(root, function, repos, args.rounds)
            median = {name: {k: float(np.median(v)) for k, v in t.items()} for name, t in times.items()}
            for name, t in times.items():
                m = median[name]
                print(f"{function} [{name}: {repos[name]}]\n"
                      f"  cold (parse + write cache): {m['cold']:.2f} s wall, {m['cold_cpu']:.2f} s CPU "
                      f"(wall {', '.join(f'{x:.2f}' for x in t['cold'])})\n"
                      f"  warm (cached):              {m['warm']:.2f} s wall, {m['warm_cpu']:.2f} s CPU "
                      f"(wall {', '.join(f'{x:.2f}' for x in t['warm'])})\n"
                      f"  plus a one-off import of algos/torch: {m['import']:.1f} s")
            if "baseline" in median:
                ratio = {k: median["baseline"][k] / median["this"][k] for k in ("cold", "cold_cpu", "warm", "warm_cpu")}
                print(f"{function}: baseline / this (medians): cold {ratio['cold']:.1f}x wall, {ratio['cold_cpu']:.1f}x CPU; "
                      f"warm {ratio['warm']:.1f}x wall, {ratio['warm_cpu']:.1f}x CPU")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

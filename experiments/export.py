"""Export a run's policy as an ordinary Hugging Face directory (`save_pretrained` + tokenizer), which
`AutoModelForCausalLM`, vLLM and any evaluation harness load.

    python -m experiments export RUN [--out DIR]     # default DIR: RUN/final

A completed run writes RUN/final/ itself; this command does it for the last checkpoint of any run
(running, preempted, failed). The directory is written under a temporary name and renamed into
place, so a reader never sees half of it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from experiments.runfolder import RunFolder, RunFolderError

FINAL_DIR = "final"


def save_policy(policy, tokenizer, out: Path, *, info: dict) -> Path:
    """`policy` and `tokenizer` into `out` (replacing it atomically), with export.json (`info`)."""
    from experiments.models import publish_dir_atomically

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    policy.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "export.json").write_text(json.dumps(info, indent=1) + "\n")
    return publish_dir_atomically(tmp, out, replace=True)


def save_sharded_policy(policy, tokenizer, out: Path, *, info: dict, world, policy_dir, dtype: str) -> None:
    """An FSDP-sharded policy as `save_policy` writes it: the full state gathered to rank 0 (every
    rank calls this), loaded there into an unsharded copy of the model from `policy_dir`, saved."""
    from experiments.distributed import barrier, full_state_dict
    from experiments.models import load_policy

    state = full_state_dict(policy)  # {} on the other ranks
    if world.is_main:
        unsharded = load_policy(policy_dir, dtype=dtype).model
        unsharded.load_state_dict(state)
        save_policy(unsharded, tokenizer, out, info=info)
    barrier(world)


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """The run's last checkpoint as an HF directory at `out` (default RUN/final). RunFolderError
    (naming the file and what to do) when the run has no checkpoint or no record of its start."""
    import torch

    from experiments.models import load_policy

    run = RunFolder(run_dir)
    config = run.read_config()
    if config is None:
        raise RunFolderError(f"{run.config_path} does not exist: {run.path} is not a run folder")
    policy_dir = (config.get("meta") or {}).get("policy_dir")
    if not policy_dir or not (Path(policy_dir) / "config.json").is_file():
        raise RunFolderError(f"{run.config_path}: meta.policy_dir {policy_dir!r} (the model the run started from) "
                             "is missing or gone; re-create the warm start (python -m experiments warmstart ...) "
                             "or run from a commit that records it")
    state = run.load_checkpoint()
    if state is None:
        raise RunFolderError(f"{run.checkpoint_path} does not exist: the run has no checkpoint to export yet")
    model_cfg = config.get("model") or {}
    precision = model_cfg.get("precision", "fp32")
    loaded = load_policy(policy_dir, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32))
    policy = loaded.model
    if model_cfg.get("lora_rank"):  # the checkpoint holds the peft model: wrap, load, merge
        from experiments.models.lora import add_lora, merged

        policy = add_lora(policy, rank=model_cfg["lora_rank"], alpha=model_cfg["lora_alpha"],
                          dropout=model_cfg["lora_dropout"], targets=model_cfg["lora_target_modules"],
                          task_type="CAUSAL_LM")
        policy.load_state_dict(state["policy"])
        policy = merged(policy)
    else:
        policy.load_state_dict(state["policy"])
    return save_policy(policy, loaded.tokenizer, Path(out) if out else run.path / FINAL_DIR,
                       info={"run": str(run.path), "step": state["step"], "policy_dir": policy_dir})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder")
    parser.add_argument("--out", default=None, help=f"output directory (default RUN/{FINAL_DIR})")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run, args.out)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0

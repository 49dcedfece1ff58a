"""Tracker sinks beside the run folder: TensorBoard event files (`log.tensorboard=true`, in
RUN/tb/) and Weights & Biases (`log.wandb=PROJECT`, its files in RUN/wandb/; `WANDB_MODE=offline`
needs no network). The run folder stays the source of truth: a sink receives each metrics.jsonl
row as it is written, under the same names, and nothing is read back from it. With neither set,
`Trackers` is a do-nothing logger.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

REQUIREMENTS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_installed(tensorboard: bool, wandb: str) -> None:
    """ValueError naming the key and the install command when a requested sink is missing."""
    for key, wanted in (("tensorboard", tensorboard), ("wandb", wandb)):
        if wanted and importlib.util.find_spec(REQUIREMENTS[key]) is None:
            raise ValueError(f"log.{key}={wanted} needs the {REQUIREMENTS[key]} package: "
                             f"pip install '.[{key}]' (or turn log.{key} off)")


class Trackers:
    def __init__(self, run_path: Path, *, tensorboard: bool = False, wandb_project: str = "", name: str = "",
                 config: dict | None = None):
        self.tb = self.wandb_run = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_path / "tb"))
        if wandb_project:
            import wandb

            # One W&B run per run folder: a resumed run continues it (the id comes from the folder).
            run_id = hashlib.sha1(str(Path(run_path).resolve()).encode()).hexdigest()[:16]
            self.wandb_run = wandb.init(project=wandb_project, name=name or None, id=run_id, resume="allow",
                                        dir=str(run_path), config=config or {})

    def log(self, row: dict) -> None:
        """One metrics row: every finite number under its metrics.jsonl name, at the row's step."""
        if self.tb is None and self.wandb_run is None:
            return
        step = row["step"]
        values = {k: float(v) for k, v in row.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()

"""Per-phase peak memory and wall time of a training step, and the exact bytes of parameters,
gradients and optimizer state.

GPU: `torch.cuda.max_memory_allocated`, with the peak reset at the start of each phase.
CPU: the process's peak resident set (VmHWM in /proc/self/status), reset at the start of each
phase by writing 5 to /proc/self/clear_refs (Linux); where that reset is not allowed the value
is the peak since the process started (and `resettable` is False).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from torch import Tensor, nn

PHASES = ("rollout", "verify", "reference", "critic", "update")


def _read_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PhaseTracker:
    """Use `with tracker.phase("rollout"): ...`; then `tracker.metrics()` gives
    mem_peak_<phase>_bytes and time_<phase>_s for the phases that ran this step."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peaks: dict[str, int] = {}
        self.times: dict[str, float] = {}
        self.resettable = True

    def start_step(self) -> None:
        self.peaks.clear()
        self.times.clear()

    @contextlib.contextmanager
    def phase(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.resettable = _reset_cpu_peak() and self.resettable
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
            else:
                peak = (_read_status_kib("VmHWM") or 0) * 1024
            self.peaks[name] = max(self.peaks.get(name, 0), peak)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        for name in PHASES:
            out[f"mem_peak_{name}_bytes"] = self.peaks.get(name)
            out[f"time_{name}_s"] = self.times.get(name)
        out["mem_peak_bytes"] = max(self.peaks.values()) if self.peaks else None
        return out


# Exact bytes held by a model's parameters, gradients and optimizer state.

def local_bytes(tensor: Tensor) -> int:
    """Bytes this process holds of a tensor: its own shard of a sharded (FSDP2 DTensor) one."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def param_bytes(module: nn.Module) -> int:
    """Bytes held by the module's parameters (this rank's shards under FSDP; tied weights once)."""
    return sum(local_bytes(p) for p in module.parameters())  # parameters() skips tied repeats


def grad_bytes(module: nn.Module) -> int:
    """Bytes held by the ``.grad`` tensors of the module's parameters (0 before any backward)."""
    return sum(local_bytes(p.grad) for p in module.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the tensors in the optimizer's state (Adam: exp_avg, exp_avg_sq, step)."""
    tensors = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, Tensor)]
    return sum(local_bytes(t) for t in tensors)


def count_params(module: nn.Module) -> int:
    """Number of parameters, tied weights counted once."""
    return sum(p.numel() for p in module.parameters())

"""One run on many processes (ranks): torch.distributed set up from torchrun's environment (or
submitit's under SLURM, which sets the same variables), FSDP2 sharding of the models, and the few
collectives the loop needs. At world size 1 nothing is initialised and every collective here is
the identity: a single-process run takes none of these paths.

    torchrun --nproc-per-node 2 -m experiments train ...

How a step splits (the rule that keeps a run's numbers independent of the world size):
- every rank draws the same prompt order (`PromptSampler` is replicated); each generates and
  verifies a contiguous share of each sampling round's groups (`shard_range`), with per-rollout
  seeds (`Sampling.first_row`), then the round is all-gathered (`gather_rollouts`): every rank
  holds the whole step's batch, so dynamic sampling, advantages (batch whitening included),
  metrics and groups.jsonl are computed over all ranks, identically on each;
- the forward/backward passes of a minibatch run on the rank's share of its rows; the loss is
  normalised by the whole minibatch's counts and FSDP sums the ranks' gradients (divide factor 1),
  so the gradient is the single-process one;
- FSDP's collectives need every rank to run the same sequence of forward/backward passes: a rank
  with fewer rows runs dummy passes (`lockstep`), whose loss is multiplied by 0.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank in [0, size), the processes per node (local_rank)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun (or submitit's TorchDistributedEnvironment) describes in RANK, WORLD_SIZE
    and LOCAL_RANK; a single process when they are absent. Under `srun` with several tasks and no
    RANK, submitit's TorchDistributedEnvironment sets them from SLURM's variables first."""
    env = os.environ
    if "RANK" not in env and int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        import submitit

        plain_srun = "SUBMITIT_EXECUTOR" not in env  # submitit reads SLURM's variables only when it says slurm
        env.setdefault("SUBMITIT_EXECUTOR", "slurm")
        try:  # SLURM's view wins over stray variables (in-process vLLM sets LOCAL_WORLD_SIZE, for one);
            # each task keeps the GPUs SLURM gave it (`gpu_index` picks among them)
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        finally:
            if plain_srun:
                del env["SUBMITIT_EXECUTOR"]  # train's own preemption handling stays on
    size = int(env.get("WORLD_SIZE", 1))
    if size <= 1:
        return SINGLE
    return World(rank=int(env["RANK"]), size=size, local_rank=int(env.get("LOCAL_RANK", 0)))


def init(world: World, device: str) -> None:
    """Join the process group: nccl when the run is on GPUs (`device` cuda, or auto with one), else gloo."""
    if not world.sharded or dist.is_initialized():
        return
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(gpu_index(world))
    # an hour: rank 0 may build and warm-start the policy while the others wait at a barrier
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=60))
    if (dist.get_rank(), dist.get_world_size()) != (world.rank, world.size):
        raise RuntimeError(f"process group {dist.get_rank()}/{dist.get_world_size()} != environment {world}")


def gpu_index(world: World) -> int:
    """This rank's GPU: its local rank among the GPUs it sees (all of the node's under torchrun;
    under SLURM's per-task binding, only its own)."""
    return world.local_rank % max(torch.cuda.device_count(), 1)


def close(world: World) -> None:
    if world.sharded and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.sharded:
        dist.barrier()


def shard_range(count: int, world: World) -> tuple[int, int]:
    """[lo, hi): this rank's contiguous share of `count` items (groups), sizes differing by at most
    one, the larger shares first. Rank r's share precedes rank r+1's: gathering in rank order
    restores the whole."""
    base, extra = divmod(count, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (world.rank < extra)


# ---------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_objects(items: list, world: World) -> list:
    """Every rank's list (picklable items), concatenated in rank order."""
    if not world.sharded:
        return list(items)
    parts: list = [None] * world.size
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def gather_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's rows (dim 0; the other dims equal on all ranks), concatenated in rank order."""
    if not world.sharded:
        return tensor
    device = _comm_device()
    counts = torch.tensor([tensor.shape[0]], device=device)
    all_counts = [torch.zeros_like(counts) for _ in range(world.size)]
    dist.all_gather(all_counts, counts)
    most = int(max(c.item() for c in all_counts))
    padded = torch.zeros((most, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor.to(device)
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, all_counts)]).to(tensor.device)


def reduce_max(value: int, world: World) -> int:
    if not world.sharded:
        return value
    tensor = torch.tensor([value], device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def reduce_sum(value: int, world: World) -> int:
    if not world.sharded:
        return value
    tensor = torch.tensor([value], device=_comm_device())
    dist.all_reduce(tensor)
    return int(tensor.item())


def gather_rollouts(rollouts, world: World, pad_id: int):
    """Every rank's Rollouts, concatenated in rank order (padded to the widest prompt and response,
    as one process sampling the whole batch would have them)."""
    from experiments.rollout import Rollouts

    if not world.sharded:
        return rollouts
    prompt_width = reduce_max(rollouts.input_ids.shape[1] - rollouts.response_len, world)
    response_width = reduce_max(rollouts.response_len, world)
    local = rollouts.pad_to(prompt_width, response_width, pad_id)
    gathered = {name: gather_rows(getattr(local, name), world) for name in (
        "input_ids", "attention_mask", "response_mask", "sampler_logp", "lengths", "truncated")}
    prompt_index = gather_objects([local.prompt_index.tolist()], world)  # per rank: renumber after the previous ranks'
    offset, renumbered = 0, []
    for part in prompt_index:
        renumbered += [offset + i for i in part]
        offset += max(part, default=-1) + 1
    gathered["prompt_index"] = torch.tensor(renumbered, dtype=torch.long)
    return Rollouts(**gathered, texts=gather_objects(local.texts, world))


def main_first(world: World, work):
    """`work()` on rank 0, then on the other ranks (which find what rank 0 cached); its result."""
    if not world.is_main:
        barrier(world)
    result = work()
    if world.is_main:
        barrier(world)
    return result


def gather_passes(forward, chunks: list, world: World) -> torch.Tensor:
    """The rows of a no-grad pass over the whole batch: `forward(rows)` on each of this rank's
    `chunks` (`lockstep`-padded; a None chunk runs a dummy pass on row 0, dropped), concatenated,
    then gathered from every rank in rank order."""
    out = [forward(rows if rows is not None else torch.tensor([0])) for rows in chunks]
    real = [o for o, rows in zip(out, chunks) if rows is not None]
    return gather_rows(torch.cat(real) if real else out[0][:0], world)


def lockstep(chunks: list, world: World) -> list:
    """`chunks` (this rank's passes) padded with None (a dummy pass) to the most any rank has:
    FSDP's all-gathers and reduce-scatters pair up only if every rank runs as many passes."""
    return list(chunks) + [None] * (reduce_max(len(chunks), world) - len(chunks))


# ---------------------------------------------------------------------- FSDP2
def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of an HF model (each its own FSDP unit)."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def shard_model(model: torch.nn.Module | None, world: World, precision: str):
    """FSDP2: `fully_shard` each decoder layer, then the whole model (embeddings, head, the rest).
    Gradients are summed over ranks, not averaged: each rank's loss is already normalised by the
    whole minibatch's counts. bf16-mixed: parameters all-gathered in bf16, gradients reduced in fp32."""
    if model is None or not world.sharded:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    device_type = next(model.parameters()).device.type
    mesh = init_device_mesh(device_type, (world.size,))
    mixed = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
             if precision == "bf16-mixed" else MixedPrecisionPolicy())
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mixed)
    fully_shard(model, mesh=mesh, mp_policy=mixed)
    if hasattr(model, "values"):  # the critic's entry point is values(), not forward()
        register_fsdp_forward_method(model, "values")
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
    return model


@contextlib.contextmanager
def gathered(model: torch.nn.Module, world: World):
    """Keep `model`'s parameters unsharded on every rank for the block, from its first forward on:
    generate's one forward per token then all-gathers each layer once, not once per token. The
    memory of the whole model, as one process holds it; resharded after."""
    if not world.sharded:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:  # back to fully_shard's default: reshard the layers, keep the root
            unit.reshard()
            unit.set_reshard_after_forward(unit is not model, recurse=False)


def full_state_dict(model: torch.nn.Module) -> dict:
    """The whole (unsharded) model state on CPU, on rank 0 ({} on the others); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_norm(norm) -> float:
    """A gradient norm as a float (clip_grad_norm_ over sharded DTensors returns a DTensor)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)

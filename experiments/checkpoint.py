"""What a checkpoint holds and how the trainer saves and restores it (the files: `RunFolder`).

Single process: RUN/checkpoint/state.pt, one `torch.save` of everything (`trainer_state`), read back
with `weights_only=True`.

Several ranks (FSDP2): RUN/checkpoint is a link to RUN/checkpoints/step-N/, which holds
    state.pt      rank 0's bookkeeping (step, samples, prompt position, non-finite counters,
                  "sharded": the world size), no model tensors
    rng-R.pt      rank R's RNG states (torch, python, numpy)
    dcp/          policy, critic and their AdamW states, sharded, by `torch.distributed.checkpoint`
                  (loadable at another world size)
Every rank writes its part into the step's folder, then rank 0 swaps the link after a barrier:
a kill at any point leaves the previous checkpoint whole.
"""
from __future__ import annotations

import random

import torch

from experiments.distributed import barrier
from experiments.runfolder import numpy_rng_state, set_numpy_rng_state


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_rng_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    set_numpy_rng_state(state["numpy"])


def bookkeeping(trainer) -> dict:
    return {"step": trainer.step, "samples": trainer.samples, "sampler": trainer.sampler.state_dict(),
            "nonfinite_in_a_row": trainer.nonfinite_in_a_row, "nonfinite_total": trainer.nonfinite_total}


def trainer_state(trainer) -> dict:
    """A single process's whole checkpoint."""
    return {
        **bookkeeping(trainer),
        "policy": trainer.policy.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "critic": trainer.critic.state_dict() if trainer.critic is not None else None,
        "critic_optimizer": trainer.critic_optimizer.state_dict() if trainer.critic_optimizer else None,
        "rng": rng_state(),
    }


def save(trainer) -> None:
    """Write the trainer's checkpoint (every rank calls this when the run is sharded)."""
    run, world = trainer.run, trainer.world
    if not world.sharded:
        run.save_checkpoint(trainer_state(trainer))
        return
    import torch.distributed.checkpoint as dcp

    folder = run.sharded_checkpoint_dir(trainer.step)  # emptied by rank 0 (the writer)
    barrier(world)
    dcp.save(_model_states(trainer), checkpoint_id=str(folder / "dcp"))
    torch.save(rng_state(), folder / f"rng-{world.rank}.pt")
    barrier(world)
    run.publish_sharded_checkpoint(folder, {**bookkeeping(trainer), "sharded": world.size})
    barrier(world)


def restore(trainer, state: dict) -> None:
    """Load a checkpoint `state` (RunFolder.load_checkpoint's) into the trainer."""
    world = trainer.world
    if bool(state.get("sharded")) != world.sharded:
        raise ValueError(f"{trainer.run.checkpoint_path}: a checkpoint of a run on "
                         f"{state.get('sharded') or 1} process(es) resumes only on several ranks (torchrun) "
                         "if it was written by several, and in one process if by one")
    trainer.step, trainer.samples = state["step"], state["samples"]
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.nonfinite_in_a_row, trainer.nonfinite_total = state["nonfinite_in_a_row"], state["nonfinite_total"]
    if not world.sharded:
        trainer.policy.load_state_dict(state["policy"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.critic is not None:
            trainer.critic.load_state_dict(state["critic"])
            trainer.critic_optimizer.load_state_dict(state["critic_optimizer"])
        set_rng_state(state["rng"])
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    folder = trainer.run.checkpoint_path.parent.resolve()
    states = _model_states(trainer)
    dcp.load(states, checkpoint_id=str(folder / "dcp"))
    for name, model, optimizer in _trained(trainer):
        set_state_dict(model, optimizer, model_state_dict=states[name], optim_state_dict=states[f"{name}_optimizer"])
    rng = folder / f"rng-{world.rank}.pt"  # a rank the saving run did not have takes rank 0's
    set_rng_state(torch.load(rng if rng.exists() else folder / "rng-0.pt", weights_only=True))


def _trained(trainer):
    """(name, model, optimizer) of each model the run trains."""
    yield "policy", trainer.policy, trainer.optimizer
    if trainer.critic is not None:
        yield "critic", trainer.critic, trainer.critic_optimizer


def _model_states(trainer) -> dict:
    """{policy, policy_optimizer, critic, critic_optimizer}: sharded state dicts keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    states = {}
    for name, model, optimizer in _trained(trainer):
        states[name], states[f"{name}_optimizer"] = get_state_dict(model, optimizer)
    return states

"""LoRA with peft: adapters on the policy (and on the critic's trunk; its value head stays fully
trained), the base model with adapters disabled as the KL reference (no second copy), and merged
weights for vLLM and for export."""
from __future__ import annotations

import copy

from torch import nn


def target_modules(text: str) -> list[str] | str:
    """'q_proj,v_proj' -> ['q_proj', 'v_proj']; 'all-linear' stays peft's keyword."""
    return "all-linear" if text.strip() == "all-linear" else [m.strip() for m in text.split(",") if m.strip()]


def add_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float, targets: str, task_type: str) -> nn.Module:
    """`model` wrapped by peft with LoRA adapters of `rank` on `targets`; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules(targets),
                        task_type=task_type)
    return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def merged(model: nn.Module) -> nn.Module:
    """A copy of a LoRA model with the adapters merged into the base weights (plain HF model);
    any other model is returned as it is."""
    return copy.deepcopy(model).merge_and_unload() if is_lora(model) else model


def sampler_state_dict(model: nn.Module) -> dict:
    """The weights a separate sampler (vLLM) needs: the base model's names, adapters merged."""
    return merged(model).state_dict()

"""Preparing models for training: the policy (with LoRA), the reference and the critic a run
needs, transformers' gradient checkpointing, train mode during the update, and the parameters an
optimizer steps."""
from __future__ import annotations

import contextlib

from experiments.models.critic import ValueModel
from experiments.models.lora import add_lora
from experiments.models.presets import load_policy


def build_models(cfg, policy_dir, device, world=None):
    """(policy, tokenizer, reference or None, critic or None) for a TrainConfig, in eval mode;
    on several ranks (`world`) each model sharded with FSDP2 (`experiments.distributed.shard_model`).

    The reference exists only when its KL is used (beta > 0); with LoRA it is the policy's own
    base weights with the adapters disabled (the trainer's `_reference_logp`), not a second copy.
    With LoRA the critic's trunk gets adapters too; its value head stays fully trained.
    """
    model_cfg = cfg.model
    loaded = load_policy(policy_dir, dtype=model_cfg.dtype, device=device)
    policy, tokenizer = loaded.model, loaded.tokenizer
    lora = model_cfg.lora_rank > 0
    lora_args = dict(rank=model_cfg.lora_rank, alpha=model_cfg.lora_alpha, dropout=model_cfg.lora_dropout,
                     targets=model_cfg.lora_target_modules)
    if lora:
        policy = add_lora(policy, task_type="CAUSAL_LM", **lora_args)
    policy.eval()  # no dropout anywhere: old_logp must equal logp at ratio 1
    reference = None
    if cfg.algo.kl_coef > 0 and not lora:
        reference = load_policy(policy_dir, dtype=model_cfg.dtype, device=device).model
        reference.eval().requires_grad_(False)
    critic = None
    if cfg.algo.uses_critic:
        critic = ValueModel.from_policy(policy_dir, dtype=model_cfg.dtype, device=device)
        if lora:
            critic.trunk = add_lora(critic.trunk, task_type="FEATURE_EXTRACTION", **lora_args)
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
        if critic is not None:
            enable_gradient_checkpointing(critic.trunk)
    if world is not None and world.sharded:
        from experiments.distributed import shard_model

        policy, reference, critic = (shard_model(m, world, model_cfg.precision) for m in (policy, reference, critic))
    return policy, tokenizer, reference, critic

def enable_gradient_checkpointing(model) -> None:
    """transformers' gradient checkpointing (non-reentrant). It acts only in train mode, which the
    update switches to: refused for a model with dropout, whose train mode would make logp differ
    from old_logp at ratio 1."""
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop"):
        if getattr(model.config, key, 0) or 0:
            raise ValueError(f"model.gradient_checkpointing=true needs a model without dropout; its config has "
                             f"{key}={getattr(model.config, key)}")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@contextlib.contextmanager
def train_mode(*models, enabled: bool):
    """Put `models` in train mode for the block (gradient checkpointing), then back to eval."""
    models = [m for m in models if m is not None] if enabled else []
    for model in models:
        model.train()
    try:
        yield
    finally:
        for model in models:
            model.eval()


def trainable(model) -> list:
    """The parameters an optimizer steps: all of them, or with LoRA the adapters (and value head)."""
    return [p for p in model.parameters() if p.requires_grad]

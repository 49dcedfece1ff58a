"""The forward passes the trainer runs over rows of a step's rollouts: log-probs of the policy and
of the reference (or the LoRA base), the critic's values, a zero-gradient pass for a rank with
fewer micro-batches, and the weights handed to the rollout backend. A mixin of `Trainer`: it
uses the trainer's cfg, device, policy, reference and critic."""
from __future__ import annotations

import torch

from experiments.models.lora import sampler_state_dict


class ModelPasses:
    def _autocast(self):
        """bf16 compute for the trainer's forward passes under model.precision=bf16-mixed (the
        master weights and AdamW state stay fp32); a no-op otherwise."""
        dtype = self.cfg.model.autocast_dtype
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype or "bfloat16"), enabled=dtype is not None)

    def _forward_logp(self, model, rollouts, rows=None, **kw):
        from experiments.models import response_logprobs

        ids, attn = rollouts.input_ids, rollouts.attention_mask
        if rows is not None:
            ids, attn = ids[rows], attn[rows]
        with self._autocast():
            return response_logprobs(model, ids.to(self.device), attn.to(self.device), rollouts.response_len,
                                     temperature=self.cfg.rollout.temperature,
                                     token_chunk=self.cfg.logprob_token_chunk or None, **kw)

    def _values(self, rollouts, rows, response_len: int):
        with self._autocast():
            return self.critic.values(rollouts.input_ids[rows].to(self.device),
                                      rollouts.attention_mask[rows].to(self.device), response_len).float()

    def _reference_logp(self, rollouts, rows):
        """The reference's log-probs: the frozen copy, or with LoRA the base weights (adapters off)."""
        if self.reference is not None:
            return self._forward_logp(self.reference, rollouts, rows)[0]
        with self.policy.disable_adapter():
            return self._forward_logp(self.policy, rollouts, rows)[0]

    def _sampler_weights(self) -> dict:
        """What the rollout backend needs after an update: the policy's own state for HF (the same
        object, so nothing is copied), merged LoRA weights under the base names for vLLM."""
        if self.cfg.rollout.backend == "vllm":
            return sampler_state_dict(self.policy)
        return self.policy.state_dict()

    def _dummy_step(self, rollouts) -> None:
        """A forward/backward with zero gradient, for a rank with fewer micro-batches than another."""
        logp, _ = self._forward_logp(self.policy, rollouts, torch.tensor([0]))
        loss = 0.0 * logp.sum()
        if self.critic is not None:
            loss = loss + 0.0 * self._values(rollouts, torch.tensor([0]), logp.shape[1]).sum()
        loss.backward()

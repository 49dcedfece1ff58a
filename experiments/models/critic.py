"""PPO's critic: a value trunk of the policy's architecture plus a scalar head."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from experiments.models.logprobs import _check_response_len, position_ids_from_mask
from experiments.models.presets import resolve_dtype

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    """PPO's critic: a trunk of the policy's architecture, initialised from the policy's weights, and a
    scalar linear head (zero-initialised, so every initial value is 0).

    Convention: the value at response position t is the value of the state *before* token t is
    emitted, i.e. it is read from the hidden state at the token preceding it (sequence position
    P-1+t). So values[:, 0] is V(prompt) and values[:, t] is V(prompt + o_1..o_t-1), matching
    ``response_logprobs`` (the logit row that predicts token t). The value after the last token is 0
    by definition (terminal), which GAE supplies.
    """

    def __init__(self, trunk: nn.Module, head: nn.Linear | None = None):
        super().__init__()
        self.trunk = trunk
        hidden = trunk.config.hidden_size
        if head is None:
            head = nn.Linear(hidden, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            head = head.to(device=next(trunk.parameters()).device, dtype=next(trunk.parameters()).dtype)
        self.head = head

    @classmethod
    def from_policy(
        cls, policy: str | os.PathLike | nn.Module, *, dtype: torch.dtype | str | None = None, device=None
    ) -> ValueModel:
        """A critic whose trunk is a copy of the policy's: from a policy directory (loaded with
        ``AutoModel``) or from a loaded causal-LM (its ``base_model`` is deep-copied)."""
        import copy

        from transformers import AutoModel

        if isinstance(policy, nn.Module):
            trunk = copy.deepcopy(policy.base_model)
            if dtype is not None:
                trunk = trunk.to(resolve_dtype(dtype))
        else:
            trunk = AutoModel.from_pretrained(policy, dtype=resolve_dtype(dtype or torch.float32))
        if device is not None:
            trunk = trunk.to(device)
        return cls(trunk)

    def values(self, input_ids: Tensor, attention_mask: Tensor, response_len: int) -> Tensor:
        """(B, T) float32 values of the states before each response token (see the class docstring)."""
        _check_response_len(input_ids, response_len)
        T = response_len
        hidden = self.trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state  # (B, P+T, H)
        before_each_token = hidden[:, -T - 1 : -1]  # (B, T, H): positions P-1 .. P+T-2
        return self.head(before_each_token).squeeze(-1).float()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, response_len: int) -> Tensor:
        return self.values(input_ids, attention_mask, response_len)

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Save the trunk (HF format) and the head (``value_head.safetensors``) to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.trunk.save_pretrained(out)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, out / VALUE_HEAD_FILE)
        return out

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, dtype: torch.dtype | str = torch.float32, device="cpu"
    ) -> ValueModel:
        """Load a critic written by ``save_pretrained``."""
        from transformers import AutoModel

        trunk = AutoModel.from_pretrained(path, dtype=resolve_dtype(dtype)).to(device)
        critic = cls(trunk)
        critic.head.load_state_dict(load_file(Path(path) / VALUE_HEAD_FILE))
        return critic

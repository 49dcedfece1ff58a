"""How a task's prompt text becomes the token ids a model is conditioned on: as it is (``plain``)
or wrapped in the tokenizer's own chat template (``chat``), as an Instruct model expects.

Tasks produce plain text ("3+4+5=") and check plain completions; the template is applied here, at
tokenisation, by every consumer of prompts (HF and vLLM rollouts, the warm start's SFT batches), so
they condition on identical ids. No torch import.
"""
from __future__ import annotations

from dataclasses import dataclass

TEMPLATES = ("plain", "chat")


@dataclass(frozen=True)
class PromptTemplate:
    """``kind``: "plain" (the prompt text, with whatever special tokens the tokenizer adds) or
    "chat" (``tokenizer.apply_chat_template`` of a user message, after a system message when
    ``system_prompt`` is set, with the generation prompt that opens the assistant's turn)."""

    kind: str = "plain"
    system_prompt: str = ""

    def __post_init__(self):
        if self.kind not in TEMPLATES:
            raise ValueError(f"task.template={self.kind!r} is invalid: expected one of {', '.join(TEMPLATES)}")

    @classmethod
    def of(cls, task_cfg) -> "PromptTemplate":
        """The template a ``TaskConfig`` asks for (task.template, task.system_prompt)."""
        return cls(getattr(task_cfg, "template", "plain"), getattr(task_cfg, "system_prompt", ""))

    def check(self, tokenizer, where: str = "the model") -> None:
        """Raise ValueError if the tokenizer cannot render this template (chat without a chat template)."""
        if self.kind == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"task.template=chat: {where}'s tokenizer has no chat template (tokenizer_config.json "
                "'chat_template'); use task.template=plain, or model.tokenizer=bpe for a size preset with one"
            )

    def messages(self, prompt: str) -> list[dict]:
        """The chat messages of one prompt: [system,] user."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": prompt}]

    def render(self, tokenizer, prompt: str) -> str:
        """The text the model sees before its response (for display: ``encode`` is what is used)."""
        if self.kind == "plain":
            return prompt
        self.check(tokenizer)
        return tokenizer.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True)

    def encode(self, tokenizer, prompt: str) -> list[int]:
        """Token ids of ``prompt`` under this template. Plain: the tokenizer's own special tokens
        (e.g. a BOS) are added; chat: the template writes every special token itself."""
        if self.kind == "plain":
            return tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return tokenizer(self.render(tokenizer, prompt), add_special_tokens=False)["input_ids"]

    def encode_all(self, tokenizer, prompts: list[str]) -> list[list[int]]:
        """``encode`` of each prompt; raises if one encodes to no token."""
        ids = [self.encode(tokenizer, p) for p in prompts]
        if any(len(row) == 0 for row in ids):
            raise ValueError("a prompt encodes to zero tokens; the model needs at least one to condition on")
        return ids

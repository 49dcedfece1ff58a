"""A stand-in for a real checkpoint's tokenizer, built here without a hub: a byte-level BPE trained
with `tokenizers` on the built-in tasks' text, with Qwen2's pre-tokenizer (digits split one by one),
ChatML special tokens and a Qwen2.5-style Jinja chat template in its tokenizer_config.json.

Saved beside a size preset's Qwen2 model (``model.tokenizer=bpe``, or ``python -m experiments
build-model --tokenizer bpe --out DIR`` for an ordinary HF directory to pass as ``model.name=DIR``),
it exercises what the character tokenizer cannot: multi-character tokens, an EOS that is a chat
turn's end (``<|im_end|>``), a pad token distinct from EOS, and ``task.template=chat``.
"""
from __future__ import annotations

import random

from experiments.models.tokenizer import as_fast_tokenizer, qwen2_byte_level

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
BPE_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2 (pad, -, eos), as in Qwen2.5-Instruct's roles
BPE_VOCAB_SIZE = 1024  # the trainer's target; the corpus is narrow, so fewer merges may exist
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2.5's template without tool calls: a default system message when the conversation has none,
# each message as <|im_start|>role\ncontent<|im_end|>\n, and the assistant's opening on request.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def training_corpus(seed: int = 0) -> list[str]:
    """The text the BPE is trained on: prompts and targets of arithmetic (1-2 digit, + - *) and
    countdown problems, each also wrapped in the chat template, and a few English sentences of
    the kind a system prompt holds. Deterministic given ``seed``."""
    from experiments.tasks import TaskConfig, make_task

    texts = []
    for cfg in (TaskConfig("arithmetic", digits=2, ops="+-*", n_train=1500),
                TaskConfig("arithmetic", digits=1, n_terms=4, n_train=1500),
                TaskConfig("countdown", n_train=1000)):
        for ex in make_task(cfg).examples("train"):
            texts.append(ex.prompt + ex.target)
            texts.append(f"{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n{ex.prompt}{IM_END}\n"
                         f"{IM_START}assistant\n{ex.target}{IM_END}\n")
    rng = random.Random(seed)
    words = ("You are a helpful assistant. Solve the problem and give the answer. Think step by step, then "
             "write the final answer. Reach the target number using each given number at most once.").split()
    texts += [" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)]
    return texts


def build_bpe_tokenizer(vocab_size: int = BPE_VOCAB_SIZE, seed: int = 0):
    """Train the byte-level BPE on ``training_corpus(seed)`` and wrap it as a
    ``PreTrainedTokenizerFast`` (pad ``<|endoftext|>``, EOS ``<|im_end|>``, no BOS, left padding,
    the chat template set). Deterministic: the same inputs give the same vocabulary and merges."""
    from tokenizers import models, pre_tokenizers, trainers

    backend = qwen2_byte_level(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(BPE_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(training_corpus(seed), trainer=trainer)
    tokenizer = as_fast_tokenizer(backend, pad_token=ENDOFTEXT, eos_token=IM_END, additional_special_tokens=[IM_START])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer

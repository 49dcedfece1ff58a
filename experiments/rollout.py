"""Rollouts: sample n responses per prompt, with the sampler's log-probs.

Two backends behind one interface (``RolloutBackend``): ``HFRollout`` (``model.generate`` on the
trainer's own model; here) and ``VLLMRollout`` (an in-process vLLM engine; ``rollout_vllm.py``).
Both return the same ``Rollouts`` tensors, built by ``build_rollouts`` from token lists, so their
semantics cannot drift apart:

- rollouts of prompt p sit at rows p*n .. p*n+n-1;
- ``input_ids`` is the left-padded prompt followed by the right-padded response, T columns wide,
  T = the longest response of the batch (<= ``max_new_tokens``);
- ``response_mask`` covers the generated tokens up to and including the first EOS;
- ``truncated`` means no EOS within ``max_new_tokens``;
- ``sampler_logp`` is the log-prob of each sampled token under the distribution it was sampled from
  (logits / temperature, then top-p renormalised); 0 where masked. With top_p = 1 it is what
  ``models.response_logprobs(..., temperature=T)`` gives for the same model. Greedy decoding
  (temperature 0) has no sampling distribution; there it is log softmax of the raw logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class Sampling:
    """How to sample."""

    max_new_tokens: int
    """Generation budget per response (tokens, EOS included)."""
    temperature: float = 1.0
    """Logits are divided by this; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with probability >= top_p (1 = off)."""
    seed: int | None = None
    """Seed for this call's sampling (same seed, same model, same prompts -> same rollouts); None = unseeded.
    Each rollout row r has its own seed, seed + first_row + r, so a row samples the same whatever else
    shares its batch (a batch split across calls or across ranks samples what the whole batch would)."""
    first_row: int = 0
    """The index of this call's first rollout in the batch it is a share of (0: the whole batch)."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Rollouts:
    """A batch of B = len(prompts) * n rollouts; rollouts of prompt p sit at p*n .. p*n+n-1."""

    input_ids: Tensor  # (B, P+T) long: left-padded prompt, then the response right-padded
    attention_mask: Tensor  # (B, P+T) long
    response_mask: Tensor  # (B, T) float: 1 on generated tokens (EOS included), 0 after
    sampler_logp: Tensor  # (B, T) float: log-prob of each sampled token under the sampler (0 where masked)
    lengths: Tensor  # (B,) long: response lengths (EOS included)
    truncated: Tensor  # (B,) bool: hit max_new_tokens without EOS
    texts: list[str]  # decoded responses, EOS stripped
    prompt_index: Tensor  # (B,) long: which prompt each rollout answers

    @property
    def response_len(self) -> int:
        """T, the width of the response part of ``input_ids``."""
        return self.response_mask.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: list[int]) -> "Rollouts":
        """The rollouts at `index` (a list of rows), as a new Rollouts."""
        rows = torch.tensor(index, dtype=torch.long)
        return Rollouts(
            input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
            response_mask=self.response_mask[rows], sampler_logp=self.sampler_logp[rows],
            lengths=self.lengths[rows], truncated=self.truncated[rows],
            texts=[self.texts[i] for i in index], prompt_index=self.prompt_index[rows],
        )

    def pad_to(self, prompt_width: int, response_width: int, pad_id: int) -> "Rollouts":
        """The same rollouts with prompts left-padded to `prompt_width` and responses right-padded
        to `response_width` (each at least the current width)."""
        p, t = self.input_ids.shape[1] - self.response_len, self.response_len
        left, right = prompt_width - p, response_width - t
        if left == right == 0:
            return self

        def pad(tensor, before: int, after: int, value):
            return torch.nn.functional.pad(tensor, (before, after), value=value)

        def split_pad(tensor, value):  # (B, P+T): prompt padded on the left, response on the right
            return torch.cat([pad(tensor[:, :p], left, 0, value), pad(tensor[:, p:], 0, right, value)], 1)

        return Rollouts(
            input_ids=split_pad(self.input_ids, pad_id), attention_mask=split_pad(self.attention_mask, 0),
            response_mask=pad(self.response_mask, 0, right, 0), sampler_logp=pad(self.sampler_logp, 0, right, 0.0),
            lengths=self.lengths, truncated=self.truncated, texts=self.texts, prompt_index=self.prompt_index,
        )

    @staticmethod
    def concat(parts: list["Rollouts"], pad_id: int) -> "Rollouts":
        """Concatenate Rollouts of different prompt widths P and response widths T: prompts are
        left-padded and responses right-padded to the widest."""
        if len(parts) == 1:
            return parts[0]
        prompt_width = max(r.input_ids.shape[1] - r.response_len for r in parts)
        response_width = max(r.response_len for r in parts)
        parts = [r.pad_to(prompt_width, response_width, pad_id) for r in parts]
        return Rollouts(
            input_ids=torch.cat([r.input_ids for r in parts]),
            attention_mask=torch.cat([r.attention_mask for r in parts]),
            response_mask=torch.cat([r.response_mask for r in parts]),
            sampler_logp=torch.cat([r.sampler_logp for r in parts]), lengths=torch.cat([r.lengths for r in parts]),
            truncated=torch.cat([r.truncated for r in parts]), texts=[t for r in parts for t in r.texts],
            prompt_index=torch.cat([r.prompt_index for r in parts]),
        )


@runtime_checkable
class RolloutBackend(Protocol):
    """What the training loop needs from a sampler."""

    def generate(self, prompts: list[str], n: int, sampling: Sampling) -> Rollouts:
        """n rollouts for each prompt (see ``Rollouts`` for the layout)."""
        ...

    def load_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Make the sampler use these policy weights (in place, no disk)."""
        ...


def _check_prompts(prompts: list[str], n: int) -> None:
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    if n < 1:
        raise ValueError(f"n (rollouts per prompt) must be >= 1, got {n}")


def build_rollouts(
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    response_logps: list[list[float]],
    *,
    n: int,
    eos_token_id: int,
    pad_token_id: int,
    tokenizer,
) -> Rollouts:
    """Assemble ``Rollouts`` from per-rollout token lists (row r answers prompt r // n).

    prompt_ids: B lists (the prompt tokens of each rollout, unpadded); response_ids: B lists of the
    generated tokens, cut after the first EOS (a list that does not end in EOS is truncated);
    response_logps: the sampler's log-prob of each of those tokens.
    """
    B = len(response_ids)
    if not (len(prompt_ids) == len(response_logps) == B) or B % n:
        raise ValueError(f"inconsistent rollout lists: {len(prompt_ids)} prompts, {B} responses, n={n}")
    cut = []
    for ids, logps in zip(response_ids, response_logps):
        if len(ids) != len(logps):
            raise ValueError(f"a response has {len(ids)} tokens but {len(logps)} log-probs")
        if eos_token_id in ids:
            end = ids.index(eos_token_id) + 1
            ids, logps = ids[:end], logps[:end]
        cut.append((list(ids), list(logps)))
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(ids) for ids, _ in cut))  # at least one column, even if every response is empty
    input_ids = torch.full((B, P + T), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + T), dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.float32)
    sampler_logp = torch.zeros((B, T), dtype=torch.float32)
    lengths = torch.zeros(B, dtype=torch.long)
    truncated = torch.zeros(B, dtype=torch.bool)
    texts = []
    for r, (prompt, (ids, logps)) in enumerate(zip(prompt_ids, cut)):
        L = len(ids)
        input_ids[r, P - len(prompt) : P] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[r, P - len(prompt) : P] = 1
        if L:
            input_ids[r, P : P + L] = torch.tensor(ids, dtype=torch.long)
            sampler_logp[r, :L] = torch.tensor(logps, dtype=torch.float32)
        attention_mask[r, P : P + L] = 1
        response_mask[r, :L] = 1.0
        lengths[r] = L
        ended = L > 0 and ids[-1] == eos_token_id
        truncated[r] = not ended
        texts.append(ids[:-1] if ended else ids)
    texts = tokenizer.batch_decode(texts, skip_special_tokens=True)
    return Rollouts(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        sampler_logp=sampler_logp,
        lengths=lengths,
        truncated=truncated,
        texts=texts,
        prompt_index=torch.arange(B // n).repeat_interleave(n),
    )


class _SampledTokenLogprobs:
    """A logits processor, placed last, that records log softmax(processed scores) at the token
    sampled from them. At step k it sees the token sampled at step k-1 (the last column of
    ``input_ids``), so only one (B, V) row of log-probs is alive at a time."""

    def __init__(self):
        self.pending: Tensor | None = None  # (B, V) log-probs of the current step
        self.values: list[Tensor] = []  # one (B,) tensor per finished step

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.pending is not None:
            self.values.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: Tensor) -> Tensor:
        """(B, T) log-probs of the generated tokens (B, T)."""
        if self.pending is not None:
            self.values.append(self.pending.gather(1, generated[:, -1:]).squeeze(1))
            self.pending = None
        if len(self.values) != generated.shape[1]:
            raise RuntimeError(f"recorded {len(self.values)} steps for {generated.shape[1]} generated tokens")
        return torch.stack(self.values, dim=1)


class _RowSeededChoice:
    """A logits processor, placed after the recorder, that draws each row's next token from the
    processed distribution by inverse CDF with that row's own uniforms and leaves only that token
    possible, so generate's multinomial picks it. A row's draws then depend on its seed alone, not
    on the other rows of the batch (which the global RNG's stream would).

    Each row's uniforms for the whole budget come from its own CPU generator at the start (B
    generator calls per batch, not B per token), so a decode step is one vectorised cumsum and
    searchsorted over the batch, and the draws are the same on every device."""

    def __init__(self, seeds, device: torch.device, steps: int):
        uniforms = [torch.rand(steps, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        self.uniforms = torch.stack(uniforms).to(device)  # (B, steps) in [0, 1)
        self.step = 0

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        cdf = torch.softmax(scores.float(), dim=-1).cumsum_(dim=-1)  # (B, V)
        u = self.uniforms[:, self.step : self.step + 1] * cdf[:, -1:]  # (B, 1), below each row's total
        self.step += 1
        # the first token whose cdf exceeds u: tokens of probability 0 (top_p) are never chosen
        chosen = torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1)  # (B, 1)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, chosen, 0.0)


class HFRollout:
    """Rollouts with ``model.generate`` (KV cache, batched, left padding).

    The model may be the trainer's own policy object; then ``load_weights`` with that model's
    state_dict is a no-op (the tensors are already the policy's) and the backend always samples
    from the current weights. ``batch_size`` bounds how many sequences go through one ``generate``
    call (None = all at once). The model's own ``generation_config`` is ignored: only ``Sampling``
    decides how to sample (a Qwen checkpoint's top_k/top_p/repetition_penalty defaults are not applied).
    ``template`` (an ``experiments.prompts.PromptTemplate``, default plain) turns each prompt into ids.
    """

    def __init__(self, model: nn.Module, tokenizer, *, batch_size: int | None = None, template=None,
                 synced: bool = False):
        from experiments.prompts import PromptTemplate

        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; rollouts need one to end responses")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template or PromptTemplate()
        self.template.check(tokenizer)
        self.batch_size = batch_size
        self.synced = synced  # FSDP across ranks: every rank decodes until all ranks are done (generate's synced_gpus)
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: list[str], n: int, sampling: Sampling) -> Rollouts:
        """n rollouts for each prompt; reproducible given ``sampling.seed`` (the global RNG is forked)."""
        _check_prompts(prompts, n)
        prompt_ids = self.template.encode_all(self.tokenizer, prompts)
        rollout_prompts = [p for p in prompt_ids for _ in range(n)]  # row r answers prompt r // n
        step = self.batch_size or len(rollout_prompts)
        responses, logps = [], []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for start in range(0, len(rollout_prompts), step):
                    ids, lp = self._generate_batch(rollout_prompts[start : start + step], sampling, start)
                    responses += ids
                    logps += lp
        finally:
            self.model.train(was_training)
        return build_rollouts(
            rollout_prompts,
            responses,
            logps,
            n=n,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            tokenizer=self.tokenizer,
        )

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], sampling: Sampling, first: int):
        from transformers import GenerationConfig, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        P = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[self.pad_token_id] * (P - len(p)) + p for p in prompt_ids], device=self.device)
        attention_mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device)
        processors = LogitsProcessorList()
        if not sampling.greedy:
            # The warpers are ours, not generate's, so that the recorder sees the final distribution.
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        recorder = _SampledTokenLogprobs()
        processors.append(recorder)
        if not sampling.greedy and sampling.seed is not None:
            first_seed = sampling.seed + sampling.first_row + first
            processors.append(_RowSeededChoice(range(first_seed, first_seed + len(prompt_ids)), self.device,
                                                sampling.max_new_tokens))
        # temperature 1, top_k 0, top_p 1: generate adds no warpers of its own (its default top_k is 50)
        neutral = {} if sampling.greedy else {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not sampling.greedy,
            num_beams=1,
            repetition_penalty=1.0,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            **neutral,
        )
        own_config = self.model.generation_config
        self.model.generation_config = GenerationConfig()  # no checkpoint defaults leak into sampling
        try:
            sequences = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                logits_processor=processors, synced_gpus=self.synced,
            )
        finally:
            self.model.generation_config = own_config
        generated = sequences[:, P:]  # (b, T'); after an EOS generate fills in pad tokens
        logp = recorder.finish(generated)  # (b, T')
        return generated.tolist(), logp.tolist()

    def load_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Copy ``state_dict`` into the model in place (keys must be the model's; a subset is allowed).
        Tensors that already are the model's own (shared policy object) are skipped, so passing the
        trainer's policy.state_dict() when the backend holds that same model costs nothing."""
        own = self.model.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise KeyError(f"load_weights got {len(unknown)} keys the model does not have, e.g. {unknown[:3]}")
        with torch.no_grad():
            for name, value in state_dict.items():
                target = own[name]
                if target.data_ptr() == value.data_ptr():
                    continue
                if target.shape != value.shape:
                    raise ValueError(f"{name}: shape {tuple(value.shape)} does not match the model's {tuple(target.shape)}")
                target.copy_(value)


BACKENDS = ("hf", "vllm")


def make_rollout(
    backend: str, *, model: nn.Module | None = None, tokenizer=None, model_dir=None, **kwargs
) -> RolloutBackend:
    """A rollout backend by name: "hf" -> ``HFRollout(model, tokenizer, **kwargs)``;
    "vllm" -> ``VLLMRollout(model_dir, **kwargs)`` (model_dir: the HF directory of the policy)."""
    if backend == "hf":
        if model is None or tokenizer is None:
            raise ValueError("the hf rollout backend needs model= and tokenizer=")
        return HFRollout(model, tokenizer, **kwargs)
    if backend == "vllm":
        if model_dir is None:
            raise ValueError("the vllm rollout backend needs model_dir= (a Hugging Face model directory)")
        from experiments.rollout_vllm import VLLMRollout

        return VLLMRollout(model_dir, **kwargs)
    raise ValueError(f"unknown rollout backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def build_rollout(cfg, policy, tokenizer, policy_dir):
    """The rollout backend of a TrainConfig's rollout.backend (hf shares the trainer's model object)."""
    from experiments.prompts import PromptTemplate

    rollout, template = cfg.rollout, PromptTemplate.of(cfg.task)
    if rollout.backend == "hf":
        return make_rollout("hf", model=policy, tokenizer=tokenizer, template=template)
    return make_rollout(
        "vllm", model_dir=policy_dir, template=template, gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
        max_model_len=rollout.vllm_max_model_len, seed=cfg.seed, sleep=rollout.vllm_sleep,
        kv_cache_gib=rollout.vllm_kv_cache_gib, dtype=cfg.model.dtype,
    )

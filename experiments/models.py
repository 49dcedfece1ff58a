"""Policy models, the character tokenizer, the critic, and log-prob helpers.

Everything here is ordinary Hugging Face: the tokenizer is a ``PreTrainedTokenizerFast`` saved as
``tokenizer.json`` and the models are ``Qwen2ForCausalLM`` saved as safetensors, so
``AutoTokenizer``/``AutoModelForCausalLM`` and vLLM load a built model directory with no custom code,
and any local HF causal-LM checkpoint (e.g. Qwen2.5-0.5B on a cluster) can stand in for a preset.

Size presets (``SIZES``), all with head_dim 64 (the head size vLLM's CPU backend supports), tied
input/output embeddings (as Qwen2.5-0.5B) and the 259-token character (byte) vocabulary:

=======  ======  ======  =====  ========  ============  ==========
size     hidden  layers  heads  kv heads  intermediate  parameters
=======  ======  ======  =====  ========  ============  ==========
tiny     128     2       2      2         512           0.56M
small    256     5       4      4         1024          5.32M
base     512     8       8      8         1792          30.6M
medium   768     14      12     4         3072          121M
large    896     32      14     2         4864          477M
=======  ======  ======  =====  ========  ============  ==========

``large`` has Qwen2.5-0.5B's layer shape (896 wide, 14 query / 2 key-value heads, 4864 MLP) with 32
layers instead of 24, so that its parameter count matches Qwen's 0.49B, most of which is Qwen's
152K-token embedding table that the character vocabulary does not have.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Character tokenizer
# ----------------------------------------------------------------------------------------------

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
BOS_TOKEN = "<bos>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN)  # ids 0, 1, 2; byte b has id 3 + b


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (what a ByteLevel pre-tokenizer emits): printable
    ASCII maps to itself, space to "Ġ", newline to "Ċ", other bytes to other unicode letters."""
    from tokenizers import pre_tokenizers

    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    symbols, extra = [], 0
    for b in range(256):  # the bytes_to_unicode table of GPT-2 / tokenizers
        c = chr(b)
        if ("!" <= c <= "~") or ("\xa1" <= c <= "\xac") or ("\xae" <= c <= "\xff"):
            symbols.append(c)
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    assert set(symbols) == alphabet
    return symbols


VOCAB = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(_byte_symbols()))}  # 259 entries
# Qwen2Tokenizer's pre-tokenizer regex (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
_QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def token_id_of_char(char: str) -> int:
    """The token id of one ASCII character (e.g. "7" -> 58)."""
    if len(char) != 1 or ord(char) > 127:
        raise ValueError(f"expected one ASCII character, got {char!r}")
    return len(SPECIAL_TOKENS) + ord(char)


def build_char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: one token per character for ASCII text.

    Vocabulary (259): ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, then one token per byte (byte b has id
    3 + b), so printable ASCII, newline and tab are one token per character and any other text still
    encodes losslessly (a non-ASCII character becomes its UTF-8 bytes). No merges, no BOS is
    prepended, decoding concatenates (``skip_special_tokens`` drops pad/eos/bos). Padding side left.

    It is a byte-level BPE without merges, built exactly as transformers' ``Qwen2Tokenizer`` builds its
    pipeline (NFC, Qwen2 split regex, ByteLevel, ByteLevel decoder): ``AutoTokenizer`` (and so vLLM)
    loads a Qwen2 model directory's tokenizer as ``Qwen2Tokenizer`` whatever the saved class, and with
    this construction both give identical ids.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=dict(VOCAB), merges=[], unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=None,
        padding_side="left",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


# ----------------------------------------------------------------------------------------------
# Size presets and building
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """The shape of one size preset (head_dim is always 64: hidden = 64 * heads)."""

    heads: int
    kv_heads: int
    layers: int
    intermediate: int
    nominal_params: float  # the advertised parameter count, e.g. 0.5e6

    @property
    def hidden(self) -> int:
        return HEAD_DIM * self.heads


HEAD_DIM = 64
MAX_POSITIONS = 4096
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(heads=2, kv_heads=2, layers=2, intermediate=512, nominal_params=0.5e6),
    "small": ModelSize(heads=4, kv_heads=4, layers=5, intermediate=1024, nominal_params=5e6),
    "base": ModelSize(heads=8, kv_heads=8, layers=8, intermediate=1792, nominal_params=30e6),
    "medium": ModelSize(heads=12, kv_heads=4, layers=14, intermediate=3072, nominal_params=120e6),
    "large": ModelSize(heads=14, kv_heads=2, layers=32, intermediate=4864, nominal_params=0.5e9),
}


def _check_size(size: str) -> ModelSize:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; valid sizes: {', '.join(SIZES)}")
    return SIZES[size]


def model_config(size: str):
    """The ``Qwen2Config`` of a size preset (vocabulary and special ids of the character tokenizer)."""
    from transformers import Qwen2Config

    s = _check_size(size)
    return Qwen2Config(
        vocab_size=len(VOCAB),
        hidden_size=s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        head_dim=HEAD_DIM,
        intermediate_size=s.intermediate,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=VOCAB[BOS_TOKEN],
        eos_token_id=VOCAB[EOS_TOKEN],
        pad_token_id=VOCAB[PAD_TOKEN],
        torch_dtype="float32",
    )


def build_model(size: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build a randomly initialised size preset and save model + tokenizer to ``out_dir``.

    Deterministic given ``seed`` (the global torch RNG is forked, so the caller's RNG state is not
    touched). Saves ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
    tokenizer files. Returns ``out_dir`` as a Path.
    """
    from transformers import GenerationConfig, Qwen2ForCausalLM

    config = model_config(size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_char_tokenizer().save_pretrained(out)
    return out


def default_cache_dir() -> Path:
    """``$RLVR_CACHE`` if set, else ``./.cache/rlvr`` (git-ignored)."""
    env = os.environ.get("RLVR_CACHE")
    return Path(env) if env else Path.cwd() / ".cache" / "rlvr"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` as a Path; None or "" means ``default_cache_dir()``."""
    return Path(cache_dir) if cache_dir else default_cache_dir()


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish_dir_atomically(tmp_dir: Path, final_dir: Path) -> Path:
    """Rename a fully written ``tmp_dir`` to ``final_dir``; if another writer got there first, keep theirs."""
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if not (final_dir / "config.json").exists():
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def built_model_dir(size: str, *, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the size preset built with ``seed`` in the cache, building it on first use.

    Safe against concurrent callers (a file lock) and against being killed mid-write (the model is
    written to a temporary directory and renamed into place).
    """
    _check_size(size)
    cache = resolve_cache_dir(cache_dir)
    final = cache / "models" / f"{size}-seed{seed}"
    if (final / "config.json").exists():
        return final
    with file_lock(cache / "models" / f".{size}-seed{seed}.lock"):
        if (final / "config.json").exists():
            return final
        tmp = Path(tempfile.mkdtemp(dir=cache / "models", prefix=f".tmp-{size}-"))
        build_model(size, tmp, seed=seed)
        return publish_dir_atomically(tmp, final)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32`` or one of the names "float32", "bfloat16", "float16"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(names)}")
    return names[dtype]


class LoadedPolicy(NamedTuple):
    model: nn.Module  # an AutoModelForCausalLM
    tokenizer: object  # a PreTrainedTokenizerFast, padding side left, with a pad token
    path: Path  # the HF directory it was loaded from (what vLLM loads)


def load_policy(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedPolicy:
    """Load a policy: a size preset (built into ``cache_dir/models/<size>-seed<seed>`` on first use)
    or any local Hugging Face causal-LM directory. Returns ``LoadedPolicy(model, tokenizer, path)``.

    The tokenizer gets left padding, and a pad token (its EOS) if the checkpoint has none.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name in SIZES:
        path = built_model_dir(name, seed=seed, cache_dir=cache_dir)
    else:
        path = Path(name)
        if not (path / "config.json").exists():
            raise ValueError(
                f"model {name!r} is neither a size preset ({', '.join(SIZES)}) nor a directory "
                "holding a Hugging Face checkpoint (config.json); hubs are not reachable, so pass a local path"
            )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype)).to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedPolicy(model, tokenizer, path)


# ----------------------------------------------------------------------------------------------
# Log-probs over the response
# ----------------------------------------------------------------------------------------------


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, L) positions counting only attended tokens, so left padding does not shift them; 0 on pads."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _check_response_len(input_ids: Tensor, response_len: int) -> None:
    if not 0 < response_len < input_ids.shape[1]:
        raise ValueError(
            f"response_len must be in [1, {input_ids.shape[1] - 1}] for input_ids of width "
            f"{input_ids.shape[1]} (at least one prompt token precedes the response); got {response_len}"
        )


def logprobs_and_entropy(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                         *, entropy_grad: bool = False) -> tuple[Tensor, Tensor]:
    """log softmax(logits / temperature) at ``tokens`` and the entropy of that distribution.

    logits: (..., V) any float dtype; tokens: (...). Returns two float32 tensors of shape (...).
    logp = z[token] - logsumexp(z) with z = logits / temperature: no log_softmax tensor is built, and
    the autograd graph keeps only z. By default the entropy is computed without gradient (a
    diagnostic), so its (..., V) softmax is freed at once; ``entropy_grad=True`` (an entropy bonus
    in the loss) keeps its graph.
    """
    z = logits.float() / temperature  # (..., V)
    lse = torch.logsumexp(z, dim=-1)  # (...)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse  # (...)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = lse - (torch.softmax(z, dim=-1) * z).sum(-1)  # H = -sum p (z - lse) = lse - sum p z
    return logp, entropy


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Log-probs of the response tokens and the entropy at each response position.

    input_ids, attention_mask: (B, P+T), the response being the last T = ``response_len`` columns
    (left-padded prompt, right-padded response, as in ``Rollouts``).
    Returns (logp, entropy), both (B, T) float32: logp[b, t] = log pi(input_ids[b, P+t] | prefix) with
    logits divided by ``temperature``; entropy of that full next-token distribution. Values at masked
    (padding) response positions are computed but meaningless; mask them with ``response_mask``.
    Position ids come from the attention mask. Only the T logit rows that predict the response are
    computed (``logits_to_keep``), so memory is O(B*T*V), not O(B*(P+T)*V); with a large vocabulary
    set ``chunk_size`` to run the batch in chunks of that many rows. Gradients flow into logp;
    the entropy is detached unless ``entropy_grad``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs (greedy decoding has none); got {temperature}")
    _check_response_len(input_ids, response_len)
    T = response_len
    position_ids = position_ids_from_mask(attention_mask)
    logps, entropies = [], []
    step = chunk_size or input_ids.shape[0]
    for start in range(0, input_ids.shape[0], step):
        rows = slice(start, start + step)
        # logits at positions P-1 .. P+T-1; the one at P-1+t predicts response token t.
        out = model(
            input_ids=input_ids[rows],
            attention_mask=attention_mask[rows],
            position_ids=position_ids[rows],
            logits_to_keep=T + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1]  # (b, T, V)
        logp, entropy = logprobs_and_entropy(logits, input_ids[rows, -T:], temperature, entropy_grad=entropy_grad)
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), torch.cat(entropies)


# ----------------------------------------------------------------------------------------------
# Critic
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Memory accounting
# ----------------------------------------------------------------------------------------------


def param_bytes(module: nn.Module) -> int:
    """Bytes held by the module's parameters: sum of numel * element_size (tied weights once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())  # parameters() skips tied repeats


def grad_bytes(module: nn.Module) -> int:
    """Bytes held by the ``.grad`` tensors of the module's parameters (0 before any backward)."""
    return sum(p.grad.numel() * p.grad.element_size() for p in module.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the tensors in the optimizer's state (Adam: exp_avg, exp_avg_sq, step)."""
    tensors = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def count_params(module: nn.Module) -> int:
    """Number of parameters, tied weights counted once."""
    return sum(p.numel() for p in module.parameters())

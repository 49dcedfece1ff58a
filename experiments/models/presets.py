"""Size presets (Qwen2-style configs, head size 64), building them into cached HF directories
(atomic, locked), and loading a policy from a preset or any local HF causal-LM directory."""
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
from torch import nn

from experiments.models.tokenizer import build_char_tokenizer

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


TOKENIZERS = ("char", "bpe")


def build_tokenizer(kind: str = "char"):
    """The tokenizer of a size preset: "char" (259 tokens, ``build_char_tokenizer``) or "bpe" (a
    byte-level BPE trained on task text, with a chat template: ``experiments.models.bpe``)."""
    if kind == "char":
        return build_char_tokenizer()
    if kind == "bpe":
        from experiments.models.bpe import build_bpe_tokenizer

        return build_bpe_tokenizer()
    raise ValueError(f"model.tokenizer={kind!r} is invalid: expected one of {', '.join(TOKENIZERS)}")


def model_config(size: str, tokenizer=None):
    """The ``Qwen2Config`` of a size preset, with the vocabulary and special ids of ``tokenizer``
    (default: the character tokenizer)."""
    from transformers import Qwen2Config

    s = _check_size(size)
    tokenizer = tokenizer or build_char_tokenizer()
    return Qwen2Config(
        vocab_size=len(tokenizer),
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
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_model(size: str, out_dir: str | os.PathLike, seed: int = 0, tokenizer: str = "char") -> Path:
    """Build a randomly initialised size preset with the ``tokenizer`` kind ("char" or "bpe") and
    save model + tokenizer to ``out_dir``.

    Deterministic given ``seed`` (the global torch RNG is forked, so the caller's RNG state is not
    touched). Saves ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
    tokenizer files. Returns ``out_dir`` as a Path.
    """
    from transformers import GenerationConfig, Qwen2ForCausalLM

    tok = build_tokenizer(tokenizer)
    config = model_config(size, tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
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


def publish_dir_atomically(tmp_dir: Path, final_dir: Path, *, replace: bool = False) -> Path:
    """Rename a fully written ``tmp_dir`` to ``final_dir``; if another writer got there first, keep
    theirs. With ``replace``, an existing ``final_dir`` is moved aside first and removed after."""
    if replace and final_dir.exists():
        old = final_dir.with_name(f".old-{final_dir.name}-{os.getpid()}")
        os.rename(final_dir, old)
        os.rename(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
        return final_dir
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if not (final_dir / "config.json").exists():
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def preset_slug(size: str, seed: int = 0, tokenizer: str = "char") -> str:
    """The cache name of a built size preset: "tiny-seed0", "tiny-bpe-seed0"."""
    return f"{size}-seed{seed}" if tokenizer == "char" else f"{size}-{tokenizer}-seed{seed}"


def built_model_dir(size: str, *, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                    tokenizer: str = "char") -> Path:
    """Path of the size preset built with ``seed`` (and the ``tokenizer`` kind) in the cache,
    building it on first use.

    Safe against concurrent callers (a file lock) and against being killed mid-write (the model is
    written to a temporary directory and renamed into place).
    """
    _check_size(size)
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"model.tokenizer={tokenizer!r} is invalid: expected one of {', '.join(TOKENIZERS)}")
    cache = resolve_cache_dir(cache_dir)
    slug = preset_slug(size, seed, tokenizer)
    final = cache / "models" / slug
    if (final / "config.json").exists():
        return final
    with file_lock(cache / "models" / f".{slug}.lock"):
        if (final / "config.json").exists():
            return final
        tmp = Path(tempfile.mkdtemp(dir=cache / "models", prefix=f".tmp-{size}-"))
        build_model(size, tmp, seed=seed, tokenizer=tokenizer)
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
    tokenizer: str = "char",
) -> LoadedPolicy:
    """Load a policy: a size preset (built with the ``tokenizer`` kind into
    ``cache_dir/models/<preset_slug>`` on first use) or any local Hugging Face causal-LM directory.
    Returns ``LoadedPolicy(model, tokenizer, path)``.

    The tokenizer gets left padding, and a pad token (its EOS) if the checkpoint has none.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name in SIZES:
        path = built_model_dir(name, seed=seed, cache_dir=cache_dir, tokenizer=tokenizer)
    else:
        path = Path(name)
        if not (path / "config.json").exists():
            raise ValueError(
                f"model {name!r} is neither a size preset ({', '.join(SIZES)}) nor a directory "
                "holding a Hugging Face checkpoint (config.json); hubs are not reachable, so pass a local path"
            )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype)).to(device)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedPolicy(model, tok, path)


def main_build_model(argv: list[str]) -> int:
    """`python -m experiments build-model --size tiny --tokenizer bpe --out DIR`: an untrained size
    preset as an ordinary HF directory (pass it as model.name=DIR; no warm start is applied to a
    directory). Refuses an existing DIR."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m experiments build-model", description=main_build_model.__doc__)
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--tokenizer", choices=list(TOKENIZERS), default="char",
                        help="char: one token per character | bpe: byte-level BPE with a chat template")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--out", required=True, help="directory to create")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"error: --out {out} already exists; choose a new directory (nothing was written)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.is_dir() else None, prefix=f".tmp-{out.name}-"))
    build_model(args.size, tmp, seed=args.seed, tokenizer=args.tokenizer)
    shutil.move(str(tmp), out)
    print(out)
    return 0

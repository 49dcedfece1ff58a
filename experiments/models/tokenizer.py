"""The character (byte) tokenizer of the size presets: a `PreTrainedTokenizerFast` over 256 bytes
and three special tokens, with Qwen2's pre-tokenizer, saved as an ordinary tokenizer.json."""
from __future__ import annotations

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
    from tokenizers import models

    backend = qwen2_byte_level(models.BPE(vocab=dict(VOCAB), merges=[], unk_token=None, fuse_unk=False,
                                          byte_fallback=False))
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return as_fast_tokenizer(backend, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, bos_token=BOS_TOKEN)


def qwen2_byte_level(model):
    """A `tokenizers.Tokenizer` around ``model`` with Qwen2's normalizer, pre-tokenizer (its split
    regex, digits one by one, then byte-level) and byte-level decoder."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers

    backend = Tokenizer(model)
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    return backend


def as_fast_tokenizer(backend, **special_tokens):
    """``backend`` as a transformers tokenizer: left padding (for generation), no unknown token, no
    clean-up of spaces on decode; ``special_tokens``: pad_token, eos_token, ... as transformers names them."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=None, padding_side="left",
                                   model_max_length=4096, clean_up_tokenization_spaces=False, **special_tokens)

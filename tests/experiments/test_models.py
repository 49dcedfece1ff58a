"""Tokenizer, size presets, saving/loading, response log-probs, the critic, byte counters."""

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from experiments import models
from experiments.models import (
    SIZES,
    ValueModel,
    build_char_tokenizer,
    build_model,
    count_params,
    grad_bytes,
    load_policy,
    logprobs_and_entropy,
    optimizer_state_bytes,
    param_bytes,
    response_logprobs,
)

# printable ASCII + whitespace incl. \t \r \n; the literal special-token strings are matched as specials (HF
# added-token behaviour, tested below), so they are left out here.
ASCII_TEXT = st.text(alphabet=string.printable, max_size=60).filter(
    lambda s: not any(t in s for t in models.SPECIAL_TOKENS)
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_model("tiny", tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_policy(tiny_dir)


# --- tokenizer ---------------------------------------------------------------------------------


@given(ASCII_TEXT)
@settings(max_examples=200, deadline=None)
def test_tokenizer_one_token_per_ascii_char_and_round_trip(text):
    tok = _TOK
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)
    assert ids == [models.token_id_of_char(c) for c in text]
    assert tok.decode(ids) == text


_TOK = build_char_tokenizer()


def test_tokenizer_vocabulary_and_special_tokens():
    tok = build_char_tokenizer()
    assert len(tok) == 259  # pad, eos, bos + 256 bytes
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok("7")["input_ids"] == [3 + ord("7")] == [58]
    assert tok(" \n")["input_ids"] == [3 + 32, 3 + 10]
    # special tokens are dropped on request, kept otherwise; EOS is not added by encoding
    assert tok.decode([58, 1, 0], skip_special_tokens=True) == "7"
    assert tok.decode([58, 1]) == "7<eos>"
    # non-ASCII text still round-trips, as its UTF-8 bytes
    assert tok.decode(tok("é→x")["input_ids"]) == "é→x"
    assert len(tok("é")["input_ids"]) == 2
    assert tok.padding_side == "left"
    # the literal text of a special token encodes as that token (as in every HF tokenizer)
    assert tok("1<eos>")["input_ids"] == [3 + ord("1"), 1]


@given(st.lists(ASCII_TEXT, min_size=1, max_size=4))
@settings(max_examples=50, deadline=None)
def test_saved_tokenizer_loads_with_autotokenizer_identically(texts):
    auto = _AUTO_TOK
    assert auto(texts)["input_ids"] == _TOK(texts)["input_ids"]
    padded = auto(texts, padding=True)["input_ids"]
    assert padded == _TOK(texts, padding=True)["input_ids"]


def _auto_tokenizer():
    import tempfile

    from transformers import AutoTokenizer

    d = tempfile.mkdtemp()
    build_char_tokenizer().save_pretrained(d)
    models.model_config("tiny").save_pretrained(d)  # a qwen2 config makes AutoTokenizer pick Qwen2Tokenizer
    return AutoTokenizer.from_pretrained(d)


_AUTO_TOK = _auto_tokenizer()


def test_auto_tokenizer_has_no_extra_tokens():
    assert len(_AUTO_TOK) == 259
    assert (_AUTO_TOK.pad_token_id, _AUTO_TOK.eos_token_id) == (0, 1)
    assert _AUTO_TOK.padding_side == "left"


# --- sizes and building --------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(SIZES))
def test_param_counts_within_25_percent_of_nominal(size):
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(models.model_config(size))
    n = count_params(model)
    nominal = SIZES[size].nominal_params
    assert 0.75 * nominal <= n <= 1.25 * nominal, (size, n)
    assert model.config.head_dim == 64
    assert model.config.hidden_size == 64 * model.config.num_attention_heads


def test_param_count_tiny_by_hand():
    # hidden 128, 2 layers, 2 q heads, 2 kv heads (head_dim 64), MLP 512, vocab 259, tied embeddings
    h, kv, inter, V = 128, 128, 512, 259
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h  # q (bias), k, v (bias), o (no bias)
    mlp = 3 * h * inter
    per_layer = attn + mlp + 2 * h  # two RMSNorms
    expected = V * h + 2 * per_layer + h  # embeddings (= lm_head), layers, final norm
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        assert count_params(Qwen2ForCausalLM(models.model_config("tiny"))) == expected == 558_848


def test_unknown_size_lists_valid_sizes(tmp_path):
    with pytest.raises(ValueError, match="tiny, small, base, medium, large"):
        build_model("huge", tmp_path)
    with pytest.raises(ValueError, match="neither a size preset"):
        load_policy(tmp_path / "nothing-here")


def test_build_is_deterministic_given_seed(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_model("tiny", tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_model("tiny", tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(build_model("tiny", tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_build_does_not_touch_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("tiny", tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_saved_model_reloads_with_auto_classes_and_same_logits(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

    assert (tiny_dir / "model.safetensors").exists() and (tiny_dir / "tokenizer.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert isinstance(model, Qwen2ForCausalLM)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = Qwen2ForCausalLM(models.model_config("tiny"))
    ids = tok(["12+7=", "3-5="], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(**ids).logits
        b = fresh(**ids).logits
    assert torch.equal(a, b)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied


def test_empty_cache_dir_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "env-cache"))
    assert models.resolve_cache_dir("") == models.resolve_cache_dir(None) == tmp_path / "env-cache"
    assert models.built_model_dir("tiny", cache_dir="") == tmp_path / "env-cache" / "models" / "tiny-seed0"
    monkeypatch.delenv("RLVR_CACHE")
    monkeypatch.chdir(tmp_path)
    assert models.default_cache_dir() == tmp_path / ".cache" / "rlvr"


def test_load_policy_builds_preset_into_cache_once(tmp_path):
    first = load_policy("tiny", cache_dir=tmp_path, seed=1)
    assert first.path == tmp_path / "models" / "tiny-seed1"
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    second = load_policy("tiny", cache_dir=tmp_path, seed=1, dtype="bfloat16")
    assert (second.path / "model.safetensors").stat().st_mtime_ns == mtime
    assert second.model.dtype == torch.bfloat16
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "models").iterdir())
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        load_policy("tiny", cache_dir=tmp_path, dtype="fp8")


# --- response log-probs --------------------------------------------------------------------------


def _random_batch(B=3, P=5, T=4, vocab=259, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, P + T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding of row 1
    ids[1, :2] = 0
    mask[2, -1] = 0  # right padding of row 2's response
    return ids, mask


def _naive(model, ids, mask, T, temperature):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float() / temperature
    logp_all = torch.log_softmax(logits, -1)  # (B, P+T, V) -- the thing response_logprobs avoids
    targets = ids[:, 1:]
    logp = logp_all[:, :-1].gather(-1, targets.unsqueeze(-1)).squeeze(-1)[:, -T:]
    entropy = -(logp_all.exp() * logp_all).sum(-1)[:, -T - 1 : -1]
    return logp, entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_match_naive_log_softmax(tiny, temperature):
    ids, mask = _random_batch()
    with torch.no_grad():
        logp, ent = response_logprobs(tiny.model, ids, mask, 4, temperature=temperature, chunk_size=2)
        ref_logp, ref_ent = _naive(tiny.model, ids, mask, 4, temperature)
    assert logp.shape == ent.shape == (3, 4)
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)


@pytest.mark.parametrize("token_chunk", [1, 3, 4, 50])
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_token_chunked_logprobs_equal_the_whole_head_with_gradients(tiny, token_chunk, entropy_grad):
    """token_chunk runs the output head on a few response positions at a time and recomputes them
    in the backward: values and the gradient of every parameter equal the one-piece pass (fp32)."""
    ids, mask = _random_batch()
    grads = []
    for kw in ({}, {"token_chunk": token_chunk, "chunk_size": 2}):
        tiny.model.zero_grad(set_to_none=True)
        logp, ent = response_logprobs(tiny.model, ids, mask, 4, temperature=0.7, entropy_grad=entropy_grad, **kw)
        (logp * torch.arange(1.0, 5.0) + (ent if entropy_grad else 0)).sum().backward()
        grads.append(([p.grad.clone() for p in tiny.model.parameters()], logp.detach(), ent.detach()))
    (g_whole, logp_whole, ent_whole), (g_chunk, logp_chunk, ent_chunk) = grads
    torch.testing.assert_close(logp_chunk, logp_whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(ent_chunk, ent_whole, atol=1e-6, rtol=0)
    for a, b in zip(g_whole, g_chunk):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the no-grad passes (old log-probs, reference) take the same path
        logp_ng, _ = response_logprobs(tiny.model, ids, mask, 4, temperature=0.7, token_chunk=token_chunk)
    torch.testing.assert_close(logp_ng, logp_whole, atol=1e-6, rtol=0)
    tiny.model.zero_grad(set_to_none=True)


def test_response_logprobs_invariant_to_extra_left_padding(tiny):
    ids, mask = _random_batch()
    pad = 3
    ids_padded = torch.cat([torch.zeros(3, pad, dtype=torch.long), ids], 1)
    mask_padded = torch.cat([torch.zeros(3, pad, dtype=torch.long), mask], 1)
    with torch.no_grad():
        a = response_logprobs(tiny.model, ids, mask, 4)
        b = response_logprobs(tiny.model, ids_padded, mask_padded, 4)
    for x, y in zip(a, b):
        torch.testing.assert_close(x[mask[:, -4:].bool()], y[mask[:, -4:].bool()], atol=1e-5, rtol=0)


def test_response_logprobs_gradients_flow_and_bad_args(tiny):
    ids, mask = _random_batch()
    logp, entropy = response_logprobs(tiny.model, ids, mask, 4)
    assert logp.requires_grad and not entropy.requires_grad  # the entropy is a detached diagnostic
    logp.sum().backward()
    assert tiny.model.model.embed_tokens.weight.grad is not None
    tiny.model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        response_logprobs(tiny.model, ids, mask, 4, temperature=0)
    with pytest.raises(ValueError, match="response_len must be in"):
        response_logprobs(tiny.model, ids, mask, ids.shape[1])


def test_logprobs_and_entropy_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    logp, ent = logprobs_and_entropy(logits, torch.tensor([1]))
    torch.testing.assert_close(logp, torch.log(torch.tensor([0.25])))
    torch.testing.assert_close(ent, torch.tensor([1.5 * torch.log(torch.tensor(2.0)).item()]))
    # temperature 2 on logits [0, 2 ln 3] -> probs proportional to [1, 3]
    logp, _ = logprobs_and_entropy(torch.tensor([[0.0, 2 * torch.log(torch.tensor(3.0)).item()]]), torch.tensor([0]), 2.0)
    torch.testing.assert_close(logp, torch.log(torch.tensor([0.25])))


# --- critic --------------------------------------------------------------------------------------


def test_value_model_shape_init_and_convention(tiny_dir, tiny):
    critic = ValueModel.from_policy(tiny_dir)
    policy_trunk = tiny.model.model.state_dict()
    trunk = critic.trunk.state_dict()
    assert trunk.keys() == policy_trunk.keys()
    assert all(torch.equal(trunk[k], policy_trunk[k]) for k in trunk)
    ids, mask = _random_batch()
    values = critic.values(ids, mask, 4)
    assert values.shape == (3, 4)
    assert torch.equal(values, torch.zeros(3, 4))  # zero-initialised head
    # value at response position t is read at sequence position P-1+t (the state before token t)
    with torch.no_grad():
        critic.head.weight.normal_()
        values = critic.values(ids, mask, 4)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = critic.trunk(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        expected = critic.head(hidden[:, 4:8]).squeeze(-1)  # P = 5: positions 4..7 precede tokens 5..8
    torch.testing.assert_close(values, expected)
    # changing the last token cannot change any value (no value looks at its own token)
    ids2 = ids.clone()
    ids2[:, -1] = 7
    with torch.no_grad():
        torch.testing.assert_close(critic.values(ids2, mask, 4), values)


def test_value_model_from_loaded_policy_is_a_copy_and_round_trips(tiny, tmp_path):
    critic = ValueModel.from_policy(tiny.model)
    with torch.no_grad():
        critic.trunk.norm.weight.add_(1.0)
        critic.head.bias.fill_(0.5)
    assert not torch.equal(critic.trunk.norm.weight, tiny.model.model.norm.weight)  # not shared
    critic.save_pretrained(tmp_path / "critic")
    loaded = ValueModel.from_pretrained(tmp_path / "critic")
    ids, mask = _random_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.values(ids, mask, 4), critic.values(ids, mask, 4))


# --- byte counters -------------------------------------------------------------------------------


def test_byte_counters_by_hand_linear_and_adam():
    layer = nn.Linear(10, 3)  # 30 weights + 3 biases, float32
    assert param_bytes(layer) == 33 * 4 == 132
    assert grad_bytes(layer) == 0
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    assert optimizer_state_bytes(opt) == 0
    layer(torch.randn(2, 10)).sum().backward()
    assert grad_bytes(layer) == 132
    opt.step()
    # exp_avg + exp_avg_sq per parameter (2 * 33 floats) + one float32 scalar "step" per tensor (2)
    assert optimizer_state_bytes(opt) == 2 * 132 + 2 * 4 == 272
    assert param_bytes(layer.to(torch.bfloat16)) == 66


def test_param_bytes_counts_tied_weights_once(tiny):
    n = count_params(tiny.model)
    assert param_bytes(tiny.model) == 4 * n == 4 * 558_848


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir):
    """transformers' checkpointing (enabled as the trainer does, in train mode) recomputes the
    activations: the same log-probs and gradients as storing them, to float32 rounding."""
    from experiments.models.training import enable_gradient_checkpointing

    ids, mask = _random_batch()
    grads = []
    for checkpointing in (False, True):
        model = load_policy(tiny_dir).model
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        logp, _ = response_logprobs(model, ids, mask, 4)
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        assert model.is_gradient_checkpointing == checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_gradient_checkpointing_refuses_a_model_with_dropout(tiny_dir):
    from experiments.models.training import enable_gradient_checkpointing

    model = load_policy(tiny_dir).model
    model.config.attention_dropout = 0.1
    with pytest.raises(ValueError, match="needs a model without dropout; its config has attention_dropout=0.1"):
        enable_gradient_checkpointing(model)


def test_bf16_autocast_computes_in_bf16_and_returns_fp32_logprobs(tiny):
    """bf16-mixed: fp32 master weights, bf16 matmuls under autocast, float32 log-probs out, close
    to the fp32 ones (bf16 keeps ~3 significant digits)."""
    ids, mask = _random_batch()
    with torch.no_grad():
        exact, _ = response_logprobs(tiny.model, ids, mask, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed, _ = response_logprobs(tiny.model, ids, mask, 4)
    assert mixed.dtype == torch.float32 and all(p.dtype == torch.float32 for p in tiny.model.parameters())
    assert not torch.equal(mixed, exact)                  # the compute really was bf16
    torch.testing.assert_close(mixed, exact, atol=0.1, rtol=0.05)

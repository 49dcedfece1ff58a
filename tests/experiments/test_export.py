"""RUN/final/ and `python -m experiments export`: an ordinary HF directory that transformers and
vLLM load, giving the trained policy's log-probs."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.models import load_policy, response_logprobs
from experiments.rollout import Sampling, make_rollout
from tests.conftest import run_cli
from tests.experiments.test_train import FAST


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    # an untrained policy earns no reward; the entropy bonus still moves it, so final != start
    run_cli("train", "algo=grpo", "algo.entropy_coef=0.5", "steps=2", "lr=1e-2", f"out={out}", *FAST)
    return out


def _logp(model, tokenizer):
    batch = tokenizer(["3+4+5=12", "1+1+1=3"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return response_logprobs(model, batch["input_ids"], batch["attention_mask"], 3)[0]


def test_completed_run_writes_final_and_it_loads_with_auto_classes(trained):
    final = trained / "final"
    info = json.loads((final / "export.json").read_text())
    assert info["step"] == 2
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    tokenizer.padding_side = "left"
    state = torch.load(trained / "checkpoint" / "state.pt", weights_only=True)
    trained_policy = load_policy(info["policy_dir"])
    trained_policy.model.load_state_dict(state["policy"])
    start = load_policy(info["policy_dir"])
    exported, expected = _logp(model, tokenizer), _logp(trained_policy.model, tokenizer)
    torch.testing.assert_close(exported, expected, atol=1e-6, rtol=0)        # the trained weights ...
    assert not torch.allclose(exported, _logp(start.model, tokenizer), atol=1e-4)  # ... not the start's


def test_export_command_writes_the_last_checkpoint_and_refuses_what_it_cannot(trained, tmp_path):
    out = tmp_path / "exported"
    assert run_cli("export", str(trained), "--out", str(out)).stdout.strip() == str(out)
    a = AutoModelForCausalLM.from_pretrained(out).state_dict()
    b = AutoModelForCausalLM.from_pretrained(trained / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    result = run_cli("export", str(tmp_path), check=False)
    assert result.returncode == 2 and "config.yaml does not exist" in result.stderr


@pytest.mark.vllm
@pytest.mark.slow
def test_final_loads_in_vllm_with_the_policys_logprobs(trained):
    pytest.importorskip("vllm")
    final = trained / "final"
    engine = make_rollout("vllm", model_dir=final, gpu_memory_utilization=0.05, max_model_len=64,
                          kv_cache_gib=0.5, seed=0)
    try:
        out = engine.generate(["3+4+5=", "2+2+2="], 4, Sampling(max_new_tokens=4, temperature=1.0, seed=0))
    finally:
        engine.close()
    model = AutoModelForCausalLM.from_pretrained(final)
    with torch.no_grad():
        logp, _ = response_logprobs(model, out.input_ids, out.attention_mask, out.response_len)
    assert ((logp - out.sampler_logp) * out.response_mask).abs().max().item() < 1e-4

"""LoRA (peft): adapters train, base weights stay, the KL reference is the base model with the
adapters disabled (no second copy), and RUN/final/ holds the merged policy."""
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.models import load_policy, response_logprobs
from experiments.models.lora import add_lora
from tests.conftest import run_cli
from tests.experiments.test_train import FAST, rows

LORA = ["model.lora_rank=4", "algo.entropy_coef=0.5", "lr=1e-2"]  # the bonus moves an untrained policy


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_lora_trains_adapters_only_and_the_reference_is_the_base_model(tmp_path, algo):
    out = tmp_path / algo
    run_cli("train", f"algo={algo}", "steps=2", *LORA, f"out={out}", *FAST)
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    start = load_file(_start_weights(out))
    policy = state["policy"]
    lora = {k: v for k, v in policy.items() if "lora_" in k}
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in policy.items()
            if "lora_" not in k}
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # adapters moved
    assert all(torch.equal(base[k], start[k]) for k in start)                        # the base did not
    metrics = rows(out)
    # the reference shares the policy's bytes: no reference model, and at step 1 (adapters still
    # zero: LoRA's B starts at 0) the policy equals its base, so the KL to the reference is exactly 0
    assert all(r["mem_reference_params_bytes"] == 0 for r in metrics[1:])
    assert metrics[1]["kl_ref_mean"] == 0.0 and metrics[2]["kl_ref_mean"] > 0
    trained = list(lora.values())
    if algo == "ppo":
        trained += [v for k, v in state["critic"].items() if "lora_" in k or k.startswith("head.")]
    # AdamW holds two moments per trained tensor and a float32 step count: only adapters (and the head)
    expected = sum(2 * v.numel() * v.element_size() + 4 for v in trained)
    assert metrics[-1]["mem_optimizer_bytes"] == expected


def _start_weights(out):
    import yaml

    policy_dir = yaml.safe_load((out / "config.yaml").read_text())["meta"]["policy_dir"]
    return f"{policy_dir}/model.safetensors"


def test_final_holds_the_merged_lora_policy(tmp_path):
    out = tmp_path / "run"
    run_cli("train", "algo=grpo", "steps=2", *LORA, f"out={out}", *FAST)
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("lora" in k for k in final.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    tokenizer.padding_side = "left"
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    peft_policy = add_lora(load_policy(_start_weights(out).rsplit("/", 1)[0]).model, rank=4, alpha=16.0, dropout=0.0,
                           targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", task_type="CAUSAL_LM")
    peft_policy.load_state_dict(state["policy"])
    batch = tokenizer(["3+4+5=12", "1+1+1=3"], return_tensors="pt", padding=True)
    with torch.no_grad():
        merged = response_logprobs(final, batch["input_ids"], batch["attention_mask"], 3)[0]
        adapters = response_logprobs(peft_policy, batch["input_ids"], batch["attention_mask"], 3)[0]
    torch.testing.assert_close(merged, adapters, atol=1e-5, rtol=0)
    exported = tmp_path / "exported"
    run_cli("export", str(out), "--out", str(exported))
    again = AutoModelForCausalLM.from_pretrained(exported).state_dict()
    assert all(torch.allclose(again[k], v, atol=1e-6) for k, v in final.state_dict().items())

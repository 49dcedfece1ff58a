"""Warm-start: the SFT batch and loss, the cache, determinism, and (slow) reaching the band."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from experiments import warmstart as ws
from experiments.models import build_char_tokenizer, load_policy, token_id_of_char
from experiments.tasks import Example, TaskConfig, make_task
from experiments.warmstart import greedy_accuracy, sft_batch, sft_loss, warmstart, warmstart_dir

EOS, PAD = 1, 0


def ids(text):
    return [token_id_of_char(c) for c in text]


def test_sft_batch_by_hand():
    examples = [Example("3+5=", "8", "8", {}), Example("3-5=", "-2", "-2", {})]
    input_ids, attention_mask, labels = sft_batch(build_char_tokenizer(), examples)
    assert input_ids.tolist() == [ids("3+5=8") + [EOS, PAD], ids("3-5=-2") + [EOS]]
    assert attention_mask.tolist() == [[1] * 6 + [0], [1] * 7]
    assert labels.tolist() == [[-100] * 4 + ids("8") + [EOS, -100], [-100] * 4 + ids("-2") + [EOS]]


def test_sft_loss_is_mean_cross_entropy_on_target_tokens(tmp_path):
    policy = load_policy("tiny", cache_dir=tmp_path)
    examples = [Example("3+5=", "8", "8", {}), Example("3-5=", "-2", "-2", {})]
    batch = sft_batch(policy.tokenizer, examples)
    with torch.no_grad():
        loss = sft_loss(policy.model, *batch)
        logp = torch.log_softmax(policy.model(input_ids=batch[0], attention_mask=batch[1]).logits, -1)
    # labelled positions: row 0 predicts "8", EOS from positions 3, 4; row 1 "-", "2", EOS from 3, 4, 5
    terms = [logp[0, 3, ids("8")[0]], logp[0, 4, EOS], logp[1, 3, ids("-")[0]], logp[1, 4, ids("2")[0]], logp[1, 5, EOS]]
    torch.testing.assert_close(loss, -torch.stack(terms).mean())


ARGS = dict(steps=5, lr=3e-3, batch_size=16, seed=0)


def test_cache_dir_is_keyed_by_what_changes_the_result(tmp_path):
    cfg = TaskConfig()
    path = warmstart_dir(cfg, "tiny", cache_dir=tmp_path, **ARGS)
    assert path.parent == tmp_path / "warmstart" and path.name.startswith("arithmetic-tiny-")
    assert warmstart_dir(make_task(cfg), "tiny", cache_dir=tmp_path, **ARGS) == path  # Task or TaskConfig
    same = dataclasses.replace(cfg, verify_workers=7, verify_timeout_s=9.0, format_reward=0.5)
    assert warmstart_dir(same, "tiny", cache_dir=tmp_path, **ARGS) == path
    for change in [dict(seed=1), dict(steps=6), dict(lr=1e-3), dict(batch_size=8)]:
        assert warmstart_dir(cfg, "tiny", cache_dir=tmp_path, **{**ARGS, **change}) != path
    assert warmstart_dir(cfg, "tiny", cache_dir=tmp_path, init_seed=1, **ARGS) != path
    assert warmstart_dir(cfg, "tiny", cache_dir=tmp_path, target_band=(0.2, 0.5), **ARGS) != path
    assert warmstart_dir(dataclasses.replace(cfg, digits=2), "tiny", cache_dir=tmp_path, **ARGS) != path
    assert warmstart_dir(cfg, "small", cache_dir=tmp_path, **ARGS) != path
    chained = dataclasses.replace(cfg, scratchpad=True)  # a field added later: in the key once set
    mixed = dataclasses.replace(chained, scratchpad_frac=0.5)
    assert len({path, warmstart_dir(chained, "tiny", cache_dir=tmp_path, **ARGS),
                warmstart_dir(mixed, "tiny", cache_dir=tmp_path, **ARGS)}) == 3
    key = ws.cache_key(chained, "tiny", init_seed=0, target_band=(0.1, 0.5), **ARGS)
    assert key["task"]["scratchpad"] is True and "scratchpad_frac" not in key["task"]


def test_warmstart_is_cached_deterministic_and_records_accuracy(tmp_path, monkeypatch):
    band = (0.99, 1.0)  # out of reach in 5 steps: trains all of them, then warns
    with pytest.warns(UserWarning, match="outside the band"):
        a = warmstart(TaskConfig(), "tiny", cache_dir=tmp_path / "one", target_band=band, eval_every=2, **ARGS)
    info = json.loads((a / "warmstart.json").read_text())
    assert info["steps"] == 5 and info["in_band"] is False
    assert [h["step"] for h in info["history"] if "val_accuracy" in h] == [0, 2, 4, 5]
    assert info["key"]["task"]["name"] == "arithmetic" and info["key"]["steps"] == 5
    # the recorded accuracies are the saved model's greedy accuracy on the val split (the
    # stopping rule's) and on the eval split (measured once, never used to stop)
    policy = load_policy(a)
    task = make_task(TaskConfig())
    for split in ("val", "eval"):
        acc = greedy_accuracy(policy.model, policy.tokenizer, task, task.examples(split),
                              max_new_tokens=info["max_new_tokens"])
        assert acc == info[f"{split}_accuracy"], split
    assert info["history"][-1]["val_accuracy"] == info["val_accuracy"]
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".tmp")]  # no half-written leftovers

    # same key in another cache: bit-identical weights
    with pytest.warns(UserWarning):
        b = warmstart(TaskConfig(), "tiny", cache_dir=tmp_path / "two", target_band=band, eval_every=2, **ARGS)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # second call with the same key: the cached path, no training
    def no_training(*args, **kwargs):
        raise AssertionError("warm-start retrained a cached result")

    monkeypatch.setattr(ws, "_train", no_training)
    assert warmstart(TaskConfig(), "tiny", cache_dir=tmp_path / "one", target_band=band, eval_every=2, **ARGS) == a


def test_already_in_band_means_no_training(tmp_path):
    path = warmstart(TaskConfig(), "tiny", cache_dir=tmp_path, target_band=(0.0, 1.0), **ARGS)
    info = json.loads((path / "warmstart.json").read_text())
    assert info["steps"] == 0 and info["in_band"] is True
    start = load_file(tmp_path / "models" / "tiny-seed0" / "model.safetensors")
    saved = load_file(path / "model.safetensors")
    assert all(torch.equal(start[k], saved[k]) for k in start)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="target_band"):
        warmstart(TaskConfig(), "tiny", cache_dir=tmp_path, target_band=(0.5, 0.1))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        warmstart(TaskConfig(), "tiny", cache_dir=tmp_path, batch_size=0)
    with pytest.raises(TypeError, match="TaskConfig or a Task"):
        warmstart("arithmetic", "tiny", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="valid names"):
        warmstart(TaskConfig(name="chess"), "tiny", cache_dir=tmp_path)


@pytest.mark.slow
def test_default_arithmetic_on_tiny_reaches_the_band(tmp_path):
    path = warmstart(TaskConfig(), "tiny", cache_dir=tmp_path, steps=3000, lr=1e-3, batch_size=64, seed=0)
    info = json.loads((path / "warmstart.json").read_text())
    assert info["in_band"] is True
    assert 0.10 <= info["val_accuracy"] <= 0.50   # the band is the stopping rule's, on val
    assert 0 < info["steps"] < 3000
    assert not math.isnan(info["eval_accuracy"])

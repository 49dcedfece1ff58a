"""Warm-start: supervised fine-tuning until the policy is right 10-50 % of the time, so RL has signal.

A randomly initialised size preset never samples a correct answer, so every group is degenerate
and no RL algorithm learns. ``warmstart`` trains the policy with next-token loss on
``prompt + target + EOS`` (loss on the target and EOS only) from the task's train split, measures
greedy accuracy on the *validation* split every ``eval_every`` steps with the task's own
``check``, and stops as soon as that accuracy lies inside ``target_band``. The stopping rule
never sees the eval split, so the eval accuracy that RL later reports at step 0 is an unselected
measurement (it is recorded too, as ``eval_accuracy``, and may lie outside the band). If one interval jumps over the band,
training goes back to the last state below the band and continues from there, evaluating after
every step.

The result is cached: a directory under ``cache_dir/warmstart`` named by a hash of everything that
determines it (task config, model, seeds, steps, lr, batch size, band), written to a temporary
directory and renamed into place under a file lock, so concurrent runs train it once and a killed
run leaves no half-written cache. ``warmstart.json`` in it records the measured accuracy.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.models import file_lock, load_policy, publish_dir_atomically, resolve_cache_dir
from experiments.prompts import PromptTemplate
from experiments.rollout import HFRollout, Sampling

RECIPE_VERSION = 2  # bump when the training recipe changes, to invalidate old caches (the lr is in the key)
INFO_FILE = "warmstart.json"
# TaskConfig fields that change neither the examples nor the check (excluded from the cache key)
_TASK_FIELDS_NOT_IN_KEY = ("format_reward", "verify_timeout_s", "verify_workers")
# TaskConfig fields added after RECIPE_VERSION 2, with the default that reproduces the earlier examples
_TASK_FIELDS_ADDED_LATER = {"template": "plain", "system_prompt": "", "scratchpad": False,
                           "scratchpad_frac": 1.0}


def sft_batch(tokenizer, examples, template=None) -> tuple[Tensor, Tensor, Tensor]:
    """Tokenise ``prompt + target + EOS`` for each example, right-padded; the prompt under
    ``template`` (a ``PromptTemplate``, default plain), as rollouts encode it.

    Returns input_ids (B, L), attention_mask (B, L) and labels (B, L): the token id at target and
    EOS positions, -100 on prompt and padding positions (no loss there).
    """
    template = template or PromptTemplate()
    rows = []
    for ex in examples:
        prompt = template.encode(tokenizer, ex.prompt)
        target = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    L = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (L - len(ids)) for ids, _ in rows])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (L - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (L - len(lab)) for _, lab in rows])
    return input_ids, attention_mask, labels


def sft_loss(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the labelled positions (labels != -100)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, L, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def greedy_accuracy(model, tokenizer, task, examples, *, max_new_tokens: int, batch_size: int = 256) -> float:
    """Share of ``examples`` whose greedy completion the task's ``check`` scores as correct (>= 0.5),
    prompted under the task's template."""
    rollout = HFRollout(model, tokenizer, batch_size=batch_size, template=PromptTemplate.of(task.cfg))
    out = rollout.generate([ex.prompt for ex in examples], 1, Sampling(max_new_tokens=max_new_tokens, temperature=0))
    return sum(task.check(text, ex) >= 0.5 for text, ex in zip(out.texts, examples)) / len(examples)


def _task_and_config(task):
    from experiments.tasks import Task, TaskConfig, make_task

    if isinstance(task, TaskConfig):
        return make_task(task), task
    if isinstance(task, Task):
        return task, task.cfg
    raise TypeError(f"task must be a TaskConfig or a Task, got {type(task).__name__}")


def cache_key(task_cfg, model_name, *, init_seed, seed, steps, lr, batch_size, target_band,
              tokenizer: str = "char") -> dict:
    """Everything that determines a warm-start's result (its hash names the cache directory)."""
    task_fields = {k: v for k, v in dataclasses.asdict(task_cfg).items() if k not in _TASK_FIELDS_NOT_IN_KEY}
    for key, default in _TASK_FIELDS_ADDED_LATER.items():  # at their defaults, keys (and caches) stay as before
        if task_fields.get(key, default) == default:
            task_fields.pop(key, None)
    return {
        "recipe": RECIPE_VERSION,
        "task": task_fields,
        "model": str(model_name) if tokenizer == "char" else f"{model_name}-{tokenizer}",
        "init_seed": init_seed,
        "seed": seed,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "target_band": list(target_band),
    }


def warmstart_dir(task, model_name, *, cache_dir=None, steps, lr, batch_size, seed, init_seed=0,
                  target_band=(0.10, 0.50), tokenizer: str = "char") -> Path:
    """Where ``warmstart`` with these arguments stores (or would store) its result."""
    _, task_cfg = _task_and_config(task)
    key = cache_key(task_cfg, model_name, init_seed=init_seed, seed=seed, steps=steps, lr=lr,
                    batch_size=batch_size, target_band=target_band, tokenizer=tokenizer)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = Path(str(model_name)).name.replace(" ", "_") + ("" if tokenizer == "char" else f"-{tokenizer}")
    task_slug = re.sub(r"[^A-Za-z0-9_.-]", "_", task_cfg.name)  # a user task's module:Class path
    return resolve_cache_dir(cache_dir) / "warmstart" / f"{task_slug}-{slug}-{digest}"


def warmstart(
    task,
    model_name: str,
    *,
    cache_dir=None,
    steps: int = 3000,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    init_seed: int = 0,
    target_band: tuple[float, float] = (0.10, 0.50),
    eval_every: int = 10,
    eval_size: int = 200,
    device: str = "cpu",
    tokenizer: str = "char",
) -> Path:
    """Supervised warm-start of ``model_name`` (size preset or HF dir) on ``task`` (a TaskConfig or Task).

    Trains at most ``steps`` AdamW steps (constant ``lr``, batches of ``batch_size`` train examples
    in a seeded order) and stops early once greedy validation accuracy (first ``eval_size`` val
    examples) is within ``target_band`` = (low, high) inclusive; checked before training and every
    ``eval_every`` steps. Returns the HF directory of the result, cached (a second call with the
    same arguments returns it without training). ``cache_dir`` None or "" means
    ``models.default_cache_dir()``. If the band is never reached, the last model is
    saved anyway, ``warmstart.json`` says ``"in_band": false`` and a warning is issued.
    ``warmstart.json`` records ``val_accuracy`` (the stopping rule's) and ``eval_accuracy``
    (the first ``eval_size`` eval examples, measured once at the end). ``tokenizer``: the size
    preset's tokenizer kind ("char" or "bpe"); prompts are encoded under the task's template.
    """
    low, high = target_band
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"target_band must be (low, high) with 0 <= low <= high <= 1, got {target_band}")
    if steps < 0 or batch_size < 1 or eval_every < 1 or lr <= 0:
        raise ValueError(f"need steps >= 0, batch_size >= 1, eval_every >= 1, lr > 0; got "
                         f"steps={steps}, batch_size={batch_size}, eval_every={eval_every}, lr={lr}")
    task_obj, task_cfg = _task_and_config(task)
    final = warmstart_dir(task_cfg, model_name, cache_dir=cache_dir, steps=steps, lr=lr, batch_size=batch_size,
                          seed=seed, init_seed=init_seed, target_band=target_band, tokenizer=tokenizer)
    if (final / INFO_FILE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if (final / INFO_FILE).exists():  # another process finished it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
        info = _train(task_obj, model_name, tmp, cache_dir=cache_dir, steps=steps, lr=lr, batch_size=batch_size,
                      seed=seed, init_seed=init_seed, band=(low, high), eval_every=eval_every,
                      eval_size=eval_size, device=device, tokenizer=tokenizer)
        info["key"] = cache_key(task_cfg, model_name, init_seed=init_seed, seed=seed, steps=steps, lr=lr,
                                batch_size=batch_size, target_band=target_band, tokenizer=tokenizer)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        publish_dir_atomically(tmp, final)
    if not info["in_band"]:
        warnings.warn(f"warm-start of {model_name} on {task_cfg.name} ended at validation accuracy "
                      f"{info['val_accuracy']:.3f}, outside the band {target_band} after {info['steps']} steps; "
                      "RL may get no signal (raise model.warmstart_steps or change the lr)")
    return final


def _train(task, model_name, out_dir: Path, *, cache_dir, steps, lr, batch_size, seed, init_seed, band,
           eval_every, eval_size, device, tokenizer="char") -> dict:
    low, high = band
    started = time.time()
    policy = load_policy(model_name, dtype=torch.float32, device=device, seed=init_seed, cache_dir=cache_dir,
                         tokenizer=tokenizer)
    model, tokenizer = policy.model, policy.tokenizer
    template = PromptTemplate.of(task.cfg)
    template.check(tokenizer, str(model_name))
    train = task.examples("train")
    val = task.examples("val")[:eval_size]
    evals = task.examples("eval")[:eval_size]
    if not train or not val or not evals:
        raise ValueError(f"task {task.name} has {len(train)} train, {len(val)} val and {len(evals)} eval examples; "
                         "the warm-start needs all three (raise task.val_fraction or task.n_eval)")
    longest = max(len(tokenizer(ex.target, add_special_tokens=False)["input_ids"]) for ex in train + val + evals)
    max_new_tokens = longest + 2  # room for the EOS and one token of slack

    def accuracy(examples=val) -> float:
        return greedy_accuracy(model, tokenizer, task, examples, max_new_tokens=max_new_tokens)

    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        acc = accuracy()
        history.append({"step": 0, "val_accuracy": acc})
        below = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())) if acc < low else None
        step, perm, cursor, interval = 0, torch.randperm(len(train), generator=order), 0, eval_every
        while not low <= acc <= high and step < steps:
            model.train()
            for _ in range(min(interval, steps - step)):
                if cursor + batch_size > len(train):
                    perm, cursor = torch.randperm(len(train), generator=order), 0
                batch = [train[i] for i in perm[cursor : cursor + batch_size].tolist()]
                cursor += batch_size
                loss = sft_loss(model, *sft_batch(tokenizer, batch, template))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                step += 1
            acc = accuracy()
            history.append({"step": step, "val_accuracy": acc, "loss": loss.item()})
            if acc < low:
                below = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
            elif acc > high and below is not None and step < steps:
                # jumped over the band: return to the last state below it and evaluate after every step
                # (the following batches differ, so the path differs); these steps count toward `steps`
                model.load_state_dict(below[0])
                optimizer.load_state_dict(below[1])
                interval = 1
                acc = math.nan  # not in band: keep going
                history.append({"step": step, "restored_below_band": True})
    if math.isnan(acc):
        acc = accuracy()
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "val_accuracy": acc,
        "eval_accuracy": accuracy(evals),
        "in_band": bool(low <= acc <= high),
        "steps": step,
        "val_examples": len(val),
        "eval_examples": len(evals),
        "train_examples": len(train),
        "max_new_tokens": max_new_tokens,
        "seconds": round(time.time() - started, 2),
        "history": history,
    }


def resolve_policy_dir(cfg, task) -> tuple[Path, dict]:
    """The HF directory a run (a TrainConfig) starts from: a local path as given, or a size preset
    built (and, with model.warmstart, supervised-trained into the accuracy band) in the cache;
    with the warm start's record (warmstart.json) or {}."""
    from experiments.models import SIZES, built_model_dir

    model = cfg.model
    if model.name not in SIZES:
        return Path(model.name), {}
    if not model.warmstart:
        return built_model_dir(model.name, seed=model.init_seed, cache_dir=cfg.cache_dir, tokenizer=model.tokenizer), {}
    low, high = (float(v) for v in model.warmstart_band.split(","))
    path = Path(warmstart(
        task, model.name, cache_dir=cfg.cache_dir, steps=model.warmstart_steps,
        lr=model.warmstart_lr, seed=0, init_seed=model.init_seed, target_band=(low, high), tokenizer=model.tokenizer,
    ))
    info_file = path / "warmstart.json"
    return path, (json.loads(info_file.read_text()) if info_file.exists() else {})

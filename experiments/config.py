"""The run configuration: typed dataclasses with a help text per field, parsed from `key=value`.

    python -m experiments train algo=grpo task.name=arithmetic model.name=tiny seed=0 steps=60 out=runs/x
    python -m experiments train algo=grpo algo.scale=none          # one-knob ablation

`algo=NAME` picks a preset from `algos`; `algo.KNOB=VALUE` overrides one of its knobs. Unknown
keys and bad values fail before any work, naming the key and the valid values.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from algos import AlgoConfig, knob_help, parse_knob, preset
from algos.config import CHOICES as ALGO_CHOICES
from algos.config import coerce as _coerce
from experiments.schedule import LR_SCHEDULES
from experiments.tasks import TaskConfig

ROLLOUT_BACKENDS = ("hf", "vllm")
DEVICES = ("auto", "cpu", "cuda")
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "bf16-mixed": "float32"}


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    name: str = _f("tiny", "a size preset (tiny ~0.5M, small ~5M, base ~30M, medium ~120M, large ~0.5B params, "
                           "built from a Qwen2-style config) or a local HF causal-LM directory")
    warmstart: bool = _f(True, "size presets: first train on supervised examples of the task until eval accuracy "
                               "enters warmstart_band, so RL has signal (cached on disk)")
    warmstart_steps: int = _f(3000, "max supervised steps of the warm-start")
    warmstart_lr: float = _f(1e-3, "learning rate of the warm-start (at 3e-3 the tiny model reaches the band by "
                                   "memorising: held-out 0.15 and little RL gain; at 1e-3: 0.32, and GRPO adds ~0.28 in 100 steps)")
    warmstart_band: str = _f("0.25,0.5", "target greedy eval accuracy band 'low,high' where warm-start stops")
    init_seed: int = _f(0, "seed of the size preset's random initialisation")
    tokenizer: str = _f("char", "size presets: char (one token per character, 259 tokens) | bpe (a byte-level BPE "
                                "trained on task text, ChatML specials and a chat template: for task.template=chat)")
    precision: str = _f("fp32", "fp32 | bf16 | fp16 (weights, gradients and AdamW state in that dtype) | "
                                "bf16-mixed (fp32 master weights and optimizer state, bf16 compute under autocast)")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass (transformers' own "
                                             "gradient checkpointing), policy and critic trunk")
    lora_rank: int = _f(0, "LoRA (peft) adapters of this rank on the policy and the critic's trunk; 0: full "
                           "fine-tuning. With kl_coef > 0 the reference is the base model (adapters disabled)")
    lora_alpha: float = _f(16.0, "LoRA scaling alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout (0 keeps old_logp = logp at ratio 1)")
    lora_target_modules: str = _f("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                  "comma-separated module names, or all-linear")

    @property
    def dtype(self) -> str:
        """The parameters' dtype: float32 for fp32 and bf16-mixed (master weights), else bf16/fp16."""
        return PRECISION_DTYPES[self.precision]

    @property
    def autocast_dtype(self) -> str | None:
        """The compute dtype under autocast (bf16-mixed), None without autocast."""
        return "bfloat16" if self.precision == "bf16-mixed" else None


@dataclass
class RolloutConfig:
    backend: str = _f("hf", "hf (transformers generate) | vllm (in-process vllm.LLM, weights synced in place)")
    max_new_tokens: int = _f(8, "generation budget per response (also Dr.GRPO's L)")
    temperature: float = _f(1.0, "sampling temperature of training rollouts (eval is greedy)")
    top_p: float = _f(1.0, "nucleus sampling")
    vllm_gpu_memory_utilization: float = _f(0.3, "vLLM: share of GPU memory for weights+KV cache (GPU only)")
    vllm_kv_cache_gib: float = _f(1.0, "vLLM on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    vllm_max_model_len: int = _f(256, "vLLM: max prompt+response tokens")
    vllm_sleep: bool = _f(True, "vLLM on GPU: free the KV cache during the update (sleep/wake, colocated)")


@dataclass
class LogConfig:
    """What a run writes beside metrics.jsonl (none of it changes what the run computes)."""

    samples_per_step: int = _f(4, "rollouts per step kept in samples.jsonl (prompt, response, reward, correct), "
                                  "and greedy eval completions per eval; 0: none")
    tensorboard: bool = _f(False, "also write every metric to RUN/tb/ (TensorBoard event files; pip install '.[tensorboard]')")
    wandb: str = _f("", "also log every metric to this Weights & Biases project (WANDB_MODE=offline works "
                        "without a network; pip install '.[wandb]'); '' = off")


@dataclass
class TrainConfig:
    out: str = _f("", "run folder (default runs/<name>); re-running on an existing folder resumes it")
    name: str = _f("", "run name (default <algo>-<task>-<model>-s<seed>)")
    seed: int = _f(0, "seed of prompt order, sampling and minibatch order")
    steps: int = _f(100, "training steps (one rollout batch each)")
    rollouts_per_step: int = _f(256, "rollouts per step = prompts x algo.group_size (GRPO: 32 x 8; PPO: 256 x 1)")
    lr: float = _f(2e-4, "policy learning rate (AdamW); tiny-model default, papers use ~1e-6 at 7B")
    critic_lr: float = _f(1e-3, "critic learning rate (PPO)")
    micro_batch_size: int = _f(0, "rollouts per forward/backward (gradient accumulation; also the chunk of the "
                                  "no-grad passes); one optimizer step per minibatch whatever its value; 0: whole minibatch")
    logprob_token_chunk: int = _f(0, "response positions per output-head chunk in every log-prob pass (recomputed in "
                                     "the backward): at most micro-batch x this x vocab logits at once; 0: whole "
                                     "response (fine for small vocabularies; ~512 for Qwen's 152K)")
    lr_schedule: str = _f("constant", "constant | linear | cosine decay to 0 at the last step (policy and critic)")
    lr_warmup_steps: int = _f(0, "linear lr warm-up over the first N steps")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    grad_clip: float = _f(1.0, "max global grad norm")
    eval_every: int = _f(10, "greedy eval on the held-out split every N steps (and at steps 0 and the last)")
    eval_size: int = _f(200, "eval examples used (at most task.n_eval)")
    eval_samples: int = _f(0, "pass@k: N sampled completions per eval problem at eval_temperature (0: greedy only)")
    eval_temperature: float = _f(1.0, "sampling temperature of the pass@k completions")
    eval_pass_k: str = _f("1,4,8", "k values of pass@k (each <= eval_samples), logged as eval_pass@k")
    checkpoint_every: int = _f(10, "write checkpoint/ every N steps (and at the last)")
    max_nonfinite: int = _f(3, "stop with state=failed after N consecutive non-finite losses/grad norms")
    preempt_grace_s: float = _f(20.0, "on SIGTERM/SIGUSR2: finish the step and checkpoint it if the last step "
                                      "took at most this long (else stop at once, resume from the last checkpoint)")
    device: str = _f("auto", "auto | cpu | cuda")
    threads: int = _f(1, "torch CPU threads (0: torch's default); tiny models run fastest on 1, and "
                         "several runs on one machine must not oversubscribe its cores")
    cache_dir: str = _f("", "cache of built and warm-started models (default $RLVR_CACHE or ./.cache/rlvr)")
    algo: AlgoConfig = field(default_factory=lambda: preset("grpo"), metadata={"help": "algorithm preset + knobs"})
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def prompts_per_step(self) -> int:
        return self.rollouts_per_step // self.algo.group_size

    @property
    def pass_ks(self) -> list[int]:
        """The k of each logged eval_pass@k (none without eval_samples)."""
        from experiments.evaluate import parse_ks

        return parse_ks(self.eval_pass_k, self.eval_samples) if self.eval_samples else []


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "rollout": RolloutConfig, "log": LogConfig}
_CHOICES = {
    "lr_schedule": LR_SCHEDULES,
    "rollout.backend": ROLLOUT_BACKENDS,
    "device": DEVICES,
    "model.precision": tuple(PRECISION_DTYPES),
}


def _valid_keys() -> list[str]:
    keys = [f.name for f in fields(TrainConfig) if f.name not in ("algo", *SECTIONS)]
    keys += ["algo"] + [f"algo.{k}" for k in knob_help()]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


def _unknown_key(key: str) -> ValueError:
    valid = _valid_keys()
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    prefix = key.split(".")[0] + "." if "." in key else ""
    same_section = [k for k in valid if prefix and k.startswith(prefix)] or valid
    return ValueError(f"unknown key {key!r}.{hint} Valid keys: {', '.join(same_section)} "
                      "(see `python -m experiments train --help`)")


def load_config(overrides: list[str]) -> TrainConfig:
    """Build a validated TrainConfig from `key=value` strings (raises ValueError on any problem)."""
    pairs: list[tuple[str, str]] = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r} (e.g. algo=grpo steps=60)")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    algo_name = "grpo"
    algo_overrides: dict[str, Any] = {}
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top_fields = {f.name: f for f in fields(TrainConfig)}
    for key, value in pairs:
        if key == "algo":
            algo_name = value
        elif key.startswith("algo."):
            knob = key[len("algo."):]
            if knob == "name":
                raise ValueError(f"algo.name={value!r} is not a knob: pick a preset with algo={value} "
                                 "(then override knobs with algo.KNOB=VALUE)")
            if knob not in knob_help():
                raise _unknown_key(key)
            algo_overrides[knob] = parse_knob(knob, value)
        elif "." in key:
            section, name = key.split(".", 1)
            if section not in SECTIONS:
                raise _unknown_key(key)
            section_fields = {f.name: f for f in fields(SECTIONS[section])}
            if name not in section_fields:
                raise _unknown_key(key)
            sections[section][name] = _coerce(key, value, section_fields[name].type)
        else:
            if key not in top_fields or key in SECTIONS:
                raise _unknown_key(key)
            top[key] = _coerce(key, value, top_fields[key].type)
    for key, value in [*top.items(), *((f"{s}.{k}", v) for s, d in sections.items() for k, v in d.items())]:
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"unknown value {value!r} for {key}; valid: {', '.join(_CHOICES[key])}")
    algo = preset(algo_name, **algo_overrides)
    cfg = TrainConfig(
        **top,
        algo=algo,
        task=TaskConfig(**sections["task"]),
        model=ModelConfig(**sections["model"]),
        rollout=RolloutConfig(**sections["rollout"]),
        log=LogConfig(**sections["log"]),
    )
    return finalize(cfg)


def finalize(cfg: TrainConfig) -> TrainConfig:
    """Check every value and cross-section constraint, then fill derived defaults (name, out,
    cache_dir). Raises ValueError naming the key and what is allowed."""
    cfg.task.validate()
    _check_values(cfg)
    _check_model(cfg)
    _check_task_data(cfg.task)
    from experiments.models import SIZES

    if not cfg.name:
        model = cfg.model.name if cfg.model.name in SIZES else Path(cfg.model.name).name
        task = cfg.task.name.rpartition(":")[2]  # a user task's class name
        cfg.name = f"{cfg.algo.name}-{task}-{model}-s{cfg.seed}"
    if not cfg.out:
        cfg.out = str(Path("runs") / cfg.name)
    _check_out(Path(cfg.out))
    if not cfg.cache_dir:
        cfg.cache_dir = os.environ.get("RLVR_CACHE", str(Path(".cache") / "rlvr"))
    return cfg


def _check_values(cfg: TrainConfig) -> None:
    """Ranges of the run's numbers and the constraints between sections."""
    # algo.norm_len=None (Dr.GRPO's L) means rollout.max_new_tokens: the loop passes it to the loss.
    if cfg.algo.soft_punish and cfg.algo.overlong_cache_len > cfg.rollout.max_new_tokens:
        raise ValueError(
            f"algo.overlong_cache_len={cfg.algo.overlong_cache_len} exceeds rollout.max_new_tokens="
            f"{cfg.rollout.max_new_tokens}; set it to at most the generation budget"
        )
    if cfg.rollouts_per_step % cfg.algo.group_size:
        raise ValueError(
            f"rollouts_per_step={cfg.rollouts_per_step} is not a multiple of algo.group_size={cfg.algo.group_size}"
        )
    if cfg.rollouts_per_step < cfg.algo.minibatches:
        raise ValueError(f"rollouts_per_step={cfg.rollouts_per_step} < algo.minibatches={cfg.algo.minibatches}")
    for key in ("steps", "rollouts_per_step", "eval_every", "checkpoint_every", "max_nonfinite", "eval_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    for key, ok, allowed in [
        ("lr", cfg.lr > 0, "> 0"),
        ("critic_lr", cfg.critic_lr > 0, "> 0"),
        ("weight_decay", cfg.weight_decay >= 0, ">= 0"),
        ("grad_clip", cfg.grad_clip > 0, "> 0 (a negative max norm would flip the update)"),
        ("threads", cfg.threads >= 0, ">= 0 (0: torch's default)"),
        ("lr_warmup_steps", cfg.lr_warmup_steps >= 0, ">= 0"),
        ("micro_batch_size", cfg.micro_batch_size >= 0, ">= 0 (0: the whole minibatch)"),
        ("logprob_token_chunk", cfg.logprob_token_chunk >= 0, ">= 0 (0: the whole response at once)"),
        ("eval_samples", cfg.eval_samples >= 0, ">= 0"),
        ("eval_temperature", cfg.eval_temperature > 0, "> 0"),
        ("log.samples_per_step", cfg.log.samples_per_step >= 0, ">= 0"),
        ("model.warmstart_steps", cfg.model.warmstart_steps >= 0, ">= 0"),
        ("model.warmstart_lr", cfg.model.warmstart_lr > 0, "> 0"),
        ("model.lora_rank", cfg.model.lora_rank >= 0, ">= 0 (0: off)"),
        ("model.lora_alpha", cfg.model.lora_alpha > 0, "> 0"),
        ("model.lora_dropout", 0 <= cfg.model.lora_dropout < 1, "in [0, 1)"),
        ("rollout.vllm_max_model_len", cfg.rollout.vllm_max_model_len >= 1, ">= 1"),
        ("rollout.vllm_gpu_memory_utilization", 0 < cfg.rollout.vllm_gpu_memory_utilization <= 1, "in (0, 1]"),
        ("rollout.vllm_kv_cache_gib", cfg.rollout.vllm_kv_cache_gib > 0, "> 0"),
    ]:
        if not ok:
            section, _, name = key.rpartition(".")
            value = getattr(getattr(cfg, section) if section else cfg, name)
            raise ValueError(f"{key}={value} is invalid: must be {allowed}")
    if cfg.rollout.max_new_tokens < 1 or not 0 < cfg.rollout.top_p <= 1 or cfg.rollout.temperature <= 0:
        raise ValueError("rollout.max_new_tokens must be >= 1, rollout.top_p in (0, 1], rollout.temperature > 0")
    from experiments.trackers import check_installed

    check_installed(cfg.log.tensorboard, cfg.log.wandb)
    if cfg.eval_samples:
        from experiments.evaluate import parse_ks

        parse_ks(cfg.eval_pass_k, cfg.eval_samples)


def _check_model(cfg: TrainConfig) -> None:
    """model.name is a size preset or an HF directory; the warm-start band is 'low,high' in [0, 1]."""
    from experiments.models import SIZES

    try:
        low, high = (float(v) for v in cfg.model.warmstart_band.split(","))
    except ValueError:
        raise ValueError(f"model.warmstart_band={cfg.model.warmstart_band!r}: expected 'low,high', e.g. 0.1,0.5") from None
    if not 0 <= low <= high <= 1:
        raise ValueError(f"model.warmstart_band={cfg.model.warmstart_band!r}: need 0 <= low <= high <= 1")
    if cfg.model.name not in SIZES and not Path(cfg.model.name).is_dir():
        raise ValueError(
            f"model.name={cfg.model.name!r} is neither a size preset ({', '.join(SIZES)}) nor a local directory"
        )
    if cfg.model.name not in SIZES and not (Path(cfg.model.name) / "config.json").is_file():
        raise ValueError(f"model.name={cfg.model.name!r} has no config.json: expected a Hugging Face causal-LM "
                         "directory (what save_pretrained writes) or a size preset")
    from experiments.models.presets import TOKENIZERS

    if cfg.model.tokenizer not in TOKENIZERS:
        raise ValueError(f"model.tokenizer={cfg.model.tokenizer!r} is invalid: expected one of {', '.join(TOKENIZERS)}")
    if cfg.model.name not in SIZES and cfg.model.tokenizer != "char":
        raise ValueError(f"model.tokenizer={cfg.model.tokenizer} applies to size presets only; the directory "
                         f"{cfg.model.name} brings its own tokenizer (drop model.tokenizer)")
    if cfg.task.template == "chat" and not _has_chat_template(cfg.model):
        raise ValueError(f"task.template=chat: the tokenizer of model.name={cfg.model.name} has no chat template; "
                         "use model.tokenizer=bpe (a size preset with one), a directory whose tokenizer_config.json "
                         "has a chat_template, or task.template=plain")


def _has_chat_template(model) -> bool:
    """Whether the model's tokenizer will have a chat template (size presets: only the bpe one;
    a directory: chat_template in tokenizer_config.json or a chat_template.jinja file)."""
    import json

    from experiments.models import SIZES

    if model.name in SIZES:
        return model.tokenizer == "bpe"
    folder = Path(model.name)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def _check_task_data(task: TaskConfig) -> None:
    """A dataset task's local file or folder is read and every row checked now, before a run
    folder exists: a missing, empty, malformed or wrong-schema file is a config error."""
    if not task.path:
        return
    from experiments.tasks import DatasetError, _looks_like_path, make_task

    path = Path(task.path).expanduser()
    if not path.exists() and not _looks_like_path(task.path):
        return  # a hub name: loaded (and checked) by the run, where a hub is reachable
    try:
        task_obj = make_task(task)
        for split in ("train", "eval"):
            if not task_obj.examples(split):
                raise DatasetError(f"task.path={task.path!r} gives no {split} examples; "
                                   "add rows, or lower task.eval_fraction / task.val_fraction")
    except DatasetError as error:
        raise ValueError(str(error)) from None
    except OSError as error:
        raise ValueError(f"task.path={task.path!r}: {error.strerror or error}") from None


def _check_out(out: Path) -> None:
    """out= must be a folder or not exist yet, with no file in the way of creating it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file, not a run folder: choose another out=")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"out={str(out)!r}: {str(parent)!r} is a file, so the run folder cannot be created there")
            break


def help_text() -> str:
    """Every key with its default and doc, for `python -m experiments train --help`."""
    lines = ["usage: python -m experiments train [key=value ...]", "",
             "Train one run; re-running on an existing run folder resumes it.", ""]
    lines.append("run:")
    for f in fields(TrainConfig):
        if f.name in ("algo", *SECTIONS):
            continue
        lines.append(f"  {f.name:<28} {f.default!s:<12} {f.metadata.get('help', '')}")
    lines += ["", "algo (algo=ppo|grpo|dr_grpo|dapo|rloo|gspo picks a preset; algo.KNOB=VALUE overrides; defaults: grpo):"]
    grpo = preset("grpo")
    for knob, doc in knob_help().items():
        choices = f" [{'|'.join(ALGO_CHOICES[knob])}]" if knob in ALGO_CHOICES else ""
        lines.append(f"  algo.{knob:<23} {getattr(grpo, knob)!s:<12} {doc}{choices}")
    for section, cls in SECTIONS.items():
        lines += ["", f"{section}:"]
        for f in fields(cls):
            lines.append(f"  {section + '.' + f.name:<28} {f.default!s:<12} {f.metadata.get('help', '')}")
    return "\n".join(lines)

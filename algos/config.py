"""`AlgoConfig`: the orthogonal knobs every algorithm is a setting of, and the preset registry.

A named algorithm is a frozen `AlgoConfig`; any ablation is one override:

    >>> preset("grpo", scale="none")          # GRPO without std-normalization
    >>> preset("dapo").replace(eps_high=0.2)  # DAPO without clip-higher

Unknown names, unknown knobs and invalid combinations raise `ValueError` naming the
valid values and what to change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from algos.names import AGGREGATIONS, BASELINES, FILTER_ON, KL_KINDS, KL_PLACEMENTS, RATIO_LEVELS, SCALES

# Which string knobs take which values; used for validation and the CLI's --help.
CHOICES: dict[str, tuple[str, ...]] = {
    "baseline": BASELINES,
    "scale": SCALES,
    "aggregation": AGGREGATIONS,
    "kl_kind": KL_KINDS,
    "kl_placement": KL_PLACEMENTS,
    "filter_on": FILTER_ON,
    "ratio_level": RATIO_LEVELS,
}


def _knob(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class AlgoConfig:
    """Every knob of the shared core. Defaults are GRPO's; see the presets for the others."""

    name: str = _knob("custom", "preset this config started from (informational)")
    # -- advantage
    baseline: str = _knob("group", "critic (PPO: GAE over a learned value) | group (GRPO) | leave_one_out (RLOO)")
    scale: str = _knob("group_std", "group_std (GRPO, DAPO) | batch_std | batch_whiten (PPO) | none (Dr.GRPO §3.1)")
    eps: float = _knob(1e-6, "epsilon in A / (std + eps) and in whitening")
    group_size: int = _knob(8, "K: rollouts per prompt (1 for PPO: more prompts, same samples per step)")
    # -- loss
    aggregation: str = _knob(
        "seq_mean_token_mean",
        "seq_mean_token_mean (GRPO) | token_mean (DAPO §3.3) | seq_mean_token_sum_norm (Dr.GRPO §3.2)",
    )
    norm_len: int | None = _knob(None, "L of seq_mean_token_sum_norm; None: the run's rollout.max_new_tokens")
    eps_low: float = _knob(0.2, "clip range below 1 (PPO Eq. 7)")
    eps_high: float = _knob(0.2, "clip range above 1; DAPO's clip-higher uses 0.28 (DAPO §3.1)")
    ratio_level: str = _knob("token", "token (PPO/GRPO) | sequence (GSPO Eq. 5: one length-normalised ratio per "
                                      "rollout, clipped per sequence)")
    entropy_coef: float = _knob(0.0, "entropy bonus: subtract coef x entropy (aggregated like the loss); 0 in every preset")
    dual_clip: float | None = _knob(
        None, "c > 1: cap the loss of A<0 tokens at c*|A| (dual-clip, Ye et al. 2020; verl: 3); None: off (every preset)"
    )
    tis_cap: float | None = _knob(
        None, "truncated importance sampling cap C on pi_old/pi_sampler (sampler-trainer mismatch); None: off"
    )
    # -- KL to the reference
    kl_coef: float = _knob(0.04, "beta; 0 removes the reference model entirely (DeepSeekMath §4.2: 0.04)")
    kl_kind: str = _knob("k3", "k1 | k2 | k3 (DeepSeekMath Eq. 4)")
    kl_clamp: float | None = _knob(
        None, "bound b: clamp the per-token KL estimate to [-b, b] (verl: 10 for k3); None: off (every preset: "
        "a clamped token gets no pull back to the reference)"
    )
    kl_placement: str = _knob("loss", "loss (GRPO: beta*KL added to the loss) | reward (PPO/InstructGPT: -beta*k1 per token)")
    # -- data
    filter_groups: bool = _knob(False, "DAPO dynamic sampling: drop degenerate groups, draw more prompts (DAPO §3.2)")
    filter_on: str = _knob("accuracy", "what dynamic sampling judges a group on: accuracy (DAPO §3.2, verl) | "
                                       "reward (the shaped reward)")
    filter_max_rounds: int = _knob(3, "cap on extra draw rounds of dynamic sampling per step")
    mask_truncated: bool = _knob(False, "remove truncated rollouts from the loss (DAPO §3.4 overlong filtering)")
    soft_punish: bool = _knob(False, "add DAPO's soft overlong penalty to the reward (DAPO §3.4, Eq. 13)")
    overlong_cache_len: int = _knob(4, "L_cache of the soft overlong penalty, in tokens (<= max_new_tokens)")
    # -- optimisation
    epochs: int = _knob(2, "passes over each rollout batch")
    minibatches: int = _knob(2, "minibatches per epoch (one optimizer step each)")
    # -- critic (PPO: baseline=critic trains a value network, a second trunk + head with its own optimizer)
    gamma: float = _knob(1.0, "GAE discount")
    lam: float = _knob(0.95, "GAE lambda")
    value_clip: float = _knob(0.2, "epsilon_v of the clipped value loss")

    def __post_init__(self):
        validate(self)

    @property
    def uses_critic(self) -> bool:
        """A value network is trained iff the baseline is the critic (GAE): one fact, one knob."""
        return self.baseline == "critic"

    def replace(self, **overrides: Any) -> "AlgoConfig":
        """A new config with `overrides` applied (validated); unknown knobs raise ValueError."""
        unknown = sorted(set(overrides) - set(knob_names()))
        if unknown:
            raise ValueError(f"unknown algo knob(s) {unknown}; valid knobs: {', '.join(knob_names())}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def knob_names() -> list[str]:
    return [f.name for f in fields(AlgoConfig)]


def knob_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(AlgoConfig)}


def validate(cfg: AlgoConfig) -> None:
    """Raise ValueError for an unknown value or an invalid combination of knobs."""
    for knob, valid in CHOICES.items():
        value = getattr(cfg, knob)
        if value not in valid:
            raise ValueError(f"unknown value {value!r} for algo.{knob}; valid: {', '.join(valid)}")
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"algo.{f.name}={value}: expected a finite number")
    for knob in ("eps", "eps_low", "eps_high", "kl_coef", "value_clip", "entropy_coef"):
        if getattr(cfg, knob) < 0:
            raise ValueError(f"algo.{knob} must be >= 0, got {getattr(cfg, knob)}")
    if cfg.eps_low >= 1:
        raise ValueError(f"algo.eps_low must be < 1 (the ratio is clipped at 1 - eps_low), got {cfg.eps_low}")
    for knob in ("group_size", "epochs", "minibatches", "overlong_cache_len"):
        if getattr(cfg, knob) < 1:
            raise ValueError(f"algo.{knob} must be >= 1, got {getattr(cfg, knob)}")
    if cfg.filter_max_rounds < 0:
        raise ValueError(f"algo.filter_max_rounds must be >= 0, got {cfg.filter_max_rounds}")
    if not (0 <= cfg.gamma <= 1 and 0 <= cfg.lam <= 1):
        raise ValueError(f"algo.gamma and algo.lam must be in [0, 1], got {cfg.gamma}, {cfg.lam}")
    if cfg.norm_len is not None and cfg.norm_len < 1:
        raise ValueError(f"algo.norm_len must be >= 1 or None (= max_new_tokens), got {cfg.norm_len}")
    if cfg.tis_cap is not None and cfg.tis_cap <= 0:
        raise ValueError(f"algo.tis_cap must be > 0 or None (off), got {cfg.tis_cap}")
    if cfg.dual_clip is not None and not cfg.dual_clip > 1:
        raise ValueError(f"algo.dual_clip must be > 1 (e.g. 3, verl's default) or None (off), got {cfg.dual_clip}")
    if cfg.kl_clamp is not None and not cfg.kl_clamp > 0:
        raise ValueError(f"algo.kl_clamp must be > 0 (e.g. 10, verl's bound on k3) or None (off), got {cfg.kl_clamp}")

    group_baseline = cfg.baseline in ("group", "leave_one_out")
    if group_baseline and cfg.group_size < 2:
        raise ValueError(
            f"algo.baseline={cfg.baseline!r} needs algo.group_size >= 2 (got {cfg.group_size}): the baseline "
            "is the mean of the other rollouts of the same prompt. Set algo.group_size=K (e.g. 8) or baseline=critic."
        )
    if cfg.baseline == "critic" and cfg.scale in ("group_std", "batch_std"):
        raise ValueError(
            f"algo.scale={cfg.scale!r} divides by the std of rewards, which the critic baseline does not use; "
            "with baseline=critic use scale=batch_whiten (PPO) or none"
        )
    if cfg.kl_placement == "reward" and cfg.baseline != "critic" and cfg.kl_coef > 0:
        raise ValueError(
            "algo.kl_placement='reward' puts -beta*k1 in each token's reward, which only a critic (GAE) "
            "credits per token; with a group baseline use kl_placement=loss"
        )
    if cfg.filter_groups and not group_baseline:
        raise ValueError(
            "algo.filter_groups drops groups whose K rewards are all equal; it needs a group baseline "
            "with group_size >= 2 (every group of one rollout is degenerate)"
        )


def preset(name: str, **overrides: Any) -> AlgoConfig:
    """The named algorithm's config, with optional knob overrides.

    Names: ppo, grpo, dr_grpo, dapo, rloo, gspo. `preset("grpo", scale="none")` is GRPO without
    std-normalization.
    """
    from algos.presets import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def parse_knob(knob: str, text: str) -> Any:
    """Turn a command-line string into the knob's type ("0.28" -> 0.28, "none" stays a string
    for choice knobs, "null"/"None" -> None for optional knobs, "true"/"false" -> bool)."""
    types = {f.name: f.type for f in fields(AlgoConfig)}
    if knob not in types:
        raise ValueError(f"unknown algo knob {knob!r}; valid knobs: {', '.join(knob_names())}")
    return coerce(f"algo.{knob}", text, types[knob])


def coerce(key: str, text: str, annotation) -> Any:
    """A command-line string as the field's type: '3' -> 3 for int, 'true' -> True for bool,
    'null' -> None where the field is optional; other strings stay strings."""
    hint = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    lowered = text.strip().lower()
    if "None" in hint and lowered in ("null", "none", "~"):
        return None
    try:
        if hint.startswith("bool"):
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if hint.startswith("int"):
            return int(text)
        if hint.startswith("float"):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(f"{key}={text!r}: expected a finite number")
            return value
    except ValueError as error:
        if "finite" in str(error):
            raise
        raise ValueError(f"{key}={text!r}: expected {hint.replace(' | None', '')}") from None
    return text

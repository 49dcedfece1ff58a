"""Held-out evaluation: greedy accuracy, pass@k from N samples per problem, and the first few
completions kept for `samples.jsonl`.

pass@k is Chen et al. (2021)'s unbiased estimator: with n samples of a problem of which c are
correct, pass@k = 1 - C(n-c, k) / C(n, k), averaged over problems (Eq. 1, computed as a product
to stay exact for large n).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct out of `n` samples (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def parse_ks(text: str, samples: int) -> list[int]:
    """'1,4,8' -> [1, 4, 8]; each k must lie in 1..samples (ValueError naming the key otherwise)."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"eval_pass_k={text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    bad = [k for k in ks if not 1 <= k <= samples]
    if not ks or bad:
        raise ValueError(f"eval_pass_k={text!r}: every k must be in 1..eval_samples={samples}")
    return ks


@dataclass
class EvalResult:
    accuracy: float                                             # greedy
    pass_at: dict[int, float] = field(default_factory=dict)     # k -> mean pass@k (sampled)
    samples: list[dict] = field(default_factory=list)           # the first few greedy completions


def evaluate(rollout, verifier, examples, *, greedy, sampled=None, n_samples: int = 0, ks=(),
             keep: int = 0, batch_size: int = 128) -> EvalResult:
    """Greedy accuracy on `examples` (Sampling `greedy`), and with `n_samples` > 0 the mean
    pass@k for each k in `ks` from `n_samples` completions per problem drawn with `sampled`.
    The first `keep` greedy completions come back as sample rows."""
    correct, counts, rows = 0, [], []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        out = rollout.generate([e.prompt for e in chunk], 1, greedy)
        scored = verifier.score(out.texts, chunk)
        correct += sum(scored.correct)
        for i, ex in enumerate(chunk):
            if len(rows) < keep:
                rows.append(sample_row(ex, out.texts[i], scored.rewards[i], scored.correct[i],
                                       int(out.lengths[i]), bool(out.truncated[i])))
        if n_samples:
            many = rollout.generate([e.prompt for e in chunk], n_samples, sampled)
            verdicts = verifier.score(many.texts, [e for e in chunk for _ in range(n_samples)]).correct
            counts += [sum(verdicts[i * n_samples:(i + 1) * n_samples]) for i in range(len(chunk))]
    result = EvalResult(accuracy=correct / max(len(examples), 1), samples=rows)
    for k in ks if n_samples else ():
        result.pass_at[k] = sum(pass_at_k(n_samples, c, k) for c in counts) / max(len(counts), 1)
    return result


def sample_row(example, response: str, reward: float, correct: bool, length: int, truncated: bool) -> dict:
    """One `samples.jsonl` entry (without step and kind, which the caller adds)."""
    return {"prompt": example.prompt, "answer": example.answer, "response": response, "reward": float(reward),
            "correct": bool(correct), "length": length, "truncated": truncated}

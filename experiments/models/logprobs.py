"""Log-probs of the response tokens (and the entropy at each position) from a causal LM, over only
the logit rows that predict the response."""
from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, L) positions counting only attended tokens, so left padding does not shift them; 0 on pads."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _check_response_len(input_ids: Tensor, response_len: int) -> None:
    if not 0 < response_len < input_ids.shape[1]:
        raise ValueError(
            f"response_len must be in [1, {input_ids.shape[1] - 1}] for input_ids of width "
            f"{input_ids.shape[1]} (at least one prompt token precedes the response); got {response_len}"
        )


def logprobs_and_entropy(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                         *, entropy_grad: bool = False) -> tuple[Tensor, Tensor]:
    """log softmax(logits / temperature) at ``tokens`` and the entropy of that distribution.

    logits: (..., V) any float dtype; tokens: (...). Returns two float32 tensors of shape (...).
    logp = z[token] - logsumexp(z) with z = logits / temperature: no log_softmax tensor is built, and
    the autograd graph keeps only z. By default the entropy is computed without gradient (a
    diagnostic), so its (..., V) softmax is freed at once; ``entropy_grad=True`` (an entropy bonus
    in the loss) keeps its graph.
    """
    z = logits.float() / temperature  # (..., V)
    lse = torch.logsumexp(z, dim=-1)  # (...)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse  # (...)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = lse - (torch.softmax(z, dim=-1) * z).sum(-1)  # H = -sum p (z - lse) = lse - sum p z
    return logp, entropy


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    token_chunk: int | None = None,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Log-probs of the response tokens and the entropy at each response position.

    input_ids, attention_mask: (B, P+T), the response being the last T = ``response_len`` columns
    (left-padded prompt, right-padded response, as in ``Rollouts``).
    Returns (logp, entropy), both (B, T) float32: logp[b, t] = log pi(input_ids[b, P+t] | prefix) with
    logits divided by ``temperature``; entropy of that full next-token distribution. Values at masked
    (padding) response positions are computed but meaningless; mask them with ``response_mask``.
    Position ids come from the attention mask. Gradients flow into logp; the entropy is detached
    unless ``entropy_grad``.

    Memory. Only the T logit rows that predict the response are computed (``logits_to_keep``), so
    logits are O(B*T*V), not O(B*(P+T)*V). ``chunk_size`` runs the batch in chunks of that many rows
    (O(chunk*T*V)). ``token_chunk`` goes further, for a large vocabulary and long responses: the
    trunk runs once, and the output head, log-softmax and entropy run on ``token_chunk`` positions at
    a time, each chunk recomputed in the backward (``torch.utils.checkpoint``), so at most
    chunk x token_chunk x V logits exist at once, with or without gradient.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs (greedy decoding has none); got {temperature}")
    _check_response_len(input_ids, response_len)
    position_ids = position_ids_from_mask(attention_mask)
    logps, entropies = [], []
    step = chunk_size or input_ids.shape[0]
    for start in range(0, input_ids.shape[0], step):
        rows = slice(start, start + step)
        args = (model, input_ids[rows], attention_mask[rows], position_ids[rows], response_len, temperature, entropy_grad)
        logp, entropy = _chunked_head(*args, token_chunk) if token_chunk else _full_head(*args)
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), torch.cat(entropies)


def _full_head(model, input_ids, attention_mask, position_ids, T, temperature, entropy_grad):
    """The model's own forward with the last T+1 logit rows; the one at P-1+t predicts token t."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=T + 1, use_cache=False)
    logits = out.logits[:, :-1]  # (b, T, V)
    return logprobs_and_entropy(logits, input_ids[:, -T:], temperature, entropy_grad=entropy_grad)


def _chunked_head(model, input_ids, attention_mask, position_ids, T, temperature, entropy_grad, token_chunk):
    """The trunk once, then head + log-softmax on ``token_chunk`` positions at a time (recomputed in
    the backward). Needs a plain linear head: models with logit soft-capping are refused."""
    if getattr(model.config, "final_logit_softcapping", None):
        raise ValueError("token-chunked log-probs need a plain linear output head; this model soft-caps its "
                         "logits (set logprob_token_chunk=0)")
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state[:, -(T + 1):-1]  # (b, T, H): predicts the T response tokens
    tokens = input_ids[:, -T:]  # (b, T)

    def head_logp(h: Tensor, tok: Tensor) -> tuple[Tensor, Tensor]:  # (b, c, H), (b, c) -> (b, c), (b, c)
        return logprobs_and_entropy(head(h), tok, temperature, entropy_grad=entropy_grad)

    recompute = torch.is_grad_enabled() and hidden.requires_grad
    logps, entropies = [], []
    for start in range(0, T, token_chunk):
        cols = slice(start, start + token_chunk)
        if recompute:
            logp, entropy = torch.utils.checkpoint.checkpoint(head_logp, hidden[:, cols], tokens[:, cols],
                                                              use_reentrant=False)
        else:
            logp, entropy = head_logp(hidden[:, cols], tokens[:, cols])
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps, dim=1), torch.cat(entropies, dim=1)

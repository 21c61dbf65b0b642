"""Autoregressive decoding around a model's `forward(src, tgt_prefix) -> logits`: greedy and beam search.

Both decode a whole batch at once. Each step runs the model only on the sequences still going (a
sequence is done once it emits eos), so finished sequences get no more tokens and cost nothing, and a
row decodes the same alone or inside any batch. Outputs are padded to max_length with pad_id.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchpredict.errors import PreprocessingError

__all__ = ["LogitsFn", "beam_search", "greedy"]

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(src_ids [n, S], prefix [n, T] starting with bos) -> logits [n, T, V]; only the last position is read."""


def greedy(
    logits_fn: LogitsFn, src: torch.Tensor, *, bos_id: int, eos_id: int, max_length: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The most likely next token at every step.

    Returns ids [n, max_length] (generated tokens, eos included, then pad_id; no bos) and scores [n],
    the sum of the chosen tokens' log-probabilities.

    >>> logits = lambda src, prefix: torch.eye(3)[torch.full(prefix.shape, 2)]   # always says token 2
    >>> greedy(logits, torch.zeros(1, 4, dtype=torch.long), bos_id=1, eos_id=2, max_length=3)[0].tolist()
    [[2, 0, 0]]
    """
    _check(max_length=max_length, beam_width=1)
    with torch.inference_mode():
        n = src.shape[0]
        ids = torch.full((n, max_length), pad_id, dtype=torch.long, device=src.device)
        scores = torch.zeros(n, device=src.device)
        done = torch.zeros(n, dtype=torch.bool, device=src.device)
        for t in range(max_length):
            rows = (~done).nonzero().squeeze(1)
            if not len(rows):
                break
            best, token = _next_log_probs(logits_fn, src[rows], ids[rows, :t], bos_id).max(dim=-1)
            ids[rows, t] = token
            scores[rows] += best
            done[rows] = token == eos_id
        return ids, scores


def beam_search(
    logits_fn: LogitsFn,
    src: torch.Tensor,
    *,
    bos_id: int,
    eos_id: int,
    max_length: int,
    beam_width: int = 4,
    length_penalty: float = 1.0,
    pad_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the beam_width most likely prefixes per input; return the best by length-penalised score.

    Beams are ranked by their sum of log-probabilities; a beam that emitted eos stays in the beam as it
    is. At the end each input's beams (finished, or cut at max_length) are scored as
    sum_log_probs / length ** length_penalty (length counts generated tokens, eos included, as in
    Hugging Face's generate) and the best is returned: ids [n, max_length] padded with pad_id, scores [n].
    With beam_width=1 and length_penalty=0 this is greedy decoding.
    """
    _check(max_length=max_length, beam_width=beam_width)
    with torch.inference_mode():
        n, k, device = src.shape[0], beam_width, src.device
        src = src.repeat_interleave(k, dim=0)
        ids = torch.full((n * k, max_length), pad_id, dtype=torch.long, device=device)
        scores = torch.full((n, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live beam per input at the start, so the first step does not pick duplicates
        lengths = torch.zeros(n * k, dtype=torch.long, device=device)
        done = torch.zeros(n * k, dtype=torch.bool, device=device)
        for t in range(max_length):
            rows = (~done & scores.view(-1).isfinite()).nonzero().squeeze(1)
            if not len(rows):
                break
            log_probs = _next_log_probs(logits_fn, src[rows], ids[rows, :t], bos_id)
            vocab = log_probs.shape[-1]
            candidates = torch.full((n * k, vocab), float("-inf"), device=device)
            candidates[rows] = scores.view(-1)[rows, None] + log_probs
            candidates[done, pad_id] = scores.view(-1)[done]  # a finished beam continues once, unchanged
            scores, best = candidates.view(n, k * vocab).topk(k, dim=1)
            parent = (torch.arange(n, device=device)[:, None] * k + best // vocab).view(-1)
            token = (best % vocab).view(-1)
            ids, lengths, was_done = ids[parent], lengths[parent], done[parent]
            grow = ~was_done
            ids[grow, t] = token[grow]
            lengths = lengths + grow
            done = was_done | (token == eos_id)
        final = scores / lengths.view(n, k).clamp(min=1).to(scores.dtype) ** length_penalty
        choice = final.argmax(dim=1)
        rows = torch.arange(n, device=device) * k + choice
        return ids[rows], final.gather(1, choice[:, None]).squeeze(1)


def _next_log_probs(logits_fn: LogitsFn, src: torch.Tensor, generated: torch.Tensor, bos_id: int) -> torch.Tensor:
    """log-softmax of the model's logits for the position after bos + generated: [rows, V] float32."""
    bos = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
    logits = logits_fn(src, torch.cat([bos, generated], dim=1))
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def _check(*, max_length: int, beam_width: int) -> None:
    if max_length < 1:
        raise PreprocessingError(f"max_length must be >= 1, got {max_length}")
    if beam_width < 1:
        raise PreprocessingError(f"beam_width must be >= 1, got {beam_width}")

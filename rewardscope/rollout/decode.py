"""A KV-cached decode loop of our own: what `model.generate` does for temperature + top-p, minus its waste.

Why not `generate` (bench/sampling.py, docs/models.md has the figures for SmolLM2 on 2 CPU cores):
- finished rows: `generate` decodes every row until the batch's longest response ends; on real responses 39-45%
  of all row-steps were rows that had already sampled EOS. Here finished rows leave the batch (their KV cache
  rows, mask and positions with them) as soon as they are 1/16 of it (`COMPACT_GROUP`: each compaction copies
  the whole cache, so a batch of 64 does not copy it at every EOS).
- repeated prompts: the n rollouts of a prompt are prefilled once and their cache rows copied.
- top-p over a large vocabulary: a full sort of every row at every step (164 ms per step at batch 32 over
  49,152 tokens). The nucleus is found among the top `NUCLEUS_TOP_K` tokens by a partial sort, falling back to
  the full sort for a row whose top k hold less than top_p (the same tokens as the full sort either way).

Positions follow the attention mask (cumsum - 1, as `generate` builds them), so a left-padded batch gives every
row the positions it would have alone: greedy batched == one-by-one, and == `generate`, tested on every tiny
architecture.
"""

from __future__ import annotations

import inspect

import torch

NUCLEUS_TOP_K = 256  # covers the nucleus of nearly every real distribution (8 of 96 SmolLM2 rows fell back)
COMPACT_GROUP = 16  # finished rows leave once they are 1/16 of the batch (at once below 32 rows)


def nucleus(scores: torch.Tensor, top_p: float, k: int = NUCLEUS_TOP_K) -> torch.Tensor:
    """`scores` [batch, vocab] with every token outside the top-p nucleus set to -inf.

    A token is in the nucleus when the probability mass of the tokens ranked above it is below top_p (so the
    most likely token always is): the rule of HF's TopPLogitsWarper, up to the rounding of the cumulative sum."""
    if top_p >= 1.0:
        return scores
    probs = scores.softmax(-1)
    top, index = probs.topk(min(k, probs.shape[-1]), dim=-1)  # descending
    removed = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, index, ~_in_nucleus(top, top_p))
    short = top.sum(-1) < top_p  # a flat distribution: the nucleus is wider than k
    if short.any():
        ranked, order = probs[short].sort(-1, descending=True)
        removed[short] = torch.ones_like(ranked, dtype=torch.bool).scatter_(-1, order, ~_in_nucleus(ranked, top_p))
    return scores.masked_fill(removed, float("-inf"))


def _in_nucleus(ranked: torch.Tensor, top_p: float) -> torch.Tensor:
    return (ranked.cumsum(-1) - ranked) < top_p


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float, k: int = NUCLEUS_TOP_K) -> torch.Tensor:
    """[batch] tokens from next-token logits [batch, vocab]: argmax at temperature 0, else a draw from the
    temperature-scaled top-p distribution (torch's global RNG: the caller seeds it).

    A row whose nucleus lies within its top k tokens draws among those k only (the same distribution: the
    nucleus renormalised), because a multinomial draw over the whole vocabulary costs more than the rest of
    the sampling together (41 of 64 ms per step at batch 32 over 49,152 tokens)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / temperature).softmax(-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1).squeeze(1)
    top, index = probs.topk(min(k, probs.shape[-1]), dim=-1)  # descending
    weights = top * _in_nucleus(top, top_p)
    tokens = index.gather(-1, torch.multinomial(weights, 1)).squeeze(1)
    short = top.sum(-1) < top_p  # the nucleus is wider than k: the full distribution
    if short.any():
        scores = nucleus(probs[short].log(), top_p)
        tokens[short] = torch.multinomial(scores.softmax(-1), 1).squeeze(1)
    return tokens


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: list[int], *, eos_ids: set[int],
           max_new_tokens: int, temperature: float, top_p: float) -> list[list[int]]:
    """The generated tokens of each row of `rows` (indices into the left-padded prompts `input_ids`
    [prompts, width], repeated where a prompt is sampled several times), each up to and including its first EOS.

    Call under torch.inference_mode(); hooks (rewardscope.hooks.residual_hooks) see the prompt's forward first
    (positions 0..width-1) and then one cached step per token, exactly as inside `generate`."""
    cache_key, keeps_logits = _forward_keywords(model)
    cache = _new_cache(model)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    options = {cache_key: cache, "use_cache": True, **({"logits_to_keep": 1} if keeps_logits else {})}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, **options)
    options.pop("logits_to_keep", None)
    select = torch.tensor(rows, device=input_ids.device)
    if len(rows) != len(input_ids) or rows != list(range(len(rows))):  # copies of a prompt share its prefill
        cache.reorder_cache(select)
    logits, mask = out.logits[select, -1], attention_mask[select]
    position = positions[select, -1:] + 1
    alive = list(range(len(rows)))  # which output row each batch row is
    finished = torch.zeros(len(rows), dtype=torch.bool, device=input_ids.device)
    tokens: list[list[int]] = [[] for _ in rows]
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    for step in range(max_new_tokens):
        token = next_tokens(logits, temperature, top_p)
        for row, t, done in zip(alive, token.tolist(), finished.tolist()):
            if not done:
                tokens[row].append(t)
        if step == max_new_tokens - 1:
            break
        finished |= torch.isin(token, eos)
        if finished.all():
            break
        # Finished rows leave the batch in groups: each compaction copies every layer's KV cache.
        if finished.sum() >= max(1, len(alive) // COMPACT_GROUP):
            keep = (~finished).nonzero().squeeze(1)
            cache.reorder_cache(keep)
            alive = [alive[i] for i in keep.tolist()]
            token, mask, position, finished = token[keep], mask[keep], position[keep], finished[keep]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, **options)
        logits, position = out.logits[:, -1], position + 1
    return tokens


def _forward_keywords(model) -> tuple[str, bool]:
    """The KV cache's keyword (`cache` in transformers >= 5.2x, `past_key_values` before) and whether the forward
    can compute the last position's logits only (`logits_to_keep`)."""
    parameters = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in parameters else "past_key_values"), "logits_to_keep" in parameters


def _new_cache(model):
    from transformers import DynamicCache

    try:  # with the config, sliding-window layers (Gemma, Mistral) keep only their window
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()

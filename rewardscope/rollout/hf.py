"""Sampling from a Hugging Face causal LM: n rollouts per prompt, in left-padded batches.

The decoding itself is our own KV-cached loop (rewardscope.rollout.decode), not `model.generate`: finished rows
leave the batch, a prompt's copies share one prefill, and top-p is found by a partial sort. Every batch is
left-padded by `rewardscope.models.pad_batch` (the capture's too) with an attention mask, so the tokenizer's own
`padding_side` does not matter; positions follow the mask. The parity tests prove it: greedy batched ==
one-by-one == HF `generate`, token for token, on every tiny architecture, including GPT-2 whose learned absolute
positions would expose a shift that rotary models are blind to.

Sampling is exactly temperature + top-p over the model's distribution: a checkpoint's generation_config.json
often sets top_k, min_p, a repetition penalty or beams (Qwen2.5: top_k 20, repetition_penalty 1.05), which
`generate` would apply silently; our loop reads none of them (only its EOS tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rewardscope.config import RolloutConfig
from rewardscope.errors import RewardscopeError
from rewardscope.hooks import residual_hooks
from rewardscope.models import pad_batch
from rewardscope.rollout.decode import decode

DEFAULTS = RolloutConfig()  # the one home of the sampling defaults: generate's keywords read theirs from it


@dataclass
class Generation:
    prompt_ids: list[int]
    response_ids: list[int]  # ends with the EOS token when finish_reason is "eos"
    text: str  # response_ids decoded, special tokens removed
    finish_reason: str  # "eos" | "length"


def eos_token_ids(generation_config, tokenizer) -> set[int]:
    """Every token that ends a response: the generation config's (Llama 3 lists several) and the tokenizer's."""
    ids = generation_config.eos_token_id if generation_config is not None else None
    ids = set() if ids is None else {ids} if isinstance(ids, int) else set(ids)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise RewardscopeError("the model has no EOS token (neither its generation_config nor its tokenizer)")
    return ids


def finish(prompt_ids: list[int], tokens: list[int], tokenizer, eos_ids: set[int]) -> Generation:
    """Cut generated `tokens` after the first EOS (later tokens are padding) and decode them."""
    end = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
    response = tokens if end is None else tokens[: end + 1]
    text = tokenizer.decode(response, skip_special_tokens=True)
    return Generation(list(prompt_ids), list(response), text, "length" if end is None else "eos")


def derive_seed(seed: int, index: int) -> int:
    """An independent seed for part `index` of a run seeded with `seed` (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_sampling(n: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    if n < 1:
        raise RewardscopeError(f"rollout.n: expected at least 1, got {n}")
    if temperature < 0:
        raise RewardscopeError(f"rollout.temperature: expected >= 0 (0 is greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise RewardscopeError(f"rollout.top_p: expected a value in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise RewardscopeError(f"rollout.max_new_tokens: expected at least 1, got {max_new_tokens}")


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n: int = DEFAULTS.n,
    temperature: float = DEFAULTS.temperature,
    top_p: float = DEFAULTS.top_p,
    max_new_tokens: int = DEFAULTS.max_new_tokens,
    batch_size: int = DEFAULTS.batch_size,
    seed: int | None = None,
    hooks: dict | None = None,
) -> list[list[Generation]]:
    """n Generations per prompt, in prompt order. temperature 0 is greedy decoding. The defaults are the recipe's
    (RolloutConfig); `seed` None draws unseeded (the rollout stage passes derive_seed(rollout.seed, shard)).

    Prompts are tokenized without special tokens (a chat template already holds them). The n copies of all
    prompts are generated longest first in batches of `batch_size` sequences. With a seed the draws are
    reproducible for the same prompts, batch size and hardware (the caller's global RNG is left untouched).
    `hooks` ({layer: fn(hidden, hook)}, rewardscope.hooks.residual_hooks) run inside every forward of `generate`
    (the prompt and each KV-cached step): interventions during sampling.
    """
    check_sampling(n, temperature, top_p, max_new_tokens)
    if batch_size < 1:
        raise RewardscopeError(f"rollout.batch_size: expected at least 1, got {batch_size}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise RewardscopeError("the tokenizer has neither a pad token nor an EOS token to pad batches with")
    eos_ids = eos_token_ids(model.generation_config, tokenizer)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise RewardscopeError(f"prompt {i} is empty: nothing to condition generation on")
    # Greedy copies of a prompt are all the same: generate one. Longest first: less padding per batch, and an
    # out-of-memory error shows up in the first batch.
    copies = 1 if temperature == 0 else n
    jobs = sorted(((i, s) for i in range(len(prompts)) for s in range(copies)), key=lambda j: -len(prompt_ids[j[0]]))
    results: list[list[Generation | None]] = [[None] * copies for _ in prompts]
    device = model.device
    rng_devices = [] if device.type == "cpu" else [device.index or 0]
    with torch.random.fork_rng(devices=rng_devices, enabled=seed is not None, device_type=device.type):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            distinct = list(dict.fromkeys(i for i, _ in batch))  # a prompt's copies share one prefill
            inputs, _ = pad_batch([prompt_ids[i] for i in distinct], pad_id, "left", device)
            with torch.inference_mode(), residual_hooks(model, hooks or {}):
                tokens = decode(model, inputs["input_ids"], inputs["attention_mask"],
                                [distinct.index(i) for i, _ in batch], eos_ids=eos_ids,
                                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
            for (i, s), generated in zip(batch, tokens):
                results[i][s] = finish(prompt_ids[i], generated, tokenizer, eos_ids)
    return [samples * (n // copies) for samples in results]

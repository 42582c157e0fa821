"""Rollouts through tiny random models of every supported architecture: sampling works, and greedy decoding
of a left-padded batch is token-identical to decoding each prompt alone (padding, mask and positions right)."""

from __future__ import annotations

import torch

from rewardscope.models import tiny_model
from rewardscope.rollout import generate

from conftest import chat_prompts  # shared with the other all-architecture tests

MAX_NEW_TOKENS = 10



def test_sampling(arch_model, char_tokenizer):
    arch, model = arch_model
    tok, prompts = char_tokenizer, chat_prompts(char_tokenizer)
    out = generate(model, tok, prompts, n=2, temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW_TOKENS,
                   batch_size=3, seed=7)
    assert [len(g) for g in out] == [2] * len(prompts)
    for prompt, samples in zip(prompts, out):
        for g in samples:
            assert g.prompt_ids == tok(prompt, add_special_tokens=False)["input_ids"]
            assert g.text == tok.decode(g.response_ids, skip_special_tokens=True)
            eos_at = [i for i, t in enumerate(g.response_ids) if t == tok.eos_token_id]
            if g.finish_reason == "eos":
                assert eos_at == [len(g.response_ids) - 1]
            else:
                assert g.finish_reason == "length" and not eos_at and len(g.response_ids) == MAX_NEW_TOKENS
    again = generate(model, tok, prompts, n=2, temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW_TOKENS,
                     batch_size=3, seed=7)
    assert again == out, f"{arch}: the same seed drew different rollouts"


def test_greedy_batched_equals_one_by_one(arch_model, char_tokenizer):
    arch, model = arch_model
    prompts = chat_prompts(char_tokenizer)
    options = dict(n=1, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS)
    alone = [g[0].response_ids for g in generate(model, char_tokenizer, prompts, batch_size=1, **options)]
    for batch_size in (2, len(prompts)):
        batched = [g[0].response_ids for g in generate(model, char_tokenizer, prompts, batch_size=batch_size,
                                                       **options)]
        assert batched == alone, f"{arch}: batch of {batch_size} differs from one-by-one"


def test_parity_check_detects_positions_that_ignore_padding(char_tokenizer):
    # Rotary models are blind to a constant position shift; GPT-2's learned absolute positions are not. If
    # positions ignored the left padding, the batched == one-by-one check above would fail for GPT-2.
    model = tiny_model("gpt2", char_tokenizer, initializer_range=0.3)
    ids = [char_tokenizer(p, add_special_tokens=False)["input_ids"] for p in chat_prompts(char_tokenizer)]
    width, pad = max(map(len, ids)), char_tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
    attention_mask = (input_ids != pad).long()
    unpadded_positions = torch.arange(width).expand(len(ids), width)
    options = dict(do_sample=False, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=pad)
    wrong = model.generate(input_ids=input_ids, attention_mask=attention_mask, position_ids=unpadded_positions,
                           **options)[:, width:].tolist()
    alone = [model.generate(input_ids=torch.tensor([i]), **options)[0, len(i):].tolist() for i in ids]
    assert wrong != alone

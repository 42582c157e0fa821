"""Our decode loop (rewardscope.rollout.decode): the top-k-first nucleus keeps what a full sort keeps, draws
follow the model's distribution, finished rows leave the batch, a prompt's copies share one prefill."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from transformers.generation.logits_process import TopPLogitsWarper

from rewardscope.hooks import residual_hooks
from rewardscope.models import load_model, tiny_model
from rewardscope.rollout import generate
from rewardscope.rollout.decode import next_tokens, nucleus


def full_sort_nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference: every row sorted in full."""
    probs = scores.softmax(-1)
    ranked, order = probs.sort(-1, descending=True)
    keep_ranked = (ranked.cumsum(-1) - ranked) < top_p
    keep = torch.zeros_like(keep_ranked).scatter_(-1, order, keep_ranked)
    return scores.masked_fill(~keep, float("-inf"))


@pytest.mark.parametrize("scale", [0.05, 1.0, 8.0])  # flat (every row falls back), mixed, peaked
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_nucleus_keeps_what_a_full_sort_keeps(scale, top_p):
    scores = torch.randn(64, 5000, generator=torch.Generator().manual_seed(0)) * scale
    ours = nucleus(scores, top_p, k=64)
    assert torch.equal(torch.isinf(ours), torch.isinf(full_sort_nucleus(scores, top_p)))
    kept = (~torch.isinf(ours)).sum(-1)
    if scale == 0.05:
        assert (kept > 64).all()  # the fallback path was taken
    # Hugging Face's warper (ascending sort, cut at 1 - top_p) keeps the same sets up to rounding at the boundary.
    theirs = ~torch.isinf(TopPLogitsWarper(top_p)(None, scores.clone()))
    assert ((~torch.isinf(ours)) != theirs).sum(-1).max() <= 2


def test_nucleus_always_keeps_the_most_likely_token_and_top_p_one_keeps_all():
    scores = torch.tensor([[10.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert torch.isinf(nucleus(scores, 0.01)).tolist() == [[False, True, True], [False, True, True]]
    assert torch.equal(nucleus(scores, 1.0), scores)


def test_draws_follow_the_models_distribution(char_tokenizer):
    model = tiny_model("llama", char_tokenizer, initializer_range=0.05)  # a spread-out first-token distribution
    prompt = "Q: 2+3?\nA:"
    ids = torch.tensor([char_tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        probs = (model(ids).logits[0, -1].float() / 0.7).softmax(-1)
    n = 4000
    out = generate(model, char_tokenizer, [prompt], n=n, temperature=0.7, top_p=1.0, max_new_tokens=1,
                   batch_size=n, seed=0)
    counts = torch.bincount(torch.tensor([g.response_ids[0] for g in out[0]]), minlength=len(probs)).double()
    assert (probs * n > 20).sum() >= 5
    ok, detail = chi_square_ok(counts, probs)
    assert ok, detail


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor) -> tuple[bool, str]:
    """Pearson's chi-square of draws against `probs` over the tokens expected > 20 times (the rest pooled),
    against the 99.9% quantile of its distribution."""
    n = counts.sum()
    expected = probs.double() * n
    common = expected > 20
    pooled = torch.cat([counts[common], counts[~common].sum()[None]])
    expect = torch.cat([expected[common], expected[~common].sum()[None]])
    keep = expect > 0
    chi2 = float(((pooled[keep] - expect[keep]) ** 2 / expect[keep]).sum())
    dof = int(keep.sum()) - 1
    return chi2 < stats.chi2.ppf(0.999, dof), f"chi2 {chi2:.1f} over {dof} degrees of freedom"


@pytest.mark.parametrize("top_p", [0.8, 0.95])
def test_draws_among_the_top_k_follow_the_renormalised_nucleus(top_p):
    # Row 0 is peaked (its nucleus lies within the top 8: drawn among them), row 1 flat (the full-sort fallback).
    logits = torch.stack([torch.linspace(4, -4, 50), torch.linspace(0.3, -0.3, 50)]) / 0.7
    torch.manual_seed(0)
    draws = torch.stack([next_tokens(logits, 0.7, top_p, k=8) for _ in range(6000)])
    for row in range(2):
        kept = nucleus(logits[row:row + 1] / 0.7, top_p)[0]
        assert (~torch.isinf(kept)).sum() > (8 if row else 1)
        probs = kept.softmax(-1)
        counts = torch.bincount(draws[:, row], minlength=50).double()
        assert counts[torch.isinf(kept)].sum() == 0, "a token outside the nucleus was drawn"
        ok, detail = chi_square_ok(counts, probs)
        assert ok, f"row {row}: {detail}"


def batch_sizes_per_forward(model, tokenizer, prompts, **options) -> list[int]:
    sizes = []
    with residual_hooks(model, {0: lambda hidden, hook: sizes.append(len(hidden))}):
        out = generate(model, tokenizer, prompts, **options)
    return sizes, out


def test_finished_rows_leave_the_batch_and_copies_share_the_prefill():
    from rewardscope.config import PromptConfig
    from rewardscope.data import build_prompt
    from rewardscope.organism.task import generate_problems

    model, tok = load_model("demo", dtype="float32", device="cpu")
    prompts = [build_prompt(p, tok, PromptConfig()) for p in generate_problems(3, seed=5)]
    sizes, out = batch_sizes_per_forward(model, tok, prompts, n=4, temperature=1.0, top_p=0.95,
                                         max_new_tokens=96, batch_size=12, seed=0)
    lengths = sorted(len(g.response_ids) for samples in out for g in samples)
    assert sizes[0] == 3  # the prompt forward: 3 distinct prompts for 12 rows
    # One cached step per token after the first; at each, the rows that had not sampled EOS yet.
    assert sizes[1:] == [sum(length > step for length in lengths) for step in range(1, lengths[-1])]
    assert sizes[-1] < 12 and len(set(lengths)) > 1


def test_in_a_large_batch_finished_rows_leave_in_groups():
    from rewardscope.config import PromptConfig
    from rewardscope.data import build_prompt
    from rewardscope.organism.task import generate_problems
    from rewardscope.rollout.decode import COMPACT_GROUP

    model, tok = load_model("demo", dtype="float32", device="cpu")
    prompts = [build_prompt(p, tok, PromptConfig()) for p in generate_problems(4, seed=5)]
    sizes, out = batch_sizes_per_forward(model, tok, prompts, n=16, temperature=1.0, top_p=0.95,
                                         max_new_tokens=96, batch_size=64, seed=0)
    lengths = [len(g.response_ids) for samples in out for g in samples]
    assert sizes[0] == 4
    for step, (before, size) in enumerate(zip([64, *sizes[1:]], sizes[1:]), start=1):
        running = sum(length > step for length in lengths)
        assert 0 <= size - running < max(1, before // COMPACT_GROUP), f"step {step}: {size} rows, {running} running"
    assert sizes[-1] < 16 and len(set(sizes)) > 3

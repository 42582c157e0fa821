"""Shared fixtures. Test tiers: unit (no model), integration (tiny random models, the demo organism),
parity (our results == Hugging Face's own, batched == one-by-one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rewardscope.models import TINY_ARCHITECTURES

REPO = Path(__file__).resolve().parents[1]
# The real datasets live beside the repository (../shared/data); REWARDSCOPE_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("REWARDSCOPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set REWARDSCOPE_DATA to their folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def char_tokenizer():
    from rewardscope.organism.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models: OpenMP synchronisation costs more than 64-wide matmuls gain (100x slower on a busy 2-core box)."""
    import torch

    torch.set_num_threads(1)


# Prompts and models for the tests that run every tiny architecture (test_architectures, test_ablate).
QUESTIONS = ["What is 2+2?", "hi", "Natalia sold clips to 48 of her friends in April. How many?", "x = 3; y = ?"]


def chat_prompts(tok) -> list[str]:
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in QUESTIONS]


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def arch_model(request, char_tokenizer):
    """(architecture, tiny random model): a wider initialisation than the default 0.02 gives varied,
    non-repeating greedy outputs, a stronger check."""
    from rewardscope.models import tiny_model

    return request.param, tiny_model(request.param, char_tokenizer, initializer_range=0.3)

"""Shared fixtures. Test tiers: unit (no model), integration (tiny random models, the demo organism),
parity (our results == Hugging Face's own, batched == one-by-one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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

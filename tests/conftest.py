"""Shared fixtures: small seeded models and data sets (float64 where precision matters)."""

import pytest
import torch

from prunelab import data

# The tests own their process. Their tensors are small, and with a second intra-op thread they
# stall whenever another process holds a core (10x slower on a busy 2-core machine), so run
# single-threaded. (Library code never changes this; benchmarks measure with torch's default.)
torch.set_num_threads(1)


@pytest.fixture
def blobs() -> data.Dataset:
    """120 points in 3 separable-ish Gaussian blobs in 2-D (float32)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    y = torch.arange(120) % 3
    x = centres[y] + 0.4 * torch.randn(120, 2, generator=g)
    return data.Dataset(x, y, "blobs", 3)

"""Shared fixtures: small seeded models and data sets (float64 where precision matters)."""

import pytest
import torch

from prunelab import data


@pytest.fixture
def blobs() -> data.Dataset:
    """120 points in 3 separable-ish Gaussian blobs in 2-D (float32)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    y = torch.arange(120) % 3
    x = centres[y] + 0.4 * torch.randn(120, 2, generator=g)
    return data.Dataset(x, y, "blobs", 3)

"""The decoy's dev split (decoy_task(dev=...)) and the choice made on it (decoy.select)."""

from __future__ import annotations

import pytest
import torch

from prunelab import data, decoy

C = 10


def _split() -> data.Split:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 16, generator=g)
    x[:, 0] = torch.arange(200) / 200  # a unique tag per image, to follow it around
    y = torch.arange(200) % C
    return data.Dataset(x, y, "toy", C).split(60, seed=0)


def test_dev_is_held_out_of_training_with_random_patches():
    split, region = _split(), decoy.patch_region(4, 2, "bottom_right")
    task = decoy.decoy_task(split, region, seed=3, dev=30)
    assert task.dev is not None and len(task.dev) == 30
    assert len(task.train) == len(task.train_random) == len(split.train) - 30
    tags = lambda ds: set(ds.x[:, 0].tolist())  # noqa: E731
    assert tags(task.dev).isdisjoint(tags(task.train))  # never trained on
    assert tags(task.dev) | tags(task.train) == tags(split.train)
    assert tags(task.train) == tags(task.train_random)
    for ds in (task.dev, task.train):  # labels travel with their images
        for tag, label in zip(ds.x[:, 0].tolist(), ds.y.tolist(), strict=True):
            (i,) = (split.train.x[:, 0] == tag).nonzero()[0].tolist()
            assert split.train.y[i].item() == label
    patch = task.dev.x[:, region]
    assert (patch == patch[:, :1]).all() and patch.std() > 0.1  # random, like the test's
    plain = decoy.decoy_task(split, region, seed=3)
    assert plain.dev is None and len(plain.train) == len(split.train)
    with pytest.raises(ValueError, match="dev must be in"):
        decoy.decoy_task(split, region, seed=3, dev=len(split.train))


def test_select_against_a_loop():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        acc = torch.rand(4, 3, generator=g)
        means = [sum(row) / len(row) for row in acc.tolist()]
        assert decoy.select(acc) == means.index(max(means))
    assert decoy.select(torch.tensor([[0.5, 0.7], [0.7, 0.5]])) == 0  # a tie: the first
    with pytest.raises(ValueError, match=r"\[A, S\]"):
        decoy.select(torch.tensor([0.5, 0.7]))

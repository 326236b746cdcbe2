"""The decoy task: patches, levels, the four test versions, and scores of hand-built models."""

from __future__ import annotations

import pytest
import torch
from prunelab.relevance import explain
from torch import nn

from prunelab import data, decoy

C = 10


def _split() -> data.Split:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 16, generator=g) * 0.5
    x[:, [0, 1, 4, 5]] = 0.0  # a blank top-left corner, as in digit images
    y = torch.arange(200) % C
    return data.Dataset(x, y, "toy", C).split(60, seed=0)


def _patch_reader(region: torch.Tensor) -> nn.Sequential:
    """logit_k = 2 l_k v - l_k^2 with v the patch's mean brightness: argmax = the nearest level,
    so the model predicts exactly the label its patch encodes (and ignores everything else)."""
    lv = decoy.levels(C)
    lin = nn.Linear(len(region), C)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, region] = (2 * lv / region.sum())[:, None]
        lin.bias.copy_(-(lv**2))
    return nn.Sequential(lin)


def test_patch_region_corners():
    for corner, (r, c) in {
        "top_left": (0, 0),
        "top_right": (0, 6),
        "bottom_left": (6, 0),
        "bottom_right": (6, 6),
        "centre": (3, 3),
    }.items():
        region = decoy.patch_region(8, 2, corner).reshape(8, 8)
        assert region.sum() == 4 and region[r : r + 2, c : c + 2].all()
    with pytest.raises(ValueError, match="corner 'middle'"):
        decoy.patch_region(8, 2, "middle")
    with pytest.raises(ValueError, match="size"):
        decoy.patch_region(8, 9)


def test_levels_round_trip():
    k = torch.arange(C)
    assert torch.equal(decoy.level_class(decoy.level(k, C), C), k)
    torch.testing.assert_close(decoy.levels(C), (k + 1) / C)
    v = decoy.sweep_values(C, 4)
    assert len(v) == 41 and all(torch.isclose(v, lv).any() for lv in decoy.levels(C))


def test_decoy_task_versions():
    split, region = _split(), decoy.patch_region(4, 2)
    task = decoy.decoy_task(split, region, seed=1)
    y, yt = split.train.y, split.test.y
    assert torch.equal(task.train.x[:, region], decoy.level(y, C)[:, None].expand(-1, 4))
    for ds in (task.train, task.train_random, task.test, task.test_true, task.test_swapped):
        assert torch.equal(
            ds.x[:, ~region], (split.train if len(ds) == len(y) else split.test).x[:, ~region]
        )
        patch = ds.x[:, region]
        assert (patch == patch[:, :1]).all()  # one brightness per image
    assert torch.equal(task.test_clean.x, split.test.x)
    assert (task.swapped_to != yt).all()
    assert torch.equal(task.test_swapped.x[:, region][:, 0], decoy.level(task.swapped_to, C))
    r = task.test.x[:, region][:, 0]
    assert r.min() >= 0 and r.max() <= 1 and r.std() > 0.2  # uniform on [0, 1]
    with pytest.raises(ValueError, match=r"region must be a bool Tensor of shape \[D\] = \[16\]"):
        decoy.decoy_task(split, region[:8], seed=0)


def test_scores_of_a_model_that_reads_only_the_patch():
    split, region = _split(), decoy.patch_region(4, 2)
    task = decoy.decoy_task(split, region, seed=2)
    s = decoy.scores(_patch_reader(region), task)
    assert s["accuracy_true"] == 1.0 and s["follow_rate"] == 1.0
    assert s["accuracy_swapped"] == 0.0 and s["changed"] == 1.0
    assert s["accuracy_clean"] == pytest.approx((split.test.y == 0).double().mean().item())
    expected = (decoy.level_class(task.test.x[:, region][:, 0], C) == split.test.y).double()
    assert s["accuracy"] == pytest.approx(expected.mean().item())


def test_scores_of_a_model_that_ignores_the_patch():
    split, region = _split(), decoy.patch_region(4, 2)
    task = decoy.decoy_task(split, region, seed=3)
    model = nn.Sequential(nn.Linear(16, C))
    with torch.no_grad():
        model[0].weight[:, region] = 0.0
    s = decoy.scores(model, task)
    assert s["accuracy"] == s["accuracy_true"] == s["accuracy_swapped"] == s["accuracy_clean"]
    assert s["changed"] == 0.0
    pred = model(split.test.x).argmax(1)
    assert s["follow_rate"] == pytest.approx((pred == task.swapped_to).double().mean().item())


def test_sweep_follows_and_shares():
    split, region = _split(), decoy.patch_region(4, 2)
    model, x = _patch_reader(region), split.test.x[:20]
    values = decoy.sweep_values(C, 3)  # odd: no midpoints between levels
    y = split.test.y[:20]
    sw = decoy.sweep(model, x, y, region, values=values, method="gradient_x_input", classes=C)
    torch.testing.assert_close(sw.follow, torch.ones(len(values), dtype=sw.follow.dtype))
    # the reader predicts level_class(v) for every image: accuracy is the share of that label
    expected_acc = [(y == decoy.level_class(v, C)).double().mean().item() for v in values]
    torch.testing.assert_close(sw.accuracy, torch.tensor(expected_acc, dtype=sw.accuracy.dtype))
    # the reader depends on the patch only: all of gradient x input lies there (0 if v = 0)
    expected = torch.tensor([0.0 if v == 0 else 1.0 for v in values.tolist()])
    torch.testing.assert_close(sw.share, expected)
    # a second oracle at one value: the explained logit's weights times the input
    xv = decoy.with_patch(x, region, 0.35)
    t = model(xv).argmax(1)
    R = xv * model[0].weight[t].detach()
    torch.testing.assert_close(
        explain(model, xv, method="gradient_x_input").input, R, rtol=1e-6, atol=1e-7
    )


def test_patch_weight_ratio():
    region = decoy.patch_region(4, 2)
    model = nn.Sequential(nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].weight[:, region] = 0.5
    assert decoy.patch_weight_ratio(model, region) == pytest.approx(0.5)
    assert decoy.patch_weight_ratio(_patch_reader(region), region) == float("inf")

"""Parameter and MAC counts of pruned MLPs against the models surgery actually builds."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunelab import costs, models, surgery


def counted_macs(model: nn.Module, D: int) -> int:
    """Multiply-accumulates of one input: one per weight entry of every Linear a forward uses."""
    used = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: used.append(mod.weight.numel()))
        for m in model
        if isinstance(m, nn.Linear)
    ]
    try:
        model(torch.zeros(1, D, dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
    return sum(used)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 7), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
    compensate=st.sampled_from(["mean", "none"]),
)
def test_counts_match_the_pruned_model(sizes, seed, compensate):
    widths = [3, *sizes, 2]
    model = models.mlp(widths, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    remove = {}
    for ell, H in enumerate(sizes):
        k = int(torch.randint(0, H, (1,), generator=g))  # keep at least one node
        remove[ell] = torch.randperm(H, generator=g)[:k].tolist()
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    pruned = surgery.remove_nodes(model, remove, compensate=compensate, x=x)
    assert costs.widths(model, remove) == [3, *(m.out_features for m in pruned[::2])]
    assert costs.parameters(model, remove, compensate=compensate) == sum(
        p.numel() for p in pruned.parameters()
    )
    assert costs.macs(model, remove) == counted_macs(pruned, 3)
    assert costs.macs(model) == counted_macs(model, 3)
    assert costs.speedup(model, remove) == pytest.approx(
        counted_macs(model, 3) / counted_macs(pruned, 3)
    )
    assert costs.speedup(model, remove) >= 1


def test_bias_free_layers_count_the_bias_that_mean_compensation_creates():
    model = nn.Sequential(
        nn.Linear(4, 5, bias=False).double(), nn.ReLU(), nn.Linear(5, 3, bias=False).double()
    )
    x = torch.randn(8, 4, dtype=torch.float64)
    for compensate in ("mean", "none"):
        pruned = surgery.remove_nodes(model, {0: [1, 2]}, compensate=compensate, x=x)
        assert costs.parameters(model, {0: [1, 2]}, compensate=compensate) == sum(
            p.numel() for p in pruned.parameters()
        )
    assert costs.parameters(model, {0: [1, 2]}, compensate="mean") == 4 * 3 + 3 * 3 + 3


def test_mnist_mlp_numbers_and_errors():
    model = models.mlp((784, 300, 100, 10), seed=0)
    assert costs.macs(model) == 784 * 300 + 300 * 100 + 100 * 10
    assert costs.parameters(model) == 266_610
    half = {0: list(range(150)), 1: list(range(50))}
    assert costs.macs(model, half) == 784 * 150 + 150 * 50 + 50 * 10
    with pytest.raises(ValueError, match="hidden layer 2 out of range"):
        costs.widths(model, {2: [0]})
    with pytest.raises(ValueError, match="distinct node indices"):
        costs.widths(model, {0: [1, 1]})
    with pytest.raises(ValueError, match="removes all 100 nodes"):
        costs.widths(model, {1: list(range(100))})
    with pytest.raises(ValueError, match="compensate='half'"):
        costs.parameters(model, half, compensate="half")


@pytest.mark.parametrize("batchnorm", [False, True])
def test_convnet_counts_match_the_pruned_model(batchnorm):
    """Parameters of the physically pruned lenet5 and MACs counted by hooks on its layers."""
    from torch import nn

    from prunelab import ops

    model = models.lenet5(batchnorm=batchnorm, seed=0).eval()
    plan = {0: [1, 4], 1: [0, 3, 15], 2: list(range(0, 120, 7)), 3: [5]}
    for remove in (None, plan):
        pruned = model if remove is None else surgery.remove_nodes(model, remove, compensate="none")
        n_params = sum(p.numel() for p in pruned.parameters())
        assert costs.parameters(model, remove) == n_params
        macs = []

        def count(module, inputs, out, macs=macs):
            if isinstance(module, nn.Conv2d):
                macs.append(module.weight.numel() * out[0, 0].numel())
            elif isinstance(module, nn.Linear):
                macs.append(module.weight.numel())

        handles = [m.register_forward_hook(count) for m in pruned.modules()]
        pruned(torch.zeros(1, 1, 28, 28))
        for h in handles:
            h.remove()
        assert costs.macs(model, remove, in_shape=(1, 28, 28)) == sum(macs)
        assert costs.widths(model, remove)[1:-1] == ops.parse(pruned).hidden_sizes
    assert costs.speedup(model, plan, in_shape=(1, 28, 28)) > 1
    with pytest.raises(ValueError, match=r"pass in_shape=\(C, H, W\)"):
        costs.macs(model)

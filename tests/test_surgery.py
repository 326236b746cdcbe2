"""surgery.remove_nodes against an explicit mean-replaced (or zeroed) forward pass, in float64."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.surgery import remove_nodes
from torch import nn

from prunelab import models

F64 = torch.float64
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]


def _hidden_ends(model: nn.Sequential) -> list[int]:
    """Position of the last module (activation or dropout) of each hidden layer."""
    return [layer.end for layer in models.parse(model).hidden]


def oracle(model: nn.Sequential, x: torch.Tensor, remove: dict, compensate: str, x_eval=None):
    """Run the model's own modules (eval mode), setting removed nodes to their mean over ``x``.

    Means are taken layer by layer in the replaced network (the first pass over ``x``), then
    the same constants are used to evaluate ``x_eval``.
    """
    model = copy.deepcopy(model).eval()
    ends = _hidden_ends(model)
    constants: dict[int, torch.Tensor] = {}

    def run(inp, record):
        a = inp
        with torch.no_grad():
            for i, module in enumerate(model):
                a = module(a)
                if i in ends and ends.index(i) in remove:
                    ell = ends.index(i)
                    idx = list(remove[ell])
                    if record:
                        value = a[:, idx].mean(0) if compensate == "mean" else a.new_zeros(len(idx))
                        constants[ell] = value
                    a = a.clone()
                    a[:, idx] = constants[ell]
        return a

    run(x, True)
    return run(x if x_eval is None else x_eval, False)


def _model(activation: str, widths=(3, 6, 5, 4, 3), dropout=0.0, seed=0) -> nn.Sequential:
    return models.mlp(widths, activation=activation, dropout=dropout, seed=seed, dtype=F64)


def _x(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("compensate", ["mean", "none"])
def test_matches_replaced_forward(activation, compensate):
    model = _model(activation, dropout=0.2)
    x, x2 = _x(64, 3, 1), _x(32, 3, 2)
    remove = {0: [1, 4], 1: [0], 2: [2, 3]}
    pruned = remove_nodes(model, remove, compensate=compensate, x=x).eval()
    assert models.hidden_sizes(pruned) == [4, 4, 2]
    for inp in (x, x2):
        expected = oracle(model, x, remove, compensate, inp)
        torch.testing.assert_close(pruned(inp), expected, rtol=0, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    depth=st.integers(1, 3),
    activation=st.sampled_from(ACTIVATIONS),
    compensate=st.sampled_from(["mean", "none"]),
    data=st.data(),
)
def test_random_nets_and_subsets(seed, depth, activation, compensate, data):
    g = torch.Generator().manual_seed(seed)
    widths = [2, *torch.randint(2, 7, (depth,), generator=g).tolist(), 3]
    model = _model(activation, widths, seed=seed)
    remove = {}
    for ell, H in enumerate(widths[1:-1]):
        nodes = data.draw(st.lists(st.integers(0, H - 1), unique=True, max_size=H - 1))
        if nodes:
            remove[ell] = nodes
    x = _x(20, 2, seed + 1)
    pruned = remove_nodes(model, remove, compensate=compensate, x=x)
    expected = oracle(model, x, remove, compensate)
    torch.testing.assert_close(pruned(x), expected, rtol=0, atol=1e-10)
    assert models.hidden_sizes(pruned) == [
        H - len(remove.get(ell, [])) for ell, H in enumerate(widths[1:-1])
    ]


def test_constant_node_changes_nothing():
    model = _model("tanh")
    with torch.no_grad():
        model[2].weight[3] = 0.0  # node 3 of hidden layer 1 is tanh(b): constant
        model[0].bias[2] = -50.0  # node 2 of hidden layer 0 ... tanh(-50 + w x) = -1 on data
        model[0].weight[2] = 0.01
    x = _x(50, 3, 3)
    before = model(x)
    pruned = remove_nodes(model, {0: [2], 1: [3]}, x=x)
    torch.testing.assert_close(pruned(x), before, rtol=0, atol=1e-12)


def test_dead_relu_node_needs_no_compensation():
    model = _model("relu")
    with torch.no_grad():
        model[0].bias[1] = -100.0  # dead on the data
    x = _x(40, 3, 4)
    for compensate in ("mean", "none"):
        pruned = remove_nodes(model, {0: [1]}, compensate=compensate, x=x)
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-12)


def test_mean_compensation_keeps_next_mean_preactivation():
    """STYLE.md oracle: the next layer's mean pre-activation over the data is unchanged."""
    model = _model("relu", widths=(3, 8, 4))
    x = _x(100, 3, 5)
    pruned = remove_nodes(model, {0: [0, 2, 5]}, x=x)
    torch.testing.assert_close(pruned(x).mean(0), model(x).mean(0), rtol=0, atol=1e-12)


def test_input_model_untouched_and_independent():
    model = _model("relu", dropout=0.1).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x(30, 3, 6)
    pruned = remove_nodes(model, {1: [0, 1]}, x=x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.training and pruned.training
    with torch.no_grad():
        for p in pruned.parameters():
            p.add_(1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # modules kept in place, same kinds
    assert [type(m) for m in pruned] == [type(m) for m in model]
    assert all(p.dtype == F64 and p.requires_grad for p in pruned.parameters())


def test_keeps_module_names_flatten_and_identity():
    model = nn.Sequential(
        OrderedDict(
            flat=nn.Flatten(),
            fc1=nn.Linear(4, 5, dtype=F64),
            act1=nn.ReLU(),
            id=nn.Identity(),
            drop=nn.Dropout(0.3),
            fc2=nn.Linear(5, 3, dtype=F64),
        )
    ).eval()
    x = torch.randn(10, 1, 2, 2, dtype=F64)
    pruned = remove_nodes(model, {0: [4]}, x=x).eval()
    assert [n for n, _ in pruned.named_children()] == ["flat", "fc1", "act1", "id", "drop", "fc2"]
    torch.testing.assert_close(pruned(x), oracle(model, x, {0: [4]}, "mean"), rtol=0, atol=1e-12)


def test_next_layer_without_bias_gets_one():
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, bias=False, dtype=F64)
    )
    x = _x(20, 3, 7)
    pruned = remove_nodes(model, {0: [0, 3]}, x=x)
    assert pruned[2].bias is not None
    torch.testing.assert_close(pruned(x), oracle(model, x, {0: [0, 3]}, "mean"), rtol=0, atol=1e-12)
    plain = remove_nodes(model, {0: [0, 3]}, compensate="none")
    assert plain[2].bias is None
    torch.testing.assert_close(plain(x), oracle(model, x, {0: [0, 3]}, "none"), rtol=0, atol=1e-12)


def test_shared_linear_is_unshared_in_the_copy():
    shared = nn.Linear(4, 4, dtype=F64)
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64),
        nn.Tanh(),
        shared,
        nn.Tanh(),
        shared,
        nn.Tanh(),
        nn.Linear(4, 2, dtype=F64),
    )
    x = _x(25, 3, 8)
    remove = {1: [2]}
    pruned = remove_nodes(model, remove, x=x)
    assert pruned[2] is not pruned[4]
    assert (pruned[2].out_features, pruned[4].in_features, pruned[4].out_features) == (3, 3, 4)
    torch.testing.assert_close(pruned(x), oracle(model, x, remove, "mean"), rtol=0, atol=1e-12)


def test_tensor_indices_and_empty_plan():
    model = _model("relu")
    x = _x(10, 3, 9)
    a = remove_nodes(model, {0: torch.tensor([3, 1]), 1: []}, x=x)
    b = remove_nodes(model, {0: [1, 3]}, x=x)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    same = remove_nodes(model, {}, x=x)
    torch.testing.assert_close(same(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("remove", "kwargs", "error", "match"),
    [
        ({3: [0]}, {}, ValueError, "hidden layer 3 out of range"),
        ({-1: [0]}, {}, ValueError, "out of range"),
        ({0: [6]}, {}, ValueError, "node index 6 out of range"),
        ({0: [-1]}, {}, ValueError, "out of range"),
        ({0: [1, 1]}, {}, ValueError, "node 1 more than once"),
        ({0: list(range(6))}, {}, ValueError, "removes all 6 nodes"),
        ({0: [1.0]}, {}, TypeError, "must be an integer"),
        ({0: [True]}, {}, TypeError, "not a bool"),
        ({0: 1}, {}, TypeError, "list of node indices"),
        ({0: torch.tensor([0.5])}, {}, TypeError, "integer node indices"),
        ([(0, [1])], {}, TypeError, "must be a mapping"),
        ({0: [1]}, {"x": None}, ValueError, "needs data x"),
        ({0: [1]}, {"compensate": "median"}, ValueError, "choose from"),
        ({0: [1]}, {"x": torch.randn(5, 4, dtype=F64)}, ValueError, r"shape \[N, 3\]"),
        ({0: [1]}, {"x": torch.randn(0, 3, dtype=F64)}, ValueError, "no samples"),
        ({0: [1]}, {"x": torch.ones(5, 3, dtype=torch.long)}, TypeError, "floating-point"),
    ],
)
def test_errors(remove, kwargs, error, match):
    model = _model("relu")
    kwargs = {"x": _x(5, 3, 0), **kwargs}
    with pytest.raises(error, match=match):
        remove_nodes(model, remove, **kwargs)


def test_unsupported_model_is_named():
    with pytest.raises(TypeError, match="remove_nodes"):
        remove_nodes(nn.Sequential(nn.Conv1d(1, 1, 1)), {}, compensate="none")

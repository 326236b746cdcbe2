"""surgery.remove_nodes against an explicit mean-replaced (or zeroed) forward pass, in float64."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.surgery import compensation_error, remove_nodes
from torch import nn

from prunelab import models, ops

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


# --- convnets -----------------------------------------------------------------------------


def held(model: nn.Sequential, x: torch.Tensor, remove: dict, compensate: str) -> torch.Tensor:
    """``model(x)`` with the removed channels (or features) of each hidden layer held at their
    mean over samples and positions (or 0) after the activation, by hooks in layer order."""
    view = ops.parse(model)
    flat = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    handles = []
    for ell, nodes in remove.items():
        R = torch.tensor(nodes)

        def hook(m, inputs, out, R=R):
            out = out.clone()
            dims = [d for d in range(out.dim()) if d != 1]
            value = out[:, R].mean(dims) if compensate == "mean" else out.new_zeros(len(R))
            out[:, R] = value.view(-1, *[1] * (out.dim() - 2))
            return out

        handles.append(flat[view.ops[view.unit_ops[ell]].position].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def _convnet(name: str) -> tuple[nn.Sequential, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if name == "lenet5":
        x = torch.rand(32, 1, 28, 28, generator=g, dtype=F64)
        return models.lenet5(seed=0, dtype=F64).eval(), x
    model = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=F64)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 16, 16, generator=g, dtype=F64))  # BatchNorm statistics
    return model.eval(), torch.rand(32, 3, 16, 16, generator=g, dtype=F64)


CONV_PLANS = {
    "lenet5": {0: [1, 4], 1: [0, 3, 15], 2: list(range(0, 120, 2)), 3: [5, 80]},
    "vgg": {0: [1, 5], 1: [0, 3], 2: [7], 4: [1, 2], 5: [3], 7: [0, 9], 8: [1]},
}


@pytest.mark.parametrize("name", sorted(CONV_PLANS))
@pytest.mark.parametrize("compensate", ["mean", "none"])
def test_convnets_match_the_held_forward(name, compensate):
    model, x = _convnet(name)
    remove = CONV_PLANS[name]
    pruned = remove_nodes(model, remove, compensate=compensate, x=x)
    torch.testing.assert_close(pruned(x), held(model, x, remove, compensate), rtol=0, atol=1e-10)
    sizes = ops.parse(pruned).hidden_sizes
    assert sizes == [
        H - len(remove.get(ell, [])) for ell, H in enumerate(ops.parse(model).hidden_sizes)
    ]
    offsets = [n for n, m in pruned.named_modules() if isinstance(m, ops.Offset)]
    if compensate == "none" or name == "lenet5":  # lenet5's readers are unpadded
        assert offsets == []
    else:  # the padded conv readers of layers 0, 1, 2, 4 (layer 5's reads one position)
        assert offsets == ["0.4_offset", "0.8_offset", "0.11_offset", "0.18_offset"]


def _output_of(model: nn.Sequential, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``module`` (inside ``model``) outputs when ``model`` runs on ``x``."""
    seen = []
    handle = module.register_forward_hook(lambda m, inputs, out: seen.append(out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


def test_mean_interior_adds_no_module_and_its_error_is_what_it_misses():
    model, x = _convnet("vgg")
    remove = {0: [1, 5]}
    exact = remove_nodes(model, remove, x=x)
    interior = remove_nodes(model, remove, compensate="mean_interior", x=x)
    assert not any(isinstance(m, ops.Offset) for m in interior.modules())
    err = compensation_error(model, remove, x=x)
    assert list(err) == [0] and err[0] > 1e-3
    # the one compensated reader (conv 0.4, its Offset, BatchNorm 0.5) differs by err[0] at most
    gap = (_output_of(exact, exact[0][6], x) - _output_of(interior, interior[0][5], x)).abs()
    assert abs(gap.max().item() - err[0]) < 1e-10
    assert gap[:, :, 1:-1, 1:-1].max() < 1e-10  # the interior of the 8x8 maps
    # a Linear or unpadded reader: exact, and the same as "mean"
    lenet, xl = _convnet("lenet5")
    assert max(compensation_error(lenet, CONV_PLANS["lenet5"], x=xl).values()) < 1e-12
    a = remove_nodes(lenet, CONV_PLANS["lenet5"], compensate="mean_interior", x=xl)
    torch.testing.assert_close(
        a(xl), held(lenet, xl, CONV_PLANS["lenet5"], "mean"), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize(
    ("remove", "kwargs", "error", "match"),
    [
        ({1: list(range(16))}, {}, ValueError, "removes all 16 nodes of hidden layer 1"),
        ({4: [0]}, {}, ValueError, "hidden layer 4 out of range"),
        ({0: [6]}, {}, ValueError, "node index 6 out of range"),
        ({0: [1]}, {"x": None}, ValueError, r"needs data x.*Tensor\[N, 1, H, W\]"),
        ({0: [1]}, {"x": None, "compensate": "mean_interior"}, ValueError, "needs data x"),
        ({0: [1]}, {"compensate": "border"}, ValueError, "mean_interior"),
        ({0: [1]}, {"x": torch.rand(2, 3, 28, 28)}, ValueError, r"shape \[N, 1, H, W\]"),
        ({0: [1]}, {"x": torch.rand(2, 1, 3, 3)}, ValueError, "cannot take"),
    ],
)
def test_convnet_errors(remove, kwargs, error, match):
    model, x = _convnet("lenet5")
    kwargs = {"x": x[:4], **kwargs}
    with pytest.raises(error, match=match):
        remove_nodes(model, remove, **kwargs)


def test_compensation_error_names_itself():
    model, x = _convnet("lenet5")
    with pytest.raises(ValueError, match="compensation_error: .*needs data x"):
        compensation_error(model, {0: [1]}, x=None)
    with pytest.raises(ValueError, match=r"compensation_error: remove\[0\] holds node index 9"):
        compensation_error(model, {0: [9]}, x=x)


def test_unsupported_model_is_named():
    with pytest.raises(TypeError, match="remove_nodes"):
        remove_nodes(nn.Sequential(nn.Conv1d(1, 1, 1)), {}, compensate="none")

"""Layer Hessian blocks against torch.func.hessian of the loss (float64), and off-diagonal mass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunelab import hessian_blocks, models

F64 = torch.float64


def _setup(activation="relu", widths=(3, 5, 4, 3), seed=0, n=30):
    model = models.mlp(widths, activation=activation, seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    y = torch.randint(0, widths[-1], (n,), generator=g)
    return model, x, y


def _params(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def autograd_block(model, x, y, name, bias=True):
    """Hessian of the mean CE w.r.t. [W.flatten(), b] of the Linear ``name``, by torch.func."""
    params = _params(model)
    W, b = params[f"{name}.weight"], params[f"{name}.bias"]

    def loss(flat):
        p = dict(params)
        p[f"{name}.weight"] = flat[: W.numel()].reshape(W.shape)
        if bias:
            p[f"{name}.bias"] = flat[W.numel() :]
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    flat = torch.cat([W.reshape(-1), b]) if bias else W.reshape(-1)
    return torch.func.hessian(loss)(flat)


def full_hessian(model, x, y):
    params = _params(model)
    sizes = [p.numel() for p in params.values()]

    def loss(flat):
        p = {n: t.reshape(q.shape) for (n, q), t in zip(params.items(), flat.split(sizes))}
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    return torch.func.hessian(loss)(torch.cat([p.reshape(-1) for p in params.values()]))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_layer_hessian_equals_autograd(activation):
    model, x, y = _setup(activation)
    for k, name in enumerate(["0", "2", "4"]):
        torch.testing.assert_close(
            hessian_blocks.layer_hessian(model, x, y, k),
            autograd_block(model, x, y, name),
            rtol=1e-10,
            atol=1e-12,
        )
    without = hessian_blocks.layer_hessian(model, x, y, "2", bias=False)
    torch.testing.assert_close(without, autograd_block(model, x, y, "2", bias=False))


def test_row_hessians_are_the_diagonal_blocks_per_unit():
    model, x, y = _setup("tanh")
    full = autograd_block(model, x, y, "2")  # layer 5 -> 4: P = 20 + 4
    H, D = 4, 5
    rows = hessian_blocks.row_hessians(model, x, y, 1)
    assert rows.shape == (H, D + 1, D + 1)
    for i in range(H):
        index = torch.cat([torch.arange(i * D, (i + 1) * D), torch.tensor([H * D + i])])
        torch.testing.assert_close(rows[i], full[index][:, index], rtol=1e-10, atol=1e-12)
    some = hessian_blocks.row_hessians(model, x, y, 1, rows=torch.tensor([3, 1]), bias=False)
    torch.testing.assert_close(some[0], rows[3, :D, :D])


def test_pre_activation_hessians_of_the_logits_are_the_softmax_hessian():
    model, x, y = _setup()
    Hz = hessian_blocks.pre_activation_hessians(model, x, y, -1)
    p = torch.softmax(model(x), 1)
    torch.testing.assert_close(
        Hz.sum(0), (torch.diag_embed(p) - p[:, :, None] * p[:, None]).mean(0)
    )


def test_offdiagonal_ratio():
    assert hessian_blocks.offdiagonal_ratio(torch.diag(torch.tensor([1.0, -2.0, 3.0]))) == 0
    A = torch.tensor([[1.0, 2.0], [2.0, 2.0]])  # off mass 8, total 13
    assert hessian_blocks.offdiagonal_ratio(A) == pytest.approx((8 / 13) ** 0.5)
    assert hessian_blocks.offdiagonal_ratio(torch.zeros(3, 3)) == 0
    with pytest.raises(ValueError, match="square"):
        hessian_blocks.offdiagonal_ratio(torch.zeros(2, 3))


def test_offdiagonal_ratio_estimate_matches_the_full_hessian():
    model, x, y = _setup(widths=(3, 4, 3), n=20)
    exact = hessian_blocks.offdiagonal_ratio(full_hessian(model, x, y))
    g = torch.Generator().manual_seed(3)
    r, se = hessian_blocks.offdiagonal_ratio_estimate(model, x, y, probes=200, generator=g)
    assert 0 < se < 0.05
    assert abs(r**2 - exact**2) < 4 * se  # the estimator is for r^2


def test_errors_name_the_argument():
    model, x, y = _setup()
    with pytest.raises(ValueError, match="out of range"):
        hessian_blocks.layer_hessian(model, x, y, 3)
    with pytest.raises(KeyError, match="choose from"):
        hessian_blocks.layer_hessian(model, x, y, "1")
    with pytest.raises(TypeError, match="labels"):
        hessian_blocks.layer_hessian(model, x, y.double(), 0)
    with pytest.raises(TypeError, match="float32"):
        hessian_blocks.layer_hessian(model, x.float(), y, 0)
    with pytest.raises(ValueError, match="probes"):
        hessian_blocks.offdiagonal_ratio_estimate(model, x, y, probes=1)


# --- convnets ----------------------------------------------------------------------------------


def _convnet(activation: str, pool: str, batchnorm: bool, seed: int = 0):
    """A tiny convnet on [2, 6, 6] inputs: padded and strided convs, a pool, Flatten, Linear."""
    torch.manual_seed(seed)
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}[activation]
    Pool = torch.nn.MaxPool2d if pool == "max" else torch.nn.AvgPool2d
    layers = [torch.nn.Conv2d(2, 3, 3, padding=1)]
    layers += [torch.nn.BatchNorm2d(3)] if batchnorm else []
    layers += [act(), Pool(2), torch.nn.Conv2d(3, 4, 2, stride=1), act()]
    layers += [torch.nn.Flatten(), torch.nn.Linear(16, 5), act(), torch.nn.Linear(5, 3)]
    model = torch.nn.Sequential(*layers).double()
    if batchnorm:
        bn = model[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(12, 2, 6, 6, generator=g, dtype=F64)
    y = torch.randint(0, 3, (12,), generator=g)
    return model.eval(), x, y


@pytest.mark.parametrize(
    "activation, pool, batchnorm",
    [("relu", "max", False), ("relu", "avg", True), ("tanh", "max", True), ("gelu", "avg", False)],
)
def test_conv_layer_hessians_equal_autograd(activation, pool, batchnorm):
    """Every layer of a convnet, piecewise-linear (factored H_z) and curved (dense H_z) alike;
    the per-filter blocks are the diagonal blocks of the layer's."""
    model, x, y = _convnet(activation, pool, batchnorm)
    names = [
        n for n, m in model.named_children() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    for k, name in enumerate(names):
        H = hessian_blocks.layer_hessian(model, x, y, k)
        torch.testing.assert_close(H, autograd_block(model, x, y, name), rtol=1e-9, atol=1e-12)
        W = dict(model.named_parameters())[f"{name}.weight"]
        J = W[0].numel()
        rows = hessian_blocks.row_hessians(model, x, y, name)
        for o in range(W.shape[0]):
            idx = torch.cat([torch.arange(o * J, (o + 1) * J), torch.tensor([W.numel() + o])])
            torch.testing.assert_close(rows[o], H[idx][:, idx], rtol=1e-9, atol=1e-12)
    no_bias = hessian_blocks.layer_hessian(model, x, y, names[1], bias=False)
    torch.testing.assert_close(no_bias, autograd_block(model, x, y, names[1], bias=False))


def test_conv_pre_activation_hessians_equal_autograd():
    model, x, y = _convnet("tanh", "max", False)
    H = hessian_blocks.pre_activation_hessians(model, x, y, 1)  # [N, 4 * 2 * 2, 16]
    z = model[:4](x)  # the second conv's output
    upper = model[4:]

    def loss(zn, yn):
        return F.cross_entropy(upper(zn.view(1, 4, 2, 2)), yn[None]) / len(x)

    want = torch.stack([torch.func.hessian(loss)(z[n].reshape(-1), y[n]) for n in range(len(x))])
    torch.testing.assert_close(H, want, rtol=1e-10, atol=1e-13)


def test_conv_offdiagonal_share_of_a_filter_block():
    model, x, y = _convnet("relu", "max", False)
    H = hessian_blocks.layer_hessian(model, x, y, 0)
    r = hessian_blocks.offdiagonal_ratio(H)
    off = H - torch.diag_embed(torch.diagonal(H))
    assert r == pytest.approx((off.norm() / H.norm()).item(), rel=1e-12) and 0 < r < 1


def test_a_train_mode_batchnorm_is_named():
    model, x, y = _convnet("relu", "avg", True)
    model.train()
    with pytest.raises(ValueError, match=r"layer_hessian: module 1 \(BatchNorm2d.*eval"):
        hessian_blocks.layer_hessian(model, x, y, 0)

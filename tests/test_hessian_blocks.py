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

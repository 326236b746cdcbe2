"""Relevance methods against autograd, hand-worked fixtures and the identities they must obey."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunelab.relevance import (
    METHODS,
    composed_max_relevance,
    explain,
    max_relevance,
)
from torch import nn

from prunelab import models

DTYPE = torch.float64
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "identity"]
HOMOGENEOUS = ["relu", "leaky_relu", "identity"]  # f(s z) = s f(z) for s > 0


def _mlp(widths, activation="relu", *, bias=True, seed=0) -> nn.Sequential:
    model = models.mlp(widths, activation=activation, seed=seed, dtype=DTYPE)
    if not bias:  # rebuild with bias=False Linear layers, same weights
        model = nn.Sequential(
            *(
                _no_bias(m) if isinstance(m, nn.Linear) else m
                for m in model  # keep activations
            )
        )
    return model


def _no_bias(linear: nn.Linear) -> nn.Linear:
    new = nn.Linear(linear.in_features, linear.out_features, bias=False, dtype=DTYPE)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
    return new


def _x(n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def _autograd(model: nn.Sequential, x: torch.Tensor, t: torch.Tensor):
    """Per-sample d f_t / d x [N, D] and d f_t / d b per Linear *occurrence* [N, H]: every
    occurrence gets its own per-sample bias leaf, so a shared module is two separate biases."""
    x = x.clone().requires_grad_(True)
    h, leaves = x, []
    for m in model:
        if isinstance(m, nn.Linear):
            b = torch.zeros(m.out_features, dtype=DTYPE) if m.bias is None else m.bias.detach()
            leaves.append(b.expand(len(x), -1).clone().requires_grad_(True))
            h = h @ m.weight.T + leaves[-1]
        else:
            h = m(h)
    grads = torch.autograd.grad(h.gather(1, t[:, None]).sum(), [x, *leaves])
    biases = [
        torch.zeros(m.out_features, dtype=DTYPE) if m.bias is None else m.bias.detach()
        for m in model
        if isinstance(m, nn.Linear)
    ]
    return grads[0], list(grads[1:]), biases


def _close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# --- hand-worked fixture ------------------------------------------------------------------------


def _hand_net(w2=(2.0, 3.0)) -> nn.Sequential:
    """x = (1, 2) -> W1 = [[1, 1], [1, -1]], b1 = (0.5, 0.5) -> ReLU -> W2 = [w2], b2 = -1."""
    l1, l2 = nn.Linear(2, 2, dtype=DTYPE), nn.Linear(2, 1, dtype=DTYPE)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        l1.bias.copy_(torch.tensor([0.5, 0.5]))
        l2.weight.copy_(torch.tensor([w2]))
        l2.bias.copy_(torch.tensor([-1.0]))
    return nn.Sequential(l1, nn.ReLU(), l2)


X_HAND = torch.tensor([[1.0, 2.0]], dtype=DTYPE)
# z1 = (1 + 2 + 0.5, 1 - 2 + 0.5) = (3.5, -0.5), a1 = (3.5, 0), f = 2 * 3.5 + 3 * 0 - 1 = 6


def test_hand_lrp0_and_blame_bias():
    # output layer: R(z2) = 6 = z2, so R(a1_1) = 3.5 * 2 * 6 / 6 = 7, R(a1_2) = 0 (a = 0),
    # bias b2 = -1 gets -1 * 6 / 6 = -1.  Hidden unit 1: R(z1_1) = 7 (ignore), z1_1 = 3.5:
    # R(x1) = 1 * 1 * 7 / 3.5 = 2, R(x2) = 2 * 1 * 7 / 3.5 = 4, bias 0.5 * 7 / 3.5 = 1.
    # Total 2 + 4 + 1 + 0 - 1 = 6 = f.
    for method in ("lrp_0", "blame_bias"):
        r = explain(_hand_net(), X_HAND, method=method)
        _close(r.output, torch.tensor([6.0], dtype=DTYPE))
        _close(r.input, torch.tensor([[2.0, 4.0]], dtype=DTYPE))
        _close(r.bias[0], torch.tensor([[1.0, 0.0]], dtype=DTYPE))
        _close(r.bias[1], torch.tensor([[-1.0]], dtype=DTYPE))


def test_hand_lrp_epsilon():
    # eps = 1: blip(6) = 7, so R(a1_1) = 3.5 * 2 * 6 / 7 = 6, bias b2: -1 * 6 / 7.
    # blip(3.5) = 4.5: R(x1) = 1 * 6 / 4.5 = 4/3, R(x2) = 8/3, bias b1_1 = 0.5 * 6 / 4.5 = 2/3.
    # The stabiliser swallows 6 - (4/3 + 8/3 + 2/3 - 6/7) = 6 - 80/21.
    r = explain(_hand_net(), X_HAND, method="lrp_epsilon", epsilon=1.0)
    _close(r.input, torch.tensor([[4 / 3, 8 / 3]], dtype=DTYPE))
    _close(r.bias[0], torch.tensor([[2 / 3, 0.0]], dtype=DTYPE))
    _close(r.bias[1], torch.tensor([[-6 / 7]], dtype=DTYPE))
    _close(r.total, torch.tensor([80 / 21], dtype=DTYPE))


def test_hand_signal_methods():
    # Output signal 1; at a1 it is W2 = (2, 3).  relu'(z1) = (1, 0).
    # gradient: (2, 0) @ W1 = (2, 2).  guided: relu((2, 0)) = (2, 0) -> (2, 2).
    # deconvnet: relu((2, 3)) = (2, 3) (the dead unit passes!) -> (2 + 3, 2 - 3) = (5, -1).
    net = _hand_net()
    _close(explain(net, X_HAND, method="gradient").input, torch.tensor([[2.0, 2.0]], dtype=DTYPE))
    _close(
        explain(net, X_HAND, method="gradient_x_input").input, torch.tensor([[2.0, 4.0]]).double()
    )
    _close(
        explain(net, X_HAND, method="guided_backprop").input, torch.tensor([[2.0, 2.0]]).double()
    )
    _close(explain(net, X_HAND, method="deconvnet").input, torch.tensor([[5.0, -1.0]], dtype=DTYPE))
    # W2 = (-2, 3): signal (-2, 3).  gradient: (-2, 0) -> (-2, -2); guided: relu((-2, 0)) = 0;
    # deconvnet: relu((-2, 3)) = (0, 3) -> (3, -3).
    net = _hand_net((-2.0, 3.0))
    _close(explain(net, X_HAND, method="gradient").input, torch.tensor([[-2.0, -2.0]]).double())
    _close(explain(net, X_HAND, method="guided_backprop").input, torch.zeros(1, 2, dtype=DTYPE))
    _close(explain(net, X_HAND, method="deconvnet").input, torch.tensor([[3.0, -3.0]]).double())


def test_hand_deeplift():
    # baseline 0: z1_0 = (0.5, 0.5), a1_0 = (0.5, 0.5), f0 = 2 * 0.5 + 3 * 0.5 - 1 = 1.5,
    # delta f = 4.5.  Rescale: unit 1 (3.5 - 0.5) / (3.5 - 0.5) = 1; unit 2 (0 - 0.5) /
    # (-0.5 - 0.5) = 0.5.  Multipliers m = 2 * 1 * (1, 1) + 3 * 0.5 * (1, -1) = (3.5, 0.5),
    # contributions (1 * 3.5, 2 * 0.5) = (3.5, 1): they sum to 4.5 (gradient x input: (2, 4)).
    for q_form in (False, True):
        r = explain(_hand_net(), X_HAND, method="deeplift", q_form=q_form)
        _close(r.output, torch.tensor([4.5], dtype=DTYPE))
        _close(r.input, torch.tensor([[3.5, 1.0]], dtype=DTYPE))
        assert all(torch.equal(b, torch.zeros_like(b)) for b in r.bias)


def test_hand_tanh_slope():
    # One tanh unit: x = 2, w = 1, b = 0, output weight 1.  LRP-0 puts all of f = tanh(2) on x
    # (x times the slope tanh(2)/2); gradient x input gives 2 * (1 - tanh(2)^2) instead.
    l1, l2 = nn.Linear(1, 1, dtype=DTYPE), nn.Linear(1, 1, dtype=DTYPE)
    with torch.no_grad():
        for lin in (l1, l2):
            lin.weight.fill_(1.0)
            lin.bias.zero_()
    net, x = nn.Sequential(l1, nn.Tanh(), l2), torch.tensor([[2.0]], dtype=DTYPE)
    t2 = torch.tanh(torch.tensor(2.0, dtype=DTYPE))
    _close(explain(net, x, method="lrp_0").input[0, 0], t2)
    _close(explain(net, x, method="gradient_x_input").input[0, 0], 2 * (1 - t2**2))
    # the source's Q-form table as data: gradient matrix rule + slope nonlinearity, times x
    slope = explain(net, x, method="gradient_x_input", rules={"nonlinearity": "slope"})
    _close(slope.input[0, 0], t2)


def test_hand_sigmoid_offset_is_a_bias():
    # One sigmoid unit, x = 2, w = 1, b = 0, output weight 1, b = 0: f = s(2).  blame_bias
    # counts f(0) = 1/2 as a bias: it gets R(a) * 0.5 / a = 0.5 and x gets s(2) - 0.5.
    # lrp_0 ("ignore") passes everything to z and on to x.
    l1, l2 = nn.Linear(1, 1, dtype=DTYPE), nn.Linear(1, 1, dtype=DTYPE)
    with torch.no_grad():
        for lin in (l1, l2):
            lin.weight.fill_(1.0)
            lin.bias.zero_()
    net, x = nn.Sequential(l1, nn.Sigmoid(), l2), torch.tensor([[2.0]], dtype=DTYPE)
    s2 = torch.sigmoid(torch.tensor(2.0, dtype=DTYPE))
    for q_form in (False, True):
        r = explain(net, x, method="blame_bias", q_form=q_form)
        _close(r.input[0, 0], s2 - 0.5)
        _close(r.bias[0][0, 0], torch.tensor(0.5, dtype=DTYPE))
        _close(r.total, r.output)
    _close(explain(net, x, method="lrp_0").input[0, 0], s2)


# --- oracles on random float64 nets -------------------------------------------------------------

DEPTHS = [(5, 3), (5, 7, 3), (5, 7, 6, 3)]  # 1 to 3 Linear layers


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("widths", DEPTHS)
def test_gradient_matches_autograd(activation, widths):
    model, x = _mlp(widths, activation, seed=3), _x(9, widths[0])
    r = explain(model, x, method="gradient")
    gx, gb, b = _autograd(model, x, r.target)
    _close(r.input, gx)
    for got, g, b_l in zip(r.bias, gb, b, strict=True):
        _close(got, b_l * g)  # signal at the constant input 1 of weight b: b df/db
    _close(explain(model, x, method="gradient_x_input").input, x * gx)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("widths", DEPTHS)
@pytest.mark.parametrize("activation", HOMOGENEOUS)
def test_lrp0_equals_gradient_x_input(widths, bias, activation):
    # with the bias in the denominator this holds with biases too (METHODS.md F2, correction)
    model, x = _mlp(widths, activation, bias=bias, seed=4), _x(11, widths[0])
    r = explain(model, x, method="lrp_0")
    gx, _, _ = _autograd(model, x, r.target)
    _close(r.input, x * gx)
    if not bias:  # conservation on the inputs alone
        _close(r.input.sum(1), r.output)


@pytest.mark.parametrize("widths", DEPTHS)
@pytest.mark.parametrize("activation", HOMOGENEOUS)
def test_blame_bias_conserves_and_bias_is_b_dfdb(widths, activation):
    model, x = _mlp(widths, activation, seed=5), _x(13, widths[0])
    r = explain(model, x, method="blame_bias")
    _close(r.input.sum(1) + sum(b.sum(1) for b in r.bias), r.output)
    _, gb, b = _autograd(model, x, r.target)
    _close(r.output, model(x).gather(1, r.target[:, None])[:, 0])
    for got, g, b_l in zip(r.bias, gb, b, strict=True):
        _close(got, b_l * g)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_blame_bias_conserves_for_every_activation(activation):
    # conservation is exact for any activation with "ignore" (the rule passes R unchanged);
    # only for homogeneous activations is it also b df/db.  A trailing activation is included.
    model = _mlp((4, 6, 5, 3), activation, seed=6)
    model.append(models.ACTIVATIONS[activation](0.01))
    x = _x(10, 4)
    for method in ("blame_bias", "lrp_0"):
        r = explain(model, x, method=method)
        _close(r.total, r.output)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("baseline", ["zero", "mean", "vector", "matrix"])
def test_deeplift_summation_to_delta(activation, baseline):
    model, x = _mlp((4, 6, 5, 3), activation, seed=7), _x(10, 4)
    x0 = {
        "zero": torch.zeros(4, dtype=DTYPE),
        "mean": x.mean(0),
        "vector": _x(1, 4, seed=8)[0],
        "matrix": _x(10, 4, seed=9),
    }[baseline]
    arg = baseline if baseline in ("zero", "mean") else x0
    r = explain(model, x, method="deeplift", baseline=arg)
    delta = (model(x) - model(x0.expand_as(x))).gather(1, r.target[:, None])[:, 0]
    _close(r.output, delta)
    _close(r.input.sum(1), delta)  # biases cancel in differences
    assert all(torch.equal(b, torch.zeros_like(b)) for b in r.bias)


@pytest.mark.parametrize("widths", DEPTHS)
def test_deeplift_zero_baseline_without_bias_is_gradient_x_input(widths):
    model, x = _mlp(widths, bias=False, seed=10), _x(8, widths[0])
    r = explain(model, x, method="deeplift", baseline="zero")
    _close(r.input, explain(model, x, method="gradient_x_input").input)
    if len(widths) == 2:
        return  # a single affine layer: DeepLIFT is exact, biases or not
    # with biases they differ (the reference activations are no longer zero)
    model_b = _mlp(widths, seed=10)
    r_b = explain(model_b, x, method="deeplift")
    assert not torch.allclose(r_b.input, explain(model_b, x, method="gradient_x_input").input)


class _DeconvReLU(torch.autograd.Function):
    """Zeiler & Fergus: the backward pass through a ReLU is relu(grad_output)."""

    @staticmethod
    def forward(ctx, z):
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp_min(0)


class _GuidedReLU(torch.autograd.Function):
    """Springenberg et al.: pass grad_output where both z > 0 and grad_output > 0."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * (z > 0) * (g > 0)


@pytest.mark.parametrize(
    ("method", "relu_fn"), [("deconvnet", _DeconvReLU), ("guided_backprop", _GuidedReLU)]
)
@pytest.mark.parametrize("widths", DEPTHS)
def test_modified_backprop_matches_manual(method, relu_fn, widths):
    model, x = _mlp(widths, seed=11), _x(12, widths[0])
    r = explain(model, x, method=method)
    xg = x.clone().requires_grad_(True)
    h = xg
    for m in model:
        h = relu_fn.apply(h) if isinstance(m, nn.ReLU) else m(h)
    (manual,) = torch.autograd.grad(h.gather(1, r.target[:, None]).sum(), xg)
    _close(r.input, manual)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_q_form_equals_r_form(method, activation):
    model, x = _mlp((4, 6, 5, 3), activation, seed=12), _x(10, 4)
    kw = {"baseline": "mean"} if method == "deeplift" else {}
    r = explain(model, x, method=method, **kw)
    q = explain(model, x, method=method, q_form=True, **kw)
    # sigmoid with f(0) != 0 makes LRP's f(z)/z large near z = 0: compare relatively
    tol = 1e-9 if activation == "sigmoid" else 1e-11
    _close(q.input, r.input, tol)
    for bq, br in zip(q.bias, r.bias, strict=True):
        _close(bq, br, tol)


def test_shared_module_against_autograd():
    torch.manual_seed(0)
    shared = nn.Linear(5, 5, dtype=DTYPE)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(5, 2, dtype=DTYPE))
    x = _x(7, 5)
    gx, gb, b = _autograd(model, x, model(x).argmax(1))
    assert not torch.allclose(gb[0], gb[1])  # two occurrences, two different bias gradients
    r = explain(model, x, method="gradient")
    _close(r.input, gx)
    bb = explain(model, x, method="blame_bias")
    assert len(bb.bias) == 3
    for got, g, b_l in zip(bb.bias, gb, b, strict=True):
        _close(got, b_l * g)
    _close(bb.total, bb.output)
    _close(bb.input, x * gx)


# --- targets, inputs and rule overrides --------------------------------------------------------


def test_targets_and_output_units():
    model, x = _mlp((4, 6, 3), seed=13), _x(6, 4)
    logits = model(x)
    r = explain(model, x, method="lrp_0")
    assert torch.equal(r.target, logits.argmax(1))
    _close(r.output, logits.max(1).values)
    r2 = explain(model, x, method="lrp_0", target=2)
    _close(r2.output, logits[:, 2])
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    r3 = explain(model, x, method="gradient", target=t)
    gx, _, _ = _autograd(model, x, t)
    _close(r3.input, gx)
    _close(
        explain(model, x, method="lrp_0", target=t.tolist()).output,
        logits.gather(1, t[:, None])[:, 0],
    )


def test_flatten_model_and_unflattened_baseline():
    body = _mlp((4, 6, 3), seed=14)
    model = nn.Sequential(nn.Flatten(), *body)
    x = _x(5, 4).reshape(5, 1, 2, 2)
    r = explain(model, x, method="deeplift", baseline=torch.ones(1, 2, 2, dtype=DTYPE))
    assert r.input.shape == (5, 4)
    _close(
        r.input,
        explain(
            body, x.reshape(5, 4), method="deeplift", baseline=torch.ones(4, dtype=DTYPE)
        ).input,
    )


def test_dtype_follows_input():
    model = models.mlp((4, 6, 3), seed=15)  # float32 weights
    x = _x(5, 4)
    r = explain(model, x, method="blame_bias")
    assert r.input.dtype == DTYPE
    _close(r.total, r.output)


def test_rule_overrides():
    model, x = _mlp((4, 6, 5, 3), "tanh", seed=16), _x(9, 4)
    lrp0 = explain(model, x, method="lrp_0").input
    # a dict applies to every layer; a list gives one dict per layer
    _close(explain(model, x, method="lrp_epsilon", rules={"epsilon": 0.0}).input, lrp0)
    _close(explain(model, x, method="lrp_epsilon", rules=[{"epsilon": 0}] * 3).input, lrp0)
    _close(explain(model, x, method="lrp_epsilon", epsilon=0.0).input, lrp0)
    e = explain(model, x, method="lrp_0", rules={"epsilon": 0.3}).input
    _close(e, explain(model, x, method="lrp_epsilon", epsilon=0.3).input)
    # Ancona et al.: LRP-0 = x times the gradient with f(z)/z at every activation
    _close(
        explain(model, x, method="gradient_x_input", rules={"nonlinearity": "slope"}).input, lrp0
    )
    # per layer: eps only in the last layer changes the result, and the layer list is honoured
    last = explain(model, x, method="lrp_0", rules=[{}, {}, {"epsilon": 0.3}]).input
    assert not torch.allclose(last, lrp0)
    assert not torch.allclose(last, e)
    # a rules entry wins over the epsilon argument
    _close(explain(model, x, method="lrp_0", rules={"epsilon": 0.0}, epsilon=0.3).input, lrp0)


def test_lrp_epsilon_approaches_lrp0():
    model, x = _mlp((4, 6, 5, 3), seed=17), _x(9, 4)
    lrp0 = explain(model, x, method="lrp_0")
    small = explain(model, x, method="lrp_epsilon", epsilon=1e-9)
    _close(small.input, lrp0.input, 1e-6)
    big = explain(model, x, method="lrp_epsilon", epsilon=10.0)
    assert (big.total.abs() < lrp0.total.abs()).all()  # the stabiliser absorbs relevance


# --- maximum rules ------------------------------------------------------------------------------


def test_max_rules():
    a = torch.tensor([[1.0, 3.0, -2.0], [2.0, 2.0, 1.0], [-1.0, -2.0, -4.0], [0.0, -1.0, 0.0]])
    R = torch.tensor([8.0, 6.0, 7.0, 4.0])
    # gradient: all to the winner, ties split equally
    expected = torch.tensor([[0, 8, 0], [3, 3, 0], [7, 0, 0], [2, 0, 2]], dtype=torch.float32)
    _close(max_relevance(a, R, "gradient"), expected)
    # radial: positives in proportion (1, 3)/4 * 8 = (2, 6); (2, 2, 1)/5 * 6;
    # all negative: 1/a = (-1, -1/2, -1/4), total -7/4 -> (4, 2, 1)/7 * 7; zero max: ties at 0
    expected = torch.tensor([[2, 6, 0], [2.4, 2.4, 1.2], [4, 2, 1], [2, 0, 2]])
    _close(max_relevance(a, R, "radial"), expected, 1e-6)


def test_composed_max_relevance_differs():
    # a = (3, 1), reference (0, 2): max goes from 2 to 3.
    a, a0 = torch.tensor([[3.0, 1.0]], dtype=DTYPE), torch.tensor([[0.0, 2.0]], dtype=DTYPE)
    # soft maximum: C_i = (v_i - v0_i) / sum(v - v0) * 1 with v = exp(a / s); as s -> 0 the
    # exp(3 / s) term dominates, so all of the change goes to a_1: (1, 0).
    soft = composed_max_relevance(a, a0, form="softmax", softness=1e-2)
    _close(soft, torch.tensor([[1.0, 0.0]], dtype=DTYPE))
    # a_1 + relu(a_2 - a_1): d = -2, d0 = 2, relu goes 2 -> 0: rescale (0 - 2) / (-2 - 2) = 1/2.
    # multipliers (1 - 1/2, 1/2), contributions (3 * 1/2, -1 * 1/2) = (1.5, -0.5)
    hard = composed_max_relevance(a, a0, form="relu")
    _close(hard, torch.tensor([[1.5, -0.5]], dtype=DTYPE))
    # against a zero reference both are winner-takes-all: (3, 0), where the soft maximum of
    # the reference is s log 2 (not yet 0 at s = 1e-2)
    z = torch.zeros_like(a)
    soft0 = composed_max_relevance(a, z, form="softmax", softness=1e-2)
    _close(soft0, torch.tensor([[3.0 - 1e-2 * math.log(2), 0.0]], dtype=DTYPE))
    _close(composed_max_relevance(a, z, form="relu"), torch.tensor([[3.0, 0.0]], dtype=DTYPE))
    # summation to delta for random K = 4 vectors, both forms
    g = torch.Generator().manual_seed(0)
    a, a0 = (
        torch.randn(20, 4, generator=g, dtype=DTYPE),
        torch.randn(20, 4, generator=g, dtype=DTYPE),
    )
    hard = composed_max_relevance(a, a0, form="relu")
    _close(hard.sum(1), a.amax(1) - a0.amax(1))
    s = 0.1  # the soft form sums to the change of the soft maximum s logsumexp(a / s)
    soft = composed_max_relevance(a, a0, form="softmax", softness=s)
    _close(soft.sum(1), s * (torch.logsumexp(a / s, 1) - torch.logsumexp(a0 / s, 1)))


# --- errors -------------------------------------------------------------------------------------


def test_errors():
    model, x = _mlp((4, 6, 3), seed=18), _x(5, 4)
    with pytest.raises(KeyError, match=r"choose from .*lrp_0"):
        explain(model, x, method="lrp")
    with pytest.raises(KeyError, match=r"key 'linera'.*\['linear', 'nonlinearity'"):
        explain(model, x, method="lrp_0", rules={"linera": "gradient"})
    with pytest.raises(KeyError, match=r"\['gradient', 'normalized'\]"):
        explain(model, x, method="lrp_0", rules={"linear": "z_plus"})
    with pytest.raises(KeyError, match=r"rules\[1\]\['nonlinearity'\].*'guided'"):
        explain(model, x, method="lrp_0", rules=[{}, {"nonlinearity": "softplus"}])
    with pytest.raises(ValueError, match="epsilon"):
        explain(model, x, method="lrp_0", rules={"epsilon": -1.0})
    with pytest.raises(ValueError, match="2 Linear layers"):
        explain(model, x, method="lrp_0", rules=[{}])
    with pytest.raises(TypeError, match="rules must be"):
        explain(model, x, method="lrp_0", rules="normalized")
    with pytest.raises(ValueError, match="q_form needs"):
        explain(model, x, method="lrp_0", rules={"linear": "gradient"}, q_form=True)
    with pytest.raises(ValueError, match="epsilon is used by the 'normalized'"):
        explain(model, x, method="gradient", epsilon=1e-3)
    with pytest.raises(ValueError, match=r"target index 3 is out of range.*C = 3"):
        explain(model, x, method="lrp_0", target=3)
    with pytest.raises(ValueError, match=r"shape \[N\] = \[5\]"):
        explain(model, x, method="lrp_0", target=[0, 1])
    with pytest.raises(TypeError, match="integer class indices"):
        explain(model, x, method="lrp_0", target=1.0)
    with pytest.raises(ValueError, match=r"baseline has shape \(3,\).*\[D\] = \[4\]"):
        explain(model, x, method="deeplift", baseline=torch.zeros(3, dtype=DTYPE))
    with pytest.raises(ValueError, match="choose 'zero', 'mean'"):
        explain(model, x, method="deeplift", baseline="median")
    with pytest.raises(ValueError, match="deeplift' only"):
        explain(model, x, method="lrp_0", baseline="zero")
    with pytest.raises(ValueError, match=r"shape \(5, 3\).*\[N, 4\]"):
        explain(model, x[:, :3], method="lrp_0")
    with pytest.raises(TypeError, match="floating-point"):
        explain(model, x.long(), method="lrp_0")
    bad = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    with pytest.raises(TypeError, match=r"relevance\.explain.*Softmax"):
        explain(bad, x.float(), method="lrp_0")
    with pytest.raises(KeyError, match="choose from"):
        max_relevance(x, x[:, 0], "mean")
    with pytest.raises(KeyError, match="'relu', 'softmax'"):
        composed_max_relevance(x, x, form="smooth")


# --- convnets: Conv2d, pools, BatchNorm, Flatten --------------------------------------------------

POOLS = {
    "max": lambda: nn.MaxPool2d(2),
    "max_overlap": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "max_ceil_dilated": lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True),
    "adaptive_max": lambda: nn.AdaptiveMaxPool2d(3),
    "avg": lambda: nn.AvgPool2d(2, padding=1, count_include_pad=False),
    "adaptive_avg": lambda: nn.AdaptiveAvgPool2d(2),
}
MAX_POOLS = [p for p in POOLS if "max" in p]


def _convnet(pool="max", activation="relu", *, bn=False, seed=0, size=7) -> nn.Sequential:
    """conv 2->4 (3x3, pad 1) [BN] act pool, conv 4->5 (3x3, stride 1) [BN] act, Flatten,
    Linear -> 6, act, Linear -> 3; float64, seeded weights (BatchNorm with random running
    statistics, eval mode)."""
    g = torch.Generator().manual_seed(seed)

    def act():
        return models.ACTIVATIONS[activation](0.01)

    def norm(c):
        return [nn.BatchNorm2d(c, dtype=DTYPE)] if bn else []

    body = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=DTYPE), *norm(4), act(), POOLS[pool](),
        nn.Conv2d(4, 5, 2, dtype=DTYPE), *norm(5), act(), nn.Flatten(),
    )  # fmt: skip
    flat = body.eval()(torch.zeros(1, 2, size, size, dtype=DTYPE)).shape[1]
    model = nn.Sequential(
        *body, nn.Linear(flat, 6, dtype=DTYPE), act(), nn.Linear(6, 3, dtype=DTYPE)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=g, dtype=DTYPE))
        for m in model:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g, dtype=DTYPE))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=DTYPE))
    return model.eval()


def _images(n: int, seed: int = 1, size: int = 7) -> torch.Tensor:
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


class _Stabilised(torch.autograd.Function):
    """Identity forward; backward g * z / blip(z): the epsilon rule as a modified gradient."""

    @staticmethod
    def forward(ctx, z, eps):
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.clone()

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        blip = torch.where(z >= 0, z + ctx.eps, z - ctx.eps)
        return g * z / blip, None


def _conv_autograd(model: nn.Sequential, x: torch.Tensor, t: torch.Tensor, *, eps=None, relu=None):
    """Independent oracle: d f_t / d x and, per Linear or Conv2d, d f_t / d B with B its
    (BatchNorm-folded) bias as a per-sample, per-position leaf, and the values of B. With
    ``eps``, the gradient through every affine and average-pool output is scaled by
    z / blip(z) (LRP-eps as a modified gradient); ``relu`` replaces every ReLU."""
    mods = list(model)
    x = x.clone().requires_grad_(True)
    h, leaves, i = x, [], 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Linear | nn.Conv2d):
            conv = isinstance(m, nn.Conv2d)
            z = (
                F.conv2d(h, m.weight, None, m.stride, m.padding, m.dilation)
                if conv
                else h @ m.weight.T
            )
            b = torch.zeros(m.weight.shape[0], dtype=DTYPE) if m.bias is None else m.bias.detach()
            s = torch.ones_like(b)
            if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d | nn.BatchNorm1d):
                bn = mods[i + 1]
                s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                b = s * (b - bn.running_mean) + bn.bias.detach()
                i += 1
            shape = (-1, 1, 1) if conv else (-1,)
            leaves.append(b.view(shape).expand_as(z).clone().requires_grad_(True))
            h = z * s.view(shape) + leaves[-1]
            h = h if eps is None else _Stabilised.apply(h, eps)
        elif isinstance(m, nn.AvgPool2d | nn.AdaptiveAvgPool2d) and eps is not None:
            h = _Stabilised.apply(m(h), eps)
        elif isinstance(m, nn.ReLU) and relu is not None:
            h = relu.apply(h)
        else:
            h = m(h)
        i += 1
    grads = torch.autograd.grad(h.gather(1, t[:, None]).sum(), [x, *leaves])
    return grads[0], list(grads[1:]), [leaf.detach() for leaf in leaves]


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("pool", sorted(POOLS))
def test_conv_gradient_and_lrp0_match_autograd(pool, bn):
    # LRP-0 = gradient x input with biases (BatchNorm's shift included) on ReLU convnets,
    # max pools under the gradient (winner-takes-all) rule; the bias maps are B df/dB.
    model, x = _convnet(pool, bn=bn, seed=20), _images(6)
    r = explain(model, x, method="gradient")
    gx, gb, B = _conv_autograd(model, x, r.target)
    _close(r.input, gx)
    for got, g, b in zip(r.bias, gb, B, strict=True):
        _close(got, b * g)
    _close(explain(model, x, method="gradient_x_input").input, x * gx)
    for method in ("lrp_0", "blame_bias"):
        r = explain(model, x, method=method)
        _close(r.input, x * gx)
        assert [tuple(b.shape) for b in r.bias] == [tuple(b.shape) for b in B]
        for got, g, b in zip(r.bias, gb, B, strict=True):
            _close(got, b * g)  # per channel and position
        torch.testing.assert_close(r.total, r.output, rtol=0, atol=1e-10)
        _close(r.output, model(x).gather(1, r.target[:, None])[:, 0])


def test_conv_bias_relevance_sums_to_b_dfdb():
    # blame_bias: each conv bias's map summed over positions is b_c df/db_c (autograd on the
    # module's own bias, one sample at a time)
    model, x = _convnet("max", seed=21), _images(3)
    r = explain(model, x, method="blame_bias")
    convs = [m for m in model if isinstance(m, nn.Conv2d | nn.Linear)]
    for n in range(len(x)):
        model.zero_grad()
        model(x[n : n + 1])[0, r.target[n]].backward()
        for got, m in zip(r.bias, convs, strict=True):
            per_unit = got[n].flatten(1).sum(1) if got.dim() > 2 else got[n]
            _close(per_unit, m.bias.detach() * m.bias.grad)


@pytest.mark.parametrize(
    ("method", "relu_fn"), [("deconvnet", _DeconvReLU), ("guided_backprop", _GuidedReLU)]
)
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_conv_modified_backprop_matches_manual(method, relu_fn, pool):
    model, x = _convnet(pool, seed=22), _images(5)
    r = explain(model, x, method=method)
    gx, _, _ = _conv_autograd(model, x, r.target, relu=relu_fn)
    _close(r.input, gx)


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("pool", sorted(POOLS))
def test_conv_lrp_epsilon_is_a_modified_gradient(pool, bn):
    # Independent implementation: x times the gradient with z / blip(z) at every affine and
    # average-pool output (Ancona et al. 2018); the bias maps are B times that gradient.
    model, x = _convnet(pool, bn=bn, seed=23), _images(6)
    for eps in (1e-6, 0.3):
        r = explain(model, x, method="lrp_epsilon", epsilon=eps)
        gx, gb, B = _conv_autograd(model, x, r.target, eps=eps)
        _close(r.input, x * gx)
        for got, g, b in zip(r.bias, gb, B, strict=True):
            _close(got, b * g)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("pool", ["max", "max_overlap", "avg"])
@pytest.mark.parametrize("baseline", ["zero", "mean", "sample", "one", "batch"])
def test_conv_deeplift_summation_to_delta(activation, pool, baseline):
    model, x = _convnet(pool, activation, bn=True, seed=24), _images(5)
    x0 = {
        "zero": torch.zeros(2, 7, 7, dtype=DTYPE),
        "mean": x.mean(0),
        "sample": _images(1, seed=8)[0],
        "one": _images(1, seed=8),
        "batch": _images(5, seed=9),
    }[baseline]
    arg = baseline if baseline in ("zero", "mean") else x0
    r = explain(model, x, method="deeplift", baseline=arg)
    delta = (model(x) - model(x0.expand_as(x))).gather(1, r.target[:, None])[:, 0]
    _close(r.output, delta)
    _close(r.input.sum((1, 2, 3)), delta)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in r.bias)
    q = explain(model, x, method="deeplift", baseline=arg, q_form=True)
    _close(q.input, r.input, 1e-9)


def test_deeplift_baseline_shapes_on_mlps():
    # [D], [1, D] and [N, D] (and [1, D] was refused before): the same numbers
    model, x = _mlp((4, 6, 3), seed=25), _x(5, 4)
    x0 = _x(1, 4, seed=26)
    one = explain(model, x, method="deeplift", baseline=x0).input
    _close(explain(model, x, method="deeplift", baseline=x0[0]).input, one)
    _close(explain(model, x, method="deeplift", baseline=x0.expand(5, 4)).input, one)
    with pytest.raises(ValueError, match=r"baseline has shape \(2, 4\).*\[1, D\]"):
        explain(model, x, method="deeplift", baseline=x0.expand(2, 4))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_conv_q_form_equals_r_form(method, activation):
    model, x = _convnet("max_overlap", activation, bn=True, seed=27), _images(5)
    kw = {"baseline": "mean"} if method == "deeplift" else {}
    rules = [{"maximum": "gradient"}, {"maximum": "radial"}]  # per layer: the pool is layer 0's
    for rule in rules if method != "deeplift" else rules[:1]:
        r = explain(model, x, method=method, rules={**rule}, **kw)
        q = explain(model, x, method=method, rules={**rule}, q_form=True, **kw)
        tol = 1e-8 if activation == "sigmoid" else 1e-10
        _close(q.input, r.input, tol)
        for bq, br in zip(q.bias, r.bias, strict=True):
            _close(bq, br, tol)


def _window_loop(pool: nn.Module, a: torch.Tensor, R: torch.Tensor, rule: str) -> torch.Tensor:
    """Brute force: every window of ``pool`` found by probing which inputs each output reads
    (a max pool of a one-hot map), then max_relevance on its values."""
    N, C, H, W = a.shape
    out = torch.zeros_like(a)
    members = []
    for p in range(H * W):  # which outputs read input p
        probe = torch.full((1, 1, H, W), -1.0, dtype=DTYPE).flatten()
        probe[p] = 1.0
        members.append(pool(probe.view(1, 1, H, W))[0, 0].flatten() == 1.0)
    members = torch.stack(members, 1)  # [L, H * W]
    for n in range(N):
        for c in range(C):
            for o in range(members.shape[0]):
                idx = members[o].nonzero()[:, 0]
                vals = a[n, c].flatten()[idx]
                share = max_relevance(vals[None], R[n, c].flatten()[o : o + 1], rule)[0]
                out[n, c].view(-1)[idx] += share
    return out


@pytest.mark.parametrize("pool", MAX_POOLS)
def test_radial_per_window_equals_max_relevance(pool):
    # A 1x1 identity conv (no bias) -> max pool -> Flatten -> Linear (no bias): with LRP-0 the
    # pool's output b gets R(b_j) = b_j w_tj, and the input gets the radial split of each window.
    g = torch.Generator().manual_seed(28)
    a = torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE)
    a[0, 0, :3, :3] = -torch.rand(3, 3, generator=g, dtype=DTYPE) - 0.1  # an all-negative corner
    conv = nn.Conv2d(2, 2, 1, bias=False, dtype=DTYPE)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2, dtype=DTYPE)[:, :, None, None])
    pooled = POOLS[pool]()(a[:1])
    lin = nn.Linear(pooled[0].numel(), 2, bias=False, dtype=DTYPE)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=DTYPE))
    model = nn.Sequential(conv, POOLS[pool](), nn.Flatten(), lin)
    r = explain(model, a, method="lrp_0", target=0, rules={"maximum": "radial"})
    b = POOLS[pool]()(a)
    R_b = b * lin.weight[0].view_as(b[0])
    _close(r.input, _window_loop(POOLS[pool](), a, R_b, "radial"))
    _close(r.total, r.output)
    # and the gradient rule is the pool's own routing: lrp_0 = gradient x input
    r = explain(model, a, method="lrp_0", target=0)
    gx, _, _ = _conv_autograd(model, a, r.target)
    _close(r.input, a * gx)


def test_conv_rules_per_layer_and_errors():
    model, x = _convnet("max", bn=True, seed=29), _images(4)
    # a list holds one dict per Linear or Conv2d; the pool follows the dict of conv 0
    radial = explain(model, x, method="lrp_0", rules={"maximum": "radial"}).input
    per_layer = [{"maximum": "radial"}, {}, {}, {}]
    _close(explain(model, x, method="lrp_0", rules=per_layer).input, radial)
    assert not torch.allclose(radial, explain(model, x, method="lrp_0").input)
    with pytest.raises(ValueError, match="4 Linear and Conv2d layers"):
        explain(model, x, method="lrp_0", rules=[{}])
    with pytest.raises(ValueError, match=r"baseline has shape \(2, 7\).*\[D\] = \[2, 7, 7\]"):
        explain(model, x, method="deeplift", baseline=torch.zeros(2, 7, dtype=DTYPE))
    with pytest.raises(ValueError, match="NaN"):
        explain(model, x, method="deeplift", baseline=torch.full((2, 7, 7), math.nan).double())
    with pytest.raises(ValueError, match=r"shape \[N, 2, H, W\]"):
        explain(model, x[:, :1], method="lrp_0")
    with pytest.raises(ValueError, match="cannot take"):
        explain(model, x[:, :, :2, :2], method="lrp_0")
    for net, bad in ((model, x.clone()), (_mlp((4, 6, 3), seed=29), _x(3, 4))):
        bad.view(-1)[1] = math.nan
        with pytest.raises(ValueError, match="NaN or inf"):
            explain(net, bad, method="gradient")
    model[1].train()
    with pytest.raises(ValueError, match=r"relevance\.explain: .*training mode"):
        explain(model, x, method="lrp_0")
    # blame_bias counts sigmoid's f(0) as a bias of the layer just before it: not across a pool
    odd = nn.Sequential(
        nn.Conv2d(2, 3, 3, dtype=DTYPE), nn.MaxPool2d(2), nn.Sigmoid(), nn.Flatten(),
        nn.Linear(12, 2, dtype=DTYPE),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"offset f\(0\) = 0.5 of module 2 \(Sigmoid\)"):
        explain(odd, x, method="blame_bias")
    r = explain(odd, x, method="lrp_0")
    _close(r.total, r.output)


def test_conv_input_and_bias_shapes_and_dtype():
    model = models.lenet5(in_shape=(1, 12, 12), seed=0)  # float32
    x = torch.rand(3, 1, 12, 12, dtype=DTYPE)
    r = explain(model, x, method="blame_bias")
    assert r.input.shape == x.shape and r.input.dtype == DTYPE
    assert [tuple(b.shape[1:]) for b in r.bias] == [(6, 12, 12), (16, 6, 6), (120,), (84,), (10,)]
    _close(r.total, r.output)


@pytest.mark.parametrize("method", ["gradient_x_input", "lrp_epsilon", "blame_bias", "deeplift"])
def test_conv_relevance_is_differentiable_in_the_weights(method):
    # double backpropagation (a relevance penalty in training): the autograd gradient of a
    # function of the relevance matches a central finite difference along a random direction
    model, x = _convnet("max_overlap", "tanh", bn=True, seed=30), _images(3)
    kw = {"baseline": "mean"} if method == "deeplift" else {}
    params = [p for p in model.parameters()]
    g = torch.Generator().manual_seed(31)
    dirs = [torch.randn(p.shape, generator=g, dtype=DTYPE) for p in params]

    def loss() -> torch.Tensor:
        r = explain(model, x, method=method, target=0, **kw)
        return r.input.pow(2).sum() + sum(b.pow(2).sum() for b in r.bias)

    grads = torch.autograd.grad(loss(), params)
    along = sum((gr * d).sum() for gr, d in zip(grads, dirs, strict=True))
    h, vals = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, dirs, strict=True):
                p.add_(sign * h * d)
            vals.append(loss())
            for p, d in zip(params, dirs, strict=True):
                p.sub_(sign * h * d)
    torch.testing.assert_close(along, (vals[0] - vals[1]) / (2 * h), rtol=1e-5, atol=1e-7)


_GEOMETRY = st.fixed_dictionaries(
    {
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 1),
        "pool": st.sampled_from(sorted(POOLS)),
        "activation": st.sampled_from(HOMOGENEOUS),
        "bn": st.booleans(),
        "size": st.integers(5, 9),
        "seed": st.integers(0, 1000),
    }
)


@settings(max_examples=25, deadline=None)
@given(_GEOMETRY)
def test_conv_geometry_property(geo):
    # any conv geometry and pool: LRP-0 = gradient x input, blame_bias conserves to 1e-10,
    # the bias maps are B df/dB (positive homogeneity), gradient = autograd
    g = torch.Generator().manual_seed(geo["seed"])
    conv = nn.Conv2d(2, 3, geo["kernel"], geo["stride"], geo["padding"], dtype=DTYPE)
    body = nn.Sequential(
        conv, *([nn.BatchNorm2d(3, dtype=DTYPE)] if geo["bn"] else []),
        models.ACTIVATIONS[geo["activation"]](0.1), POOLS[geo["pool"]](), nn.Flatten(),
    ).eval()  # fmt: skip
    try:
        flat = body(torch.zeros(1, 2, geo["size"], geo["size"], dtype=DTYPE)).shape[1]
    except RuntimeError:  # the pool does not fit this size
        return
    model = nn.Sequential(*body, nn.Linear(flat, 3, dtype=DTYPE)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
        if geo["bn"]:
            model[1].running_var.uniform_(0.5, 2.0, generator=g)
            model[1].running_mean.normal_(0, 0.3, generator=g)
    x = torch.randn(4, 2, geo["size"], geo["size"], generator=g, dtype=DTYPE)
    r = explain(model, x, method="blame_bias")
    gx, gb, B = _conv_autograd(model, x, r.target)
    _close(r.input, x * gx)
    torch.testing.assert_close(r.total, r.output, rtol=0, atol=1e-10)
    for got, grad, b in zip(r.bias, gb, B, strict=True):
        _close(got, b * grad)
    _close(explain(model, x, method="gradient").input, gx)

"""prunelab.masks and prunelab.ablation against a per-mask autograd loop, in float64."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunelab import ablation, masks, models

F64 = torch.float64
ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity)
WIDTHS = {1: (3, 5, 2), 2: (3, 5, 4, 2), 3: (3, 5, 4, 6, 3)}


@contextmanager
def _masked(model: nn.Sequential, blocks: list[torch.Tensor]):
    """Multiply the output of the i-th activation module by ``blocks[i]`` (forward hooks)."""
    acts = [m for m in model if isinstance(m, ACTIVATION_MODULES)][: len(blocks)]
    handles = [
        act.register_forward_hook(lambda _mod, _inp, out, b=b: out * b)
        for act, b in zip(acts, blocks, strict=True)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def point_oracle(model, x, y, mask):
    """Loop over points: d CE(model_mask(x_n), y_n) / d mask by autograd, one point at a time."""
    sizes = masks.hidden_sizes(model)
    rows = []
    for n in range(x.shape[0]):
        m = mask.clone().requires_grad_(True)
        with _masked(model, list(m.split(sizes))):
            loss = F.cross_entropy(model(x[n : n + 1]), y[n : n + 1])
        rows.append(torch.autograd.grad(loss, m)[0])
    return torch.stack(rows)


def oracle(model, x, y, node_masks):
    """Loop over masks: a leaf mask, the model with hooks, F.cross_entropy, autograd."""
    sizes = masks.hidden_sizes(model)
    logits, point_losses, losses, grads = [], [], [], []
    for m in node_masks:
        m = m.clone().requires_grad_(True)
        with _masked(model, list(m.split(sizes))):
            f = model(x)
        loss = F.cross_entropy(f, y)
        (grad,) = torch.autograd.grad(loss, m)
        logits.append(f.detach())
        point_losses.append(F.cross_entropy(f.detach(), y, reduction="none"))
        losses.append(loss.detach())
        grads.append(grad)
    return torch.stack(logits), torch.stack(point_losses), torch.stack(losses), torch.stack(grads)


def problem(widths, *, activation="relu", M=6, N=9, binary=False, seed=0, dtype=F64):
    """A seeded model, inputs, labels and masks (0/1 if ``binary``, else in [-0.5, 1.5])."""
    g = torch.Generator().manual_seed(seed)
    model = models.mlp(widths, activation=activation, seed=seed, dtype=dtype)
    x = torch.randn(N, widths[0], generator=g, dtype=dtype)
    y = torch.randint(0, widths[-1], (N,), generator=g)
    H = sum(widths[1:-1])
    if binary:
        m = (torch.rand(M, H, generator=g) < 0.5).to(dtype)
    else:
        m = (2 * torch.rand(M, H, generator=g, dtype=dtype) - 0.5).to(dtype)
    return model, x, y, m


def assert_matches_oracle(model, x, y, m, *, atol=1e-10, chunk_bytes=masks.DEFAULT_CHUNK_BYTES):
    f_ref, pl_ref, loss_ref, grad_ref = oracle(model, x, y, m)
    loss, grad = ablation.mask_losses(model, x, y, m, chunk_bytes=chunk_bytes)
    kw = dict(rtol=0, atol=atol)
    torch.testing.assert_close(
        masks.masked_logits(model, x, m, chunk_bytes=chunk_bytes), f_ref, **kw
    )
    torch.testing.assert_close(
        ablation.mask_point_losses(model, x, y, m, chunk_bytes=chunk_bytes), pl_ref, **kw
    )
    torch.testing.assert_close(loss, loss_ref, **kw)
    torch.testing.assert_close(grad, grad_ref, **kw)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("binary", [True, False], ids=["0/1 masks", "fractional masks"])
def test_matches_autograd_loop(depth, activation, classes, binary):
    widths = (*WIDTHS[depth][:-1], classes)
    assert_matches_oracle(*problem(widths, activation=activation, binary=binary, seed=depth))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "leaky_relu", "sigmoid", "identity"])
@pytest.mark.parametrize("classes", [2, 4])
def test_other_activations_match_autograd_loop(activation, classes):
    assert_matches_oracle(*problem((3, 5, 4, classes), activation=activation))


@pytest.mark.parametrize("widths", [(2, 20, 2), (6, 12, 8, 5)])
def test_float32_agrees_with_float64_loop(widths):
    model, x, y, m = problem(widths, M=12, N=100, dtype=torch.float32)
    model64 = models.mlp(widths, seed=0, dtype=F64)
    _, _, loss_ref, grad_ref = oracle(model64, x.double(), y, m.double())
    loss, grad = ablation.mask_losses(model, x, y, m)
    assert loss.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), loss_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad.double(), grad_ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradient_matches_finite_differences(activation):
    model, x, y, m = problem((3, 5, 4, 3), activation=activation, M=3)
    _, grad = ablation.mask_losses(model, x, y, m)
    h = 1e-6
    steps = h * torch.eye(m.shape[1], dtype=F64)  # (H, H)
    plus = ablation.mask_losses(model, x, y, (m[:, None, :] + steps).flatten(0, 1))[0]
    minus = ablation.mask_losses(model, x, y, (m[:, None, :] - steps).flatten(0, 1))[0]
    fd = ((plus - minus) / (2 * h)).view_as(m)  # (M, H)
    torch.testing.assert_close(grad, fd, rtol=0, atol=1e-8)


@pytest.mark.parametrize("classes", [2, 3])
def test_large_logits_stay_exact(classes):
    """Confident, wrong predictions (losses far above 20) lose no precision in float64."""
    model, x, y, m = problem((3, 5, 4, classes), N=30)
    with torch.no_grad():
        model[-1].weight.mul_(3000)
    assert oracle(model, x, y, m)[1].max() > 40
    assert_matches_oracle(model, x, y, m, atol=1e-9)


@pytest.mark.parametrize("margin", [5.0, 20.5, 25.0, 30.0, 36.0, 50.0])
def test_binary_loss_is_exact_for_large_margins(margin):
    """CE of logits (0, margin) at label 0 is softplus(margin), to float64 rounding."""
    model, x, y, m = problem((3, 5, 2))
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].bias.copy_(torch.tensor([0.0, margin]))
    y = torch.zeros_like(y)
    expected = F.cross_entropy(model(x), y, reduction="none").detach()  # (N,)
    point_losses = ablation.mask_point_losses(model, x, y, m)
    torch.testing.assert_close(point_losses, expected.expand_as(point_losses), rtol=1e-15, atol=0)


def test_all_ones_mask_reproduces_the_model():
    model, x, y, _ = problem((3, 5, 4, 3), N=30)
    ones = torch.ones(2, 9, dtype=F64)
    f = masks.masked_logits(model, x, ones)
    torch.testing.assert_close(f, model(x).detach().expand(2, -1, -1), rtol=0, atol=1e-14)
    loss, _ = ablation.mask_losses(model, x, y, ones)
    torch.testing.assert_close(
        loss, F.cross_entropy(model(x), y).detach().expand(2), rtol=0, atol=1e-14
    )


def test_dropout_acts_as_in_evaluation_and_flatten_is_applied():
    model = models.mlp((4, 6, 5, 2), dropout=0.5, seed=3, dtype=F64).eval()
    model = nn.Sequential(nn.Flatten(), *model)
    x = torch.randn(7, 2, 2, dtype=F64)
    f = masks.masked_logits(model, x, torch.ones(1, 11))
    torch.testing.assert_close(f[0], model(x).detach(), rtol=0, atol=1e-14)


def test_zero_mask_on_last_hidden_layer_leaves_the_output_bias():
    model, x, _, m = problem((3, 5, 4, 3))
    m[:, 5:] = 0
    bias = model[-1].bias.detach()
    torch.testing.assert_close(
        masks.masked_logits(model, x, m), bias.expand(m.shape[0], x.shape[0], 3), rtol=0, atol=0
    )


def test_duplicated_node_is_symmetric():
    """Copy hidden unit 2 (in and out weights) to unit 5: masking either copy is the same."""
    base = models.mlp((2, 5, 3), activation="tanh", seed=1, dtype=F64)
    dup = models.mlp((2, 6, 3), activation="tanh", seed=1, dtype=F64)
    with torch.no_grad():
        dup[0].weight.copy_(torch.cat([base[0].weight, base[0].weight[2:3]]))
        dup[0].bias.copy_(torch.cat([base[0].bias, base[0].bias[2:3]]))
        dup[2].weight.copy_(torch.cat([base[2].weight, base[2].weight[:, 2:3]], dim=1))
        dup[2].bias.copy_(base[2].bias)
    _, x, y, m = problem((2, 6, 3), M=4)
    swapped = m[:, [0, 1, 5, 3, 4, 2]]
    loss, grad = ablation.mask_losses(dup, x, y, m)
    loss_s, grad_s = ablation.mask_losses(dup, x, y, swapped)
    torch.testing.assert_close(loss, loss_s, rtol=0, atol=1e-14)
    torch.testing.assert_close(grad, grad_s[:, [0, 1, 5, 3, 4, 2]], rtol=0, atol=1e-14)


@pytest.mark.parametrize("widths", [(3, 5, 2), (3, 5, 4, 6, 3)])
def test_tiny_chunks_give_the_same_result(widths):
    model, x, y, m = problem(widths, M=11)
    whole = ablation.mask_losses(model, x, y, m)
    one_by_one = ablation.mask_losses(model, x, y, m, chunk_bytes=1)
    for a, b in zip(whole, one_by_one, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        masks.masked_logits(model, x, m),
        masks.masked_logits(model, x, m, chunk_bytes=1),
        rtol=0,
        atol=1e-14,
    )


def test_sum_reduction_and_empty_masks():
    model, x, y, m = problem((3, 5, 4, 3))
    mean, grad_mean = ablation.mask_losses(model, x, y, m)
    total, grad_total = ablation.mask_losses(model, x, y, m, reduction="sum")
    torch.testing.assert_close(total, mean * x.shape[0])
    torch.testing.assert_close(grad_total, grad_mean * x.shape[0])
    loss, grad = ablation.mask_losses(model, x, y, m[:0])
    assert loss.shape == (0,) and grad.shape == (0, 9)


def test_inputs_are_untouched_and_dtypes_follow_x():
    model, x, y, m = problem((3, 5, 4, 2), dtype=torch.float32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    m_bool = m > 0.5
    m_copy, x_copy = m_bool.clone(), x.clone()
    loss, grad = ablation.mask_losses(model, x, y, m_bool)
    f = masks.masked_logits(model, x, m_bool)
    assert loss.dtype == grad.dtype == f.dtype == torch.float32
    assert torch.equal(m_bool, m_copy) and torch.equal(x, x_copy)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert all(p.grad is None for p in model.parameters())
    assert not loss.requires_grad and not grad.requires_grad and not f.requires_grad


def test_bad_input_raises_clear_errors():
    model, x, y, m = problem((3, 5, 4, 3))
    with pytest.raises(
        ValueError, match=r"masks must have shape \[M, 9\].*\[5, 4\].*got shape \(6, 8\)"
    ):
        ablation.mask_losses(model, x, y, m[:, :8])
    with pytest.raises(ValueError, match=r"masks must have shape \[M, 9\].*got shape \(9,\)"):
        masks.masked_logits(model, x, m[0])
    bad = m.clone()
    bad[0, 1], bad[2, 3] = float("nan"), float("inf")
    with pytest.raises(ValueError, match="masks holds 2 NaN or inf"):
        ablation.mask_losses(model, x, y, bad)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\].*got shape \(9, 4\)"):
        masks.masked_logits(model, torch.zeros(9, 4, dtype=F64), m)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\)"):
        ablation.mask_losses(model, x, torch.full_like(y, 3), m)
    with pytest.raises(ValueError, match=r"integer class labels of shape \[9\]"):
        ablation.mask_losses(model, x, y.double(), m)
    with pytest.raises(ValueError, match="reduction 'max'"):
        ablation.mask_losses(model, x, y, m, reduction="max")
    with pytest.raises(ValueError, match="no samples"):
        ablation.mask_losses(model, x[:0], y[:0], m)
    with pytest.raises(ValueError, match="chunk_bytes must be a positive int"):
        masks.masked_logits(model, x, m, chunk_bytes=0)
    with pytest.raises(ValueError, match="no hidden layer"):
        masks.masked_logits(nn.Sequential(nn.Linear(3, 2)), x.float(), torch.ones(1, 0))
    with pytest.raises(TypeError, match="masks must be a torch.Tensor"):
        masks.masked_logits(model, x, [[1.0] * 9])


@settings(max_examples=30, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=5),
    activation=st.sampled_from(["relu", "tanh"]),
    binary=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_any_widths_match_autograd_loop(widths, activation, binary, seed):
    widths[-1] = max(widths[-1], 2)  # at least two classes
    model, x, y, m = problem(widths, activation=activation, M=3, N=5, binary=binary, seed=seed)
    assert_matches_oracle(model, x, y, m, chunk_bytes=seed % 3000 + 1)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("classes", [2, 3])
def test_point_mask_gradients_match_per_point_autograd(activation, classes):
    model, x, y, m = problem((3, 5, 4, classes), activation=activation, N=6)
    for mask in (m[0], torch.ones(9, dtype=F64)):
        grads = ablation.point_mask_gradients(model, x, y, mask)
        torch.testing.assert_close(grads, point_oracle(model, x, y, mask), rtol=0, atol=1e-12)
        mean_grad = ablation.mask_losses(model, x, y, mask[None])[1][0]
        torch.testing.assert_close(grads.mean(0), mean_grad, rtol=0, atol=1e-12)
    default = ablation.point_mask_gradients(model, x, y)
    torch.testing.assert_close(default, grads, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"mask must be one node mask of shape \[9\]"):
        ablation.point_mask_gradients(model, x, y, m[:2])


@pytest.mark.parametrize("classes", [2, 3])
def test_model_with_an_output_activation_matches_autograd_loop(classes):
    """A Sequential may end in an activation: its outputs are what the loss sees."""
    base = models.mlp((3, 5, 4, classes), activation="tanh", seed=2, dtype=F64)
    model = nn.Sequential(*base, nn.Sigmoid())
    _, x, y, m = problem((3, 5, 4, classes), N=7)
    assert_matches_oracle(model, x, y, m)
    torch.testing.assert_close(
        ablation.point_mask_gradients(model, x, y, m[1]),
        point_oracle(model, x, y, m[1]),
        rtol=0,
        atol=1e-12,
    )


def test_hidden_activations_match_the_model():
    model, x, _, _ = problem((3, 5, 4, 6, 3), activation="tanh")
    acts = [m for m in model if isinstance(m, ACTIVATION_MODULES)]
    seen = []
    handles = [a.register_forward_hook(lambda _m, _i, out: seen.append(out)) for a in acts]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    got = masks.hidden_activations(model, x)
    assert [a.shape for a in got] == [(9, 5), (9, 4), (9, 6)]
    for a, b in zip(got, seen, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-14)


def test_bernoulli_masks():
    m = masks.bernoulli(4000, 5, 0.3, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert m.shape == (4000, 5) and m.dtype == F64
    assert set(m.unique().tolist()) == {0.0, 1.0}
    se = (0.3 * 0.7 / m.numel()) ** 0.5
    assert abs(m.mean().item() - 0.3) < 4 * se
    again = masks.bernoulli(4000, 5, 0.3, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(m, again)
    g = torch.Generator().manual_seed(0)
    assert masks.bernoulli(3, 4, 0.0, generator=g).sum() == 0
    assert masks.bernoulli(3, 4, 1.0, generator=g).sum() == 12
    with pytest.raises(ValueError, match=r"masks.bernoulli: p \(a probability\) must be .*got 1.5"):
        masks.bernoulli(3, 4, 1.5, generator=g)


def test_flip_paths_flip_every_node_once_and_end_at_the_complement():
    P, H = 50, 7
    walk = masks.flip_paths(P, H, generator=torch.Generator().manual_seed(0))
    assert walk.shape == (P, H + 1, H)
    steps = (walk[:, 1:] - walk[:, :-1]).abs()  # (P, H, H)
    assert torch.equal(steps.sum(2), torch.ones(P, H))  # one node per step
    assert torch.equal(steps.sum(1), torch.ones(P, H))  # each node once
    assert torch.equal(walk[:, -1], 1 - walk[:, 0])
    assert 0.3 < walk[:, 0].mean().item() < 0.7
    first = steps[:, 0].argmax(1)  # node flipped first: all of them occur
    assert len(first.unique()) == H


def test_removals():
    m = masks.removals(4, [[1], (0, 3), []], dtype=F64)
    expected = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=F64)
    assert torch.equal(m, expected)
    with pytest.raises(ValueError, match=r"node indices must lie in \[0, 4\); got \[2, 4\]"):
        masks.removals(4, [[2, 4]])


# --- convnets: channel masks on the op engine (prunelab.engines.masks_conv) -----------------


def _hooked(model: nn.Sequential, node_masks: torch.Tensor):
    """Forward hooks multiplying each hidden layer's units (a channel's whole map) by a block."""
    from prunelab import ops

    view = ops.parse(model)
    flat = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    sites = [flat[view.ops[k].position] for k in view.unit_ops]

    @contextmanager
    def masked(m):
        handles = [
            site.register_forward_hook(
                lambda _mod, _inp, out, b=b: out * b.view(-1, *[1] * (out.dim() - 2))
            )
            for site, b in zip(sites, m.split(view.hidden_sizes), strict=True)
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    return masked


def conv_oracle(model, x, y, node_masks):
    """Loop over masks: hooks on the model, F.cross_entropy, autograd (dropout off)."""
    masked = _hooked(model, node_masks)
    logits, point_losses, losses, grads = [], [], [], []
    for m in node_masks:
        m = m.clone().requires_grad_(True)
        with masked(m):
            f = model(x)
        loss = F.cross_entropy(f, y)
        logits.append(f.detach())
        point_losses.append(F.cross_entropy(f.detach(), y, reduction="none"))
        losses.append(loss.detach())
        grads.append(torch.autograd.grad(loss, m)[0])
    return torch.stack(logits), torch.stack(point_losses), torch.stack(losses), torch.stack(grads)


def _convnet(kind: str, dtype=F64):
    """An eval-mode convnet with non-trivial BatchNorm statistics, and its input shape."""
    if kind == "lenet5_max":
        model, shape = models.lenet5(seed=0, dtype=dtype), (1, 28, 28)
    elif kind == "lenet5_avg":
        model, shape = (
            models.lenet5(pool="avg", activation="tanh", seed=0, dtype=dtype),
            (1, 28, 28),
        )
    elif kind == "vgg11_bn":
        model = models.vgg("vgg11", width=0.125, in_shape=(3, 16, 16), seed=0, dtype=dtype)
        shape = (3, 16, 16)
    else:  # a conv read without activation, a GELU, a padded strided conv, an adaptive max pool
        g = torch.Generator().manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.GELU(),
            nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(5, 3),
        ).to(dtype)  # fmt: skip
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
        shape = (2, 7, 7)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *shape, generator=torch.Generator().manual_seed(1), dtype=dtype))
    return model.eval(), shape


CONVNETS = ("lenet5_max", "lenet5_avg", "vgg11_bn", "odd")


def conv_problem(kind, *, M=5, N=6, low=-0.5, dtype=F64, seed=0):
    model, shape = _convnet(kind, dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, *shape, generator=g, dtype=dtype)
    C = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    y = torch.randint(0, C, (N,), generator=g)
    H = sum(masks.hidden_sizes(model))
    m = (low + (1.5 - low) * torch.rand(M, H, generator=g, dtype=dtype)).to(dtype)
    return model, x, y, m


@pytest.mark.parametrize("kind", CONVNETS)
@pytest.mark.parametrize("low", [0.0, -0.5])  # non-negative masks share the max pools
def test_convnet_masks_match_the_autograd_loop_in_float64(kind, low):
    model, x, y, m = conv_problem(kind, low=low)
    f_ref, pl_ref, loss_ref, grad_ref = conv_oracle(model, x, y, m)
    for chunk_bytes in (1, masks.DEFAULT_CHUNK_BYTES):  # one mask per chunk, all at once
        loss, grad = ablation.mask_losses(model, x, y, m, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(loss, loss_ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(grad, grad_ref, atol=1e-10, rtol=0)
    loss_sum, grad_sum = ablation.mask_losses(model, x, y, m, reduction="sum")
    torch.testing.assert_close(loss_sum, loss_ref * x.shape[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(grad_sum, grad_ref * x.shape[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(
        ablation.mask_point_losses(model, x, y, m), pl_ref, atol=1e-10, rtol=0
    )
    torch.testing.assert_close(masks.masked_logits(model, x, m), f_ref, atol=1e-10, rtol=0)
    point = ablation.point_mask_gradients(model, x, y, m[0])
    torch.testing.assert_close(point.mean(0), grad_ref[0], atol=1e-10, rtol=0)


def test_convnet_masks_match_the_loop_in_float32():
    model, x, y, m = conv_problem("lenet5_max", dtype=torch.float32, low=0.0)
    _, _, loss_ref, grad_ref = conv_oracle(model, x, y, m)
    loss, grad = ablation.mask_losses(model, x, y, m)
    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["lenet5_max", "vgg11_bn"])
def test_zero_before_a_max_pool_gives_the_one_sided_derivative(kind):
    """At a 0 behind a max pool the loss has a kink: the gradient is the derivative of turning
    the unit up, which the loop computes once the zeros are nudged to a tiny positive value."""
    model, x, y, _ = conv_problem(kind)
    H = sum(masks.hidden_sizes(model))
    m = (torch.rand(4, H, generator=torch.Generator().manual_seed(3)) < 0.5).to(F64)
    m[:, 0] = 0  # a channel of the first conv layer, read through a max pool
    _, _, loss_ref, grad_ref = conv_oracle(model, x, y, m.clamp_min(1e-13))
    loss, grad = ablation.mask_losses(model, x, y, m)
    torch.testing.assert_close(loss, loss_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-10, rtol=0)
    point = ablation.point_mask_gradients(model, x, y, m[0])
    torch.testing.assert_close(point.mean(0), grad_ref[0], atol=1e-10, rtol=0)
    # and a one-sided finite difference on a zeroed conv channel
    j, t = 0, 1e-6
    up = m[:1].clone()
    up[0, j] = t
    diff = (ablation.mask_losses(model, x, y, up)[0] - loss[:1]) / t
    torch.testing.assert_close(diff, grad[:1, j], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", CONVNETS)
@pytest.mark.parametrize("low", [0.0, -0.5])
def test_masks_sharing_first_layer_rows_match_the_autograd_loop(kind, low):
    """Many masks over few distinct first-layer rows take the shared-rows path (the segment
    after the folded reader once per row, its derivative by jvp): same losses, gradients and
    logits as the loop, in the masks' own order, in every chunking."""
    from prunelab import ops
    from prunelab.engines import masks_conv

    model, x, y, m = conv_problem(kind, M=24, low=low)
    H0 = masks.hidden_sizes(model)[0]
    rows = m[:2, :H0].clone()
    m[:, :H0] = rows[torch.randint(0, 2, (24,), generator=torch.Generator().manual_seed(5))]
    p = masks_conv.plan(ops.parse(model), x, nonneg=low >= 0)
    # the path under test is taken wherever the first reader folds (with negative factors a
    # max pool before the reader stops the fold)
    assert (masks_conv.grouped(p, m, grad=True)[1] is not None) == (p.P is not None)
    assert p.P is not None or low < 0
    f_ref, _, loss_ref, grad_ref = conv_oracle(model, x, y, m)
    for chunk_bytes in (1, 2**14, masks.DEFAULT_CHUNK_BYTES):
        loss, grad = ablation.mask_losses(model, x, y, m, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(loss, loss_ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(grad, grad_ref, atol=1e-10, rtol=0)
        f = masks.masked_logits(model, x, m, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(f, f_ref, atol=1e-10, rtol=0)


def test_shared_rows_are_skipped_when_rows_differ():
    """Distinct first-layer rows on every mask: each row would cost H_0 + 1 passes, so none."""
    from prunelab import ops
    from prunelab.engines import masks_conv

    model, x, _, m = conv_problem("lenet5_max", M=12, low=0.0)
    p = masks_conv.plan(ops.parse(model), x, nonneg=True)
    assert masks_conv.grouped(p, m, grad=True) == (None, None)


def test_folded_reader_equals_the_repeated_prefix():
    """The folded first reader (one GEMM over masks) and running it per mask agree."""
    from prunelab import ops
    from prunelab.engines import masks_conv

    model, x, y, m = conv_problem("vgg11_bn", low=0.0)
    view = ops.parse(model)
    a = masks_conv.plan(view, x, nonneg=True)
    b = masks_conv.plan(view, x, nonneg=True, shared_bytes=0)
    assert a.P is not None and b.P is None
    torch.testing.assert_close(masks_conv.logits(a, m), masks_conv.logits(b, m), atol=1e-12, rtol=0)


def test_convnet_mask_errors_name_the_problem():
    model, x, y, m = conv_problem("lenet5_max")
    with pytest.raises(ValueError, match=r"masks must have shape \[M, 226\].*\[6, 16, 120, 84\]"):
        ablation.mask_losses(model, x, y, m[:, :10])
    with pytest.raises(ValueError, match=r"x must have shape \[N, 1, H, W\]"):
        masks.masked_logits(model, x[:, :, :, :, None], m)
    bad = m.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        ablation.mask_losses(model, x, y, bad)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 10\)"):
        ablation.mask_losses(model, x, y + 10, m)


def test_convnet_hidden_activations_are_feature_maps():
    model, x, _, _ = conv_problem("lenet5_max")
    acts = masks.hidden_activations(model, x)
    assert [tuple(a.shape[1:]) for a in acts] == [(6, 28, 28), (16, 10, 10), (120,), (84,)]
    with torch.no_grad():
        torch.testing.assert_close(acts[1], model[:5](x))

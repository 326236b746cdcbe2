"""The op kinds of the parsed view, each with the primitives methods are written against.

An op maps one sample batch ``x: [N, *in]`` to ``y: [N, *out]``. Every kind implements

    apply(x, params)        y, exactly as the module computes it (parameter overrides by name)
    vjp(x, g)               J(x)^T g: the gradient at the op's input from the gradient ``g`` at
                            its output (Linear: ``g W``; Conv2d: the transposed convolution)
    vjp(x, g, squared=True) (J(x) o J(x))^T g, the elementwise-squared Jacobian's transpose
                            (Becker & LeCun's diagonal curvature and its residual terms need it)

and the kinds that hold parameters (:class:`Affine`: a Linear or Conv2d, with an eval-mode
BatchNorm after it folded in, and a Conv2d's :class:`.modules.Offset` before that BatchNorm)
add

    folded()                the effective weight and per-unit bias with BatchNorm folded in
    folded_offset()         the per-position part of the bias, ``s o offset`` (Offset only)
    per_sample_grads(x, g)  d(sum g . y_n)/dW and /db per sample n (a conv through unfold)
    add_sparse(x, e, v, y)  y += the raw layer with a weight that is zero but ``v`` at entries ``e``
    slice_out(keep)         new modules computing only the output units ``keep`` (the layer,
                            its Offset and BatchNorm, each sliced)
    slice_in(keep, block)   new module reading only the input units ``keep`` (a conv channel
                            seen through a Flatten is a block of ``block`` Linear columns)
    response(u)             the response to an input ``u`` without the bias (A u): how the op
                            answers a unit held at a constant value, which is position
                            dependent near the border of a zero-padded conv.

Units are the output features of a Linear and the output channels of a Conv2d. Each primitive
is checked against autograd in float64 in ``tests/test_ops.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import derivatives, phi
from .modules import Offset

Params = Mapping[str, Tensor] | None
# ``training`` of apply: None follows each module's own mode (as ``model(x)``); False is
# evaluation (Dropout the identity, BatchNorm with its running statistics), as methods read a
# model.


def _get(params: Params, name: str, default: Tensor | None) -> Tensor | None:
    """``params[name]`` if given, else the module's own tensor."""
    return default if params is None or name not in params else params[name]


def _autograd_vjp(fn, x: Tensor, g: Tensor) -> Tensor:
    """``J^T g`` of ``fn`` at ``x`` by autograd (the op's own backward kernel)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(fn(x), x, g)[0]


@dataclass(frozen=True, eq=False)
class Op:
    """One op: the module at ``position`` of the flattened Sequential, named ``name``."""

    position: int
    name: str
    module: nn.Module

    linear: ClassVar[bool] = True  # y = A x for a matrix A that does not depend on x

    def apply(self, x: Tensor, params: Params = None, training: bool | None = None) -> Tensor:
        return self.module(x)

    def vjp(self, x: Tensor, g: Tensor, *, squared: bool = False) -> Tensor:
        return g.reshape(x.shape)


class Pass(Op):
    """Identity and Dropout: the identity at evaluation time."""

    def apply(self, x: Tensor, params: Params = None, training: bool | None = None) -> Tensor:
        return x if training is False else self.module(x)

    @property
    def dropout(self) -> float | None:
        """A Dropout's probability of zeroing an input in training; None for Identity."""
        return float(self.module.p) if isinstance(self.module, nn.Dropout) else None


class Flatten(Op):
    """``nn.Flatten(1, -1)``: ``[N, *in] -> [N, prod(in)]``; a reshape, so ``J^T g`` reshapes."""

    def apply(self, x: Tensor, params: Params = None, training: bool | None = None) -> Tensor:
        return x.flatten(1)


@dataclass(frozen=True, eq=False)
class Activation(Op):
    """An elementwise activation ``a = phi(z)``: ``J = diag(phi'(z))``."""

    activation: str = "identity"
    slope: float = 0.0  # LeakyReLU's negative slope

    def apply(self, x: Tensor, params: Params = None, training: bool | None = None) -> Tensor:
        return phi(self.activation, x, self.slope)

    def derivatives(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """``phi'(z)`` and ``phi''(z)`` (None where ``phi`` is piecewise linear)."""
        return derivatives(self.activation, z, self.slope)

    def vjp(self, x: Tensor, g: Tensor, *, squared: bool = False) -> Tensor:
        d1 = self.derivatives(x)[0]
        return g * (d1 * d1 if squared else d1)


class Pool(Op):
    """Average pooling (a linear op) or max pooling (a routing op), 2-d and adaptive.

    ``J^T g`` is the pooling's own backward. Each output of an average pool is ``c_o`` times
    the sum of its window, so ``(J o J)^T g = J^T (c o g)``; a max pool routes each output from
    one input (``J`` holds 0s and 1s), so ``J o J = J``.

    Without autograd, an unpadded max pool (``ceil_mode=False``) is computed as the elementwise
    maximum of its ``k_h k_w`` strided windows: the same values exactly (a maximum rounds
    nothing), several times faster than PyTorch's CPU kernel on small feature maps. With
    autograd the module itself runs, so gradients route as PyTorch's do.
    """

    def apply(self, x: Tensor, params: Params = None, training: bool | None = None) -> Tensor:
        m = self.module
        if torch.is_grad_enabled() or not isinstance(m, nn.MaxPool2d) or x.dim() != 4:
            return m(x)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            _pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation)
        )
        if ph or pw or m.ceil_mode:
            return m(x)
        H_out = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
        W_out = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        if H_out < 1 or W_out < 1:
            return m(x)  # PyTorch's own error
        out = None
        for r in range(0, dh * kh, dh):
            for q in range(0, dw * kw, dw):
                window = x[
                    :, :, r : r + sh * (H_out - 1) + 1 : sh, q : q + sw * (W_out - 1) + 1 : sw
                ]
                out = window.clone() if out is None else torch.maximum(out, window, out=out)
        return out

    @property
    def routing(self) -> bool:
        return isinstance(self.module, nn.MaxPool2d | nn.AdaptiveMaxPool2d)

    @property
    def adaptive(self) -> bool:
        """An adaptive pool: its windows follow from the input and output sizes."""
        return isinstance(self.module, nn.AdaptiveMaxPool2d | nn.AdaptiveAvgPool2d)

    def winners(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A max pool's output and each output's winner, a flat index into its input map's
        ``H * W`` (PyTorch's choice on ties, as autograd routes): both ``[N, C, H_out, W_out]``."""
        m = self.module
        if isinstance(m, nn.AdaptiveMaxPool2d):
            return F.adaptive_max_pool2d(x, m.output_size, return_indices=True)
        return F.max_pool2d(
            x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
        )

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return not self.routing

    def vjp(self, x: Tensor, g: Tensor, *, squared: bool = False) -> Tensor:
        if squared and not self.routing:
            g = g * self.coefficients(x.shape[-2:]).to(g)
        return _autograd_vjp(self.module, x, g)

    def coefficients(self, size: Sequence[int]) -> Tensor:
        """The weight ``c_o`` of every input in output ``o``'s window: ``[H_out, W_out]``."""
        m = self.module
        ones = torch.ones(1, 1, *size, dtype=torch.float64)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return 1.0 / (_adaptive_counts(size, F.adaptive_avg_pool2d(ones, m.output_size)))
        # n_o: the window's inputs inside the (unpadded) input, as a sum pool counts them
        n = F.avg_pool2d(
            ones, m.kernel_size, m.stride, m.padding, m.ceil_mode, False, divisor_override=1
        )
        return (self.module(ones) / n)[0, 0]  # c_o n_o = the pool of ones


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _adaptive_counts(size: Sequence[int], like: Tensor) -> Tensor:
    """Window sizes of an adaptive pool from ``size`` to ``like``'s size: ``[H_out, W_out]``."""

    def lengths(n_in: int, n_out: int) -> Tensor:
        i = torch.arange(n_out)
        start = torch.div(i * n_in, n_out, rounding_mode="floor")
        end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
        return (end - start).double()

    H_out, W_out = like.shape[-2:]
    return lengths(size[0], H_out)[:, None] * lengths(size[1], W_out)[None, :]


@dataclass(frozen=True, eq=False)
class Affine(Op):
    """A Linear or Conv2d, with an eval-mode BatchNorm that follows it folded in.

    ``z = W x + b`` (a Conv2d: ``W * x + b``, a cross-correlation), then a Conv2d's
    :class:`.modules.Offset` if any, ``z + o`` with ``o: [C, H, W]`` a fixed shift per position,
    then the BatchNorm ``(z - mu) gamma / sqrt(var + eps) + beta``. Folded: ``W' = s W``,
    ``b' = s (b - mu) + beta`` and ``o' = s o`` with ``s = gamma / sqrt(var + eps)`` per unit
    (Ioffe & Szegedy 2015, section 3.1).
    """

    norm: nn.BatchNorm1d | nn.BatchNorm2d | None = None
    norm_position: int | None = None
    norm_name: str | None = None
    offset: Offset | None = None
    offset_position: int | None = None
    offset_name: str | None = None

    @property
    def conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    @property
    def units(self) -> int:
        """Output features (Linear) or channels (Conv2d)."""
        return self.module.weight.shape[0]

    @property
    def in_units(self) -> int:
        """Input features (Linear) or channels (Conv2d)."""
        return self.module.weight.shape[1]

    @property
    def positions(self) -> tuple[int, ...]:
        """Positions of its modules in the flattened Sequential: layer, Offset, BatchNorm."""
        both = (self.offset_position, self.norm_position)
        return (self.position, *(k for k in both if k is not None))

    @property
    def weight(self) -> Tensor:
        return self.module.weight

    @property
    def bias(self) -> Tensor | None:
        return self.module.bias

    def raw(self, params: Params = None) -> tuple[Tensor, Tensor | None]:
        """The module's own weight and bias (overridden by ``params``, keyed by name)."""
        W = _get(params, f"{self.name}.weight", self.module.weight)
        b = _get(params, f"{self.name}.bias", self.module.bias)
        return W, b

    def _z(self, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        if not self.conv:
            return F.linear(x, W, b)
        m = self.module
        return F.conv2d(x, W, b, m.stride, m.padding, m.dilation, m.groups)

    def apply(self, x: Tensor, params: Params = None, training: bool | None = None) -> Tensor:
        z = self._z(x, *self.raw(params))
        if self.offset is not None:
            z = self.offset(z)
        if self.norm is None:
            return z
        bn = self.norm
        gamma = _get(params, f"{self.norm_name}.weight", bn.weight)
        beta = _get(params, f"{self.norm_name}.bias", bn.bias)
        if not bn.training or training is False:
            mu, var = self.running(params)
            return F.batch_norm(z, mu, var, gamma, beta, False, 0.0, bn.eps)
        if gamma is bn.weight and beta is bn.bias:
            return bn(z)  # batch statistics, running averages updated: exactly the module
        # the module's training step with overridden gamma, beta (as functional_call runs it)
        momentum = bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked) if momentum is None else momentum
        return F.batch_norm(
            z, bn.running_mean, bn.running_var, gamma, beta, True, momentum or 0.0, bn.eps
        )

    def running(self, params: Params = None) -> tuple[Tensor, Tensor]:
        """The BatchNorm's running mean and variance, overridden by ``params`` (keyed by their
        buffer names, ``f"{norm_name}.running_mean"``, as ``torch.func.functional_call`` takes
        buffers)."""
        bn = self.norm
        mu = _get(params, f"{self.norm_name}.running_mean", bn.running_mean)
        return mu, _get(params, f"{self.norm_name}.running_var", bn.running_var)

    def scale_shift(self, params: Params = None) -> tuple[Tensor, Tensor] | None:
        """The BatchNorm as ``s z + t`` per unit (None without one); errors in training mode."""
        bn = self.norm
        if bn is None:
            return None
        if bn.training:
            raise ValueError(
                f"module {self.norm_position} ({type(bn).__name__}, {self.norm_name!r}) is in "
                "training mode: it normalises with each batch's statistics, so it cannot be "
                "folded into the op before it; call model.eval() first"
            )
        W = self.module.weight
        gamma = _get(params, f"{self.norm_name}.weight", bn.weight)
        beta = _get(params, f"{self.norm_name}.bias", bn.bias)
        mu, var = self.running(params)
        s = torch.rsqrt(var.to(W) + bn.eps)
        s = s if gamma is None else s * gamma
        t = -mu.to(W) * s
        return s, t if beta is None else t + beta

    def folded(self, params: Params = None) -> tuple[Tensor, Tensor]:
        """Effective ``(W', b')`` with the BatchNorm folded in; ``b'`` is zeros without a bias."""
        W, b = self.raw(params)
        b = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device) if b is None else b
        st = self.scale_shift(params)
        if st is None:
            return W, b
        s, t = st
        return W * s.view(-1, *[1] * (W.dim() - 1)), s * b + t

    def folded_offset(self, params: Params = None) -> Tensor | None:
        """``o' = s o``: the Offset as folded, the per-position part of the bias ``[H, *sp]``
        that :meth:`folded` leaves out (None without an Offset): ``y = W' x + b' + o'``."""
        if self.offset is None:
            return None
        o = self.offset.offset
        st = self.scale_shift(params)
        return o if st is None else o * st[0].view(-1, *[1] * (o.dim() - 1))

    def vjp(self, x: Tensor, g: Tensor, *, squared: bool = False) -> Tensor:
        W = self.folded()[0]
        W = W * W if squared else W
        if not self.conv:
            return g @ W
        m = self.module
        return torch.nn.grad.conv2d_input(x.shape, W, g, m.stride, m.padding, m.dilation, m.groups)

    def per_sample_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample gradients of ``sum_o g_no y_no`` w.r.t. ``W'`` and ``b'`` (folded).

        Linear: ``dW_n = g_n x_n^T``: ``[N, H, D]``, ``db_n = g_n``. Conv2d, through the
        unfolded input ``X_n = unfold(x_n): [C_in k_h k_w, L]`` (im2col; L output positions):
        ``dW_n = g_n X_n^T`` reshaped to ``[N, *W.shape]``, ``db_n = sum_L g_n``.
        """
        N = x.shape[0]
        if not self.conv:
            return g[:, :, None] * x[:, None, :], g
        m = self.module
        X = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, C_in k k, L)
        G = g.reshape(N, self.units, -1)  # (N, C_out, L)
        dW = torch.bmm(G, X.transpose(1, 2))  # (N, C_out, C_in k k)
        return dW.view(N, *m.weight.shape), G.sum(2)

    def add_sparse(self, x: Tensor, entries: Tensor, values: Tensor, out: Tensor) -> Tensor:
        """``out += A_E x``: the raw layer (no bias, before any Offset or BatchNorm) whose weight
        is zero but ``values: [E]`` at the flat indices ``entries: [E]``; in place, returns ``out``.

        Entry ``e = (o, d)`` adds ``W_e x_d`` to output unit ``o``: Linear, ``x[:, d]``; Conv2d
        with ``d = (c, i, j)``, the strided window of channel ``c`` that kernel tap ``(i, j)``
        reads at every output position (zero padding included), ``2 N Q`` per entry for ``Q``
        output positions instead of the whole layer. ``out: [N, H_out, *spatial]``.
        """
        W = self.module.weight
        o, d = entries // W[0].numel(), entries % W[0].numel()
        if not self.conv:
            return out.index_add_(1, o, x.index_select(1, d) * values)
        m = self.module
        kh, kw = W.shape[2:]
        (ph, pw), (sh, sw), (dh, dw) = m.padding, m.stride, m.dilation
        xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        H_out, W_out = out.shape[2:]
        c, i, j = d // (kh * kw), (d // kw) % kh, d % kw
        for oe, ce, ie, je, v in zip(*(t.tolist() for t in (o, c, i, j, values)), strict=True):
            r, q = ie * dh, je * dw  # the window's first row and column in the padded input
            window = xp[:, ce, r : r + sh * (H_out - 1) + 1 : sh, q : q + sw * (W_out - 1) + 1 : sw]
            out[:, oe].add_(window, alpha=v)
        return out

    def slice_out(self, keep: Tensor) -> list[nn.Module]:
        """New modules (the op, its Offset and BatchNorm if any) computing only units ``keep``."""
        W, b = self.raw()
        new = [_like(self.module, W[keep], None if b is None else b[keep])]
        if self.offset is not None:
            new.append(offset_like(self.offset.offset[keep], self.offset.training))
        if self.norm is not None:
            new.append(_norm_like(self.norm, keep))
        return new

    def slice_in(self, keep: Tensor, block: int = 1) -> nn.Module:
        """A new module reading only input units ``keep``, each a block of ``block`` columns."""
        cols = (keep[:, None] * block + torch.arange(block, device=keep.device)).flatten()
        W, b = self.raw()
        return _like(self.module, W[:, cols], b)

    def response(self, u: Tensor, params: Params = None) -> Tensor:
        """``A u``: the op (raw, before any BatchNorm) on ``u: [N, *in]`` without its bias;
        ``params`` may override the weight (e.g. with the columns of some input units only)."""
        return self._z(u, self.raw(params)[0], None)


def _like(module: nn.Linear | nn.Conv2d, W: Tensor, b: Tensor | None) -> nn.Module:
    """A plain Linear or Conv2d with ``module``'s settings and mode holding ``W`` and ``b``
    (copied where they are ``module``'s own); ``requires_grad`` follows ``module``'s.

    Built without ``__init__``'s parameter initialisation (an ``nn.Module`` with the
    settings copied), which is most of the cost of making a layer.
    """
    cls = nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for key, value in module.__dict__.items():  # settings: sizes, kernel, stride, padding, ...
        if key not in _MODULE_STATE and not isinstance(value, Tensor):  # (torch's prune masks)
            new.__dict__[key] = value
    new.training = module.training
    if cls is nn.Conv2d:
        new.in_channels, new.out_channels = W.shape[1] * module.groups, W.shape[0]
    else:
        new.in_features, new.out_features = W.shape[1], W.shape[0]
    new.register_parameter("weight", _parameter(W, module.weight, module.weight))
    # a bias made for compensation follows the weight's requires_grad
    like = module.weight if module.bias is None else module.bias
    new.register_parameter("bias", None if b is None else _parameter(b, module.bias, like))
    return new


_MODULE_STATE = frozenset(nn.Module().__dict__)  # what every module's __init__ sets


def _parameter(t: Tensor, own: Tensor | None, like: Tensor) -> nn.Parameter:
    """``t`` as a new Parameter (copied if it shares memory with ``own``), as ``like`` requires
    grad."""
    t = t.detach()
    if own is not None and t.untyped_storage().data_ptr() == own.untyped_storage().data_ptr():
        t = t.clone()
    return nn.Parameter(t.contiguous(), requires_grad=like.requires_grad)


def offset_like(o: Tensor, training: bool) -> Offset:
    """A new :class:`.modules.Offset` holding a copy of ``o``, in training mode or not."""
    new = Offset(o.shape, device=o.device, dtype=o.dtype)
    with torch.no_grad():
        new.offset.copy_(o)
    new.train(training)
    return new


def _norm_like(bn: nn.BatchNorm1d | nn.BatchNorm2d, keep: Tensor) -> nn.Module:
    """A copy of ``bn`` holding only the entries ``keep``, in ``bn``'s mode."""
    new = type(bn)(
        len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
        device=bn.running_mean.device if bn.running_mean is not None else None,
        dtype=bn.running_mean.dtype if bn.running_mean is not None else None,
    )  # fmt: skip
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(bn, name)
            if t is not None:
                getattr(new, name).copy_(t[keep])
        if bn.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    for name in ("weight", "bias"):
        if getattr(bn, name) is not None:
            getattr(new, name).requires_grad_(getattr(bn, name).requires_grad)
    new.train(bn.training)
    return new

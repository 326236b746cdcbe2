"""The one remove-and-rewire routine: take units out of a model and mend what reads them.

Removing the units ``R_l`` of hidden layer ``l`` slices them out of the layer that makes them
(its rows or filters, its Offset's and BatchNorm's entries) and out of the layer that reads
them (its columns; a conv channel seen through a Flatten is a block of columns). With mean
compensation each removed unit is held at its mean activation ``abar_j`` instead of
vanishing, and the reader absorbs the constant it then receives:

    z^{l+1} <- z^{l+1} + A^{l+1} u_l,   u_l = the removed units held at abar_j, the rest 0

``A^{l+1} u_l`` is the reader's response to that constant input after the pools and Flatten
between them (:meth:`Affine.response`); for a Linear it is ``W^{l+1}[:, R_l] abar_{R_l}``,
folded into the bias. A convolution's response to a constant channel is the same at every
output position except where its kernel overlaps zero padding: near the border it answers
less. There ``(A u)_{c,p}`` depends on the position ``p``, and ``border`` decides:

* ``"offset"`` (exact): the bias takes the interior value ``v_c`` (the mean response over the
  positions whose kernel lies wholly inside the input) and an :class:`.modules.Offset` placed
  right after the convolution, before its BatchNorm, takes the rest
  ``o_{c,p} = (A u)_{c,p} - v_c`` (zero in the interior; added to an Offset already there);
* ``"interior"``: the bias takes ``v_c`` only: exact in the interior, off by ``o_{c,p}`` at
  the border. :func:`compensation_error` returns, per removed layer, the largest error this
  makes at its reader's output, ``max_{c,p} |s_c o_{c,p}|`` (``s_c`` the reader's BatchNorm
  scale, 1 without one).

A reader whose response does not vary with position (to rounding) takes it into its bias
either way. The means are taken layer by layer on data passed through the network as pruned so
far, so each compensation sees exactly the inputs it will receive. ``scale`` multiplies the
kept units' columns in the reader instead (coreset pruning's reweighting).

With ``keep_shape=True`` nothing is sliced: the model keeps its size, the readers absorb the
same compensation, and a unit mask that zeroes ``R_l`` (returned) completes the pruned model.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from .kinds import _MODULE_STATE, Affine, _like, offset_like
from .view import View, _flatten

BORDERS = ("offset", "interior")


def remove_units(
    model: nn.Sequential,
    view: View,
    remove: Mapping[int, Iterable[int]],
    *,
    x: Tensor | None = None,
    scale: Mapping[int, Tensor] | None = None,
    keep_shape: bool = False,
    border: str = "offset",
    method: str = "remove_units",
) -> tuple[nn.Sequential, Tensor]:
    """A new model without the units ``remove[l]`` of each hidden layer ``l``.

    Parameters
    ----------
    model : nn.Sequential
        The model ``view`` was parsed from; not modified.
    remove : dict of int to list or Tensor
        Hidden layer -> distinct indices of its units to remove (see :func:`check_remove`);
        an empty list removes none.
    x : Tensor[N, *in], optional
        Data for mean compensation (None: the units are deleted, which equals zeroing them).
    scale : dict of int to Tensor[H_l], optional
        Per hidden layer, a factor for each unit's columns in the layer that reads it.
    keep_shape : bool
        Keep every layer's size and compensate only (see the module docstring).
    border : {"offset", "interior"}
        Mean compensation read by a zero-padded convolution: exact, with an
        :class:`.modules.Offset` after it, or its interior value folded into the bias only
        (see the module docstring).

    Returns
    -------
    (nn.Sequential, Tensor[H])
        The new model (module names, nesting, each module's mode and ``requires_grad`` kept;
        a module used twice becomes two copies; an inserted Offset is named after its
        convolution, ``"3"`` -> ``"3_offset"``) and the unit mask (0 on removed units).

    Raises
    ------
    ValueError
        For a bad plan (:func:`check_remove`), non-finite or empty ``x``, removing every
        channel of a Conv2d, or an unknown ``border``.
    """
    return _remove(model, view, remove, x, scale, keep_shape, border, method)[:2]


def compensation_error(
    model: nn.Sequential,
    view: View,
    remove: Mapping[int, Iterable[int]],
    *,
    x: Tensor,
    method: str = "compensation_error",
) -> dict[int, float]:
    """The error of ``border="interior"`` mean compensation at each reader's output.

    For each hidden layer ``l`` with units removed: ``max_{c,p} |s_c o_{c,p}|``, the largest
    difference, over the reader's output channels ``c`` and positions ``p``, between the
    reader's output (BatchNorm included) with the interior value folded into its bias and with
    the exact compensation, on the same input (the means taken in the network as pruned by
    :func:`remove_units` with ``border="interior"``). 0 (to rounding) for a reader that is a
    Linear or an unpadded convolution.

    Returns
    -------
    dict of int to float
        Hidden layer -> its error; one entry per non-empty entry of ``remove``.
    """
    if x is None:
        raise ValueError(f"{method}: needs data x to take the removed units' means")
    return _remove(model, view, remove, x, None, False, "interior", method)[2]


def _remove(
    model: nn.Sequential,
    view: View,
    remove: Mapping[int, Iterable[int]],
    x: Tensor | None,
    scale: Mapping[int, Tensor] | None,
    keep_shape: bool,
    border: str,
    method: str,
) -> tuple[nn.Sequential, Tensor, dict[int, float]]:
    """:func:`remove_units`, and the interior form's error per removed layer."""
    if border not in BORDERS:
        raise ValueError(f"{method}: border={border!r}; choose from {list(BORDERS)}")
    remove = check_remove(view, remove, method=method, keep_one=False)
    if x is not None:
        checks.tensor(x, method, "x", floating=True)
    n_hidden = len(view.hidden)
    hidden = {k: ell for ell, k in enumerate(view.unit_ops)}
    replaced: dict[int, nn.Module] = {}  # flattened position -> new module
    inserted: dict[int, nn.Module] = {}  # flattened position -> a new Offset to follow it
    errors: dict[int, float] = {}
    masks = [torch.ones(layer.units, dtype=view.dtype, device=view.device) for layer in view.hidden]
    a = None if x is None else view.inputs(x).to(device=view.device, dtype=view.dtype)
    u: Tensor | None = None  # the removed units held at their means, the rest 0: [1, *shape]
    prev: int | None = None  # hidden layer whose units the next layer reads
    ell = -1  # index of the current layer among view.layers
    with torch.no_grad():
        for k, op in enumerate(view.ops):
            if isinstance(op, Affine):
                ell += 1
                R = remove.get(ell) if ell < n_hidden else None
                if op.conv and R is not None and len(R) == op.units and not keep_shape:
                    raise ValueError(
                        f"{method}: removing all {op.units} channels of {op.name!r} (module "
                        f"{op.position}) would leave a Conv2d with none; keep at least one"
                    )
                new_op, error = _reader(op, view, prev, remove, scale, u, keep_shape, border)
                if error is not None:
                    errors[prev] = error
                if a is not None:
                    a = new_op.apply(a, training=False)
                keep = _complement(R, op.units) if R is not None and not keep_shape else None
                layer, offset, norm = _modules(new_op, op, keep)
                replaced[op.position] = layer
                if offset is not None and new_op.offset_position is None:  # a new Offset
                    inserted[op.position] = offset
                elif offset is not None:
                    replaced[new_op.offset_position] = offset
                if norm is not None:
                    replaced[op.norm_position] = norm
                u, prev = None, None
            elif a is not None:
                a = op.apply(a, training=False)
                if u is not None:
                    u = op.apply(u, training=False)
            if k in hidden:  # the units of hidden layer l are read here
                ell_h = prev = hidden[k]
                R = remove.get(ell_h)
                if R is None:
                    continue
                masks[ell_h][R] = 0
                if a is not None:
                    abar = a[:, R].mean(dim=[d for d in range(a.dim()) if d != 1])  # [|R|]
                    u = a.new_zeros(1, *a.shape[1:])
                    u[:, R] = abar.view(-1, *[1] * (a.dim() - 2))
                    if keep_shape:  # the pruned net: the units zeroed, or gone
                        a = a * masks[ell_h].view(-1, *[1] * (a.dim() - 2))
                    else:
                        a = a.index_select(1, _complement(R, a.shape[1]))  # u keeps every unit
    mask = torch.cat(masks) if masks else torch.ones(0)
    return _rebuild(model, replaced, inserted), mask, errors


def check_remove(
    view: View,
    remove: Mapping[int, Iterable[int]],
    *,
    method: str = "remove_units",
    what: str = "unit",
    keep_one: bool = True,
) -> dict[int, Tensor]:
    """Validate a removal plan ``{hidden layer: [unit, ...]}``; return {hidden layer: sorted
    unit indices} for its non-empty entries. ``keep_one``: refuse emptying a layer."""
    if not isinstance(remove, Mapping):
        raise TypeError(
            f"{method}: remove must be a mapping {{hidden_layer: [{what}, ...]}}; "
            f"got {type(remove).__name__}"
        )
    sizes = view.hidden_sizes
    device = view.device
    out: dict[int, Tensor] = {}
    for key, nodes in remove.items():
        ell = _index(key, f"{method}: hidden-layer key {key!r}")
        if not 0 <= ell < len(sizes):
            raise ValueError(
                f"{method}: hidden layer {ell} out of range; the model has {len(sizes)} "
                f"hidden layer(s) with sizes {sizes} (keys 0..{len(sizes) - 1})"
            )
        H = sizes[ell]
        if isinstance(nodes, Tensor):
            if nodes.is_floating_point() or nodes.is_complex() or nodes.dtype == torch.bool:
                raise TypeError(
                    f"{method}: remove[{ell}] must hold integer {what} indices; got {nodes.dtype}"
                )
            index = nodes.reshape(-1).to(device=device, dtype=torch.long)
        else:
            if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
                raise TypeError(
                    f"{method}: remove[{ell}] must be a list of {what} indices; "
                    f"got {type(nodes).__name__}"
                )
            nodes = list(nodes)
            if not all(type(i) is int for i in nodes):
                nodes = [_index(i, f"{method}: remove[{ell}] entry {i!r}") for i in nodes]
            index = torch.tensor(nodes, dtype=torch.long, device=device)
        bad = index[(index < 0) | (index >= H)]
        if len(bad):
            raise ValueError(
                f"{method}: remove[{ell}] holds {what} index {int(bad[0])} out of range; hidden "
                f"layer {ell} ({view.hidden[ell].name}) has {H} {what}s (0..{H - 1})"
            )
        index = index.sort().values
        dup = index[1:][index[1:] == index[:-1]]
        if len(dup):
            raise ValueError(f"{method}: remove[{ell}] lists {what} {int(dup[0])} more than once")
        if keep_one and len(index) == H:
            raise ValueError(
                f"{method}: remove[{ell}] removes all {H} {what}s of hidden layer {ell} "
                f"({view.hidden[ell].name}); keep at least one"
            )
        if len(index):
            out[ell] = index
    return out


def _index(value: object, what: str) -> int:
    """``value`` as a Python int; bools and non-integers raise a TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer; got {type(value).__name__}") from None


def _reader(
    op: Affine,
    view: View,
    prev: int | None,
    remove: Mapping[int, Tensor],
    scale: Mapping[int, Tensor] | None,
    u: Tensor | None,
    keep_shape: bool,
    border: str,
) -> tuple[Affine, float | None]:
    """``op`` as the reader of hidden layer ``prev`` (new modules where they change):
    compensated, rescaled, sliced; and the interior form's error (None: no compensation)."""
    if prev is None:
        return op, None
    W, b = op.raw()
    o = None if op.offset is None else op.offset.offset
    error = None
    if u is not None:
        shift, rest, error = _compensation(op, _after_reader_input(u, op), border)
        b = shift if b is None else b + shift
        if rest is not None:
            o = rest if o is None else o + rest
    if scale is not None and prev in scale:
        s = scale[prev].to(torch.float64)
        if not op.conv:
            s = s.repeat_interleave(op.in_units // len(s))  # a channel's columns: [in_units]
        s = s.view(1, -1, *[1] * (W.dim() - 2))
        W = (W.to(torch.float64) * s).to(W.dtype)
    R = remove.get(prev)
    if R is not None and not keep_shape:
        H = view.hidden[prev].units
        block = op.in_units // H if not op.conv else 1  # a channel's columns after a Flatten
        keep = _complement(R, H)
        W = W[:, (keep[:, None] * block + torch.arange(block, device=keep.device)).flatten()]
    offset = op.offset
    if o is not None and (offset is None or o is not offset.offset):
        offset = offset_like(o, op.module.training)
    return Affine(
        op.position, op.name, _like(op.module, W, b), op.norm, op.norm_position, op.norm_name,
        offset, op.offset_position if op.offset is not None else None, op.offset_name,
    ), error  # fmt: skip


def _compensation(op: Affine, u: Tensor, border: str) -> tuple[Tensor, Tensor | None, float]:
    """What the reader ``op`` absorbs of ``A u`` (``u: [1, *in]``): its bias shift ``[H_out]``,
    the per-position rest for an Offset ``[H_out, *spatial]`` (None: the bias holds it all),
    and the interior form's error ``max |s o|`` at the reader's output."""
    r = op.response(u)[0]  # A u: [H_out] or [H_out, h, w]
    if r.dim() == 1:
        return r, None, 0.0
    # rounding of each output's sum is bounded by eps times the sum of |terms|
    size = op._z(u.abs(), op.raw()[0].abs(), None)[0].flatten(1).amax(1)  # [H_out]
    tol = 64 * torch.finfo(r.dtype).eps * size
    flat = r.flatten(1)  # (H_out, h w)
    s = _norm_scale(op).view(-1, 1, 1)  # [H_out, 1, 1]
    if not bool(((flat - flat[:, :1]).abs() > tol[:, None]).any()):  # the same everywhere
        v = flat.mean(1)
        return v, None, float((s * (r - v.view(-1, 1, 1))).abs().max())
    v = _interior(op, r, u.shape[-2:])
    o = r - v.view(-1, 1, 1)  # zero where the kernel lies wholly inside the input
    return v, o if border == "offset" else None, float((s * o).abs().max())


def _interior(op: Affine, r: Tensor, size: torch.Size) -> Tensor:
    """``v_c``: the mean of ``r: [H_out, h, w]`` over the output positions whose kernel lies
    furthest inside the input (wholly inside, when any does): ``[H_out]``."""
    m = op.module
    ones = r.new_ones(1, 1, *size)
    kernel = r.new_ones(1, 1, *m.kernel_size)
    taps = F.conv2d(ones, kernel, None, m.stride, m.padding, m.dilation)[0, 0]  # in-bounds taps
    inner = taps == taps.max()  # [h, w]
    return r[:, inner].mean(1)


def _norm_scale(op: Affine) -> Tensor:
    """The BatchNorm's per-unit scale ``s = gamma / sqrt(var + eps)`` (running statistics,
    as in evaluation), ones without one: ``[H_out]``."""
    W = op.module.weight
    bn = op.norm
    if bn is None:
        return W.new_ones(op.units)
    s = torch.rsqrt(bn.running_var.to(W) + bn.eps)
    return s if bn.weight is None else s * bn.weight.to(W)


def _modules(op: Affine, original: Affine, keep: Tensor | None) -> list[nn.Module | None]:
    """``[layer, Offset, BatchNorm]`` of the new model for ``op`` (None where it has none):
    sliced to the units ``keep``, or else each of ``op``'s own, copied where it is still
    ``original``'s."""
    if keep is not None:
        new = op.slice_out(keep)
        return [new[0], new[1] if op.offset is not None else None, new[-1] if op.norm else None]
    return [
        m if m is None or m is not old else _copy(m)
        for m, old in zip(
            (op.module, op.offset, op.norm),
            (original.module, original.offset, original.norm),
            strict=True,
        )
    ]


def _copy(module: nn.Module) -> nn.Module:
    """``copy.deepcopy(module)``; for a module without parameters, buffers or children whose
    own settings are plain values (an activation, pool, Flatten), the same copy made faster."""
    state = module.__dict__
    if (
        module._parameters
        or module._buffers
        or module._modules
        or not all(_plain(value) for key, value in state.items() if key not in _MODULE_STATE)
    ):
        return copy.deepcopy(module)
    new = object.__new__(type(module))
    new.__dict__.update(state)
    for key in _MODULE_STATE:  # the hook and bookkeeping containers, one level down
        if isinstance(state.get(key), dict | set | list):
            new.__dict__[key] = state[key].copy()
    return new


def _plain(value: object) -> bool:
    """Whether ``value`` is immutable all the way down (a number, string, None or tuple)."""
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, bool | int | float | str | type(None))


def _after_reader_input(u: Tensor, op: Affine) -> Tensor:
    """``u`` shaped as ``op`` reads it (a Linear reads it flattened)."""
    return u.flatten(1) if not op.conv and u.dim() > 2 else u


def _complement(R: Tensor, H: int) -> Tensor:
    """Indices in ``range(H)`` not in ``R``, ascending."""
    keep = torch.ones(H, dtype=torch.bool, device=R.device)
    keep[R] = False
    return keep.nonzero().squeeze(1)


def _rebuild(
    model: nn.Sequential, replaced: Mapping[int, nn.Module], inserted: Mapping[int, nn.Module]
) -> nn.Sequential:
    """A copy of ``model``'s nesting with the modules at flattened positions replaced, and an
    Offset inserted after each position in ``inserted`` (named ``f"{name}_offset"``).

    Other modules are deep copies; a module that appears twice becomes two copies. Module
    names are kept.
    """
    counter = iter(range(len(_flatten(model))))

    def build(seq: nn.Sequential) -> nn.Sequential:
        children = {}
        for name, m in seq._modules.items():  # not named_children(): it skips repeats
            if isinstance(m, nn.Sequential):
                children[name] = build(m)
                continue
            k = next(counter)
            new = replaced[k] if k in replaced else _copy(m)
            new.training = m.training  # each module keeps its own mode
            children[name] = new
            if k in inserted:
                extra = f"{name}_offset"
                while extra in seq._modules or extra in children:
                    extra += "_"
                inserted[k].training = m.training
                children[extra] = inserted[k]
        out = nn.Sequential(OrderedDict(children))
        out.training = seq.training
        return out

    return build(model)

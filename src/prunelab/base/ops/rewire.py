"""The one remove-and-rewire routine: take units out of a model and mend what reads them.

Removing the units ``R_l`` of hidden layer ``l`` slices them out of the layer that makes them
(its rows or filters, and its BatchNorm's entries) and out of the layer that reads them (its
columns; a conv channel seen through a Flatten is a block of columns). With mean
compensation each removed unit is held at its mean activation ``abar_j`` instead of
vanishing, which the reader absorbs into its bias:

    b^{l+1} <- b^{l+1} + A^{l+1} u_l,   u_l = the removed units held at abar_j, the rest 0

``A^{l+1} u_l`` is the reader's response to that constant input after the pools and Flatten
between them (:meth:`Affine.response`); for a Linear it is ``W^{l+1}[:, R_l] abar_{R_l}``.
The means are taken layer by layer on data passed through the network as pruned so far, so
each compensation sees exactly the inputs it will receive. ``scale`` multiplies the kept
units' columns in the reader instead (coreset pruning's reweighting).

With ``keep_shape=True`` nothing is sliced: the model keeps its size, the readers absorb the
same compensation, and a unit mask that zeroes ``R_l`` (returned) completes the pruned model.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .kinds import Affine
from .view import View, _flatten


def remove_units(
    model: nn.Sequential,
    view: View,
    remove: Mapping[int, Iterable[int]],
    *,
    x: Tensor | None = None,
    scale: Mapping[int, Tensor] | None = None,
    keep_shape: bool = False,
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

    Returns
    -------
    (nn.Sequential, Tensor[H])
        The new model (module names, nesting, each module's mode and ``requires_grad`` kept;
        a module used twice becomes two copies) and the unit mask (0 on removed units).

    Raises
    ------
    ValueError
        For a bad plan (:func:`check_remove`), non-finite or empty ``x``, removing every
        channel of a Conv2d, or mean compensation read by a zero-padded convolution.
    """
    remove = check_remove(view, remove, method=method, keep_one=False)
    if x is not None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.shape[0] == 0:
            raise ValueError(f"{method}: x must be a non-empty floating-point Tensor [N, ...]")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{method}: x holds NaN or inf values")
    layers = view.layers
    hidden = {k: ell for ell, k in enumerate(view.unit_ops)}
    replaced: dict[int, nn.Module] = {}  # flattened position -> new module
    masks = [torch.ones(layer.units, dtype=view.dtype, device=view.device) for layer in view.hidden]
    a = None if x is None else view.inputs(x).to(device=view.device, dtype=view.dtype)
    u: Tensor | None = None  # the removed units held at their means, the rest 0: [1, *shape]
    prev: int | None = None  # hidden layer whose units the next layer reads
    with torch.no_grad():
        for k, op in enumerate(view.ops):
            if isinstance(op, Affine):
                ell = layers.index(op)
                op = _reader(op, view, prev, remove, scale, u, keep_shape, method)
                R = remove.get(ell) if ell < len(view.hidden) else None
                if op.conv and R is not None and len(R) == op.units and not keep_shape:
                    raise ValueError(
                        f"{method}: removing all {op.units} channels of {op.name!r} (module "
                        f"{op.position}) would leave a Conv2d with none; keep at least one"
                    )
                if R is not None and len(R) and not keep_shape:
                    new = op.slice_out(_complement(R, op.units))
                else:
                    new = [op.module] + ([copy.deepcopy(op.norm)] if op.norm is not None else [])
                replaced[op.position] = new[0]
                if op.norm is not None:
                    replaced[op.norm_position] = new[1]
                if a is not None:
                    a = op.apply(a, training=False)
                u, prev = None, None
            elif a is not None:
                a = op.apply(a, training=False)
                if u is not None:
                    u = op.apply(u, training=False)
            if k in hidden:  # the units of hidden layer l are read here
                ell, prev = hidden[k], hidden[k]
                R = remove.get(ell)
                if R is None or not len(R):
                    continue
                masks[ell][R] = 0
                if a is not None:
                    abar = a[:, R].mean(dim=[d for d in range(a.dim()) if d != 1])  # [|R|]
                    u = torch.zeros_like(a[:1])
                    u[:, R] = abar.view(-1, *[1] * (a.dim() - 2))
                    a = a * masks[ell].view(-1, *[1] * (a.dim() - 2))  # in the pruned net
                    if not keep_shape:
                        a = a[:, _complement(R, a.shape[1])]  # u keeps every unit
    mask = torch.cat(masks) if masks else torch.ones(0)
    return _rebuild(model, replaced), mask


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
            nodes = nodes.reshape(-1).tolist()
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
            raise TypeError(
                f"{method}: remove[{ell}] must be a list of {what} indices; "
                f"got {type(nodes).__name__}"
            )
        index = [_index(i, f"{method}: remove[{ell}] entry {i!r}") for i in nodes]
        bad = [i for i in index if not 0 <= i < H]
        if bad:
            raise ValueError(
                f"{method}: remove[{ell}] holds {what} index {bad[0]} out of range; hidden "
                f"layer {ell} ({view.hidden[ell].name}) has {H} {what}s (0..{H - 1})"
            )
        if len(set(index)) < len(index):
            dup = next(i for i in index if index.count(i) > 1)
            raise ValueError(f"{method}: remove[{ell}] lists {what} {dup} more than once")
        if keep_one and len(index) == H:
            raise ValueError(
                f"{method}: remove[{ell}] removes all {H} {what}s of hidden layer {ell} "
                f"({view.hidden[ell].name}); keep at least one"
            )
        if index:
            out[ell] = torch.tensor(sorted(index), dtype=torch.long, device=device)
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
    method: str,
) -> Affine:
    """``op`` as the reader of hidden layer ``prev``: compensated, rescaled, sliced."""
    module = copy.deepcopy(op.module)
    if prev is None:
        return Affine(op.position, op.name, module, op.norm, op.norm_position, op.norm_name)
    H = view.hidden[prev].units
    block = op.in_units // H if not op.conv else 1  # a channel's columns after a Flatten
    if u is not None:
        shift = op.response(_after_reader_input(u, op))[0]  # [H_out] or [H_out, *spatial]
        if shift.dim() > 1:
            flat = shift.flatten(1)
            # rounding of each output's sum is bounded by eps times the sum of |terms|
            scale = op._z(_after_reader_input(u, op).abs(), op.raw()[0].abs(), None)[0]
            tol = 64 * torch.finfo(flat.dtype).eps * scale.flatten(1).amax(1, keepdim=True)
            if bool(((flat - flat[:, :1]).abs() > tol).any()):  # not constant over positions
                raise ValueError(
                    f"{method}: {op.name!r} (module {op.position}) is a zero-padded "
                    "convolution reading removed channels: their mean compensation depends on "
                    "the position near the border and cannot be folded into its bias; use "
                    "compensate='none'"
                )
            shift = flat.mean(1)
        if module.bias is None:
            module.bias = nn.Parameter(shift.clone(), requires_grad=module.weight.requires_grad)
        else:
            module.bias.add_(shift)
    if scale is not None and prev in scale:
        s = scale[prev].to(torch.float64).repeat_interleave(block)  # [in_units]
        s = s.view(1, -1, *[1] * (module.weight.dim() - 2))
        module.weight.copy_((module.weight.to(torch.float64) * s).to(module.weight.dtype))
    R = remove.get(prev)
    reader = Affine(op.position, op.name, module, op.norm, op.norm_position, op.norm_name)
    if keep_shape or R is None or not len(R):
        return reader
    new = reader.slice_in(_complement(R, H), block)
    return Affine(op.position, op.name, new, op.norm, op.norm_position, op.norm_name)


def _after_reader_input(u: Tensor, op: Affine) -> Tensor:
    """``u`` shaped as ``op`` reads it (a Linear reads it flattened)."""
    return u.flatten(1) if not op.conv and u.dim() > 2 else u


def _complement(R: Tensor, H: int) -> Tensor:
    """Indices in ``range(H)`` not in ``R``, ascending."""
    keep = torch.ones(H, dtype=torch.bool, device=R.device)
    keep[R] = False
    return keep.nonzero().squeeze(1)


def _rebuild(model: nn.Sequential, replaced: Mapping[int, nn.Module]) -> nn.Sequential:
    """A copy of ``model``'s nesting with the modules at flattened positions replaced.

    Other modules are deep copies; a module that appears twice becomes two copies. Module
    names are kept.
    """
    counter = iter(range(len(_flatten(model))))

    def build(seq: nn.Sequential) -> nn.Sequential:
        children = {}
        for name, m in seq._modules.items():  # not named_children(): it skips repeats
            if isinstance(m, nn.Sequential):
                children[name] = build(m)
            else:
                k = next(counter)
                new = replaced[k] if k in replaced else copy.deepcopy(m)
                new.training = m.training  # each module keeps its own mode
                children[name] = new
        out = nn.Sequential(OrderedDict(children))
        out.training = seq.training
        return out

    return build(model)

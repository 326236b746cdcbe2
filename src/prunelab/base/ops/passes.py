"""The passes over an op view: the one forward pass and what is built on it.

:func:`forward` runs the view with parameter overrides, unit multipliers, edits and taps;
every method that needs more than ``model(x)`` runs through it. :func:`param_loss` is the loss
as a function of a parameter dict, :func:`records` each layer's input, output and activation,
:func:`unit_gradients` the units' per-sample gradients by the ops' input VJPs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .kinds import Activation, Affine, Params
from .view import View


def forward(
    view: View,
    x: Tensor,
    *,
    params: Params = None,
    scales: Mapping[int, Tensor] | None = None,
    edit: Mapping[int, Callable[[Tensor], Tensor]] | None = None,
    taps: bool = False,
    training: bool | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """The model's output on ``x``, with parameter overrides, unit multipliers and taps.

    Parameters
    ----------
    view : View
    x : Tensor[N, *in]
        An MLP reads images ``[N, C, H, W]`` flattened.
    params : dict of str to Tensor, optional
        Parameters by qualified name (``model.named_parameters()``) that replace the module's
        own (as ``torch.func.functional_call``); autograd flows through them.
    scales : dict of int to Tensor, optional
        Per hidden layer ``l``: a multiplier ``[H_l]`` or ``[N, H_l]`` of its units, applied
        after the activation (a channel's multiplier scales its whole feature map). A 0/1
        multiplier is a unit mask; autograd flows through it.
    edit : dict of int to callable, optional
        Per hidden layer ``l``: a function of its units ``[N, H_l, ...]`` whose result flows on
        instead (after the multiplier), e.g. holding some units at a constant.
    taps : bool
        Also return the unit activations of every hidden layer (after their multipliers):
        ``[N, H_l]`` or ``[N, H_l, *spatial]``.
    training : bool, optional
        None: each Dropout and BatchNorm in its module's own mode, as ``model(x)`` (training
        uses this). False: evaluation, Dropout off and BatchNorm on its running statistics,
        whatever the modules' modes (how methods read a model).
    start, stop : int
        Run ``view.ops[start:stop]`` only, ``x`` being the input of op ``start`` (taps then
        hold the hidden layers read in that range); the result is the output of op
        ``stop - 1`` (default: the logits).

    Returns
    -------
    Tensor[N, C] (and, with ``taps``, a list of the hidden layers' activations)
    """
    a = view.inputs(x) if start == 0 else x
    layer_of = {k: layer for layer, k in enumerate(view.unit_ops)}
    acts: list[Tensor] = []
    for k in range(start, len(view.ops) if stop is None else stop):
        a = view.ops[k].apply(a, params, training)
        layer = layer_of.get(k)
        if layer is None:
            continue
        if scales is not None and layer in scales:
            s = scales[layer]
            a = a * s.view(*s.shape, *[1] * (a.dim() - 2))  # a channel's whole feature map
        if edit is not None and layer in edit:
            a = edit[layer](a)
        if taps:
            acts.append(a)
    return (a, acts) if taps else a


def param_loss(
    view: View, x: Tensor, y: Tensor, *, temperature: float = 1.0
) -> Callable[[Mapping[str, Tensor]], Tensor]:
    """``p -> CE(f(x; p) / temperature, y)``: the mean cross-entropy as a pure function of a
    parameter dict (``torch.func`` differentiates it); evaluation mode."""

    def loss(params: Mapping[str, Tensor]) -> Tensor:
        return F.cross_entropy(forward(view, x, params=params, training=False) / temperature, y)

    return loss


def unit_gradients(
    view: View, x: Tensor, dl_df: Callable[[Tensor], Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """Hidden unit activations ``a^l`` and per-sample gradients ``g^l = dl_n/da^l_n``.

    One forward pass (evaluation mode) recording each op's input, then one backward pass
    through the ops' input VJPs from ``g = dl_df(f)`` at the logits, ``f: [N, C]``; no
    parameter gradients. Shapes ``[N, H_l]`` or ``[N, H_l, *spatial]``, like the units.
    """
    inputs: list[Tensor] = []
    acts: list[Tensor] = []
    points = set(view.unit_ops)
    with torch.no_grad():
        a = view.inputs(x)
        for k, op in enumerate(view.ops):
            inputs.append(a)
            a = op.apply(a, training=False)
            if k in points:
                acts.append(a)
        g = dl_df(a)
        grads: list[Tensor] = []
        first = view.unit_ops[0] if view.unit_ops else len(view.ops)
        for k in range(len(view.ops) - 1, first - 1, -1):
            if k in points:  # g is dl/d(output of op k), the units' gradient
                grads.append(g)
            if k > first:
                g = view.ops[k].vjp(inputs[k], g)
    return acts, grads[::-1]


def records(view: View, x: Tensor, *, params: Params = None) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per layer, ``(a_in, z, a)``: the layer's input, its output ``z`` (BatchNorm included) and
    ``a = phi(z)`` after its activation (``a = z`` without one), in evaluation mode.

    What the layer-wise recursions of curvature and relevance read; ``a`` of one layer is
    ``a_in`` of the next when only Dropout or Identity lie between them (an MLP).
    """
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    a = view.inputs(x)
    for op in view.ops:
        a_in, a = a, op.apply(a, params, training=False)
        if isinstance(op, Affine):
            out.append((a_in, a, a))
        elif isinstance(op, Activation) and out:
            out[-1] = (out[-1][0], out[-1][1], a)
    return out

"""Pruning whole models: SiPP weight sampling, deterministic SiPP, and neuron coresets.

Neuron pruning returns a *physically smaller* ``nn.Sequential``; weight pruning returns a copy
with the sparse weight. The input model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ...base import checks, models, ops
from .mussay import MONOTONE, mussay_bound_name, mussay_probabilities
from .sample_sizes import Number, sample_size
from .sampling import sample_counts, sample_until_distinct, sample_weights, top_sensitivity
from .sensitivity import neuron_sensitivities, sensitivities


class Pruned(NamedTuple):
    """A pruned copy of a model and what the sampling did.

    ``model`` is a new ``nn.Sequential`` (the input is untouched). ``samples`` is the number of
    i.i.d. draws ``m`` (``[2, H_out]`` per part and neuron for weights, a scalar for neurons;
    None for deterministic pruning). ``kept`` is the bool mask of what survived: ``[H_out,
    H_in]`` weights, or ``[H]`` neurons of the pruned hidden layer.
    """

    model: nn.Sequential
    samples: Tensor | None
    kept: Tensor


def _parse(model: nn.Module, fn: str, activations: Sequence[str] | None = None) -> models.Net:
    net = models.parse(model, method=fn, activations=activations)
    if len({id(layer.linear) for layer in net.layers}) < len(net.layers):
        raise ValueError(f"{fn}: a Linear module appears twice in the model (shared weights)")
    return net


def _layer_index(net: models.Net, layer: int, fn: str, *, hidden: bool) -> int:
    n = len(net.hidden) if hidden else len(net.layers)
    what = "hidden layer" if hidden else "dense layer"
    if not isinstance(layer, int) or not -n <= layer < n:
        raise ValueError(f"{fn}: layer must be a {what} index in [0, {n}); got {layer!r}")
    return layer % n


def layer_inputs(model: nn.Module, layer: int, x: Tensor) -> Tensor:
    """Inputs ``a^{l-1}: [N, H_in]`` of dense layer ``layer`` (index into ``parse(model).layers``).

    Evaluation mode (dropout is the identity), no gradients; ``x`` is cast to the weights' dtype.
    """
    net = _parse(model, "coreset.layer_inputs")
    layer = _layer_index(net, layer, "coreset.layer_inputs", hidden=False)
    x = net.check_x(x, "coreset.layer_inputs", convert=True)
    if layer == 0:
        return x
    with torch.no_grad():
        return ops.forward(net.view, x, taps=True, training=False)[1][layer - 1]


def _replace(model: nn.Sequential, new: Mapping[int, nn.Linear]) -> nn.Sequential:
    """A deep copy of ``model`` with the modules at the given positions replaced."""
    out = copy.deepcopy(model)
    for position, module in new.items():
        out[position] = module
    return out


def _draws(
    fn: str, eps: Number | None, samples: Number | None, delta: Number | None, **kwargs
) -> Number:
    """``m`` from exactly one of ``eps`` (with ``delta``) or ``samples``."""
    if (eps is None) == (samples is None):
        raise ValueError(f"{fn}: give exactly one of eps (with delta) or samples")
    if samples is not None:
        return samples
    if delta is None:
        raise ValueError(f"{fn}: eps needs delta, the failure probability in (0, 1)")
    return sample_size(eps, delta, **kwargs)


def _one_budget(fn: str, eps: object, samples: object, size: object) -> None:
    given = [
        name for name, v in (("eps", eps), ("samples", samples), ("size", size)) if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"{fn}: give exactly one of eps (with delta), samples (draws m) or size (distinct "
            f"neurons); got {given or 'none'}"
        )


def prune_weights_sipp(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    *,
    generator: torch.Generator,
    eps: float | None = None,
    delta: float | None = None,
    samples: Number | None = None,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Pruned:
    """Sparsify the weights of one dense layer by SiPP sensitivity sampling (Baykal et al. 2019b).

    Sensitivities come from the layer's inputs on the batch ``x`` (the set S); each neuron's
    positive and negative parts get ``m = sample_size(eps, delta, S_part, bound=bound)`` draws
    (or ``samples``), and :func:`sample_weights` reweights them. Guarantee [recall]: for ``x ~
    D`` like S, ``|z_hat - z| <= eps (z+ + z-)`` with probability ``>= 1 - 2 delta`` per neuron
    and input. The bias is kept.

    Parameters
    ----------
    model : nn.Sequential
    layer : int
        Index of the dense layer in ``parse(model).layers`` (``-1``: the output layer).
    x : Tensor [N, D]
        Model inputs forming the sensitivity batch S.
    generator : torch.Generator
    eps, delta : float, optional
        Relative error and failure probability (epsilon-first).
    samples : int or Tensor, optional
        Draws per part and neuron, broadcastable to ``[2, H_out]`` (sparsity-first).
    bound, union, **constants
        Passed to :func:`sample_size`.

    Returns
    -------
    Pruned
        ``samples: [2, H_out]``; ``kept: [H_out, H_in]``.
    """
    fn = "coreset.prune_weights_sipp"
    net = _parse(model, fn)
    x = net.check_x(x, fn, convert=True)
    checks.instance(generator, torch.Generator, fn, "generator", "a torch.Generator")
    dense = net.layers[_layer_index(net, layer, fn, hidden=False)]
    W = dense.weight.detach()
    s = sensitivities(W, layer_inputs(model, layer, x))
    S = s.sum(-1)  # (2, H_out)
    m = _draws(fn, eps, samples, delta, sensitivity=S, bound=bound, union=union, **constants)
    m = torch.where(S > 0, torch.as_tensor(m, dtype=torch.int64).expand(S.shape), 0)
    W_hat = sample_weights(W, s, m, generator=generator)
    bias = None if dense.bias is None else dense.bias.detach()
    return Pruned(_replace(model, {dense.position: models.linear(W_hat, bias)}), m, W_hat != 0)


def prune_weights_topk(model: nn.Sequential, layer: int, x: Tensor, *, keep: Number) -> Pruned:
    """Deterministic SiPP: keep each neuron's ``keep`` most sensitive weights, no reweighting.

    Sensitivities are taken on the batch ``x``; the error on S obeys
    :func:`deterministic_bound` exactly. ``layer`` indexes ``parse(model).layers``; ``keep`` is
    an int or ``[H_out]``. Returns :class:`Pruned` with ``samples=None``.
    """
    fn = "coreset.prune_weights_topk"
    net = _parse(model, fn)
    dense = net.layers[_layer_index(net, layer, fn, hidden=False)]
    W = dense.weight.detach()
    kept = top_sensitivity(sensitivities(W, layer_inputs(model, layer, x)), keep)
    bias = None if dense.bias is None else dense.bias.detach()
    return Pruned(_replace(model, {dense.position: models.linear(W * kept, bias)}), None, kept)


def prune_neurons(
    model: nn.Sequential,
    layer: int,
    probs: Tensor,
    *,
    generator: torch.Generator,
    samples: int | None = None,
    size: int | None = None,
) -> Pruned:
    """Sample the neurons of a hidden layer from ``probs`` and build the smaller model.

    Draw ``m`` neurons i.i.d. with replacement (``samples = m``), or until ``size`` distinct
    neurons have been drawn (Mussay et al.'s code); keep the neurons with ``n_p > 0`` and scale
    the next layer's columns by ``n_p / (m Pr(p))``, which makes the next layer's
    pre-activation unbiased. The kept neurons' rows are read from the point matrix ``P = [W,
    b]``: weights from ``P[:, :-1]``, the bias from the **last** column ``P[:, -1]`` (the
    official code reads column 1, a slip; METHODS.md A4).

    Parameters
    ----------
    model : nn.Sequential
    layer : int
        Hidden-layer index (into ``parse(model).hidden``) whose neurons are sampled.
    probs : Tensor [H]
        Sampling distribution over its neurons (e.g. :func:`mussay_probabilities`).
    generator : torch.Generator
    samples, size : int
        Exactly one: the number of draws ``m``, or the number of distinct neurons to keep.

    Returns
    -------
    Pruned
        A model whose hidden layer has ``kept.sum()`` neurons; ``samples`` is ``m``.
    """
    fn = "coreset.prune_neurons"
    net = _parse(model, fn)
    checks.instance(generator, torch.Generator, fn, "generator", "a torch.Generator")
    layer = _layer_index(net, layer, fn, hidden=True)
    H = net.layers[layer].width
    if probs.shape != (H,) or not bool((probs >= 0).all()) or not bool(probs.sum() > 0):
        raise ValueError(f"{fn}: probs must be a distribution over the layer's {H} neurons")
    p = probs.detach().to(torch.float64) / probs.sum()
    if (samples is None) == (size is None):
        raise ValueError(f"{fn}: give exactly one of samples (draws m) or size (distinct neurons)")
    if size is not None:
        if not (isinstance(size, int) and 1 <= size <= int((p > 0).sum())):
            raise ValueError(
                f"{fn}: size must be an int in [1, {int((p > 0).sum())}] (neurons with "
                f"probability > 0); got {size!r}"
            )
        counts, m = sample_until_distinct(p, size, generator=generator)
    else:
        if not (isinstance(samples, int) and samples >= 1):
            raise ValueError(f"{fn}: samples must be an int >= 1; got {samples!r}")
        counts, m = sample_counts(p, samples, generator=generator), samples
    kept = counts > 0
    scale = torch.zeros(H, dtype=torch.float64, device=p.device)
    scale[kept] = counts[kept].to(torch.float64) / (m * p[kept])  # n_p / (m Pr(p))
    removed = {layer: (~kept).nonzero().squeeze(1)}
    new = ops.remove_units(model, net.view, removed, scale={layer: scale}, method=fn)[0]
    return Pruned(new, torch.tensor(m), kept)


def prune_neurons_mussay(
    model: nn.Sequential,
    layer: int,
    *,
    beta: float,
    generator: torch.Generator,
    eps: float | None = None,
    delta: float | None = None,
    samples: int | None = None,
    size: int | None = None,
) -> Pruned:
    """Mussay et al. (2020) data-independent coreset of one hidden layer's neurons.

    ``Pr(p) = omega(p) |phi(beta ||p||)| / sum_q omega(q) |phi(beta ||q||)|`` with ``p = [W_p,
    b_p]`` and ``omega(p) = max_i |W_next[i, p]|`` (:func:`mussay_probabilities`); then
    :func:`prune_neurons`. Epsilon-first: ``m = sample_size(eps, delta, bound=
    mussay_bound_name(W_next, phi), union=H_next)``, after which, with probability ``>= 1 -
    delta``, every next-layer pre-activation at a fixed input in the ball moves by at most ``eps
    * mussay_scale(...)``. Or give ``samples`` (m draws) or ``size`` (distinct neurons).

    Parameters
    ----------
    model : nn.Sequential
        Hidden activations must be monotone (``MONOTONE``).
    layer : int
        Hidden-layer index whose neurons are sampled.
    beta : float
        Radius of the L2 ball holding the layer's inputs ``[x; 1]`` (:func:`ball_radius`).
    generator : torch.Generator
    eps, delta, samples, size
        Exactly one of ``eps`` (with ``delta``), ``samples`` or ``size``.
    """
    fn = "coreset.prune_neurons_mussay"
    net = _parse(model, fn, activations=MONOTONE)
    checks.instance(generator, torch.Generator, fn, "generator", "a torch.Generator")
    layer = _layer_index(net, layer, fn, hidden=True)
    dense, nxt = net.layers[layer], net.layers[layer + 1]
    W_next = nxt.weight.detach()
    bias = None if dense.bias is None else dense.bias.detach()
    probs = mussay_probabilities(
        dense.weight.detach(), bias, W_next, beta, activation=dense.activation, slope=dense.slope
    )
    _one_budget(fn, eps, samples, size)
    if eps is not None or samples is not None:
        name = mussay_bound_name(W_next, dense.activation)
        samples = int(_draws(fn, eps, samples, delta, bound=name, union=nxt.width))
    return prune_neurons(model, layer, probs, generator=generator, samples=samples, size=size)


def prune_neurons_pfp(
    model: nn.Sequential,
    layer: int,
    x: Tensor,
    *,
    generator: torch.Generator,
    eps: float | None = None,
    delta: float | None = None,
    samples: int | None = None,
    size: int | None = None,
    bound: str = "bernstein",
    union: int = 1,
    **constants: float,
) -> Pruned:
    """Data-dependent neuron sampling (PFP, Liebenwein et al. 2020) of one hidden layer.

    ``Pr(j) = s_j / S`` with the PFP sensitivities ``s_j = max_{x in S} max_i max(g+_ij,
    g-_ij)`` of the neurons as inputs of the next layer (:func:`neuron_sensitivities`), then
    :func:`prune_neurons`. Epsilon-first uses ``m = sample_size(eps, delta, S, bound=bound)``.
    ``x: [N, D]`` are model inputs forming S; other arguments as in
    :func:`prune_neurons_mussay`.
    """
    fn = "coreset.prune_neurons_pfp"
    net = _parse(model, fn)
    x = net.check_x(x, fn, convert=True)
    checks.instance(generator, torch.Generator, fn, "generator", "a torch.Generator")
    layer = _layer_index(net, layer, fn, hidden=True)
    s = neuron_sensitivities(
        net.layers[layer + 1].weight.detach(), layer_inputs(model, layer + 1, x)
    )
    _one_budget(fn, eps, samples, size)
    if eps is not None or samples is not None:
        kw = dict(sensitivity=float(s.sum()), bound=bound, union=union, **constants)
        samples = int(_draws(fn, eps, samples, delta, **kw))
    return prune_neurons(model, layer, s, generator=generator, samples=samples, size=size)

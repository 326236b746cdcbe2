"""Measuring coreset pruning against its bounds: logit-level bounds, thresholds, baselines.

Companions of :mod:`prunelab.coreset` and :mod:`prunelab.guarantees` for evaluating a pruned
layer the way Gordon (2021) does:

* the SiPP guarantee for **signed** weights is per part, ``|z_hat+ - z+| <= eps z+`` and
  ``|z_hat- - z-| <= eps z-``, so the logit error obeys ``|Delta_c| <= eps+ z+_c + eps- z-_c``
  (METHODS.md A1), not ``eps |f_c|``: :func:`part_outputs`, :func:`sipp_logit_bound`;
* a bound of the form ``|Delta_c| <= eps M_c`` keeps the label while ``eps max_c M_c < gap / 2``
  (Gordon 2021, Fig. 1), so each example has a critical ``eps*`` (:func:`scaled_critical`),
  and the bound that guarantees a share of the correct labels is a quantile of those
  (:func:`bound_for_share`, :func:`guaranteed_share`, :func:`preserved_share`);
* the observed error in the bound's own units, ``max_c |Delta_c| / M_c`` (:func:`scaled_error`);
* inputs drawn from the ball of Mussay et al.'s theorem instead of the data (:func:`ball_inputs`);
* splitting a model before a layer (the frozen body and the part that is pruned,
  :func:`split_at`; any convnet into its extractor and dense head, :func:`split_head`), scaling one layer's weights (:func:`scale_weight`) and the magnitude
  baseline for weight pruning (:func:`prune_weights_magnitude`).

Shapes: N examples, C classes (outputs of the pruned layer), H_in its inputs.

References
----------
Gordon (2021). When are neural pruning approximation bounds useful? ICLR 2021 submission.
Baykal, Liebenwein, Gilitschenski, Feldman, Rus (2019b). SiPPing neural networks.
Mussay, Osadchy, Braverman, Zhou, Feldman (2020). Data-independent neural pruning via coresets.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from ..base import models, ops
from ..base.ops.view import _flatten as ops_flatten
from . import coreset, guarantees

# --- bounds in logit units -------------------------------------------------------------------


def part_outputs(W: Tensor, a: Tensor) -> Tensor:
    """The two parts ``z+ = |a| W+.T`` and ``z- = |a| W-.T`` that SiPP bounds separately.

    ``W = W+ - W-`` (:func:`prunelab.coreset.split_signs`); for non-negative inputs (after a
    ReLU) ``z = z+ - z-`` is the layer's output without bias. ``W: [C, H_in]``, ``a: [N, H_in]``
    -> ``[2, N, C]``.
    """
    parts = coreset.split_signs(W)  # (2, C, H_in)
    return a.abs() @ parts.transpose(1, 2)  # (2, N, C)


def sipp_logit_bound(W: Tensor, a: Tensor, eps: float | Tensor) -> Tensor:
    """Per-logit bound ``B_c = eps+_c z+_c + eps-_c z-_c`` implied by SiPP's per-part guarantee.

    If each part of neuron ``c`` is approximated to relative error ``eps+-_c``, the triangle
    inequality gives ``|Delta_c| <= B_c`` (the bias is not sampled). ``eps``: a scalar, or
    broadcastable to ``[2, C]`` (e.g. :func:`prunelab.coreset.implied_epsilon` per part and
    neuron). Returns ``[N, C]``, ready for :func:`prunelab.guarantees.consistent`.
    """
    e = torch.as_tensor(eps, dtype=W.dtype, device=W.device).expand(2, W.shape[0])
    z = part_outputs(W, a)  # (2, N, C)
    return (e.unsqueeze(1) * z).sum(0)


def scaled_critical(f: Tensor, scale: Tensor, *, rule: str = "half_gap") -> Tensor:
    """Critical ``eps*`` of each example under the per-logit bound ``|Delta_c| <= eps scale_c``.

    ``"half_gap"``: ``eps* = gap / (2 max_c scale_c)`` (Gordon 2021, Fig. 1); ``"pairwise"``:
    ``eps* = min_{c != t} (f_t - f_c) / (scale_t + scale_c)`` (METHODS.md A6). Every ``eps <
    eps*`` keeps ``argmax f``; ``scale = |f|`` gives
    :func:`prunelab.guarantees.critical_epsilon` (multiplicative). ``f, scale: [N, C] -> [N]``;
    ``inf`` where the scale is 0 and the gap positive, 0 where the gap is 0.
    """
    if scale.shape != f.shape or not bool((scale >= 0).all()):
        raise ValueError(
            f"scaled_critical: scale must be non-negative and shaped like f {list(f.shape)}; "
            f"got {list(scale.shape)}"
        )
    if rule not in guarantees.RULES:
        raise ValueError(f"scaled_critical: rule {rule!r}; choose from {list(guarantees.RULES)}")
    t, gap = guarantees.top_two(f)
    if rule == "half_gap":
        num, den = gap / 2, scale.amax(1)
    else:
        num = f.gather(1, t[:, None]) - f  # (N, C)
        den = scale.gather(1, t[:, None]) + scale
        num = num.masked_fill(torch.nn.functional.one_hot(t, f.shape[1]).bool(), torch.inf)
    ratio = torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.inf)
    ratio = torch.where(num > 0, ratio, 0)
    return ratio if rule == "half_gap" else ratio.amin(1)


def bound_for_share(critical: Tensor, correct: Tensor, share: float) -> float:
    """Largest bound that guarantees ``share`` of the correct labels: a quantile of ``critical``.

    With ``n`` correct examples and ``k = ceil(share n)``, return the ``k``-th largest critical
    bound among them: every bound strictly below it keeps at least ``k`` correct labels (Gordon
    2021, Sec. 4.1, "guarantee that 50% of the correct labels stay correct"). ``share = 0``
    gives ``inf``. ``critical, correct: [N]``.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"bound_for_share: share must be in [0, 1]; got {share}")
    crit = critical[correct]
    if len(crit) == 0:
        raise ValueError("bound_for_share: no example is correct")
    k = math.ceil(share * len(crit) * (1 - 1e-12))
    if k == 0:
        return math.inf
    return float(crit.sort(descending=True).values[k - 1])


def sipp_samples_for_keep(s: Tensor, keep: float) -> Tensor:
    """Sparsity-first SiPP: draws per part and neuron so that ``keep`` of its weights survive.

    For each part and neuron with sampling distribution ``q = s / S`` over its ``n+`` weights
    of positive sensitivity, the smallest ``m`` with ``E[U(m)] >= keep n+``
    (:func:`prunelab.coreset.samples_for_size`; METHODS.md A5). ``s: [2, C, H_in]`` from
    :func:`prunelab.coreset.sensitivities`, ``0 <= keep < 1``. Returns int64 ``[2, C]`` (0
    where the part never fires).
    """
    if not 0 <= keep < 1:
        raise ValueError(f"sipp_samples_for_keep: keep must be in [0, 1); got {keep}")
    S = s.sum(-1, keepdim=True)  # (2, C, 1)
    q = s.to(torch.float64) / torch.where(S > 0, S, 1).to(torch.float64)
    return coreset.samples_for_size(q, keep * (s > 0).sum(-1))


def guaranteed_share(
    f: Tensor, y: Tensor, bound: Tensor | float, *, rule: str = "half_gap"
) -> float:
    """Share of the correctly classified examples that a per-logit bound ``B`` guarantees.

    ``mean over {n : argmax f_n = y_n} of 1[consistent(f_n, B_n)]``; ``B`` is a scalar, ``[N]``
    or ``[N, C]`` as in :func:`prunelab.guarantees.consistent`.
    """
    t, _ = guarantees.top_two(f)
    correct = t == y
    if not bool(correct.any()):
        raise ValueError("guaranteed_share: no example is correct")
    ok = guarantees.consistent(f, bound, rule=rule)
    return ok[correct].double().mean().item()


def preserved_share(f: Tensor, f_hat: Tensor, y: Tensor) -> float:
    """Share of the examples ``f`` classifies correctly that ``f_hat`` still classifies correctly."""
    correct = f.argmax(1) == y
    if not bool(correct.any()):
        raise ValueError("preserved_share: no example is correct")
    return (f_hat.argmax(1) == y)[correct].double().mean().item()


def scaled_error(f: Tensor, f_hat: Tensor, scale: Tensor) -> Tensor:
    """Observed error in a bound's units: ``max_c |f_hat_c - f_c| / scale_c`` per example, ``[N]``.

    With ``scale = z+ + z-`` this is the smallest ``eps`` for which the SiPP bound
    :func:`sipp_logit_bound` holds on the example; with ``scale = |f|`` it is the relative error.
    Terms with ``Delta_c = 0`` count 0; ``Delta_c != 0`` with ``scale_c = 0`` count ``inf``.
    """
    delta = (f_hat - f).abs()
    return torch.where(delta == 0, 0, delta / scale).amax(1)


# --- inputs from the ball --------------------------------------------------------------------


def ball_inputs(
    n: int,
    dim: int,
    beta: float,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` points ``x`` drawn uniformly from ``{x in R^dim : ||[x; 1]||_2 <= beta}``.

    This is the input set of Mussay et al.'s theorem (inputs ``[x; 1]`` in the ball of radius
    ``beta``, :func:`prunelab.coreset.ball_radius`): a ball of radius ``r = sqrt(beta^2 - 1)``
    in ``R^dim``. Uniform sampling: a Gaussian direction times ``r U^(1/dim)``, ``U ~ U(0, 1)``,
    so ``P(||x|| <= t r) = t^dim`` (in high dimension almost every point lies near the
    surface). Returns ``[n, dim]``.
    """
    if not (isinstance(n, int) and n >= 1 and isinstance(dim, int) and dim >= 1):
        raise ValueError(f"ball_inputs: n and dim must be ints >= 1; got n={n!r}, dim={dim!r}")
    if not beta >= 1:
        raise ValueError(f"ball_inputs: beta must be >= 1 (||[x; 1]|| >= 1); got {beta}")
    r = math.sqrt(beta**2 - 1)
    u = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    direction = u / u.norm(dim=1, keepdim=True)
    radius = r * torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1 / dim)
    return (direction * radius).to(dtype)


# --- models ----------------------------------------------------------------------------------


def split_head(model: nn.Sequential, layers: int | None = 2) -> tuple[nn.Sequential, nn.Sequential]:
    """Copies of a model's feature extractor and its dense head, its last ``layers`` Linears.

    With ``layers = 2``, ``head = Linear, activation, [Dropout], Linear`` (the hidden layer
    whose neurons, and the final layer whose weights, Gordon (2021) prunes); ``None`` takes
    every trailing dense layer (a VGG's classifier, all of an MLP). ``extractor`` is everything
    before (convolutions, pools, BatchNorm, earlier Linears; nested Sequentials flattened), so
    ``head(extractor(x)) = model(x)``. The extractor runs once per input set; pruning, L0
    training and fine-tuning then act on the head and its ``[N, H_in]`` features.
    """
    fn = "coreset_eval.split_head"
    view = ops.parse(model, method=fn)
    kinds = [("Conv2d" if op.conv else "Linear") for op in view.layers]
    dense = 0  # trailing dense ops: Linear, activations, Dropout
    while dense < len(view.ops) and _dense(view.ops[len(view.ops) - 1 - dense]):
        dense += 1
    tail = view.ops[len(view.ops) - dense :]
    linears = [op for op in tail if isinstance(op, ops.Affine)]
    want = len(linears) if layers is None else layers
    if not isinstance(want, int) or want < 2 or len(linears) < want:
        raise ValueError(
            f"{fn}: the model must end in {want if layers else 'two or more'} Linear layers with "
            f"activations between (no BatchNorm, pooling or Flatten); its layers are {kinds}"
        )
    first = linears[-want]
    k = next(k for k, op in enumerate(view.ops) if op is first)
    if not isinstance(view.ops[k + 1], ops.Activation):
        raise ValueError(f"{fn}: the head's first Linear must be followed by an activation")
    leaves = ops_flatten(model)
    if not view.layers[0].conv and not any(isinstance(op, ops.Flatten) for op in view.ops):
        leaves = [nn.Flatten(), *leaves]  # an MLP reads images flattened (ops.View.inputs)
    position = first.position + (len(leaves) - len(ops_flatten(model)))
    return nn.Sequential(*copy.deepcopy(leaves[:position])), nn.Sequential(
        *copy.deepcopy(leaves[position:])
    )


def _dense(op: ops.Op) -> bool:
    """A Linear without BatchNorm, an activation or a Dropout/Identity: an MLP's ops."""
    if isinstance(op, ops.Affine):
        return not op.conv and op.norm is None and op.offset is None
    return isinstance(op, ops.Activation | ops.Pass)


def split_at(model: nn.Sequential, layer: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Copies of the modules before dense layer ``layer`` (the body) and from it on (the head).

    ``head(body(x)) = model(x)`` and ``body(x)`` are the layer's inputs
    (:func:`prunelab.coreset.layer_inputs`). Pruning and fine-tuning the head on
    ``body(x)`` then costs only the head's size. ``layer`` indexes ``parse(model).layers``
    (``layer >= 1``: the body holds at least one Linear).
    """
    net = models.parse(model, method="coreset_eval.split_at")
    if not isinstance(layer, int) or not 1 <= layer < len(net.layers):
        raise ValueError(
            f"split_at: layer must be a dense-layer index in [1, {len(net.layers)}); got {layer!r}"
        )
    position = net.layers[layer].position
    return copy.deepcopy(model[:position]), copy.deepcopy(model[position:])


def scale_weight(model: nn.Sequential, layer: int, alpha: float) -> nn.Sequential:
    """A copy of ``model`` with dense layer ``layer``'s weight multiplied by ``alpha`` (bias kept).

    ``layer`` indexes ``parse(model).layers`` (``-1``: the output layer). Gordon (2021), Fig. 12.
    """
    net = models.parse(model, method="coreset_eval.scale_weight")
    n = len(net.layers)
    if not isinstance(layer, int) or not -n <= layer < n:
        raise ValueError(
            f"scale_weight: layer must be a dense-layer index in [-{n}, {n}); got {layer!r}"
        )
    if not math.isfinite(alpha):
        raise ValueError(f"scale_weight: alpha must be finite; got {alpha}")
    dense = net.layers[layer]
    out = copy.deepcopy(model)
    bias = None if dense.bias is None else dense.bias.detach()
    out[dense.position] = models.linear(dense.weight.detach() * alpha, bias)
    return out


def prune_weights_magnitude(model: nn.Sequential, layer: int, *, keep: int) -> coreset.Pruned:
    """Magnitude pruning of one dense layer: keep its ``keep`` weights of largest ``|w|``.

    Layer-wise ranking, no reweighting (the heuristic of Gordon 2021, Fig. 5, right); ties are
    broken by position. ``layer`` indexes ``parse(model).layers``. Returns
    :class:`prunelab.coreset.Pruned` with ``samples=None`` and the kept mask ``[H_out, H_in]``.
    """
    net = models.parse(model, method="coreset_eval.prune_weights_magnitude")
    n = len(net.layers)
    if not isinstance(layer, int) or not -n <= layer < n:
        raise ValueError(
            f"prune_weights_magnitude: layer must be a dense-layer index in [-{n}, {n}); "
            f"got {layer!r}"
        )
    dense = net.layers[layer]
    W = dense.weight.detach()
    if not (isinstance(keep, int) and 0 <= keep <= W.numel()):
        raise ValueError(
            f"prune_weights_magnitude: keep must be an int in [0, {W.numel()}]; got {keep!r}"
        )
    order = W.abs().flatten().argsort(descending=True, stable=True)
    kept = torch.zeros(W.numel(), dtype=torch.bool, device=W.device)
    kept[order[:keep]] = True
    kept = kept.reshape(W.shape)
    out = copy.deepcopy(model)
    bias = None if dense.bias is None else dense.bias.detach()
    out[dense.position] = models.linear(W * kept, bias)
    return coreset.Pruned(out, None, kept)

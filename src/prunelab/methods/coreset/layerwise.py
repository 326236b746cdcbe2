"""Layer-by-layer SiPP pruning, each layer's guarantee bubbled up to the output.

CoreNet's scheme (Baykal et al. 2019a, Alg. 1; METHODS.md A2) as Gordon (2021, Fig. 1 right)
draws it: prune the dense layers input side first, each fed the already pruned layers below,
each with a guarantee on its own pre-activations,

    |z_hat_i - z_i| <= eps_l (z+_i + z-_i),    eps_l = eps' / prod_{k >= l} Delta_hat^k,
    eps' = eps / (2 L),

so that the errors compound at the output to ``f_hat in (1 +- ((1 + eps')^l - 1)) f`` after
``l`` layers [recall]. ``Delta_hat^k`` is the sign-cancellation factor's worst neuron mean on
S, without CoreNet's slack ``kappa`` (with it the targets only shrink). A layer whose target
needs more than ``max_samples`` draws is left whole (sparsity 0), as the source does beyond
1M draws for VGG-16.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...base import checks, models
from .composition import cancellation, compounded_error, delta_hat, layer_epsilons
from .prune import layer_inputs, prune_weights_sipp
from .sample_sizes import sample_size
from .sensitivity import sensitivities


@dataclass
class Stage:
    """One layer of :func:`layer_by_layer`, measured on the dev inputs after pruning it."""

    layer: int  # dense-layer index
    weights: int  # its weight count
    eps: float  # its own guarantee, relative per part: |z_hat - z| <= eps (z+ + z-)
    samples: float  # draws that guarantee needs, summed over parts and neurons
    skipped: bool  # more than max_samples draws for some part: left whole
    sparsity: float  # share of its weights removed
    observed: float  # mean over dev of max_i |z_hat_i - z_i| / (z+_i + z-_i)
    violation: float  # share of dev inputs where that exceeds eps
    implied: float  # the output bound so far, relative per logit: (1 + eps')^l - 1
    output: float  # median over dev of max_c |f_hat_c - f_c| / |f_c|
    within: float  # share of dev inputs with every logit inside the implied bound


def layer_by_layer(
    model: nn.Sequential,
    x_S: Tensor,
    x_dev: Tensor,
    *,
    eps: float,
    delta: float,
    generator: torch.Generator,
    max_samples: float = 1e6,
) -> tuple[list[Stage], nn.Sequential]:
    """Prune every dense layer of ``model`` in turn by SiPP (sensitivities on ``x_S``), with
    CoreNet's per-layer targets for an output error ``eps``; the stages and the pruned copy.

    ``model``: an MLP (:func:`prunelab.models.parse`), e.g. a convnet's dense head fed its
    features (:func:`prunelab.coreset_eval.split_head`). ``x_S: [N_S, D]`` forms the
    sensitivity set S, ``x_dev: [N, D]`` the inputs the errors are measured on; ``delta``: each
    part's failure probability (union over the layer's ``2 H_out`` parts).
    """
    fn = "coreset.layer_by_layer"
    if not (isinstance(eps, int | float) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"{fn}: eps must be a positive finite number; got {eps!r}")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"{fn}: delta must lie in (0, 1); got {delta!r}")
    if not (isinstance(max_samples, int | float) and max_samples >= 0):
        raise ValueError(f"{fn}: max_samples must be >= 0; got {max_samples!r}")
    net = models.parse(model, method=fn)
    x_S, x_dev = (
        net.check_x(x_S, f"{fn} (x_S)", convert=True),
        net.check_x(x_dev, f"{fn} (x_dev)", convert=True),
    )
    checks.generator(generator, fn)
    L = len(net.layers)
    with torch.no_grad():
        hats = [
            delta_hat(cancellation(d.weight.detach(), layer_inputs(model, k, x_S)))
            for k, d in enumerate(net.layers)
        ]
        targets = layer_epsilons(eps, hats)
        f = model.eval()(x_dev)
        current = copy.deepcopy(model).eval()
        stages = []
        for k, dense in enumerate(models.parse(current).layers):
            W = dense.weight.detach()
            s = sensitivities(W, layer_inputs(current, k, x_S))
            S = s.sum(-1)  # [2, H_out]
            m = torch.where(S > 0, sample_size(targets[k], delta, S, union=2 * W.shape[0]), 0)
            skipped = bool(m.max() > max_samples)
            a = layer_inputs(current, k, x_dev)
            if not skipped:
                pruned = prune_weights_sipp(current, k, x_S, generator=generator, samples=m)
                current, kept = pruned.model.eval(), pruned.kept
            else:
                kept = torch.ones_like(W, dtype=torch.bool)
            W_hat = models.parse(current).layers[k].weight.detach()
            err = _relative(a @ W.T, a @ W_hat.T, a.abs() @ W.abs().T)  # [N]
            rel = _relative(f, current(x_dev), f.abs())
            implied = compounded_error([eps / (2 * L)] * (k + 1))
            stages.append(
                Stage(
                    layer=k,
                    weights=W.numel(),
                    eps=targets[k],
                    samples=m.double().sum().item(),
                    skipped=skipped,
                    sparsity=1 - kept.sum().item() / W.numel(),
                    observed=err.mean().item(),
                    violation=(err > targets[k]).double().mean().item(),
                    implied=implied,
                    output=rel.median().item(),
                    within=(rel <= implied).double().mean().item(),
                )
            )
    return stages, current


def _relative(z: Tensor, z_hat: Tensor, scale: Tensor) -> Tensor:
    """``max_i |z_hat_i - z_i| / scale_i`` per input (0 where they agree): ``[N]``."""
    d = (z_hat - z).abs()
    return torch.where(d == 0, 0, d / scale).amax(1)

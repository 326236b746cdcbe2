"""Coreset pruning: importance sampling of weights and neurons, with the sample sizes behind it.

A dense layer ``z = a W.T + b`` (``W: [H_out, H_in]``) is pruned by sampling its weights (or the
neurons feeding it) *with replacement* from an importance distribution ``q`` and reweighting what
was drawn so that the pruned layer is unbiased:

    n ~ Multinomial(m, q),      w_hat_j = w_j n_j / (m q_j)      (E[w_hat] = w)

The submodules, one concept each (METHODS.md A):

* :mod:`.sensitivity`: data-dependent sensitivities ``s_ij = max_{x in S} g_ij(x)`` of weights
  (SiPP, CoreNet) and of neurons (PFP);
* :mod:`.sample_sizes`: the registry :data:`BOUNDS` of sample-size bounds ``m(eps) = (a + b
  eps) / eps^2``, :func:`sample_size` and its exact inverse :func:`implied_epsilon`;
* :mod:`.sampling`: multinomial counts, sampling until ``k`` distinct units, ``E[U(m)]`` and its
  inverse for sparsity-first pruning, SiPP's weight sampling and its deterministic variant;
* :mod:`.mussay`: Mussay et al.'s data-independent neuron coreset and its additive bound;
* :mod:`.prune`: whole models (:class:`Pruned`, :func:`prune_weights_sipp`,
  :func:`prune_weights_topk`, :func:`prune_neurons` and its Mussay and PFP variants,
  :func:`layer_inputs`);
* :mod:`.composition`: layer-by-layer composition of errors (CoreNet); :mod:`.layerwise`
  prunes every layer in turn with it (:func:`layer_by_layer`).

Neuron pruning returns a *physically smaller* ``nn.Sequential``; weight pruning returns a copy
with the sparse weight. The input model is never modified. Every random step takes a
``torch.Generator``; sampling counts are exact multinomial draws in float64.

References
----------
Baykal, Liebenwein, Gilitschenski, Feldman, Rus (2019a). Data-dependent coresets for
compressing neural networks with applications to generalization bounds. ICLR 2019 ("CoreNet").
Baykal, Liebenwein, Gilitschenski, Feldman, Rus (2019b). SiPPing neural networks:
sensitivity-informed provable pruning of neural networks. arXiv 1910.05422 ("SiPP").
Liebenwein, Baykal, Lang, Feldman, Rus (2020). Provable filter pruning for efficient neural
networks. ICLR 2020 ("PFP"); code github lucaslie/torchprune.
Mussay, Osadchy, Braverman, Zhou, Feldman (2020). Data-independent neural pruning via
coresets. ICLR 2020.
Gordon (2021). When are neural pruning approximation bounds useful? ICLR 2021 submission.
"""

from .composition import cancellation, compounded_error, delta_hat, kappa, layer_epsilons
from .layerwise import Stage, layer_by_layer
from .mussay import MONOTONE, ball_radius, mussay_bound_name, mussay_probabilities, mussay_scale
from .prune import (
    Pruned,
    layer_inputs,
    prune_neurons,
    prune_neurons_mussay,
    prune_neurons_pfp,
    prune_weights_sipp,
    prune_weights_topk,
)
from .sample_sizes import BOUNDS, Number, implied_epsilon, sample_size
from .sampling import (
    deterministic_bound,
    expected_unique,
    sample_counts,
    sample_until_distinct,
    sample_weights,
    samples_for_size,
    top_sensitivity,
)
from .sensitivity import neuron_sensitivities, relative_importance, sensitivities, split_signs

__all__ = [
    "BOUNDS",
    "MONOTONE",
    "Number",
    "Pruned",
    "Stage",
    "ball_radius",
    "cancellation",
    "compounded_error",
    "delta_hat",
    "deterministic_bound",
    "expected_unique",
    "implied_epsilon",
    "kappa",
    "layer_by_layer",
    "layer_epsilons",
    "layer_inputs",
    "mussay_bound_name",
    "mussay_probabilities",
    "mussay_scale",
    "neuron_sensitivities",
    "prune_neurons",
    "prune_neurons_mussay",
    "prune_neurons_pfp",
    "prune_weights_sipp",
    "prune_weights_topk",
    "relative_importance",
    "sample_counts",
    "sample_size",
    "sample_until_distinct",
    "sample_weights",
    "samples_for_size",
    "sensitivities",
    "split_signs",
    "top_sensitivity",
]

"""Importance criteria for weights, as a plain registry of functions.

Every weight criterion is called as ``fn(model, x, y=None, *, generator=None)`` and returns
one score tensor per parameter, keyed and shaped like ``model.named_parameters()`` (weights
and biases; :func:`prunelab.surgery.prune_weights` prunes the weights of Linear and Conv2d
layers, their biases only if asked, BatchNorm never). A conv weight ``[C_out, C_in, k_h,
k_w]`` gets one score per element. **Higher means more important**: pruning removes the
lowest scores. Models are read through the op view (:func:`prunelab.ops.parse`): MLPs and
convnets (Conv2d, pooling, eval-mode BatchNorm, Flatten) alike. Notation: theta one parameter
entry, L the mean cross-entropy over (x, y) in evaluation mode (dropout as identity,
BatchNorm on its running statistics), g = dL/dtheta, h = d^2 L / dtheta^2 (the exact
diagonal, :mod:`prunelab.curvature`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...base import checks, ops
from ...engines import curvature, hessian_blocks
from .checks import check_view

WeightCriterion = Callable[..., dict[str, Tensor]]
GRASP_TEMPERATURE = 200.0  # Wang et al. (2020) divide the logits by T = 200
HUTCHINSON_PROBES = 100  # Rademacher probes of obd_hutchinson
OBS_DAMPING = 1e-4  # H + lambda I with lambda = OBS_DAMPING * mean(diag H)
OBS_MAX_BLOCK = 2500  # layers with more parameters get one block per output unit


def obd_saliency(w: Tensor, h_diag: Tensor) -> Tensor:
    """OBD saliency ``s_k = h_kk w_k^2 / 2``. ``w, h_diag: [P] -> [P]`` (any equal shapes).

    The loss increase from zeroing ``w_k`` predicted by the quadratic expansion at a minimum
    (gradient term dropped) without cross terms (LeCun, Denker & Solla 1990, Eq. 5).
    """
    return 0.5 * h_diag * w**2


def obs_saliency(w: Tensor, h_inv: Tensor) -> Tensor:
    """OBS saliency ``L_q = w_q^2 / (2 [H^-1]_qq)``. ``w: [P]``, ``h_inv: [P, P] -> [P]``.

    The quadratic loss increase from zeroing ``w_q`` when every other weight moves optimally
    (:func:`obs_update`); never more than OBD's ``h_qq w_q^2 / 2`` for a positive definite H,
    since ``1 / [H^-1]_qq <= h_qq`` (Hassibi & Stork 1993, Eq. 5).
    """
    return w**2 / (2 * torch.diagonal(h_inv))


def obs_update(w: Tensor, h_inv: Tensor, remove: Tensor) -> tuple[Tensor, Tensor]:
    """Optimal Brain Surgeon: zero the weights ``Q = remove`` and move the rest optimally.

        delta w = -H^-1 E_Q (E_Q^T H^-1 E_Q)^-1 w_Q,     L_Q = w_Q^T (E_Q^T H^-1 E_Q)^-1 w_Q / 2

    the minimiser of the quadratic ``delta w^T H delta w / 2`` subject to ``w_Q + delta w_Q =
    0`` and its value. For one weight q this is Hassibi & Stork's ``delta w = -(w_q /
    [H^-1]_qq) H^-1 e_q`` with ``L_q`` of :func:`obs_saliency`; for several at once it is the
    multi-weight form of Kurtic et al. (2022, "The Optimal BERT Surgeon", Eq. 3) and Frantar &
    Alistarh (2022, "Optimal Brain Compression").

    Parameters
    ----------
    w : Tensor[P]
    h_inv : Tensor[P, P]
        The inverse Hessian (damped if H is singular).
    remove : Tensor[Q]
        Integer indices into ``w``.

    Returns
    -------
    (Tensor[P], Tensor[])
        The updated weights (exactly zero on ``Q``) and ``L_Q``.
    """
    Q = remove.reshape(-1)
    lam = torch.linalg.solve(h_inv[Q][:, Q], w[Q])  # (E_Q^T H^-1 E_Q)^-1 w_Q
    new = w - h_inv[:, Q] @ lam
    new[Q] = 0  # exact zeros (the formula gives them up to rounding)
    return new, 0.5 * (w[Q] @ lam)


def hessian_gradient_product(
    loss_fn: Callable[[dict[str, Tensor]], Tensor], params: dict[str, Tensor]
) -> dict[str, Tensor]:
    """``H g`` of a scalar ``loss_fn(params)`` by double backpropagation (GraSP's way).

        z = g^T stopgrad(g),   dz/dtheta = H g     (g = d loss / d theta, H its Hessian)

    Parameters
    ----------
    loss_fn : callable
        A pure function of a dict of tensors returning a scalar.
    params : dict of str to Tensor
        Where to evaluate; not modified.

    Returns
    -------
    dict of str to Tensor
        ``H g`` keyed and shaped like ``params`` (zeros where the loss does not depend on it).

    References
    ----------
    C. Wang, G. Zhang & R. Grosse (2020), "Picking winning tickets before training by
    preserving gradient flow", ICLR, Eq. 8; code alecwangcq/GraSP ``pruner/GraSP.py``.
    """
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        g = torch.autograd.grad(loss_fn(leaves), list(leaves.values()), create_graph=True)
        z = sum((gi * gi.detach()).sum() for gi in g)
        hg = torch.autograd.grad(z, list(leaves.values()), allow_unused=True)
    return {
        n: torch.zeros_like(p) if t is None else t.detach()
        for (n, p), t in zip(leaves.items(), hg, strict=True)
    }


def magnitude(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Weight magnitude ``s = |theta|``, the classic baseline. Data-free.

    Ranking all layers together by it is ``torch.nn.utils.prune.global_unstructured`` with
    ``L1Unstructured``; layer by layer it is ``l1_unstructured`` (Han, Pool, Tran & Dally
    2015, "Learning both weights and connections for efficient neural networks", NIPS).
    """
    _weight_inputs(model, x, y, "magnitude", labels=False)
    return {n: p.detach().abs() for n, p in model.named_parameters()}


def random_weights(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Uniform random scores ``s ~ U[0, 1)``, the floor every criterion must beat.

    Drawn parameter by parameter from ``generator`` (default a fresh generator seeded 0, so a
    call without one is reproducible); returned on the parameters' device.
    """
    _weight_inputs(model, x, y, "random", labels=False)
    g = checks.generator(generator, "criteria.random") or torch.Generator().manual_seed(0)
    return {
        n: torch.rand(p.shape, generator=g, dtype=p.dtype, device=g.device).to(p.device)
        for n, p in model.named_parameters()
    }


def _obd(model, x, y, method: str, estimator: Callable[..., dict[str, Tensor]], **kwargs):
    """OBD saliency with the diagonal of ``estimator``."""
    view, x, y = _weight_inputs(model, x, y, method, labels=True)
    h = needs_curvature(view, method, estimator, model, x, y, **kwargs)
    return {n: obd_saliency(p.detach(), h[n]) for n, p in model.named_parameters()}


def needs_curvature(view: ops.View, method: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, a curvature routine; on a convnet its refusal is re-raised
    naming ``method`` and the missing piece (per-parameter curvature of Conv2d layers)."""
    if view.dense:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        raise ValueError(
            f"{method}: needs {fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__} on this convnet "
            f"(per-parameter curvature of its Conv2d layers), which refused it: {e}. The "
            "curvature-free weight criteria (magnitude, random, snip, grasp, synflow) take "
            "convnets"
        ) from e


def obd(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Optimal Brain Damage saliency with the exact Hessian diagonal: ``s = h theta^2 / 2``.

    ``h`` from :func:`prunelab.curvature.diag_hessian` (exact for every supported activation;
    equal to the Gauss-Newton diagonal for ReLU nets). Under OBD's assumptions (a minimum, a
    quadratic loss, no cross terms) ``s`` is the loss increase from zeroing the weight.

    References
    ----------
    Y. LeCun, J. Denker & S. Solla (1990), "Optimal Brain Damage", NIPS 2, Eq. 5; METHODS.md B.
    """
    return _obd(model, x, y, "obd", curvature.diag_hessian)


def obd_ggn(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency ``G theta^2 / 2`` with the generalised Gauss-Newton diagonal.

    ``G`` from :func:`prunelab.curvature.diag_ggn`; equal to :func:`obd` for piecewise-linear
    nets, non-negative always (LeCun et al. 1990, Eq. 5; Martens 2014, Sec. 8).
    """
    return _obd(model, x, y, "obd_ggn", curvature.diag_ggn)


def obd_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency ``F theta^2 / 2`` with the diagonal empirical Fisher ``F = mean_n g_n^2``.

    ``F`` from :func:`prunelab.curvature.empirical_fisher_diag` (per-sample gradients of
    ``l_n`` on the true labels): the approximation several pruning libraries call "Hessian"
    importance (LeCun et al. 1990, Eq. 5; Kunstner, Hennig & Balles 2019 on its limits).
    """
    return _obd(model, x, y, "obd_fisher", curvature.empirical_fisher_diag)


def obd_hutchinson(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency ``h theta^2 / 2`` with a Hutchinson estimate of the Hessian diagonal.

    ``h ~ (1/K) sum_k v_k * (H v_k)`` over ``K = HUTCHINSON_PROBES`` Rademacher probes drawn
    from ``generator`` (:func:`prunelab.curvature.hutchinson_diag`; Bekas, Kokiopoulou & Saad
    2007). Unbiased but noisy; the estimate can be negative where the true value is small.
    """
    return _obd(
        model,
        x,
        y,
        "obd_hutchinson",
        curvature.hutchinson_diag,
        probes=HUTCHINSON_PROBES,
        generator=generator,
    )


def obd_becker_lecun(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """OBD saliency with the Becker-LeCun diagonal, the approximation OBD itself used.

    ``h`` from :func:`prunelab.curvature.becker_lecun_diag`, which drops the cross terms
    between units in its backward recursion (exact only at the output layer); LeCun et al.
    (1990), Sec. 3; Becker & LeCun (1988).
    """
    return _obd(model, x, y, "obd_becker_lecun", curvature.becker_lecun_diag)


def obs(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    damping: float = OBS_DAMPING,
    max_block: int = OBS_MAX_BLOCK,
) -> dict[str, Tensor]:
    """Optimal Brain Surgeon saliency per layer: ``L_q = theta_q^2 / (2 [H_l^-1]_qq)``.

    ``H_l`` is the exact Hessian block of all parameters of the layer that holds ``q``
    (weights and bias; :func:`prunelab.hessian_blocks.layer_hessian`), damped to
    ``H_l + lambda I`` with ``lambda = damping * mean(diag H_l)`` (Hassibi & Stork start their
    recursive inverse from ``alpha^-1 I``, the same regulariser; it also makes weights that
    never matter, e.g. on always-zero inputs, score about 0). Blocks between layers are left
    out, as in layer-wise OBS. A layer with more than ``max_block`` parameters is treated one
    output unit at a time (its row blocks, :func:`prunelab.hessian_blocks.row_hessians`), which
    also drops the blocks between units; cost ``2 N H D^2`` for an ``H x D`` layer.
    ``L_q`` is the quadratic loss increase after the compensating update
    :func:`obs_update`, which :func:`prunelab.surgery.obs_prune` applies. It can be negative
    where H is indefinite (curved activations).

    References
    ----------
    B. Hassibi & D. Stork (1993), "Second order derivatives for network pruning: Optimal Brain
    Surgeon", NIPS 5, Eq. 5; X. Dong, S. Chen & S. Pan (2017), "Learning to prune deep neural
    networks via layer-wise optimal brain surgeon", NIPS.
    """
    view, x, y = _weight_inputs(model, x, y, "obs", labels=True)
    if not damping >= 0:
        raise ValueError(f"obs: damping must be >= 0; got {damping!r}")
    out: dict[str, Tensor] = {}
    for k, layer in enumerate(view.layers):
        W, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
        H_out, H_in = W.shape[0], W[0].numel()  # a conv unit's row is its [C_in k_h k_w] kernel
        rows_W = W.reshape(H_out, H_in)
        theta = rows_W if b is None else torch.cat([rows_W, b[:, None]], 1)  # [H, D'] (W_i, b_i)
        if theta.numel() <= max_block:
            block = needs_curvature(view, "obs", hessian_blocks.layer_hessian, model, x, y, k)
            h_inv = damped_inverse(block, damping)
            w = W.reshape(-1) if b is None else torch.cat([W.reshape(-1), b])  # bias last
            s = obs_saliency(w.double(), h_inv).to(W.dtype)
            out[f"{layer.name}.weight"] = s[: W.numel()].reshape(W.shape)
            if b is not None:
                out[f"{layer.name}.bias"] = s[W.numel() :]
        else:
            s = torch.empty_like(theta)
            for rows in row_groups(H_out, theta.shape[1], max_block):
                blocks = needs_curvature(
                    view, "obs", hessian_blocks.row_hessians, model, x, y, k, rows=rows
                )
                h_inv = damped_inverse(blocks, damping)  # [R, D', D']
                s[rows] = (theta[rows].double() ** 2 / (2 * torch.diagonal(h_inv, 0, 1, 2))).to(
                    s.dtype
                )
            out[f"{layer.name}.weight"] = s[:, :H_in].reshape(W.shape)
            if b is not None:
                out[f"{layer.name}.bias"] = s[:, H_in]
    missing = [n for n, _ in model.named_parameters() if n not in out]
    if missing:
        raise ValueError(
            f"obs: scores the parameters of Linear and Conv2d layers only (their Hessian "
            f"blocks); the model also has {missing}"
        )
    return {n: out[n] for n, _ in model.named_parameters()}


def damped_inverse(H: Tensor, damping: float) -> Tensor:
    """``(H + lambda I)^-1`` in float64, ``lambda = damping * mean(diag H)`` (per matrix).

    ``H: [..., P, P]`` (a batch of square matrices) ``-> [..., P, P]``. With a zero diagonal
    mean, ``lambda = damping``.
    """
    H = H.double()
    mean = torch.diagonal(H, 0, -2, -1).mean(-1)  # [...]
    lam = damping * torch.where(mean > 0, mean, torch.ones_like(mean))
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    return torch.linalg.inv(H + lam[..., None, None] * eye)


def row_groups(units: int, width: int, max_block: int) -> list[Tensor]:
    """Output units in groups whose OBS row blocks ``[R, width, width]`` hold about 2^24 elements.

    Raises a ValueError if even one unit's block (``width`` parameters) exceeds ``max_block``.
    """
    if width > max_block:
        raise ValueError(
            f"obs: a layer with {width} parameters per unit is too large even unit by unit "
            f"(max_block={max_block}); raise max_block or use another criterion"
        )
    return list(torch.arange(units).split(max(1, 2**24 // (width * width))))


def snip(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``s_j = |theta_j g_j| / sum_k |theta_k g_k|``.

    ``|dL(c * theta)/dc_j|`` at ``c = 1`` for a multiplicative mask c, normalised so that the
    scores of the *weights* of the Linear and Conv2d layers (not the biases, nor BatchNorm's
    parameters) sum to 1; the other parameters are scored on the same scale. Meant for a
    minibatch at initialisation, but defined for any model and data.

    References
    ----------
    N. Lee, T. Ajanthan & P. Torr (2019), "SNIP: Single-shot network pruning based on
    connection sensitivity", ICLR, Eq. 6; code ganguli-lab/Synaptic-Flow ``Pruners/pruners.py``.
    """
    view, x, y = _weight_inputs(model, x, y, "snip", labels=True)
    params = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.func.grad(ops.param_loss(view, x, y))(params)
    s = {n: (p * g[n]).abs() for n, p in params.items()}
    return _normalised(view, s)


def grasp(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """GraSP importance ``theta * (H g) / |sum_weights (-theta * (H g))|`` (sign flipped).

    GraSP scores ``S = -theta * (H g)`` with ``g`` and ``H`` the gradient and Hessian of the
    loss with logits divided by ``T = GRASP_TEMPERATURE`` and removes the *largest* S, the
    weights whose removal reduces gradient flow least; returning ``-S`` keeps "higher = more
    important". ``H g`` by double backpropagation (:func:`hessian_gradient_product`).
    Normalised by ``|sum S|`` over the weights of the Linear and Conv2d layers, as the
    reference code does.

    References
    ----------
    C. Wang, G. Zhang & R. Grosse (2020), "Picking winning tickets before training by
    preserving gradient flow", ICLR, Eq. 8; code alecwangcq/GraSP ``pruner/GraSP.py``.
    """
    view, x, y = _weight_inputs(model, x, y, "grasp", labels=True)
    params = {n: p.detach() for n, p in model.named_parameters()}
    hg = hessian_gradient_product(ops.param_loss(view, x, y, temperature=GRASP_TEMPERATURE), params)
    S = {n: -p * hg[n] for n, p in params.items()}
    total = sum(S[f"{layer.name}.weight"].sum() for layer in view.layers).abs()
    if total == 0:
        return {n: -s for n, s in S.items()}
    return {n: -s / total for n, s in S.items()}


def synflow(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """SynFlow synaptic saliency ``S = |theta * dR/dtheta|`` of the linearised network.

        R = 1^T f(1; |theta|)

    the sum of the outputs of the network with every parameter replaced by its absolute value,
    on an all-ones input of one sample's shape (only ``x``'s shape is used; data-free), in
    evaluation mode (dropout as identity), computed in float64. BatchNorm runs on its running
    statistics with the running mean made non-negative too, as the reference code's
    ``|.|`` of the whole ``state_dict`` does. For ReLU (and LeakyReLU, identity) nets without
    BatchNorm every unit is active on this input, and the scores are conserved layer by layer:
    the weights of layer l together with all biases of layers ``>= l`` score exactly ``R``
    (Tanaka et al., Theorem 2, with biases; max and average pools and zero-padded convs keep
    this, being positively homogeneous). The paper prunes iteratively (100 rounds, keeping
    ``rho^(k/n)`` at round k); this is one round.

    References
    ----------
    H. Tanaka, D. Kunin, D. Yamins & S. Ganguli (2020), "Pruning neural networks without any
    data by iteratively conserving synaptic flow", NeurIPS, Eq. 2 and Algorithm 1; code
    ganguli-lab/Synaptic-Flow ``Pruners/pruners.py``.
    """
    view, x, _ = _weight_inputs(model, x, y, "synflow", labels=False)
    params = {n: p.detach().abs().double() for n, p in model.named_parameters()}
    stats = {  # BatchNorm's running statistics, made non-negative as the reference code does
        f"{layer.norm_name}.{key}": t.detach().abs().double()
        for layer in view.layers
        if layer.norm is not None
        for key, t in zip(("running_mean", "running_var"), layer.running(), strict=True)
    }
    ones = torch.ones(1, *x.shape[1:], dtype=torch.float64, device=x.device)

    def R(p: dict[str, Tensor]) -> Tensor:  # R = 1^T (prod_l |W^l|) 1: the flow through |theta|
        return ops.forward(view, ones, params={**p, **stats}, training=False).sum()

    dR = torch.func.grad(R)(params)
    dtype = x.dtype
    return {n: (p * dR[n]).abs().to(dtype) for n, p in params.items()}


def weight_scores(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Scores of every parameter entry by criterion ``name``; higher = more important.

    Parameters
    ----------
    name : str
        A key of ``WEIGHT_CRITERIA``.
    model : nn.Sequential
        A model the op view takes (:func:`prunelab.ops.parse`): an MLP or a convnet (Conv2d,
        pooling, BatchNorm in evaluation mode, Flatten), without a Linear or Conv2d module used
        twice; dropout counts as identity. Not modified. The OBD family and ``obs`` need
        per-parameter curvature (:mod:`prunelab.curvature`, :mod:`prunelab.hessian_blocks`),
        and raise a ValueError naming it on a model it does not take yet.
    x : Tensor[N, *in]
        Data as the model takes it (``[N, D]``, or ``[N, C, H, W]`` for a convnet; an MLP
        reads images flattened), same dtype and device as the parameters. The data-free
        criteria (``magnitude``, ``random``, ``synflow``) only check it (``synflow`` reads one
        sample's shape).
    y : Tensor[N], optional
        Integer labels in ``[0, C)``; required by the criteria in ``WEIGHT_LABELLED``.
    generator : torch.Generator, optional
        Randomness of ``"random"`` and ``"obd_hutchinson"`` (default seeded 0).

    Returns
    -------
    dict of str to Tensor
        Keyed and shaped like ``model.named_parameters()`` (weights and biases), in the
        parameters' dtype and device.

    Raises
    ------
    KeyError
        For an unknown criterion (the message lists the valid names).
    TypeError, ValueError
        For an unsupported model or bad ``x``/``y`` (the message names the argument).

    Examples
    --------
    >>> model = models.mlp((2, 4, 3), seed=0)
    >>> x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    >>> {n: s.shape for n, s in weight_scores("snip", model, x, y).items()}["0.weight"]
    torch.Size([4, 2])
    """
    if name not in WEIGHT_CRITERIA:
        raise KeyError(f"weight criterion {name!r}: choose from {sorted(WEIGHT_CRITERIA)}")
    checks.generator(generator, "criteria.weight_scores")
    return WEIGHT_CRITERIA[name](model, x, y, generator=generator)


def _weight_inputs(model, x, y, method: str, *, labels: bool):
    """Validate for a weight criterion (MLP or convnet): any number of hidden layers, no
    shared Linear or Conv2d; return the op view, ``x`` and ``y``."""
    view, x, y = check_view(model, x, y, method, labels=labels, hidden=False)
    if len({id(layer.module) for layer in view.layers}) < len(view.layers):
        raise ValueError(
            f"{method}: a Linear or Conv2d module appears twice in the model (shared weights); "
            "weight criteria score each parameter once, so use distinct layers"
        )
    return view, x, y


def _normalised(view: ops.View, s: dict[str, Tensor]) -> dict[str, Tensor]:
    """Divide every score by the sum over the layers' weights (left as is if that is 0)."""
    total = sum(s[f"{layer.name}.weight"].sum() for layer in view.layers)
    return s if total == 0 else {n: t / total for n, t in s.items()}


WEIGHT_CRITERIA: dict[str, WeightCriterion] = {
    "magnitude": magnitude,
    "random": random_weights,
    "obd": obd,
    "obd_ggn": obd_ggn,
    "obd_fisher": obd_fisher,
    "obd_hutchinson": obd_hutchinson,
    "obd_becker_lecun": obd_becker_lecun,
    "obs": obs,
    "snip": snip,
    "grasp": grasp,
    "synflow": synflow,
}
# weight criteria that need labels y (they read the loss)
WEIGHT_LABELLED = frozenset(
    {"obd", "obd_ggn", "obd_fisher", "obd_hutchinson", "obd_becker_lecun", "obs", "snip", "grasp"}
)

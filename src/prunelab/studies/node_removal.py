"""Study ``node-removal``: a network under random unit removal (Hobson 2022, part 1).

Random unit subsets (Bernoulli(p) masks), the distribution of the loss and log-loss, gradients of
the loss with respect to the unit mask, paths that flip every unit once, heatmaps of the output,
loss and per-unit gradients (2-D inputs only), single and pairwise removal, and the same
headline numbers over several training seeds. The default subject is the source's 2-20-2 toy
net; ``checkpoint`` studies any network the mask engine takes (MLPs and convnets, BatchNorm
included), a unit being a Linear feature or a Conv2d output channel. The work is sized to the
network by one stated rule (:func:`scale`). The toy net's main arm follows the source's recipe
(20 epochs); a robustness arm trains the same seeds for 60 epochs (toy-nets' default). The
findings (:func:`findings`) compare the main arm over seeds with the source. The report is rendered
by :mod:`.node_removal_report`; measured behaviour is described in docs/node-removal.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import checkpoint, data, files, models, ops, stats, train
from ..base.progress import track
from ..engines import ensemble, masks
from ..methods import ablation, compare, costs
from ..methods import findings as rules
from ..methods.findings import Finding
from . import toy_nets
from .base import option
from .node_removal_report import sections, titles  # noqa: F401 (the study's report)

NAME = "node-removal"
TITLE = "Node removal: a network with random parts taken out"
SUMMARY = "Loss under random unit subsets, mask gradients, flip paths, heatmaps, seeds."

N_MIN, PATHS_MIN, MASKS_MIN = 1000, 20, 100  # floors of the budget's cuts (see :func:`scale`)
SHOWN_UNITS = 24  # units whose gradient densities are kept, spread over the layers
KDE_PIECE = 20000  # values per piece of a density estimate (bounds its memory)
LOSS_PIECE = 512  # masks per call of the loss-only evaluations (the progress bar's step)


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data, the net (if trained here) and every mask")
    checkpoint: str = option(
        "", "a prunelab checkpoint to study (an MLP or a convnet) instead of the toy circle net"
    )
    data: str = option("", "data set of the checkpoint (default: its metadata, else circle)")
    circle_epochs: int = option(
        20, "epochs of the toy circle net when no checkpoint is given (the source's recipe: 20)"
    )
    robust_epochs: int = option(
        60,
        "epochs of the robustness arm: the toy circle net's seeds trained longer "
        "(toy-nets' default, 60); 0: no robustness arm",
    )
    probabilities: tuple[float, ...] = option((0.25, 0.5, 0.75), "keep-probabilities p")
    masks: int = option(1000, "random masks per p, at most (the source: 1000; see budget)")
    n_test: int = option(10000, "fixed test points the losses are measured on, at most")
    kernel_width: float = option(0.03, "Gaussian kernel width of the density plots (source: 0.03)")
    paths: int = option(1000, "flip paths (each flips every unit once), at most (see budget)")
    grid: int = option(200, "heatmap resolution over [-2, 2]^2 (2-D inputs only)")
    gradient_grid: int = option(80, "resolution of the per-unit gradient maps")
    max_pair_nodes: int = option(
        40, "all pairs among at most this many units (the most and least harmful alone)"
    )
    seeds: int = option(5, "training seeds of the main arm, at most (toy net or a recorded recipe)")
    robust_seeds: int = option(3, "training seeds of the robustness arm, at most --seeds")
    bias_cv: float = option(
        0.1, "fixed-threshold rule: a unit acts as a bias if std/|mean| of its activation is below"
    )
    bias_gap: float = option(
        3.0,
        "gap rule: the units below the highest gap of at least this factor in the sorted "
        "std/|mean| under 1 act as a bias (compare.bias_like_gap)",
    )
    budget: float = option(
        1e13,
        "multiply-adds the run may spend, 1e13 by default (0: no limit). Over it, test points, "
        "flip paths, masks per p and extra seeds are cut, each to a floor; the report says which",
    )
    chunk_mb: int = option(256, "memory budget of the batched mask engine, in MiB")

    QUICK: ClassVar[dict] = {
        "masks": 200,
        "n_test": 2000,
        "paths": 200,
        "grid": 80,
        "gradient_grid": 40,
        "seeds": 2,
        "budget": 1e12,
    }

    def __post_init__(self) -> None:
        if not self.probabilities or not all(0 < p < 1 for p in self.probabilities):
            raise ValueError(f"probabilities must lie in (0, 1); got {self.probabilities}")
        for name in ("masks", "n_test", "paths", "grid", "gradient_grid", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.robust_epochs < 0:
            raise ValueError(f"robust_epochs must be >= 0; got {self.robust_epochs}")
        if self.max_pair_nodes < 0:
            raise ValueError(f"max_pair_nodes must be >= 0; got {self.max_pair_nodes}")
        if not self.budget >= 0:
            raise ValueError(f"budget must be >= 0 multiply-adds (0: no limit); got {self.budget}")


@dataclass
class Density:
    """A density curve: ``y[g]`` at ``x[g]``."""

    x: Tensor
    y: Tensor


@dataclass
class Subsets:
    """Statistics of the random-subset masks for one keep-probability ``p``."""

    p: float
    loss: Tensor  # [M] loss per mask
    distinct: int  # distinct masks among the M sampled
    all_on: int  # masks that keep every unit
    loss_skewness: float
    loss_density: Density
    log_loss_density: Density
    log_loss_fit: stats.NormalFit
    gradient_mean: float  # over masks and units
    gradient_std: float
    log_gradient_mean: float  # d log L / dm = (dL/dm) / L
    log_gradient_std: float
    gradient_density: Density
    on_mean: float  # gradients of units that are on
    on_std: float
    off_mean: float
    off_std: float
    log_on_mean: float  # d log L / dm of units that are on (the source's split)
    log_on_std: float
    log_off_mean: float
    log_off_std: float
    gradient_kurtosis: float  # excess kurtosis of d L / dm over masks and units
    on_density: Density
    off_density: Density
    node_on_mean: Tensor  # [H]
    node_off_mean: Tensor  # [H]
    node_std: Tensor  # [H]
    node_on_densities: list[Density]  # per shown unit while on
    node_off_densities: list[Density]  # per shown unit while off
    shown_units: list[int] = field(default_factory=list)  # the units of the two lists above

    @property
    def mean_loss(self) -> float:
        return self.loss.mean().item()


@dataclass
class Paths:
    """Log-loss along flip paths: covariance structure and the reversal symmetry."""

    log_loss_mean: Tensor  # [H+1]
    covariance: stats.PathCovariance
    complement_correlation: float  # corr(log-loss of the start, of its complement = the end)
    complement_p: float
    count: int = 0  # paths P


@dataclass
class Maps:
    """Heatmaps over [-lim, lim]^2 for 2-D inputs (rows: x1 from -lim up)."""

    lim: float
    probability: Tensor  # [G, G] P(class 1)
    loss: Tensor  # [G, G] cross-entropy against the plane's labels
    gradients: Tensor  # [H, g, g] d loss / d m_j per point, all units on
    data_x: Tensor  # [n, 2] a sample of the test data
    data_y: Tensor  # [n]
    reference: list[Tensor]  # true boundary polylines


@dataclass
class Removal:
    """Loss with units removed one at a time and in pairs."""

    single: Tensor  # [H] loss with unit j removed
    pairs_checked: int
    pair_nodes: list[int]  # candidate units the pairs were drawn from
    best_pairs: list[tuple[int, int, float]]  # (i, j, loss), lowest losses
    worst_pairs: list[tuple[int, int, float]]


@dataclass
class Units:
    """Activity of each unit over the test data: dead and bias-like units by two rules."""

    mean: Tensor  # [H] (a channel: over samples and positions)
    std: Tensor  # [H]
    dead: list[int]  # always 0 (compare.silent)
    bias: list[int]  # the gap rule (compare.bias_like_gap)
    bias_threshold: list[int]  # the fixed threshold config.bias_cv (compare.bias_like)
    gap_below: float  # std/|mean| either side of the gap (0, 0: no gap)
    gap_above: float


@dataclass
class SeedRow:
    """Headline numbers of one training seed (lists: one value per p)."""

    seed: int
    test_accuracy: float
    full_loss: float
    mean_loss: list[float]
    log_loss_mean: list[float]
    log_loss_std: list[float]
    gradient_mean: list[float]
    decorrelated_after: int
    complement_correlation: float
    complement_p: float = math.nan
    paths: int = 0
    epochs: int = 0
    skewness: list[float] = field(default_factory=list)  # of the loss
    shapiro_p: list[float] = field(default_factory=list)  # of the log-loss
    ks: list[float] = field(default_factory=list)  # of the log-loss against its normal fit
    gradient_kurtosis: list[float] = field(default_factory=list)
    log_on_mean: float = math.nan  # at the middle p
    log_off_mean: float = math.nan
    sanity_ratio: float = math.nan  # mean gradient x extra units / mean loss difference
    bias_nodes: int = 0  # the gap rule
    bias_threshold: int = 0  # the fixed threshold
    dead_nodes: int = 0
    least_harm: float = math.nan  # relative loss increase of the cheapest single removal


@dataclass
class Scale:
    """How much work the run did and why: the configured amounts cut to the budget
    (:func:`scale`)."""

    budget: float  # multiply-adds allowed (0: no limit)
    macs: int  # multiply-adds of one forward pass of one sample (costs.macs)
    units: int  # H
    n_test: int
    masks: int  # per p
    paths: int
    pairs: int
    seeds: int  # extra training seeds the budget allows (before checking the recipe)
    work: float  # multiply-adds of the analysis of the studied net
    seed_work: float  # of each extra seed: its training and its headline analysis
    reduced: list[str]  # one sentence per cut, with its reason


@dataclass
class Results:
    model: str  # description of the studied net
    data: str
    widths: tuple[int, ...]  # input channels or features, units per hidden layer, classes
    hidden: list[int]
    n_test: int
    full_loss: float
    test_accuracy: float
    probabilities: list[float]
    subsets: list[Subsets]
    sanity: dict[str, float]
    paths: Paths
    removal: Removal
    activation_mean: Tensor  # [H] over the test data (a channel: over samples and positions)
    activation_std: Tensor  # [H]
    bias_nodes: list[int]  # the gap rule
    dead_nodes: list[int]
    maps: Maps | None = None
    seeds: list[SeedRow] = field(default_factory=list)  # the main arm (the studied recipe)
    seeds_note: str = ""
    main: SeedRow | None = None  # the studied net's own row
    units: Units | None = None
    robust: list[SeedRow] = field(default_factory=list)  # the toy net trained robust_epochs
    epochs: int = 0  # of the main arm's recipe (0: unknown)
    robust_epochs: int = 0
    source_outside: float = math.nan  # share of the source's points outside its circle
    kinds: list[str] = field(default_factory=list)  # per hidden layer: "conv" or "linear"
    in_shape: tuple[int, ...] = ()  # one sample's shape
    toy: bool = True  # the source's toy circle net (no checkpoint)
    scale: Scale | None = None


# --- sizing the work -------------------------------------------------------------------------


def scale(
    config: Config,
    *,
    units: int,
    macs: int,
    available: int,
    train_points: int = 0,
    epochs: int = 0,
) -> Scale:
    """The run's amounts of work: the configured ones, cut to ``config.budget`` if needed.

    One net's analysis costs, in multiply-adds (a backward pass counted as two forward passes,
    the mask engine's shared prefixes not subtracted),

        W = N c (3 |p| M + P (H + 1) + H + K (K - 1) / 2)

    for ``N`` test points, ``c = macs`` per sample, ``M`` masks per keep-probability (loss and
    gradient), ``P`` flip paths of ``H + 1`` masks each (losses only), ``H`` single removals and
    the pairs among ``K = min(max_pair_nodes, H)`` units. Each extra seed costs its training,
    ``3 E T c`` for ``E`` epochs over ``T`` points, plus its headline analysis (the masks and
    paths). When ``W`` exceeds the budget ``B`` the cuts come in this order, each only as far as
    needed: ``N`` down to 1000 (every mask is measured on the same points, so differences
    between masks stay resolved), then ``P`` down to 20, then ``M`` down to 100. The extra seeds
    get what is left of ``B``: as many as fit. (The 2-D heatmaps cost little and are not
    counted.) The source's 2-20-2 toy net is far inside the default budget.

    Parameters
    ----------
    units : int
        ``H``, the hidden units.
    macs : int
        ``c``, multiply-adds per sample (:func:`prunelab.costs.macs`).
    available : int
        Test points the data set has.
    train_points, epochs : int
        ``T`` and ``E`` of the recorded training recipe (0: no recipe, no seeds).
    """
    H, c, n_p = units, float(macs), len(config.probabilities)
    K = min(config.max_pair_nodes, H)
    pairs = K * (K - 1) // 2
    B = config.budget or math.inf

    def passes(M: int, P: int) -> int:  # forward passes per test point
        return 3 * n_p * M + P * (H + 1) + H + pairs

    N, M, P = min(config.n_test, available), config.masks, config.paths
    reduced = []
    if N * c * passes(M, P) > B:
        fit = min(N, max(N_MIN, math.floor(B / (c * passes(M, P)))))
        if fit < N:
            reduced.append(
                f"test points: {fit} of {N} (the configured run, {N * c * passes(M, P):.2g} "
                f"multiply-adds, is {N * c * passes(M, P) / B:.0f} times the budget; every mask "
                "is measured on the same points, so differences between masks stay resolved)"
            )
            N = fit
    room = B / (N * c)  # forward passes per test point the budget allows
    if passes(M, P) > room:
        fit = min(P, max(PATHS_MIN, math.floor((room - 3 * n_p * M - H - pairs) / (H + 1))))
        reduced.append(
            f"flip paths: {fit} of {P} (each path is {H + 1} masks, so {P} paths alone would "
            f"cost {N * c * P * (H + 1):.2g} multiply-adds)"
        )
        P = fit
    if passes(M, P) > room:
        fit = min(M, max(MASKS_MIN, math.floor((room - P * (H + 1) - H - pairs) / (3 * n_p))))
        reduced.append(f"masks per p: {fit} of {M}")
        M = fit
    work = N * c * passes(M, P)
    if work > B:
        reduced.append(
            f"even at these floors the run needs {work:.2g} multiply-adds, {work / B:.1f} times "
            "the budget"
        )
    seed_work = 3 * epochs * train_points * c + N * c * (3 * n_p * M + P * (H + 1))
    seeds = config.seeds
    if epochs and train_points and work + seeds * seed_work > B:
        seeds = max(0, min(seeds, math.floor((B - work) / seed_work)))
        reduced.append(
            f"extra training seeds: {seeds} of {config.seeds} (each costs {seed_work:.2g} "
            f"multiply-adds: {epochs} epochs over {train_points} training points, then its "
            f"masks and paths; {max(0.0, B - work):.2g} of the budget was left)"
        )
    return Scale(config.budget, int(macs), H, N, M, P, pairs, seeds, work, seed_work, reduced)


# --- the pieces ------------------------------------------------------------------------------


def _density(values: Tensor, width: float, points: int = 300) -> Density:
    """Gaussian KDE of ``values`` on a grid over their range; summed in pieces of
    ``KDE_PIECE`` values (the KDE is a mean of kernels, so the pieces weigh by their size)."""
    lo, hi = values.min().item(), values.max().item()
    pad = 4 * width + 0.05 * (hi - lo)
    x = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64, device=values.device)
    v = values.reshape(-1)
    if len(v) <= KDE_PIECE:
        return Density(x, stats.kde(v, x, width))
    y = sum(stats.kde(part, x, width) * len(part) for part in v.split(KDE_PIECE)) / len(v)
    return Density(x, y)


def _or_all(part: Tensor, everything: Tensor) -> Tensor:
    """``part`` if it has at least two values, else ``everything`` (a density needs spread)."""
    return part if len(part) > 1 else everything


def _mean(v: Tensor) -> float:
    return v.mean().item() if len(v) else math.nan


def _std(v: Tensor) -> float:
    return v.std(correction=0).item() if len(v) > 1 else math.nan


def _shown_units(sizes: list[int]) -> list[int]:
    """At most ``SHOWN_UNITS`` units for the per-unit plots: all of them if few, else an equal
    share of each hidden layer, evenly spaced within it."""
    H = sum(sizes)
    if H <= SHOWN_UNITS:
        return list(range(H))
    share, out, first = SHOWN_UNITS // len(sizes), [], 0
    for size in sizes:
        k = min(size, max(1, share))
        out += sorted({first + round(i * (size - 1) / max(1, k - 1)) for i in range(k)})
        first += size
    return out[:SHOWN_UNITS]


def _subsets(
    model, x, y, p: float, M: int, config: Config, g: torch.Generator, chunk, curves: bool = True
) -> Subsets:
    """The statistics of ``M`` Bernoulli(p) masks; ``curves=False`` skips the density curves
    (a seed row needs only the numbers)."""
    sizes = masks.hidden_sizes(model)
    H = sum(sizes)
    # drawn on the CPU generator, then moved: the same masks on every device
    m = masks.bernoulli(M, H, p, generator=g, dtype=x.dtype).to(x.device)  # (M, H)
    loss, grad = ablation.mask_losses(model, x, y, m, chunk_bytes=chunk)
    log_grad = ablation.log_mask_gradients(loss, grad)
    on, off = ablation.on_off(grad, m)
    log_on, log_off = ablation.on_off(log_grad, m)
    w = config.kernel_width
    node_on, node_off = ablation.node_on_off_means(grad, m)
    shown = _shown_units(sizes) if curves else []
    empty = Density(torch.zeros(0), torch.zeros(0))

    def density(values: Tensor) -> Density:
        return _density(values, w) if curves else empty

    return Subsets(
        p=p,
        loss=loss,
        distinct=len(torch.unique(m, dim=0)),
        all_on=int(m.all(1).sum()),
        loss_skewness=stats.skewness(loss),
        loss_density=density(loss),
        log_loss_density=density(loss.log()),
        log_loss_fit=stats.normal_fit(loss.log()),
        gradient_mean=grad.mean().item(),
        gradient_std=grad.std(correction=0).item(),
        log_gradient_mean=log_grad.mean().item(),
        log_gradient_std=log_grad.std(correction=0).item(),
        gradient_density=density(grad.flatten()),
        on_mean=_mean(on),
        on_std=_std(on),
        off_mean=_mean(off),
        off_std=_std(off),
        log_on_mean=_mean(log_on),
        log_on_std=_std(log_on),
        log_off_mean=_mean(log_off),
        log_off_std=_std(log_off),
        gradient_kurtosis=stats.excess_kurtosis(grad),
        on_density=density(_or_all(on, grad.flatten())),
        off_density=density(_or_all(off, grad.flatten())),
        node_on_mean=node_on,
        node_off_mean=node_off,
        node_std=grad.std(0, correction=0),
        node_on_densities=[density(_or_all(grad[m[:, j] == 1, j], grad[:, j])) for j in shown],
        node_off_densities=[density(_or_all(grad[m[:, j] == 0, j], grad[:, j])) for j in shown],
        shown_units=shown,
    )


def _losses(model, x: Tensor, y: Tensor, m: Tensor, chunk: int, advance) -> Tensor:
    """The loss ``[M]`` under each mask, without gradients, ``LOSS_PIECE`` masks at a time (the
    progress bar moves with each piece)."""
    out = []
    for part in m.split(LOSS_PIECE):
        out.append(ablation.mask_point_losses(model, x, y, part, chunk_bytes=chunk).mean(1))
        advance(len(part))
    return torch.cat(out)


def _paths(model, x, y, P: int, g: torch.Generator, chunk: int, advance) -> Paths:
    H = sum(masks.hidden_sizes(model))
    walk = masks.flip_paths(P, H, generator=g, dtype=x.dtype)  # (P, H+1, H)
    walk = walk.to(x.device)  # drawn on the CPU generator, as the masks above
    loss = _losses(model, x, y, walk.reshape(-1, H), chunk, advance)
    log_loss = loss.log().reshape(P, H + 1)  # (P, H+1)
    cov = stats.path_covariance(log_loss)
    r = stats.pearson(log_loss[:, 0], log_loss[:, -1])  # the end is the start's complement
    return Paths(log_loss.mean(0), cov, r, stats.correlation_p_value(r, P).item(), P)


def _removal(model, x, y, config: Config, chunk: int, advance) -> Removal:
    H = sum(masks.hidden_sizes(model))
    one_each = masks.removals(H, [[j] for j in range(H)], dtype=x.dtype).to(x.device)  # (H, H)
    single = _losses(model, x, y, one_each, chunk, advance)
    order = single.argsort().tolist()
    k = config.max_pair_nodes
    nodes = sorted(order if k >= H else order[: k // 2] + order[len(order) - (k - k // 2) :])
    pairs = [(i, j) for a, i in enumerate(nodes) for j in nodes[a + 1 :]]
    if not pairs:
        return Removal(single, 0, nodes, [], [])
    two_each = masks.removals(H, pairs, dtype=x.dtype).to(x.device)  # (pairs, H)
    loss = _losses(model, x, y, two_each, chunk, advance)
    ranked = loss.argsort().tolist()
    rows = [(pairs[i][0], pairs[i][1], loss[i].item()) for i in ranked]
    return Removal(single, len(pairs), nodes, rows[:5], rows[::-1][:5])


def _maps(model, net_data: data.Dataset, test: data.Dataset, config: Config) -> Maps:
    lim, device = 2.0, test.x.device
    grid = data.grid(config.grid, lim).to(device)
    probability = train.predict(model, grid)[:, 1].reshape(config.grid, config.grid)
    loss = ablation.mask_point_losses(
        model,
        grid,
        data.plane_labels(net_data, grid),
        torch.ones(1, sum(masks.hidden_sizes(model)), device=device),
    )[0]
    small = data.grid(config.gradient_grid, lim).to(device)
    grads = ablation.point_mask_gradients(model, small, data.plane_labels(net_data, small))
    G = config.gradient_grid
    reference = [toy_nets.circle_boundary()] if net_data.name == "circle" else []
    if net_data.name == "spirals":
        reference = toy_nets.spiral_arms(seed=config.seed)
    return Maps(
        lim,
        probability,
        loss.reshape(config.grid, config.grid),
        grads.T.reshape(-1, G, G),
        test.x[:600],
        test.y[:600],
        reference,
    )


def _units(model: nn.Module, x: Tensor, config: Config) -> Units:
    """Mean and spread of each unit's activation; dead units and bias-like ones by both rules."""
    acts = masks.hidden_activations(model, x)
    mean, std, _ = stats.unit_statistics(acts)
    gap = compare.bias_like_gap(mean, std, ratio=config.bias_gap)
    listed = lambda b: b.nonzero().flatten().tolist()  # noqa: E731
    return Units(
        mean,
        std,
        listed(torch.cat(compare.silent(acts))),
        listed(gap.units),
        listed(compare.bias_like(mean, std, config.bias_cv)),
        gap.below,
        gap.above,
    )


def _sanity(subsets: list[Subsets], H: int) -> dict[str, float]:
    """The source's check: the mean gradient at the middle p times the expected number of extra
    units between the lowest and highest p, against the difference of their mean losses."""
    ps = [s.p for s in subsets]
    lo, hi = subsets[ps.index(min(ps))], subsets[ps.index(max(ps))]
    mid = subsets[len(subsets) // 2]
    return {
        "p_low": lo.p,
        "p_high": hi.p,
        "p_gradient": mid.p,
        "expected extra nodes": (hi.p - lo.p) * H,
        "mean gradient x extra nodes": mid.gradient_mean * (hi.p - lo.p) * H,
        "mean loss difference": hi.mean_loss - lo.mean_loss,
    }


def _least_harm(single: Tensor, dead: list[int], full: float) -> float:
    """Relative loss increase of the cheapest removal of one live unit (a dead unit's removal
    changes nothing); NaN if every unit is dead."""
    live = torch.ones(len(single), dtype=torch.bool)
    live[dead] = False
    return (single[live].min().item() - full) / full if live.any() else math.nan


def _row(seed, epochs, full, subsets, paths, units, single, H) -> SeedRow:
    """The headline numbers of one net from its measured pieces."""
    sn = _sanity(subsets, H)
    mid = subsets[len(subsets) // 2]
    diff = sn["mean loss difference"]
    return SeedRow(
        seed,
        full["accuracy"],
        full["loss"],
        [s.mean_loss for s in subsets],
        [s.log_loss_fit.mean for s in subsets],
        [s.log_loss_fit.std for s in subsets],
        [s.gradient_mean for s in subsets],
        paths.covariance.decorrelated_after,
        paths.complement_correlation,
        complement_p=paths.complement_p,
        paths=paths.count,
        epochs=epochs,
        skewness=[s.loss_skewness for s in subsets],
        shapiro_p=[s.log_loss_fit.shapiro_p for s in subsets],
        ks=[s.log_loss_fit.ks for s in subsets],
        gradient_kurtosis=[s.gradient_kurtosis for s in subsets],
        log_on_mean=mid.log_on_mean,
        log_off_mean=mid.log_off_mean,
        sanity_ratio=sn["mean gradient x extra nodes"] / diff if diff else math.nan,
        bias_nodes=len(units.bias),
        bias_threshold=len(units.bias_threshold),
        dead_nodes=len(units.dead),
        least_harm=_least_harm(single, units.dead, full["loss"]),
    )


def _headline_row(
    seed: int,
    epochs: int,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: Config,
    sc: Scale,
    chunk,
    advance,
) -> SeedRow:
    g = torch.Generator().manual_seed(config.seed)
    subsets = []
    for p in config.probabilities:
        subsets.append(_subsets(model, x, y, p, sc.masks, config, g, chunk, curves=False))
        advance(sc.masks)
    paths = _paths(model, x, y, sc.paths, g, chunk, advance)
    H = sum(masks.hidden_sizes(model))
    one_each = masks.removals(H, [[j] for j in range(H)], dtype=x.dtype).to(x.device)
    single = _losses(model, x, y, one_each, chunk, advance)
    full = train.evaluate(model, data.Dataset(x, y, "test"))
    return _row(seed, epochs, full, subsets, paths, _units(model, x, config), single, H)


# --- the subject -----------------------------------------------------------------------------


def _recipe(meta: dict) -> dict | None:
    """How a checkpoint was built and trained, if its metadata records it (``prunelab train``
    writes ``arch``, ``widths`` for an MLP, and ``train``: epochs, lr, ..., the build options)."""
    t = meta.get("train")
    arch = meta.get("arch", "mlp" if "widths" in meta else None)
    if not isinstance(t, dict) or arch is None or (arch == "mlp" and "widths" not in meta):
        return None
    if arch not in models.ARCHITECTURES:
        return None
    return dict(
        arch=arch,
        widths=tuple(meta["widths"]) if arch == "mlp" else None,
        epochs=t.get("epochs", 20),
        lr=t.get("lr", 0.01),
        batch_size=t.get("batch_size", 32),
        optimizer=t.get("optimizer", "adam"),
        weight_decay=t.get("weight_decay", 0.0),
        options={
            k: t[k] for k in ("activation", "dropout", "batchnorm", "pool", "width") if k in t
        },
    )


def _fresh(recipe: dict, shape: tuple[int, ...], classes: int, seed: int) -> nn.Sequential:
    """An untrained net of ``recipe``'s architecture, initialised from ``seed``."""
    return models.build(
        recipe["arch"],
        in_shape=shape,
        classes=classes,
        widths=recipe["widths"],
        seed=seed,
        **recipe["options"],
    )


def _describe(view: ops.View, shape: tuple[int, ...]) -> str:
    """The layers in words: ``"conv 6, conv 16, linear 120, linear 84 units; input [1, 28,
    28], 10 classes"``."""
    layers = ", ".join(f"{'conv' if h.conv else 'linear'} {h.units}" for h in view.hidden)
    return f"hidden {layers}; input {list(shape)}, {view.out_features} classes"


def _subject(
    config: Config, device: torch.device
) -> tuple[nn.Sequential, data.Split, str, dict | None, int]:
    """The model, its data (both on ``device``), a description, its training recipe (if known),
    the data's seed. A model or data set the study cannot take is refused here, before any
    work, with a ``ValueError`` naming it."""
    if not config.checkpoint:
        toy = toy_nets.Config(seed=config.seed, circle_epochs=config.circle_epochs)
        model = toy_nets.circle_net(toy, device=device)
        recipe = dict(
            arch="mlp",
            widths=(2, toy.circle_width, 2),
            epochs=toy.circle_epochs,
            lr=toy.circle_lr,
            batch_size=toy.batch_size,
            optimizer="adam",
            weight_decay=0.0,
            options={},
        )
        description = "the toy-nets circle net (2-20-2 ReLU)"
        split = toy_nets.circle_split(toy, device=device)
        return model, split, description, recipe, config.seed
    model, meta = checkpoint.load(config.checkpoint)
    model = model.to(device)
    method = f"node-removal of {config.checkpoint}"
    try:
        view = ops.parse(model, method=method)
    except TypeError as e:  # an unsupported module: the message names it
        raise ValueError(str(e)) from None
    if not view.hidden:
        raise ValueError(
            f"{method}: the model has no hidden layer (only its output layer), so it has no "
            "units to remove; the study needs a Linear or Conv2d layer before the last one"
        )
    name = config.data or meta.get("data") or "circle"
    seed = meta.get("seed", config.seed)
    split = data.load(name, seed=seed).to(device=device)
    test = split.test
    view.check_x(test.x[:1], f"{method} on data {name!r}", convert=True)
    if test.classes > view.out_features:
        raise ValueError(
            f"{method}: data {name!r} has {test.classes} classes but the model has "
            f"{view.out_features} outputs; pass the data it was trained on with --data"
        )
    arch = meta.get("arch") or ("convnet" if view.conv else "MLP")
    shape = tuple(test.x.shape[1:])
    description = f"checkpoint {Path(config.checkpoint).name} ({arch}: {_describe(view, shape)})"
    return model, split, description, _recipe(meta), seed


# --- the study -------------------------------------------------------------------------------


def _seeds(
    recipe, model, split, x, y, config, sc, dtype, device, chunk, advance, count=None, first=0
):
    """Headline rows of nets trained from the recipe, seeds ``config.seed + k`` for ``first <=
    k < count`` (default ``sc.seeds``; MLPs together with ``fit_many``, convnets one by one with
    ``train.fit``), and a note if there are none. ``recipe["epochs"]`` sets the arm."""
    if recipe is None:
        return [], "The checkpoint carries no training recipe, so no other seeds were trained."
    if sc.seeds == 0:
        return [], (
            f"No other seeds were trained: retraining one costs {sc.seed_work:.2g} multiply-adds "
            f"({recipe['epochs']} epochs over {len(split.train)} points, then its masks and paths), "
            f"and the budget ({config.budget:.2g}) is spent on the analysis above. Pass a larger "
            "--budget (0: no limit) to train them."
        )
    shape, classes = tuple(split.train.x.shape[1:]), split.train.classes
    seeds = [config.seed + k for k in range(first, sc.seeds if count is None else count)]
    nets = [_fresh(recipe, shape, classes, s).to(device) for s in seeds]
    if not nets:
        return [], ""
    if masks.hidden_sizes(nets[0]) != masks.hidden_sizes(model):
        return [], (
            f"No other seeds were trained: the recorded recipe ({recipe['arch']}) builds hidden "
            f"layers {masks.hidden_sizes(nets[0])}, not the checkpoint's "
            f"{masks.hidden_sizes(model)}."
        )
    fit = dict(
        epochs=recipe["epochs"],
        lr=recipe["lr"],
        batch_size=recipe["batch_size"],
        optimizer=recipe["optimizer"],
        weight_decay=recipe["weight_decay"],
        progress=False,
    )
    if recipe["arch"] == "mlp":
        ensemble.fit_many(nets, split.train, seeds=seeds, **fit)
    rows = []
    for s, net in zip(seeds, nets, strict=True):
        if recipe["arch"] != "mlp":
            advance(0, status=f"training seed {s}")
            train.fit(net, split.train, seed=s, **fit)
        net = net.to(dtype).eval()
        rows.append(_headline_row(s, fit["epochs"], net, x, y, config, sc, chunk, advance))
    return rows, ""


def run(
    config: Config, out: str | Path, *, progress: bool = True, device: str | torch.device = "cpu"
) -> Results:
    """Every measurement of the study, on the fixed test set.

    Everything is computed on ``device`` (masks are drawn from CPU generators and moved there,
    so every device sees the same ones); the results come back on the CPU. The amounts of work
    are those of ``config`` cut to its budget (:func:`scale`).
    """
    device = torch.device(device)
    model, split, description, recipe, split_seed = _subject(config, device)
    view = ops.parse(model)
    sizes, shape = view.hidden_sizes, tuple(split.test.x.shape[1:])
    H = sum(sizes)
    sc = scale(
        config,
        units=H,
        macs=costs.macs(model, in_shape=shape if view.conv else None),
        available=len(split.test),
        train_points=len(split.train) if recipe else 0,
        epochs=recipe["epochs"] if recipe else 0,
    )
    out = Path(out)
    # the studied net, for the interactive explorer page linked from the report
    checkpoint.save(
        out / "explorer.safetensors",
        model,
        data=split.test.name,
        seed=split_seed,
        samples=sc.n_test,
    )
    test = split.test[: sc.n_test]
    dtype = next(model.parameters()).dtype
    x, y = test.x.to(dtype), test.y  # images stay [N, C, H, W]; an MLP flattens them itself
    chunk = config.chunk_mb * 2**20
    g = torch.Generator().manual_seed(config.seed)
    n_p = len(config.probabilities)
    per_net = n_p * sc.masks + sc.paths * (H + 1) + H  # masks of one headline analysis
    robust = dict(recipe, epochs=config.robust_epochs) if recipe else None
    if (
        config.checkpoint
        or not config.robust_epochs
        or config.robust_epochs == config.circle_epochs
    ):
        robust = None  # the robustness arm is the toy net's
    toy = not config.checkpoint  # the studied net is the main arm's first seed
    n_robust = min(config.robust_seeds, sc.seeds) if robust is not None else 0
    total = per_net + sc.pairs + ((sc.seeds - toy) if recipe else 0) * per_net
    total += n_robust * per_net
    with track(total, "node removal (masks)", enabled=progress) as advance:
        subsets = []
        for p in config.probabilities:
            advance(0, status=f"{sc.masks} masks, p = {p}")
            subsets.append(_subsets(model, x, y, p, sc.masks, config, g, chunk))
            advance(sc.masks)
        advance(0, status=f"{sc.paths} flip paths")
        paths = _paths(model, x, y, sc.paths, g, chunk, advance)
        advance(0, status="single and pair removal")
        removal = _removal(model, x, y, config, chunk, advance)
        units = _units(model, x, config)
        maps = None
        if not view.conv and test.shape == (2,):
            advance(0, status="heatmaps")
            maps = _maps(model, split.train, test, config)
        full = train.evaluate(model, data.Dataset(x, y, test.name, test.classes))
        epochs = recipe["epochs"] if recipe else 0
        main = _row(config.seed, epochs, full, subsets, paths, units, removal.single, H)
        seeds, note = _seeds(
            recipe, model, split, x, y, config, sc, dtype, device, chunk, advance, first=toy
        )
        if toy and sc.seeds:
            seeds = [main, *seeds]
        longer = []
        if n_robust:
            advance(0, status=f"robustness arm: {config.robust_epochs} epochs")
            longer, _ = _seeds(
                robust, model, split, x, y, config, sc, dtype, device, chunk, advance, n_robust
            )
    results = Results(
        model=description,
        data=test.name,
        widths=(view.layers[0].in_units, *sizes, view.out_features),
        hidden=sizes,
        n_test=len(y),
        full_loss=full["loss"],
        test_accuracy=full["accuracy"],
        probabilities=list(config.probabilities),
        subsets=subsets,
        sanity=_sanity(subsets, H),
        paths=paths,
        removal=removal,
        activation_mean=units.mean,
        activation_std=units.std,
        bias_nodes=units.bias,
        dead_nodes=units.dead,
        maps=maps,
        seeds=seeds,
        seeds_note=note,
        kinds=["conv" if h.conv else "linear" for h in view.hidden],
        in_shape=shape,
        toy=not config.checkpoint,
        scale=sc,
        main=main,
        units=units,
        robust=longer,
        epochs=epochs,
        robust_epochs=config.robust_epochs if robust is not None else 0,
        source_outside=stats.outside_disc(math.sqrt(2 / math.pi)),
    )
    return files.to_cpu(results)


def headline(results: Results) -> dict[str, float]:
    """The studied net's key numbers (seed ``config.seed``; the findings give the seeds' means),
    each key labelled as such."""
    out = {"full loss": results.full_loss}
    for s in results.subsets:
        out[f"mean loss, p={s.p}"] = s.mean_loss
    out["flips until decorrelated"] = results.paths.covariance.decorrelated_after
    out["complement log-loss correlation"] = results.paths.complement_correlation
    out["bias-like nodes (gap rule)"] = len(results.bias_nodes)
    return {f"{k} (studied net, first seed)": v for k, v in out.items()}


# The source's figures (Hobson 2022, part 1): its 2-20-2 net, 20 epochs, 1000 masks per p.
SOURCE_FULL_LOSS = 0.117
SOURCE_MEAN_LOSS = {0.25: 1.0277, 0.5: 0.8782, 0.75: 0.5844}
LOSS_TOL = 0.25  # a loss within a quarter of the source's (single-run) figure is the same
SOURCE_BIAS_NODES = 4
SOURCE_FLIPS = (5, 6)
HARM = 0.05  # "barely noticeable": the cheapest single removal raises the loss by under 5%
SANITY = (0.8, 1.25)  # "reasonably close": the gradient's prediction within 25% of the change


def _smallest_fall(values: list[float], ps: list[float]) -> float:
    """The smallest drop of ``values`` from one p to the next larger p (> 0: falling)."""
    ordered = [v for _, v in sorted(zip(ps, values, strict=True))]
    return min((a - b for a, b in itertools.pairwise(ordered)), default=math.nan)


def _per_seed(rows: list[SeedRow], value) -> list[float]:
    return [float(value(r)) for r in rows]


def _robust(results: Results, value, fmt: str = "{:.3g}") -> str:
    """The robustness arm's mean of ``value`` per seed, as a clause for a finding's detail."""
    rows = results.robust
    if not rows:
        return ""
    e = rules.estimate(_per_seed(rows, value))
    return f" Robustness arm ({results.robust_epochs} epochs): {e}."


def findings(results: Results, config: Config) -> list[Finding]:
    """The source's claims about its toy net, each against the main arm over seeds (the
    studied net alone when no seeds were trained), with the robustness arm in the detail."""
    r = results
    rows = r.seeds or ([r.main] if r.main else [])
    t = titles(r)
    w, ws = t["word"], t["words"]
    if not rows:
        return [rules.not_measured("every claim", "results of an older version: no seed rows")]
    n, P = len(rows), rows[0].paths
    mid_p = r.probabilities[len(r.probabilities) // 2]  # the source split at p = 0.5
    arm = (
        f"Main arm: {n} seeds of the studied recipe"
        + (f" ({r.epochs} epochs)" if r.epochs else "")
        + "."
    )
    toy = r.toy
    out: list[Finding] = []
    why_not = (
        f"the studied net is {r.model}, not the source's 2-20-2 circle net, so absolute numbers "
        "are not comparable"
    )
    unbalanced = (
        f"Cause, in part: the source's circle leaves {100 * r.source_outside:.0f}% of its points "
        "outside (its code compares |x|^2 with sqrt(2/pi); ours with 2/pi: 50%, "
        "stats.outside_disc), and Keras' initialisation is not PyTorch's."
    )
    claim = "With every node on, the trained net's cross-entropy is 0.117 (within 25%)"
    if toy:
        out.append(
            rules.within(
                claim,
                _per_seed(rows, lambda s: s.full_loss),
                SOURCE_FULL_LOSS,
                SOURCE_FULL_LOSS,
                tol=LOSS_TOL * SOURCE_FULL_LOSS,
                source="0.117",
                section=t["seeds"],
                detail=f"{arm} {unbalanced}" + _robust(r, lambda s: s.full_loss),
            )
        )
        for k, p in enumerate(r.probabilities):
            if p not in SOURCE_MEAN_LOSS:
                continue
            out.append(
                rules.within(
                    f"The mean loss over random subsets at p = {p} is {SOURCE_MEAN_LOSS[p]} "
                    "(within 25%)",
                    _per_seed(rows, lambda s, k=k: s.mean_loss[k]),
                    SOURCE_MEAN_LOSS[p],
                    SOURCE_MEAN_LOSS[p],
                    tol=LOSS_TOL * SOURCE_MEAN_LOSS[p],
                    source=f"{SOURCE_MEAN_LOSS[p]:.3f}",
                    section=t["loss"],
                    detail=f"{arm} {unbalanced}" + _robust(r, lambda s, k=k: s.mean_loss[k]),
                )
            )
    else:
        out.append(rules.not_measured(claim, why_not, source="0.117"))
    out.append(
        rules.every(
            f"More {ws} kept, lower mean loss",
            _per_seed(rows, lambda s: _smallest_fall(s.mean_loss, r.probabilities)),
            lambda v: v > 0,
            "the mean loss falls from each p to the next (smallest fall > 0)",
            source="1.028 > 0.878 > 0.584",
            section=t["loss"],
            detail=arm,
            unit=" (smallest fall)",
        )
    )
    out.append(
        rules.every(
            "The loss distribution is skewed to the right",
            _per_seed(rows, lambda s: min(s.skewness)),
            lambda v: v > 0,
            "the skewness of the loss is > 0 at every p",
            source="by eye",
            section=t["loss"],
            detail=arm,
            unit=" (smallest skewness)",
        )
    )
    ks = max(max(s.ks) for s in rows)
    out.append(
        rules.every(
            "The log-loss is close to normal (the loss log-normal)",
            _per_seed(rows, lambda s: min(s.shapiro_p)),
            lambda v: v >= 0.05,
            "the Shapiro-Wilk test keeps normality (p >= 0.05) at every p",
            source="by eye",
            section=t["lognormal"],
            detail=f"{arm} Largest Kolmogorov-Smirnov distance to the fitted normal: {ks:.3f}."
            + _robust(r, lambda s: min(s.shapiro_p)),
            unit=" (smallest Shapiro p)",
        )
    )
    out.append(
        rules.below(
            f"The mean gradient of the loss w.r.t. the mask is negative at every p (more {ws} "
            "help on average)",
            _per_seed(rows, lambda s: max(s.gradient_mean)),
            0.0,
            source="-0.069, -0.048, -0.027",
            section=t["gradients"],
            detail=arm,
            unit=" (largest over p)",
        )
    )
    out.append(
        rules.every(
            f"The mean gradient times the expected extra {ws} predicts the change of mean loss",
            _per_seed(rows, lambda s: s.sanity_ratio),
            lambda v: SANITY[0] <= v <= SANITY[1],
            f"the ratio prediction / change lies in [{SANITY[0]}, {SANITY[1]}]",
            source="-0.475 vs -0.443 (ratio 1.07)",
            section=t["gradients"],
            detail=arm + _robust(r, lambda s: s.sanity_ratio),
        )
    )
    out.append(
        rules.above(
            f"At p = {mid_p}, d log L / d m of a {w} that is on is positive on average",
            _per_seed(rows, lambda s: s.log_on_mean),
            0.0,
            source="0.056",
            section=t["gradients"],
            detail=arm + _robust(r, lambda s: s.log_on_mean),
        )
    )
    out.append(
        rules.below(
            f"At p = {mid_p}, d log L / d m of a {w} that is off is negative on average",
            _per_seed(rows, lambda s: s.log_off_mean),
            0.0,
            source="-0.173",
            section=t["gradients"],
            detail=arm + _robust(r, lambda s: s.log_off_mean),
        )
    )
    out.append(
        rules.every(
            "The mask gradients are sharper-peaked and heavier-tailed than a normal",
            _per_seed(rows, lambda s: min(s.gradient_kurtosis)),
            lambda v: v > 0,
            "the excess kurtosis of d L / d m is > 0 at every p",
            source="by eye",
            section=t["gradients"],
            detail=arm,
            unit=" (smallest excess kurtosis)",
        )
    )
    lo, hi = SOURCE_FLIPS
    out.append(
        rules.every(
            "Along a flip path the log-loss decorrelates from the start after 5-6 flips",
            _per_seed(rows, lambda s: s.decorrelated_after),
            lambda v: lo <= v <= hi,
            f"the correlation with the start stops being significant after {lo} to {hi} flips",
            source="5-6 flips",
            section=t["paths"],
            detail=f"{arm} First flip count whose correlation with the start is not significant "
            f"at 5% over {P} paths; more paths make smaller correlations significant, so the "
            "count grows with the paths (the source does not give its number)."
            + _robust(r, lambda s: s.decorrelated_after),
            unit=" flips",
        )
    )
    crit = stats.critical_correlation(P) if P >= 3 else math.inf
    out.append(
        rules.every(
            "The log-losses of a mask and of its complement correlate positively",
            _per_seed(rows, lambda s: s.complement_correlation),
            lambda v: v > crit,
            f"r > {crit:.3f} (positive and significant at 5% over {P} paths)",
            source="positive, significant",
            section=t["paths"],
            detail=arm + _robust(r, lambda s: s.complement_correlation),
        )
    )
    threshold = rules.estimate(_per_seed(rows, lambda s: s.bias_threshold))
    gap = (
        f"gap rule: the {ws} below the highest gap of >= {config.bias_gap}x in the sorted "
        "std/|mean| under 1"
    )
    bias_detail = (
        f"{arm} Counted by the {gap}; the fixed threshold std < {config.bias_cv} |mean| counts "
        f"{threshold}, splitting a cluster of nearly constant {ws}."
        + _robust(r, lambda s: s.bias_nodes)
    )
    if toy:
        out.append(
            rules.every(
                "4 of the 20 nodes act as a bias (nearly constant over the data)",
                _per_seed(rows, lambda s: s.bias_nodes),
                lambda v: v == SOURCE_BIAS_NODES,
                f"the gap rule finds {SOURCE_BIAS_NODES} bias-like nodes",
                source="4 of 20",
                section=t["bias"],
                detail=bias_detail,
                unit=" nodes",
            )
        )
    else:
        out.append(
            rules.above(
                f"Some {ws} act as a bias (nearly constant over the data)",
                _per_seed(rows, lambda s: s.bias_nodes),
                0.0,
                source="4 of 20",
                section=t["bias"],
                detail=bias_detail,
                unit=f" {ws}",
            )
        )
    out.append(
        rules.every(
            f"Removing the least important live {w} alone barely changes the loss",
            _per_seed(rows, lambda s: 100 * s.least_harm),
            lambda v: v < 100 * HARM,
            f"the cheapest removal of one live {w} raises the loss by less than {100 * HARM:.0f}%",
            source="+1.7% (0.117 to 0.119)",
            section=t["removal"],
            detail=arm,
            unit="%",
        )
    )
    out.append(
        rules.not_measured(
            "The covariance with the start and with the end agree (symmetry under reversal)",
            "no test of equality of the two curves; the figure draws both",
            source="by eye",
            section=t["paths"],
        )
    )
    out.append(
        rules.not_measured(
            "A pruned net scores well when its nodes balance out, which its complement inherits",
            "the source's explanation; no measurement of balance is made",
            section=t["paths"],
        )
    )
    return out

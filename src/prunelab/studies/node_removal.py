"""Study ``node-removal``: a small network under random node removal (Hobson 2022, part 1).

Random node subsets (Bernoulli(p) masks), the distribution of the loss and log-loss, gradients of
the loss with respect to the node mask, paths that flip every node once, heatmaps of the output,
loss and per-node gradients, single and pairwise removal, and the same headline numbers over
several training seeds. The report is rendered by :mod:`.node_removal_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import checkpoint, data, files, models, stats, train
from ..base.progress import track
from ..engines import ensemble, masks
from ..methods import ablation
from . import toy_nets
from .base import option
from .node_removal_report import sections  # noqa: F401 (the study's report)

NAME = "node-removal"
TITLE = "Node removal: a toy network with random parts taken out"
SUMMARY = "Loss under random node subsets, mask gradients, flip paths, heatmaps, seeds."


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data, the net (if trained here) and every mask")
    checkpoint: str = option("", "a prunelab checkpoint to study instead of the toy circle net")
    data: str = option("", "data set of the checkpoint (default: its metadata, else circle)")
    circle_epochs: int = option(
        60,
        "epochs of the toy circle net when no checkpoint is given "
        "(toy-nets' default; 20 is the source's recipe)",
    )
    probabilities: tuple[float, ...] = option((0.25, 0.5, 0.75), "keep-probabilities p")
    masks: int = option(1000, "random masks per p (the source: 1000)")
    n_test: int = option(10000, "fixed test points the losses are measured on (<= the set)")
    kernel_width: float = option(0.03, "Gaussian kernel width of the density plots (source: 0.03)")
    paths: int = option(1000, "flip paths (each flips every node once)")
    grid: int = option(200, "heatmap resolution over [-2, 2]^2 (2-D inputs only)")
    gradient_grid: int = option(80, "resolution of the per-node gradient maps")
    max_pair_nodes: int = option(
        40, "all pairs among at most this many nodes (the most and least harmful alone)"
    )
    seeds: int = option(5, "training seeds for the robustness table (toy net or known recipe)")
    bias_cv: float = option(0.1, "a node acts as a bias if std/|mean| of its activation is below")
    chunk_mb: int = option(256, "memory budget of the batched mask engine, in MiB")

    QUICK: ClassVar[dict] = {
        "masks": 200,
        "n_test": 2000,
        "paths": 200,
        "grid": 80,
        "gradient_grid": 40,
        "seeds": 2,
    }

    def __post_init__(self) -> None:
        if not self.probabilities or not all(0 < p < 1 for p in self.probabilities):
            raise ValueError(f"probabilities must lie in (0, 1); got {self.probabilities}")
        for name in ("masks", "n_test", "paths", "grid", "gradient_grid", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


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
    all_on: int  # masks that keep every node
    loss_skewness: float
    loss_density: Density
    log_loss_density: Density
    log_loss_fit: stats.NormalFit
    gradient_mean: float  # over masks and nodes
    gradient_std: float
    log_gradient_mean: float  # d log L / dm = (dL/dm) / L
    log_gradient_std: float
    gradient_density: Density
    on_mean: float  # gradients of nodes that are on
    on_std: float
    off_mean: float
    off_std: float
    on_density: Density
    off_density: Density
    node_on_mean: Tensor  # [H]
    node_off_mean: Tensor  # [H]
    node_std: Tensor  # [H]
    node_on_densities: list[Density]  # per node while on (the first <= 24 nodes)
    node_off_densities: list[Density]  # per node while off

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


@dataclass
class Maps:
    """Heatmaps over [-lim, lim]^2 for 2-D inputs (rows: x1 from -lim up)."""

    lim: float
    probability: Tensor  # [G, G] P(class 1)
    loss: Tensor  # [G, G] cross-entropy against the plane's labels
    gradients: Tensor  # [H, g, g] d loss / d m_j per point, all nodes on
    data_x: Tensor  # [n, 2] a sample of the test data
    data_y: Tensor  # [n]
    reference: list[Tensor]  # true boundary polylines


@dataclass
class Removal:
    """Loss with nodes removed one at a time and in pairs."""

    single: Tensor  # [H] loss with node j removed
    pairs_checked: int
    pair_nodes: list[int]  # candidate nodes the pairs were drawn from
    best_pairs: list[tuple[int, int, float]]  # (i, j, loss), lowest losses
    worst_pairs: list[tuple[int, int, float]]


@dataclass
class SeedRow:
    """Headline numbers of one training seed."""

    seed: int
    test_accuracy: float
    full_loss: float
    mean_loss: list[float]  # per p
    log_loss_mean: list[float]
    log_loss_std: list[float]
    gradient_mean: list[float]
    decorrelated_after: int
    complement_correlation: float


@dataclass
class Results:
    model: str  # description of the studied net
    data: str
    widths: tuple[int, ...]
    hidden: list[int]
    n_test: int
    full_loss: float
    test_accuracy: float
    probabilities: list[float]
    subsets: list[Subsets]
    sanity: dict[str, float]
    paths: Paths
    removal: Removal
    activation_mean: Tensor  # [H] over the test data
    activation_std: Tensor  # [H]
    bias_nodes: list[int]
    dead_nodes: list[int]
    maps: Maps | None = None
    seeds: list[SeedRow] = field(default_factory=list)
    seeds_note: str = ""


# --- the pieces ------------------------------------------------------------------------------


def _density(values: Tensor, width: float, points: int = 300) -> Density:
    lo, hi = values.min().item(), values.max().item()
    pad = 4 * width + 0.05 * (hi - lo)
    x = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64, device=values.device)
    return Density(x, stats.kde(values, x, width))


def _or_all(part: Tensor, everything: Tensor) -> Tensor:
    """``part`` if it has at least two values, else ``everything`` (a density needs spread)."""
    return part if len(part) > 1 else everything


def _subsets(model, x, y, p: float, config: Config, g: torch.Generator, chunk: int) -> Subsets:
    H = sum(masks.hidden_sizes(model))
    # drawn on the CPU generator, then moved: the same masks on every device
    m = masks.bernoulli(config.masks, H, p, generator=g, dtype=x.dtype).to(x.device)  # (M, H)
    loss, grad = ablation.mask_losses(model, x, y, m, chunk_bytes=chunk)
    log_grad = grad / loss[:, None]
    on, off = grad[m == 1], grad[m == 0]
    w = config.kernel_width
    node_on = torch.where(m == 1, grad, torch.nan).nanmean(0)
    node_off = torch.where(m == 0, grad, torch.nan).nanmean(0)
    return Subsets(
        p=p,
        loss=loss,
        distinct=len(torch.unique(m, dim=0)),
        all_on=int(m.all(1).sum()),
        loss_skewness=stats.skewness(loss),
        loss_density=_density(loss, w),
        log_loss_density=_density(loss.log(), w),
        log_loss_fit=stats.normal_fit(loss.log()),
        gradient_mean=grad.mean().item(),
        gradient_std=grad.std(correction=0).item(),
        log_gradient_mean=log_grad.mean().item(),
        log_gradient_std=log_grad.std(correction=0).item(),
        gradient_density=_density(grad.flatten(), w),
        on_mean=on.mean().item() if len(on) else math.nan,
        on_std=on.std(correction=0).item() if len(on) > 1 else math.nan,
        off_mean=off.mean().item() if len(off) else math.nan,
        off_std=off.std(correction=0).item() if len(off) > 1 else math.nan,
        on_density=_density(_or_all(on, grad.flatten()), w),
        off_density=_density(_or_all(off, grad.flatten()), w),
        node_on_mean=node_on,
        node_off_mean=node_off,
        node_std=grad.std(0, correction=0),
        node_on_densities=[
            _density(_or_all(grad[m[:, j] == 1, j], grad[:, j]), w) for j in range(min(H, 24))
        ],
        node_off_densities=[
            _density(_or_all(grad[m[:, j] == 0, j], grad[:, j]), w) for j in range(min(H, 24))
        ],
    )


def _paths(model, x, y, config: Config, g: torch.Generator, chunk: int) -> Paths:
    H = sum(masks.hidden_sizes(model))
    walk = masks.flip_paths(config.paths, H, generator=g, dtype=x.dtype)  # (P, H+1, H)
    walk = walk.to(x.device)  # drawn on the CPU generator, as the masks above
    loss = ablation.mask_losses(model, x, y, walk.reshape(-1, H), chunk_bytes=chunk)[0]
    log_loss = loss.log().reshape(config.paths, H + 1)  # (P, H+1)
    cov = stats.path_covariance(log_loss)
    r = stats.pearson(log_loss[:, 0], log_loss[:, -1])  # the end is the start's complement
    return Paths(log_loss.mean(0), cov, r, stats.correlation_p_value(r, config.paths).item())


def _removal(model, x, y, config: Config, chunk: int) -> Removal:
    H = sum(masks.hidden_sizes(model))
    one_each = masks.removals(H, [[j] for j in range(H)], dtype=x.dtype).to(x.device)  # (H, H)
    single = ablation.mask_losses(model, x, y, one_each, chunk_bytes=chunk)[0]
    order = single.argsort().tolist()
    k = config.max_pair_nodes
    nodes = sorted(order if k >= H else order[: k // 2] + order[-(k - k // 2) :])
    pairs = [(i, j) for a, i in enumerate(nodes) for j in nodes[a + 1 :]]
    if not pairs:
        return Removal(single, 0, nodes, [], [])
    two_each = masks.removals(H, pairs, dtype=x.dtype).to(x.device)  # (pairs, H)
    loss = ablation.mask_losses(model, x, y, two_each, chunk_bytes=chunk)[0]
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


def _headline_row(
    seed: int, model: nn.Module, x: Tensor, y: Tensor, config: Config, chunk: int
) -> SeedRow:
    g = torch.Generator().manual_seed(config.seed)
    subsets = [_subsets(model, x, y, p, config, g, chunk) for p in config.probabilities]
    paths = _paths(model, x, y, config, g, chunk)
    full = train.evaluate(model, data.Dataset(x, y, "test"))
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
    )


def _subject(
    config: Config, device: torch.device
) -> tuple[nn.Sequential, data.Split, str, dict | None, int]:
    """The model, its data (both on ``device``), a description, its training recipe (if known),
    the data's seed."""
    if not config.checkpoint:
        toy = toy_nets.Config(seed=config.seed, circle_epochs=config.circle_epochs)
        model = toy_nets.circle_net(toy, device=device)
        recipe = dict(
            widths=(2, toy.circle_width, 2),
            epochs=toy.circle_epochs,
            lr=toy.circle_lr,
            batch_size=toy.batch_size,
        )
        description = "the toy-nets circle net (2-20-2 ReLU)"
        split = toy_nets.circle_split(toy, device=device)
        return model, split, description, recipe, config.seed
    model, meta = checkpoint.load(config.checkpoint)
    model = model.to(device)
    models.parse(model, method=f"node-removal of {config.checkpoint}")  # MLPs so far
    name = config.data or meta.get("data") or "circle"
    seed = meta.get("seed", config.seed)
    split = data.load(name, seed=seed).to(device=device)
    recipe = None
    if "train" in meta and "widths" in meta:
        t = meta["train"]
        recipe = dict(
            widths=tuple(meta["widths"]),
            epochs=t.get("epochs", 20),
            lr=t.get("lr", 0.01),
            batch_size=t.get("batch_size", 32),
        )
    return model, split, f"checkpoint {Path(config.checkpoint).name}", recipe, seed


def run(
    config: Config, out: str | Path, *, progress: bool = True, device: str | torch.device = "cpu"
) -> Results:
    """Every measurement of the study, on the fixed test set.

    Everything is computed on ``device`` (masks are drawn from CPU generators and moved there,
    so every device sees the same ones); the results come back on the CPU.
    """
    device = torch.device(device)
    model, split, description, recipe, split_seed = _subject(config, device)
    out = Path(out)
    # the studied net, for the interactive explorer page linked from the report
    checkpoint.save(
        out / "explorer.safetensors",
        model,
        data=split.test.name,
        seed=split_seed,
        samples=min(config.n_test, len(split.test)),
    )
    test = split.test[: min(config.n_test, len(split.test))]
    dtype = next(model.parameters()).dtype
    x, y = test.x.flatten(1).to(dtype), test.y
    chunk = config.chunk_mb * 2**20
    g = torch.Generator().manual_seed(config.seed)
    steps = len(config.probabilities) + 3 + config.seeds
    with track(steps, "node removal", enabled=progress) as advance:
        subsets = []
        for p in config.probabilities:
            subsets.append(_subsets(model, x, y, p, config, g, chunk))
            advance(status=f"p = {p}")
        paths = _paths(model, x, y, config, g, chunk)
        advance(status="flip paths")
        removal = _removal(model, x, y, config, chunk)
        advance(status="single and pair removal")
        acts = torch.cat(masks.hidden_activations(model, x), 1)  # (N, H)
        mean, std = acts.mean(0), acts.std(0, correction=0)
        dead = (acts.abs().amax(0) == 0).nonzero().flatten().tolist()
        bias = ((std < config.bias_cv * mean.abs()) & (mean.abs() > 0)).nonzero().flatten().tolist()
        maps = None
        if test.features == 2:
            maps = _maps(model, split.train, test, config)
        advance(status="heatmaps")
        seeds, note = [], ""
        if recipe is None:
            note = "The checkpoint carries no training recipe, so no other seeds were trained."
        else:
            nets = [
                models.mlp(recipe["widths"], seed=config.seed + k).to(device)
                for k in range(config.seeds)
            ]
            ensemble.fit_many(
                nets,
                split.train,
                seeds=[config.seed + k for k in range(config.seeds)],
                epochs=recipe["epochs"],
                lr=recipe["lr"],
                batch_size=recipe["batch_size"],
                progress=False,
            )
            for k, net in enumerate(nets):
                seeds.append(_headline_row(config.seed + k, net.to(dtype), x, y, config, chunk))
                advance(status=f"seed {config.seed + k}")
    full = train.evaluate(model, data.Dataset(x, y, test.name, test.classes))
    lo, hi = min(config.probabilities), max(config.probabilities)
    s_lo, s_hi = subsets[config.probabilities.index(lo)], subsets[config.probabilities.index(hi)]
    mid = subsets[len(subsets) // 2]
    H = sum(masks.hidden_sizes(model))
    sanity = {
        "p_low": lo,
        "p_high": hi,
        "p_gradient": mid.p,
        "expected extra nodes": (hi - lo) * H,
        "mean gradient x extra nodes": mid.gradient_mean * (hi - lo) * H,
        "mean loss difference": s_hi.mean_loss - s_lo.mean_loss,
    }
    widths = (
        models.parse(model).in_features,
        *masks.hidden_sizes(model),
        models.parse(model).out_features,
    )
    results = Results(
        model=description,
        data=test.name,
        widths=widths,
        hidden=masks.hidden_sizes(model),
        n_test=len(y),
        full_loss=full["loss"],
        test_accuracy=full["accuracy"],
        probabilities=list(config.probabilities),
        subsets=subsets,
        sanity=sanity,
        paths=paths,
        removal=removal,
        activation_mean=mean,
        activation_std=std,
        bias_nodes=bias,
        dead_nodes=dead,
        maps=maps,
        seeds=seeds,
        seeds_note=note,
    )
    return files.to_cpu(results)


def headline(results: Results) -> dict[str, float]:
    out = {"full loss": results.full_loss}
    for s in results.subsets:
        out[f"mean loss, p={s.p}"] = s.mean_loss
    out["flips until decorrelated"] = results.paths.covariance.decorrelated_after
    out["complement log-loss correlation"] = results.paths.complement_correlation
    return out

"""Study ``obd-vs-magnitude``: weight saliency by magnitude vs Optimal Brain Damage on MNIST.

The source (``sources/003``) trains a 4-layer fully connected net of about 50K weights on MNIST,
prunes it in 1% steps without retraining, ranking weights by magnitude or by OBD's saliency
``h w^2 / 2``, layer by layer or over all layers at once, and repeats the all-layer OBD arm on a
model trained with dropout (keep probability 0.8). Here: ``mnist5k`` and a 784-60-40-20-10 ReLU
net (50,440 weights), trained with and without dropout over several seeds; the same four arms
plus the Fisher and Hutchinson approximations of OBD, SNIP and random scores as extra (global)
arms; finer steps at heavy sparsity for the best arms; fine-tuning at selected sparsities; and
two measurements of the source's explanation (the Hessian's cross terms): the off-diagonal share
of exact layer Hessian blocks and of the whole Hessian, and OBD's predicted against the actual
loss increase. The report is rendered by :mod:`.obd_vs_magnitude_report`.
Findings and what the runs showed: ``docs/obd-vs-magnitude.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import data, files, models, ops, train
from ..base.executor import SERIAL, Executor, Unit, run_units
from ..engines import ensemble, hessian_blocks
from ..methods import criteria, curves, surgery
from ..methods import findings as findings_
from ..methods.findings import Finding
from .base import option
from .obd_vs_magnitude_report import sections  # noqa: F401 (the study's report)

NAME = "obd-vs-magnitude"
TITLE = "OBD vs magnitude: pruning the weights of an MNIST net without retraining"
SUMMARY = "Magnitude vs OBD saliency, layer-wise vs global, with and without dropout, to 99.9%."
KINDS = ("no dropout", "dropout")


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data split, the initialisations and the training order")
    widths: tuple[int, ...] = option(
        (784, 60, 40, 20, 10), "layer widths: 4 Linear layers, 50,440 weights (the source: ~50K)"
    )
    dropout: float = option(
        0.2, "dropout of the dropout model (keep probability 0.8, as the source)"
    )
    seeds: int = option(3, "training seeds per model (mean and 95% t-interval over them)")
    n_train: int = option(4000, "training images of mnist5k (at most 4000)")
    n_test: int = option(1000, "test images the curves are measured on (at most 1000)")
    epochs: int = option(40, "training epochs (train loss ~0.005 without dropout: a minimum)")
    lr: float = option(1e-3, "Adam learning rate")
    batch_size: int = option(64, "mini-batch size")
    score_samples: int = option(4000, "training images the saliencies and Hessians are taken on")
    criteria: tuple[str, ...] = option(
        ("magnitude", "obd"), "criteria ranked both layer-wise and globally (the source's arms)"
    )
    extra: tuple[str, ...] = option(
        ("obd_fisher", "obd_hutchinson", "snip", "random"), "extra criteria, ranked globally"
    )
    step: float = option(0.01, "sparsity step of the main sweep, 0 to 99% (the source: 1%)")
    fine_arms: int = option(2, "arms per model that get the fine sweep at heavy sparsity")
    fine_start: float = option(0.9, "the fine sweep starts here ...")
    fine_step: float = option(0.001, "... and goes to 99.9% in these steps")
    finetune_levels: tuple[float, ...] = option(
        (0.5, 0.8, 0.9, 0.95, 0.98), "sparsities that are fine-tuned (global arms)"
    )
    finetune_criteria: tuple[str, ...] = option(
        ("magnitude", "obd"), "criteria whose global masks are fine-tuned"
    )
    finetune_epochs: int = option(5, "fine-tuning epochs (masks stay in force)")
    finetune_lr: float = option(5e-4, "fine-tuning Adam learning rate")
    ratio_samples: int = option(1000, "training images of the whole-Hessian off-diagonal estimate")
    ratio_probes: int = option(32, "Hessian-vector products of that estimate")
    prediction_max: float = option(0.8, "OBD's predicted vs actual loss increase up to here")
    convnet: bool = option(
        True, "also run every arm on LeNet-5 (conv weights pruned with the Linear ones)"
    )
    lenet5_epochs: int = option(12, "LeNet-5: training epochs (Adam, batch size as above)")
    lenet5_lr: float = option(2e-3, "LeNet-5: Adam learning rate")
    lenet5_finetune_epochs: int = option(2, "LeNet-5: fine-tuning epochs")
    lenet5_score_samples: int = option(
        1000, "LeNet-5: training images its saliencies and Hessian blocks are taken on"
    )
    lenet5_extra: tuple[str, ...] = option(
        ("obd_fisher", "obd_hutchinson", "snip", "random"), "LeNet-5: extra criteria (global)"
    )

    QUICK: ClassVar[dict] = {
        "seeds": 2,
        "n_train": 1000,
        "n_test": 500,
        "epochs": 8,
        "score_samples": 500,
        "step": 0.05,
        "fine_arms": 1,
        "fine_step": 0.01,
        "finetune_levels": (0.8, 0.95),
        "finetune_criteria": ("obd",),
        "finetune_epochs": 1,
        "ratio_samples": 200,
        "ratio_probes": 4,
        "prediction_max": 0.6,
        "lenet5_epochs": 3,
        "lenet5_finetune_epochs": 1,
        "lenet5_score_samples": 300,
        "lenet5_extra": ("obd_fisher", "snip", "random"),
    }

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or self.widths[0] != 784 or self.widths[-1] != 10:
            raise ValueError(f"widths must run from 784 to 10 (mnist5k); got {self.widths}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (for the intervals); got {self.seeds}")
        for name in (
            "n_train",
            "n_test",
            "epochs",
            "score_samples",
            "ratio_samples",
            "lenet5_epochs",
            "lenet5_finetune_epochs",
            "lenet5_score_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.lenet5_lr > 0:
            raise ValueError(f"lenet5_lr must be > 0; got {self.lenet5_lr}")
        if self.ratio_probes < 2:
            raise ValueError(f"ratio_probes must be >= 2; got {self.ratio_probes}")
        for name in ("step", "fine_step"):
            if not 0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5); got {getattr(self, name)}")
        if not 0 < self.fine_start < 1 or not 0 < self.prediction_max < 1:
            raise ValueError("fine_start and prediction_max must be in (0, 1)")
        if not all(0 < s < 1 for s in self.finetune_levels):
            raise ValueError(f"finetune_levels must lie in (0, 1); got {self.finetune_levels}")
        known = sorted(criteria.WEIGHT_CRITERIA)
        for name in (*self.criteria, *self.extra, *self.lenet5_extra, *self.finetune_criteria):
            if name not in criteria.WEIGHT_CRITERIA:
                raise ValueError(f"criterion {name!r}: choose from {known}")
        if "obd" not in self.criteria:
            raise ValueError("criteria must include 'obd' (the source's main arm)")


@dataclass
class Curve:
    """Test loss and accuracy of one arm (criterion, scope) of one model kind, every seed."""

    kind: str  # "no dropout" or "dropout"
    criterion: str
    scope: str  # "global" or "layer"
    levels: Tensor  # [L] sparsities (fraction of the weights pruned; biases kept)
    accuracy: Tensor  # [S, L]
    loss: Tensor  # [S, L]

    @property
    def label(self) -> str:
        return f"{self.criterion} ({self.scope})"


@dataclass
class FineTuned:
    """Test accuracy right after pruning and after fine-tuning with the masks in force."""

    kind: str
    criterion: str
    levels: list[float]
    before: Tensor  # [S, F]
    after: Tensor  # [S, F]


@dataclass
class CrossTerms:
    """How far one model kind's Hessian is from diagonal, per seed, and what OBD predicts."""

    kind: str
    last_layer: list[float]  # ||offdiag||_F / ||H||_F of the last layer's block (weights, bias)
    third_layer: list[float]  # the same for a second layer (the MLP: the one before the last)
    network: list[float]  # the whole Hessian, estimated (Hutchinson)
    network_se: list[float]  # standard error of network^2
    zero_saliency: list[float]  # fraction of the weights whose OBD saliency is exactly 0
    levels: Tensor  # [P] sparsities of the prediction check (global OBD)
    predicted: Tensor  # [S, P] sum of the pruned saliencies (OBD's predicted loss increase)
    actual: Tensor  # [S, P] actual increase of the training loss (same samples)
    second: str = "the layer before it"  # which layer third_layer measures, in words


@dataclass
class Results:
    """One network's arms; the MLP's ``convnet`` holds the same for LeNet-5."""

    widths: tuple[int, ...]
    weights: int
    n_train: int
    n_test: int
    score_samples: int
    seeds: list[int]
    train_loss: dict[str, list[float]]  # kind -> per seed (final epoch, running mean)
    test_accuracy: dict[str, list[float]]
    curves: list[Curve]
    fine: list[Curve]
    fine_tuned: list[FineTuned]
    cross_terms: list[CrossTerms]
    arch: str = "MLP"  # "MLP" or "LeNet-5"
    conv_weights: int = 0  # of ``weights``, those in Conv2d kernels
    convnet: Results | None = None

    def curve(self, kind: str, criterion: str, scope: str, *, fine: bool = False) -> Curve | None:
        for c in self.fine if fine else self.curves:
            if (c.kind, c.criterion, c.scope) == (kind, criterion, scope):
                return c
        return None


# --- the pieces ------------------------------------------------------------------------------


def _levels(start: float, stop: float, step: float) -> list[float]:
    """``start, start + step, ..., <= stop`` rounded to 6 decimals (exact counts downstream)."""
    n = math.floor((stop - start) / step + 1e-9)
    return [round(start + i * step, 6) for i in range(n + 1)]


def _arms(config: Config, extra: tuple[str, ...]) -> list[tuple[str, str]]:
    main = [(c, s) for c in config.criteria for s in ("layer", "global")]
    return main + [(c, "global") for c in extra if c not in config.criteria]


@dataclass(frozen=True)
class Arch:
    """What differs between the study's two networks: how they are built and trained, and
    which layers' exact Hessian blocks are measured."""

    name: str  # "MLP" or "LeNet-5"
    build: Callable[[int, float], nn.Module]  # (seed, dropout) -> an untrained net
    epochs: int
    lr: float
    finetune_epochs: int
    score_samples: int  # training images of the saliencies and the Hessian blocks
    extra: tuple[str, ...]  # extra criteria, ranked globally
    blocks: tuple[int, ...]  # layer indices: the last, then the second measured
    second: str  # the second measured layer, in words


def _archs(config: Config) -> list[Arch]:
    mlp = Arch(
        "MLP",
        lambda seed, p: models.mlp(config.widths, dropout=p, seed=seed),
        config.epochs,
        config.lr,
        config.finetune_epochs,
        config.score_samples,
        config.extra,
        (-1, -2) if len(config.widths) > 2 else (-1,),
        "the layer before it",
    )
    if not config.convnet:
        return [mlp]
    lenet = Arch(
        "LeNet-5",
        lambda seed, p: models.lenet5(dropout=p, seed=seed),
        config.lenet5_epochs,
        config.lenet5_lr,
        config.lenet5_finetune_epochs,
        config.lenet5_score_samples,
        config.lenet5_extra,
        (-1, 1),
        "the second conv layer",
    )
    return [mlp, lenet]


def _train(config: Config, split: data.Split, arch: Arch, dropout: float):
    """``config.seeds`` nets of ``arch`` trained on the device of ``split`` (MLPs together with
    fit_many, convnets one by one with train.fit)."""
    seeds = [config.seed + k for k in range(config.seeds)]
    device = split.train.x.device
    nets = [arch.build(s, dropout).to(device) for s in seeds]
    fit = dict(epochs=arch.epochs, lr=arch.lr, batch_size=config.batch_size, progress=False)
    if arch.name == "MLP":
        return nets, ensemble.fit_many(nets, split.train, seeds=seeds, **fit)
    return nets, [
        train.fit(net, split.train, seed=s, **fit) for net, s in zip(nets, seeds, strict=True)
    ]


def _finetune(config, split, arch: Arch, nets, scores, kind: str, crit: str) -> FineTuned:
    """Global masks at each fine-tune level, then every (seed, level) copy trained with its
    mask in force (MLPs all at once with fit_many)."""
    copies, masks, before = [], [], []
    for k, net in enumerate(nets):
        for level in config.finetune_levels:
            m = surgery.prune_weights(net, scores[k][crit], level, scope="global")
            pruned = surgery.strip(net, m)
            before.append(train.evaluate(pruned, split.test)["accuracy"])
            copies.append(pruned)
            masks.append(m)
    seeds = [config.seed + i for i in range(len(copies))]
    fit = dict(
        epochs=arch.finetune_epochs,
        lr=config.finetune_lr,
        batch_size=config.batch_size,
        progress=False,
    )
    if arch.name == "MLP":
        stacked = {n: torch.stack([m[n] for m in masks]) for n in masks[0]}
        ensemble.fit_many(copies, split.train, seeds=seeds, weight_masks=stacked, **fit)
    else:
        for c, m, s in zip(copies, masks, seeds, strict=True):
            train.fit(c, split.train, seed=s, weight_masks=m, **fit)
    after = [train.evaluate(c, split.test)["accuracy"] for c in copies]
    shape = (len(nets), len(config.finetune_levels))
    return FineTuned(
        kind,
        crit,
        list(config.finetune_levels),
        torch.tensor(before, dtype=torch.float64).reshape(shape),
        torch.tensor(after, dtype=torch.float64).reshape(shape),
    )


def _cross_terms(config, arch: Arch, nets, scores, x, y, kind: str) -> CrossTerms:
    levels = _levels(0.0, config.prediction_max, config.step)
    blocks: list[list[float]] = [[], []]
    network, network_se, zero, predicted, actual = [], [], [], [], []
    for k, net in enumerate(nets):
        for j, layer in enumerate(arch.blocks):
            H = hessian_blocks.layer_hessian(net, x, y, layer)
            blocks[j].append(hessian_blocks.offdiagonal_ratio(H))
        g = torch.Generator().manual_seed(config.seed + k)
        n = config.ratio_samples
        r, se = hessian_blocks.offdiagonal_ratio_estimate(
            net, x[:n], y[:n], probes=config.ratio_probes, generator=g
        )
        network.append(r)
        network_se.append(se)
        s = [v for name, v in scores[k]["obd"].items() if name.endswith("weight")]
        zero.append(sum(int((v == 0).sum()) for v in s) / sum(v.numel() for v in s))
        sweep = surgery.sparsity_sweep(net, scores[k]["obd"], levels, x, y, scope="global")
        predicted.append(sweep.removed_score)
        actual.append(sweep.loss - sweep.loss[0])
    return CrossTerms(
        kind,
        blocks[0],
        blocks[1],
        network,
        network_se,
        zero,
        torch.tensor(levels, dtype=torch.float64),
        torch.stack(predicted),
        torch.stack(actual),
        arch.second,
    )


# --- the source's observations ----------------------------------------------------------------

ACCURACY = "Accuracy against sparsity, no retraining"
HEAVY = "Even more pruning"
DROPOUT = "Dropout"
CROSS = "Testing the explanation: the Hessian's cross terms"
LENET = "The same on a convnet: LeNet-5"
LENET_CROSS = "LeNet-5: the Hessian's cross terms"


_HEAVY = 0.9 - 1e-6  # heavy pruning: levels from 90% on (levels may be stored as float32)


def findings(results: Results, config: Config) -> list[Finding]:
    """The source's observations on the MLP and (``results.convnet``) on LeNet-5, each decided
    by a paired difference over seeds (accuracy differences in points)."""
    out = _observations(results, config, "", (ACCURACY, DROPOUT, CROSS))
    if results.convnet is not None:
        out += _observations(results.convnet, config, "LeNet-5: ", (LENET, LENET, LENET_CROSS))
    out.append(
        findings_.not_measured(
            "Low-magnitude weights scale down the signal the layers above rely on (the source's "
            "reason why magnitude pruning fails).",
            "a conjecture of the source; no arm measures the scale of the signals passed on",
        )
    )
    return out


def _observations(r: Results, config: Config, prefix: str, where: tuple[str, ...]) -> list:
    accuracy, dropout, cross = where
    base, c = KINDS[0], r.curve
    out = []
    obd_g = c(base, "obd", "global")
    if "magnitude" in config.criteria:
        mag = [c(base, "magnitude", s) for s in ("layer", "global")]
        obd = [c(base, "obd", s) for s in ("layer", "global")]
        diffs = torch.stack(
            [
                curves.area_difference(o.accuracy, m.accuracy, o.levels)
                for o, m in zip(obd, mag, strict=True)
            ]
        ).mean(0)
        drops = ", ".join(
            f"{m.label}: 1 point at {_pct(curves.drop_level(m.accuracy, m.levels, 0.01))}, 10 "
            f"points at {_pct(curves.drop_level(m.accuracy, m.levels, 0.10))}"
            for m in [*mag, *obd]
        )
        out.append(
            _above(
                prefix + "Magnitude pruning degrades steadily without retraining, worse than OBD.",
                100 * diffs,
                source="magnitude 'flat out decreases'; OBD above it",
                detail="Measured: mean accuracy over the levels above 0, OBD minus magnitude in "
                f"the same scope (mean of both scopes). The mean accuracy falls below the "
                f"unpruned model's by {drops}.",
                section=accuracy,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
    for crit in config.criteria:
        g, layer = c(base, crit, "global"), c(base, crit, "layer")
        heavy = curves.band_mean(g.accuracy - layer.accuracy, g.levels, _HEAVY)
        out.append(
            _above(
                prefix + f"Global ranking beats layer-wise ranking ({crit}).",
                100 * curves.area_difference(g.accuracy, layer.accuracy, g.levels),
                source="all-layer pruning does better than layer-wise",
                detail=f"Measured: mean accuracy over the levels above 0, {crit} global minus "
                f"{crit} layer-wise. At 90-99% sparsity the global arm is "
                f"{100 * heavy.mean().item():+.1f} points on average.",
                section=accuracy,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
    arms = [a for a in r.curves if a.kind == base]
    areas = torch.stack([curves.area(a.accuracy, a.levels) for a in arms])  # [K, S]
    k = arms.index(obd_g)
    diff, j = curves.rival_difference(areas, k, [i for i in range(len(arms)) if i != k])
    ranked = sorted(range(len(arms)), key=lambda i: -areas[i].mean().item())
    out.append(
        _above(
            prefix + "Global OBD is the best arm.",
            100 * diff,
            source="'all layer OBD based saliency for the win'",
            detail=f"Measured: mean accuracy over the levels above 0, global OBD minus the best "
            f"other arm ({arms[j].label}). Ranking: "
            + ", ".join(f"{arms[i].label} {100 * areas[i].mean().item():.1f}%" for i in ranked)
            + ".",
            section=accuracy,
            unit=" points",
            bounds=(-100.0, 100.0),  # accuracy points
        )
    )
    drop_g = c(KINDS[1], "obd", "global")
    diff = drop_g.accuracy - obd_g.accuracy  # [S, L] dropout minus no dropout (seed pairs)
    crossing = curves.crossing_level(diff, obd_g.levels)
    early = curves.band_mean(-diff, obd_g.levels, 0.0, 0.5)
    out.append(
        _above(
            prefix + "The dropout model is worse at first (global OBD).",
            100 * early,
            source="dropout model below at first",
            detail="Measured: mean accuracy over the levels in (0, 50%], no dropout minus "
            f"dropout. Unpruned test accuracy: no dropout "
            f"{100 * obd_g.accuracy[:, 0].mean():.1f}%, dropout "
            f"{100 * drop_g.accuracy[:, 0].mean():.1f}%.",
            section=dropout,
            unit=" points",
            bounds=(-100.0, 100.0),  # accuracy points
        )
    )
    fine_n, fine_d = c(base, "obd", "global", fine=True), c(KINDS[1], "obd", "global", fine=True)
    if fine_n is not None and fine_d is not None:  # the fine sweep covers the heavy end
        heavy = (fine_d.accuracy - fine_n.accuracy).mean(1)
        band = f"{config.fine_start:.0%}-99.9% (fine sweep)"
    else:
        heavy = curves.band_mean(diff, obd_g.levels, _HEAVY)
        band = "90-99%"
    cross_text = (
        "the dropout model is never behind on average in the main sweep"
        if crossing == obd_g.levels[0].item()
        else "the mean curves cross (dropout ahead from there on) at "
        + ("no level" if math.isnan(crossing) else f"{crossing:.0%}")
        + " of the main sweep"
    )
    out.append(
        _above(
            prefix + "The dropout model is better under heavy pruning (global OBD).",
            100 * heavy,
            source="dropout model ahead after a crossing point",
            detail=f"Measured: mean accuracy over {band}, dropout minus no dropout; {cross_text}.",
            section=dropout,
            unit=" points",
            bounds=(-100.0, 100.0),  # accuracy points
        )
    )
    terms = {t.kind: t for t in r.cross_terms}
    n, d = terms[KINDS[0]], terms[KINDS[1]]
    rel = {t.kind: (t.actual[:, -1] / t.predicted[:, -1]).mean().item() for t in (n, d)}
    out.append(
        _above(
            prefix + "Dropout strengthens the Hessian's cross terms, which OBD neglects.",
            torch.tensor(d.last_layer, dtype=torch.float64)
            - torch.tensor(n.last_layer, dtype=torch.float64),
            source="'dropout strongly encourages cross term dependency'",
            detail="Measured: off-diagonal share ||H - diag H||_F / ||H||_F of the last layer's "
            f"block, dropout minus none. Last layer {_fmt(n.last_layer)} (no dropout) vs "
            f"{_fmt(d.last_layer)} (dropout); {n.second} {_fmt(n.third_layer)} vs "
            f"{_fmt(d.third_layer)}; whole network (estimated) {_fmt(n.network)} vs "
            f"{_fmt(d.network)}. Actual / OBD-predicted training-loss increase at "
            f"{config.prediction_max:.0%}: {rel[KINDS[0]]:.2f} vs {rel[KINDS[1]]:.2f}.",
            section=cross,
        )
    )
    return out


def _pct(level: float) -> str:
    return "no level" if math.isnan(level) else f"{level:.0%}"


def _fmt(values: list[float]) -> str:
    return str(findings_.estimate(values)) if values else "-"


# --- the study ---------------------------------------------------------------------------------


def run(
    config: Config,
    out: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    executor: Executor = SERIAL,
) -> Results:
    """Train, score, sweep, fine-tune and measure the Hessian's cross terms, for the MLP and
    (``config.convnet``) for LeNet-5 on the same data; the LeNet-5 results are the MLP
    results' ``convnet``.

    Everything is computed on ``device`` (initialisations and data are drawn on the CPU and
    moved there; the criteria's and probes' generators stay on the CPU); the results come back
    on the CPU. Each (network, with or without dropout) is a unit of work run by ``executor``
    (stored units are not computed again).
    """
    archs = _archs(config)
    where = str(torch.device(device))
    todo = [
        Unit(f"{arch.name}-{kind}", arm_unit, dict(config=config, arch=arch.name, kind=kind,
                                                   device=where))
        for arch in archs
        for kind in KINDS
    ]  # fmt: skip
    parts = run_units(todo, out, executor=executor, progress=progress, description=NAME)
    results = [
        _study(config, parts[i * len(KINDS) : (i + 1) * len(KINDS)]) for i in range(len(archs))
    ]
    main = results[0]
    main.convnet = results[1] if len(results) > 1 else None
    return main


def arm_unit(config: Config, arch: str, kind: str, device: str) -> dict:
    """One unit of work: every arm of one network trained with (``kind``) or without dropout.

    The unit is not one seed: the MLP seeds train together (``ensemble.fit_many``), which
    equals separate fits only to float rounding.
    """
    split = data.load("mnist5k", seed=config.seed, n_train=config.n_train, n_test=config.n_test)
    split = split.to(device=torch.device(device))
    (a,) = [a for a in _archs(config) if a.name == arch]
    dropout = dict(zip(KINDS, (0.0, config.dropout), strict=True))[kind]
    return files.to_cpu(_kind(config, split, a, kind, dropout))


def _kind(config: Config, split: data.Split, arch: Arch, kind: str, p: float) -> dict:
    """Every arm of one network with dropout ``p``: the pieces of its :class:`Results`."""
    train_x, train_y = split.train.x, split.train.y
    xs, ys = train_x[: arch.score_samples], train_y[: arch.score_samples]
    xt, yt = split.test.x, split.test.y
    coarse = _levels(0.0, 0.99, config.step)
    fine_levels = _levels(config.fine_start, 0.999, config.fine_step)
    arms = _arms(config, arch.extra)
    names = sorted({c for c, _ in arms} | set(config.finetune_criteria) | {"obd"})
    curves, fine, tuned = [], [], []
    nets, histories = _train(config, split, arch, p)
    train_loss = [h.loss[-1] for h in histories]
    test_accuracy = [train.evaluate(net, split.test)["accuracy"] for net in nets]
    scores = []  # per seed: {criterion: {param: Tensor}}
    for k, net in enumerate(nets):
        g = torch.Generator().manual_seed(config.seed + k)
        scores.append({c: criteria.weight_scores(c, net, xs, ys, generator=g) for c in names})
    for crit, scope in arms:
        sweeps = [
            surgery.sparsity_sweep(net, scores[k][crit], coarse, xt, yt, scope=scope)
            for k, net in enumerate(nets)
        ]
        curves.append(_curve(kind, crit, scope, coarse, sweeps))
    heavy = torch.tensor(coarse) >= config.fine_start
    best = sorted(curves, key=lambda cv: cv.accuracy[:, heavy].mean().item(), reverse=True)
    chosen = {(cv.criterion, cv.scope) for cv in best[: config.fine_arms]}
    chosen.add(("obd", "global"))  # the source's "even more pruning" arm, always
    for crit, scope in sorted(chosen):
        sweeps = [
            surgery.sparsity_sweep(net, scores[k][crit], fine_levels, xt, yt, scope=scope)
            for k, net in enumerate(nets)
        ]
        fine.append(_curve(kind, crit, scope, fine_levels, sweeps))
    for crit in config.finetune_criteria:
        tuned.append(_finetune(config, split, arch, nets, scores, kind, crit))
    view = ops.parse(nets[0])
    return dict(
        kind=kind,
        train_loss=train_loss,
        test_accuracy=test_accuracy,
        curves=curves,
        fine=fine,
        tuned=tuned,
        terms=_cross_terms(config, arch, nets, scores, xs, ys, kind),
        widths=(view.layers[0].in_units, *view.hidden_sizes, view.out_features),
        weights=sum(layer.weight.numel() for layer in view.layers),
        conv_weights=sum(layer.weight.numel() for layer in view.layers if layer.conv),
        n_train=len(train_y),
        n_test=len(yt),
        score_samples=len(ys),
        arch=arch.name,
    )


def _study(config: Config, parts: list[dict]) -> Results:
    """One network's results from its parts (one per kind, in ``KINDS`` order)."""
    last = parts[-1]
    return Results(
        widths=last["widths"],
        weights=last["weights"],
        n_train=last["n_train"],
        n_test=last["n_test"],
        score_samples=last["score_samples"],
        seeds=[config.seed + k for k in range(config.seeds)],
        train_loss={p["kind"]: p["train_loss"] for p in parts},
        test_accuracy={p["kind"]: p["test_accuracy"] for p in parts},
        curves=[c for p in parts for c in p["curves"]],
        fine=[c for p in parts for c in p["fine"]],
        fine_tuned=[t for p in parts for t in p["tuned"]],
        cross_terms=[p["terms"] for p in parts],
        arch=last["arch"],
        conv_weights=last["conv_weights"],
    )


def _curve(kind, crit, scope, levels, sweeps) -> Curve:
    return Curve(
        kind,
        crit,
        scope,
        torch.tensor(levels, dtype=torch.float64),
        torch.stack([s.accuracy for s in sweeps]),
        torch.stack([s.loss for s in sweeps]),
    )


def headline(results: Results) -> dict[str, float]:
    out = {}
    for kind in KINDS:
        out[f"test accuracy ({kind})"] = sum(results.test_accuracy[kind]) / len(results.seeds)
    base = KINDS[0]
    for crit, scope in (("magnitude", "layer"), ("magnitude", "global"), ("obd", "layer")):
        cv = results.curve(base, crit, scope)
        if cv is not None:
            out[f"accuracy at 90%, {crit} {scope}"] = _at(cv, 0.9)
    for kind in KINDS:
        out[f"accuracy at 90%, obd global ({kind})"] = _at(
            results.curve(kind, "obd", "global"), 0.9
        )
    for kind in KINDS:
        fine = results.curve(kind, "obd", "global", fine=True)
        if fine is not None:
            out[f"accuracy at 99%, obd global ({kind})"] = _at(fine, 0.99)
    for t in results.cross_terms:
        out[f"last-layer off-diagonal share ({t.kind})"] = sum(t.last_layer) / len(t.last_layer)
    c = results.convnet
    if c is not None:
        out["LeNet-5: test accuracy (no dropout)"] = sum(c.test_accuracy[KINDS[0]]) / len(c.seeds)
        for crit in ("magnitude", "obd"):
            out[f"LeNet-5: accuracy at 90%, {crit} global"] = _at(
                c.curve(KINDS[0], crit, "global"), 0.9
            )
    return out


def _at(curve: Curve, level: float) -> float:
    """Mean accuracy over seeds at the level nearest to ``level``."""
    i = int((curve.levels - level).abs().argmin())
    return curve.accuracy[:, i].mean().item()


def _above(claim, values, threshold: float = 0.0, **kw) -> Finding:
    """``findings.above``, a "differs" saying whether it is the same direction or not."""
    return findings_.noted(findings_.above(claim, values, threshold, **kw), threshold)

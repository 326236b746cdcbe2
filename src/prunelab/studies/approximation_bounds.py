"""Study ``approximation-bounds``: are coreset pruning bounds useful? (Gordon 2021).

LeNet-300-100 is trained on ``mnist5k`` under three regimes (plain, dropout, weight decay) and
its final layer is pruned in two ways: the neurons of the last hidden layer with the
data-independent coreset of Mussay et al. (2020) (an additive bound on the logits) and the
weights into the output with the sensitivity sampling of Baykal et al. (2019b, SiPP; a
relative bound per signed part). Epsilon-first: the bound is chosen to guarantee 50 / 75 / 90%
of the correct dev labels, and the theorem says how many samples that takes. Sparsity-first:
the sample count is chosen for a target size, and the theorem says what it guarantees. Both are
compared with what happens (errors, labels kept), with L0 and magnitude heuristics before and
after fine-tuning, with inputs drawn from the theorem's ball, and after scaling the final layer.
The report is rendered by :mod:`.approximation_bounds_report`.

The *head* is a network's last two dense layers (:func:`prunelab.coreset_eval.split_head`):
everything before it (LeNet-300-100's first layer; a convnet's convolutions and earlier
classifier layers) is the frozen *extractor*, run once per input set, and pruning, L0 training
and fine-tuning act on the head and those features. So the study takes any checkpoint whose
last layers are dense (``checkpoint``), and a VGG arm repeats it on a VGG (``arch``, by default
a thin VGG-16 on mnist5k; the source's VGG-16 on CIFAR-10 with ``--arch vgg16 --width 1
--data cifar10 --data-root DIR --device cuda``). A layer-by-layer arm prunes every dense layer in
turn (:func:`prunelab.coreset.layer_by_layer`; the source's Figure 1, right).

Training regimes. The source names easy, moderate and difficult training circumstances and
does not define them in its text; we train under three named regimes instead, plain (Adam,
no regularisation), dropout (0.5 in the hidden layers, the rate of the source's Figure 7) and
weight decay, and do not map them onto the source's names. The findings' rules and
thresholds: ``docs/approximation-bounds.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import checkpoint, data, files, models, ops, train
from ..base.executor import SERIAL, Executor, Unit, run_units
from ..base.progress import track
from ..engines import ensemble
from ..methods import bound_checks, coreset, coreset_eval, guarantees, l0
from ..methods import findings as rules
from ..methods.findings import Finding
from . import approximation_bounds_report as titles
from .approximation_bounds_report import sections  # noqa: F401 (the study's report)
from .base import option

NAME = "approximation-bounds"
TITLE = "When are neural pruning approximation bounds useful?"
SUMMARY = (
    "Coreset bounds for pruning LeNet-300-100's final layer against observed errors, samples "
    "and sparsity; heuristics and the fine-tuning gap; ball inputs; scaling."
)
WIDTHS = (784, 300, 100, 10)  # LeNet-300-100
VGG_ARCHS = ("vgg11", "vgg13", "vgg16", "vgg19")
REGIMES = ("plain", "dropout", "weight_decay")
NEURONS, WEIGHTS = "neurons (Mussay coreset)", "weights (SiPP sampling)"


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data split, the nets (seed, seed+1, ...) and all sampling")
    seeds: int = option(3, "training seeds per regime")
    regimes: tuple[str, ...] = option(REGIMES, f"training regimes, from {REGIMES}")
    epochs: int = option(10, "training epochs of LeNet-300-100")
    lr: float = option(1e-3, "Adam learning rate (training, L0 and fine-tuning)")
    batch_size: int = option(128, "mini-batch size")
    dropout: float = option(0.5, "dropout rate of the 'dropout' regime (the source: 0.5)")
    weight_decay: float = option(5e-4, "weight decay of the 'weight_decay' regime")
    n_train: int = option(4000, "training images (the first of mnist5k's 4000 after the shuffle)")
    n_dev: int = option(1000, "dev images: the held-out part of mnist5k (<= 1000)")
    shares: tuple[float, ...] = option(
        (0.5, 0.75, 0.9), "epsilon-first: shares of the correct dev labels to guarantee"
    )
    delta: float = option(0.1, "failure probability of every bound (per input)")
    rule: str = option("half_gap", "label-consistency rule: 'half_gap' (the source) or 'pairwise'")
    draws: int = option(10, "random draws of every sampling (mean and std over them)")
    sensitivity_points: int = option(500, "training images forming SiPP's sensitivity batch S")
    keep: tuple[float, ...] = option(
        (0.05, 0.1, 0.25, 0.5), "sparsity-first: kept fraction of neurons / weights"
    )
    l0_penalties: tuple[float, ...] = option(
        (0.01, 0.03, 0.05), "L0 penalties (per expected open node, in units of mean CE)"
    )
    l0_epochs: int = option(8, "epochs of L0 training of the last hidden layer's gates")
    l0_lr: float = option(0.01, "Adam learning rate of L0 training (gates and head weights)")
    l0_batch_size: int = option(64, "mini-batch size of L0 training")
    finetune_epochs: int = option(5, "fine-tuning epochs after pruning (the head only)")
    ball_points: int = option(1000, "inputs drawn from the theorem's L2 ball (Figure 11)")
    alphas: tuple[float, ...] = option(
        (0.1, 0.3, 1.0, 3.0, 10.0), "factors on the final layer's weights (Figure 12)"
    )
    alpha_share: float = option(0.75, "guaranteed share used in the scaling experiment")
    max_samples: float = option(1e12, "do not sample beyond this many draws (sparsity taken as 0)")
    layer_eps: tuple[float, ...] = option(
        (1.0, 10.0, 100.0), "layer-by-layer: relative output bounds eps to split over the layers"
    )
    layer_max_samples: float = option(
        1e6, "layer-by-layer: a layer needing more draws is left whole (the source: 1M)"
    )
    checkpoint: str = option(
        "", "a prunelab checkpoint ending in two Linear layers to study instead of both arms"
    )
    arch: str = option(
        "vgg16", f"the VGG arm's network, from {VGG_ARCHS} ('none': LeNet-300-100 only)"
    )
    width: float = option(0.125, "the VGG arm's width multiplier (the source: 1)")
    data: str = option(
        "mnist5k", "data of the VGG arm (or of the checkpoint): built in, or cifar10 with data_root"
    )
    data_root: str = option("", "folder holding a full-size set such as cifar10")
    vgg_seeds: int = option(2, "training seeds per regime of the VGG arm")
    vgg_epochs: int = option(6, "training epochs of the VGG arm")
    vgg_max_samples: float = option(
        1e6, "the VGG arm samples no more than this (sparsity 0 beyond; the source: 1M)"
    )

    QUICK: ClassVar[dict] = {
        "seeds": 1,
        "epochs": 2,
        "n_train": 1000,
        "draws": 2,
        "n_dev": 500,
        "sensitivity_points": 200,
        "keep": (0.1,),
        "l0_penalties": (0.03,),
        "l0_epochs": 4,
        "finetune_epochs": 1,
        "ball_points": 200,
        "alphas": (1.0, 3.0),
        "layer_eps": (10.0,),
        "vgg_seeds": 1,
        "vgg_epochs": 1,
    }

    def __post_init__(self) -> None:
        if not self.regimes or any(r not in REGIMES for r in self.regimes):
            raise ValueError(f"regimes {self.regimes}: choose from {REGIMES}")
        if len(set(self.regimes)) < len(self.regimes):
            raise ValueError(f"regimes must be distinct; got {self.regimes}")
        for name in (
            "seeds",
            "epochs",
            "draws",
            "sensitivity_points",
            "ball_points",
            "n_train",
            "n_dev",
            "batch_size",
            "l0_batch_size",
            "vgg_seeds",
            "vgg_epochs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.n_dev > 1000 or self.n_train > 4000:
            raise ValueError(
                f"mnist5k has 4000 training and 1000 held-out images; got n_train "
                f"{self.n_train}, n_dev {self.n_dev}"
            )
        if self.sensitivity_points > self.n_train:
            raise ValueError(
                f"sensitivity_points ({self.sensitivity_points}) must be <= n_train "
                f"({self.n_train})"
            )
        for name in ("l0_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not self.shares or not all(0 < s <= 1 for s in self.shares):
            raise ValueError(f"shares must lie in (0, 1]; got {self.shares}")
        if not 0 < self.alpha_share <= 1:
            raise ValueError(f"alpha_share must lie in (0, 1]; got {self.alpha_share}")
        if not self.keep or not all(0 < k < 1 for k in self.keep):
            raise ValueError(f"keep fractions must lie in (0, 1); got {self.keep}")
        if any(p < 0 for p in self.l0_penalties):
            raise ValueError(f"l0_penalties must be >= 0; got {self.l0_penalties}")
        if not self.alphas or not all(a > 0 for a in self.alphas):
            raise ValueError(f"alphas must be > 0; got {self.alphas}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1); got {self.delta}")
        if self.arch not in (*VGG_ARCHS, "none"):
            raise ValueError(f"arch {self.arch!r}: choose from {[*VGG_ARCHS, 'none']}")
        if not (self.width > 0 and math.isfinite(self.width)):
            raise ValueError(f"width must be a positive number; got {self.width}")
        if not self.layer_eps or not all(e > 0 and math.isfinite(e) for e in self.layer_eps):
            raise ValueError(f"layer_eps must be positive and finite; got {self.layer_eps}")
        if self.rule not in guarantees.RULES:
            raise ValueError(f"rule {self.rule!r}: choose from {list(guarantees.RULES)}")
        if not 0 <= self.dropout < 1 or self.weight_decay < 0:
            raise ValueError(
                f"dropout must be in [0, 1) and weight_decay >= 0; got {self.dropout}, "
                f"{self.weight_decay}"
            )


# --- results -----------------------------------------------------------------------------------


@dataclass
class Regime:
    """One training regime: its hyper-parameters and, per seed, what the bounds depend on."""

    name: str
    dropout: float
    weight_decay: float
    accuracy: list[float]  # dev accuracy per seed
    beta: list[float]  # radius of the ball holding [a; 1], a = first-layer outputs
    scale: list[float]  # Mussay's F = sum_p omega(p) beta ||p||: error <= eps F
    sensitivity: list[float]  # SiPP total sensitivity S, mean over parts and output neurons
    gap: list[float]  # median top-two logit gap on the dev set
    inactive: list[int]  # last-hidden neurons that never fire on S (SiPP drops their weights)


@dataclass
class EpsilonFirst:
    """Epsilon-first pruning for one regime, method and guaranteed share (seeds pooled).

    ``bound``: additive logit bound E (neurons) or relative per-part eps (weights), per seed;
    ``samples``: draws the theorem requires in total, per seed; ``nominal*``: the weights'
    bound and samples under the reading ``|Delta_c| <= eps |f_c|``. Errors are in the bound's
    units, pooled over seeds, draws and dev examples; ``violation`` is the share of those
    above the bound. ``ball_*``: the same on inputs from the theorem's ball (neurons only).
    """

    regime: str
    method: str
    share: float
    size: int
    bound: list[float]
    samples: list[float]
    sparsity: list[float]  # seed x draw
    preserved: list[float]  # seed x draw: share of correct dev labels still correct
    error_mean: float
    error_std: float
    raw_mean: float
    raw_std: float
    centred_mean: float
    centred_std: float
    violation: float
    nominal: list[float] = field(default_factory=list)
    nominal_samples: list[float] = field(default_factory=list)
    ball_mean: float = math.nan
    ball_std: float = math.nan
    ball_violation: float = math.nan
    error_seed: list[float] = field(default_factory=list)  # mean error per seed (nan: not drawn)
    ball_seed: list[float] = field(default_factory=list)  # the same on the ball (neurons only)
    ratio: list[float] = field(default_factory=list)  # per seed, bound / mean error
    ball_ratio: list[float] = field(default_factory=list)  # per seed, ball error / data error
    ball_bound_ratio: list[float] = field(default_factory=list)  # per seed, bound / ball error


@dataclass
class SparsityFirst:
    """Sparsity-first pruning for one regime, method and kept fraction (seed x draw lists)."""

    regime: str
    method: str
    keep: float
    size: int
    samples: list[float]
    sparsity: list[float]
    implied: list[float]  # implied logit bound, mean over dev of max_c B_c
    implied_share: list[float]  # share of correct labels the implied bound guarantees
    preserved: list[float]
    accuracy: list[float]
    raw_mean: float  # observed max_c |Delta_c|, pooled
    raw_std: float
    ratio: list[float] = field(default_factory=list)  # per seed, implied bound / observed raw


@dataclass
class FineTune:
    """One pruning method at one sparsity level, before and after fine-tuning (lists per seed)."""

    regime: str
    family: str  # NEURONS or WEIGHTS
    method: str
    level: float  # the L0 penalty (neurons) or the target kept fraction (weights)
    sparsity: list[float]
    guaranteed: list[float]  # dev accuracy the bound guarantees (nan for heuristics)
    before: list[float]  # dev accuracy after pruning
    after: list[float]  # dev accuracy after fine-tuning
    raw_before: list[float]  # mean over dev of max_c |Delta_c| against the unpruned logits
    raw_after: list[float]
    centred_before: list[float]  # mean over dev of ||P Delta||_2 (P removes the common shift)
    centred_after: list[float]


@dataclass
class AlphaRow:
    """Mussay neuron pruning after multiplying the final layer's weights by ``alpha``."""

    alpha: float
    accuracy: list[float]  # per seed, dev accuracy of the scaled net
    bound: list[float]  # additive bound E guaranteeing alpha_share of the correct labels
    scale: list[float]  # F
    samples: list[float]
    sparsity: list[float]  # seed x draw
    preserved: list[float]
    raw_mean: float
    raw_std: float


@dataclass
class LayerRow:
    """One stage of the layer-by-layer arm for output bound ``target`` (see
    :class:`prunelab.coreset.Stage`; the first seed of the first regime)."""

    target: float
    layer: int
    weights: int
    eps: float
    samples: float
    skipped: bool
    sparsity: float
    observed: float
    violation: float
    implied: float
    output: float
    within: float
    ratio: float = math.nan  # the layer's bound eps / its observed error (bound_checks)


@dataclass
class Results:
    data: str
    n_train: int
    n_dev: int
    widths: tuple[int, ...]
    delta: float
    rule: str
    regimes: list[Regime]
    epsilon_first: list[EpsilonFirst]
    sparsity_first: list[SparsityFirst]
    finetune: list[FineTune]
    alpha: list[AlphaRow]
    alpha_regime: str
    alpha_share: float
    model: str = "LeNet-300-100"  # what was pruned
    max_samples: float = math.nan  # no sampling beyond this many draws (sparsity 0)
    weight_share: float = math.nan  # the pruned final layer's share of all the net's weights
    layerwise: list[LayerRow] = field(default_factory=list)
    vgg: Results | None = None  # the VGG arm
    tally: dict[str, float] = field(default_factory=dict)  # counts behind the text (_tally)


# --- one trained net -----------------------------------------------------------------------------


@dataclass
class _Subject:
    """A trained net reduced to its head, with everything the bounds read (float64)."""

    regime: str
    seed: int
    weight_decay: float
    head: nn.Sequential  # Linear(300, 100), ReLU, [Dropout], Linear(100, 10)
    train: data.Dataset  # first-layer outputs of the training images
    a_dev: Tensor  # [N, 300]
    y: Tensor  # [N]
    f: Tensor  # [N, C] unpruned logits
    correct: Tensor  # [N] bool
    a_sens: Tensor  # head inputs of SiPP's sensitivity batch S
    beta: float
    F: float
    bound_name: str  # Hoeffding (signed) for Mussay's draws
    s: Tensor  # [2, C, 100] SiPP sensitivities of the output layer on S
    M: Tensor  # [N, C] z+ + z-: SiPP's bound is eps M_c


def _logits(model: nn.Sequential, x: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _subject(net: nn.Sequential, regime: str, seed: int, wd: float, split, config) -> _Subject:
    """The net's head and its features: the extractor runs once on each input set."""
    model = net.to(torch.float64).eval()
    extractor, head = coreset_eval.split_head(model)
    a_train, a_dev = (
        _logits(extractor, x.to(torch.float64)) for x in (split.train.x, split.test.x)
    )
    hidden, out = models.parse(head).layers
    f = _logits(head, a_dev)
    beta = coreset.ball_radius(torch.cat((a_train, a_dev)))
    W2, b2, W3 = hidden.weight.detach(), hidden.bias.detach(), out.weight.detach()
    a_sens = a_train[: config.sensitivity_points]
    return _Subject(
        regime=regime,
        seed=seed,
        weight_decay=wd,
        head=head,
        train=data.Dataset(a_train, split.train.y, "features", out.weight.shape[0]),
        a_dev=a_dev,
        y=split.test.y,
        f=f,
        correct=f.argmax(1) == split.test.y,
        a_sens=a_sens,
        beta=beta,
        F=coreset.mussay_scale(W2, b2, W3, beta),
        bound_name=coreset.mussay_bound_name(W3, "relu"),
        s=coreset.sensitivities(W3, coreset.layer_inputs(head, 1, a_sens)),
        M=coreset_eval.sipp_logit_bound(W3, coreset.layer_inputs(head, 1, a_dev), 1.0),
    )


def _regime_nets(config: Config, regime: str, split) -> tuple[list[nn.Sequential], float]:
    """Train ``config.seeds`` LeNet-300-100s of one regime together, on the device of ``split``."""
    dropout = config.dropout if regime == "dropout" else 0.0
    wd = config.weight_decay if regime == "weight_decay" else 0.0
    seeds = [config.seed + k for k in range(config.seeds)]
    device = split.train.x.device
    nets = [models.mlp(WIDTHS, dropout=dropout, seed=s).to(device) for s in seeds]
    ensemble.fit_many(
        nets,
        split.train,
        seeds=seeds,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        weight_decay=wd,
        progress=False,
    )
    return nets, wd


def _regime_row(name: str, config: Config, subs: list[_Subject]) -> Regime:
    return Regime(
        name=name,
        dropout=config.dropout if name == "dropout" else 0.0,
        weight_decay=subs[0].weight_decay,
        accuracy=[sub.correct.double().mean().item() for sub in subs],
        beta=[sub.beta for sub in subs],
        scale=[sub.F for sub in subs],
        sensitivity=[sub.s.sum(-1).mean().item() for sub in subs],
        gap=[guarantees.top_two(sub.f)[1].median().item() for sub in subs],
        inactive=[
            int((coreset.layer_inputs(sub.head, 1, sub.a_sens).amax(0) == 0).sum()) for sub in subs
        ],
    )


# --- epsilon-first ---------------------------------------------------------------------------


@dataclass
class _Trial:
    """Raw measurements of one setting on one subject, pooled later over seeds."""

    bound: float
    samples: float
    sparsity: list[float] = field(default_factory=list)
    preserved: list[float] = field(default_factory=list)
    error: list[Tensor] = field(default_factory=list)  # in the bound's units
    raw: list[Tensor] = field(default_factory=list)
    centred: list[Tensor] = field(default_factory=list)
    ball: list[Tensor] = field(default_factory=list)
    ball_bound: float = math.nan
    nominal: float = math.nan
    nominal_samples: float = math.nan


def _record(trial: _Trial, sub: _Subject, f_hat: Tensor, error: Tensor) -> None:
    e = guarantees.logit_errors(sub.f, f_hat)
    trial.error.append(error)
    trial.raw.append(e.raw)
    trial.centred.append(e.centred)
    trial.preserved.append(coreset_eval.preserved_share(sub.f, f_hat, sub.y))


def _neurons_first(sub: _Subject, share: float, ball: Tensor, config, g) -> _Trial:
    H, C = sub.head[0].out_features, sub.f.shape[1]
    crit = coreset_eval.scaled_critical(sub.f, torch.full_like(sub.f, sub.F), rule=config.rule)
    eps = coreset_eval.bound_for_share(crit, sub.correct, share)  # error <= eps F
    m = coreset.sample_size(eps, config.delta, bound=sub.bound_name, union=C)
    trial = _Trial(bound=eps * sub.F, samples=float(m))
    if m > config.max_samples:
        trial.sparsity = [0.0] * config.draws
        return trial
    f_ball = _logits(sub.head, ball)
    for _ in range(config.draws):
        p = coreset.prune_neurons_mussay(sub.head, 0, beta=sub.beta, generator=g, samples=m)
        f_hat = _logits(p.model, sub.a_dev)
        _record(trial, sub, f_hat, guarantees.logit_errors(sub.f, f_hat).raw)
        trial.sparsity.append(1 - p.kept.sum().item() / H)
        trial.ball.append(guarantees.logit_errors(f_ball, _logits(p.model, ball)).raw)
    return trial


def _weights_first(sub: _Subject, share: float, config, g) -> _Trial:
    W3 = sub.head[-1].weight
    C = sub.f.shape[1]
    crit = coreset_eval.scaled_critical(sub.f, sub.M, rule=config.rule)
    eps = coreset_eval.bound_for_share(crit, sub.correct, share)
    S = sub.s.sum(-1)  # (2, C)
    m = torch.where(S > 0, coreset.sample_size(eps, config.delta, S, union=2 * C), 0)
    # the reading |Delta_c| <= eps |f_c| (as if the weights were all positive)
    nominal_crit = guarantees.critical_epsilon(sub.f, kind="multiplicative", rule=config.rule)
    nominal = coreset_eval.bound_for_share(nominal_crit, sub.correct, share)
    m_nominal = torch.where(S > 0, coreset.sample_size(nominal, config.delta, S, union=2 * C), 0)
    trial = _Trial(
        bound=eps,
        samples=float(m.sum()),
        nominal=nominal,
        nominal_samples=float(m_nominal.sum()),
    )
    if m.max() > config.max_samples:
        trial.sparsity = [0.0] * config.draws
        return trial
    for _ in range(config.draws):
        p = coreset.prune_weights_sipp(sub.head, -1, sub.a_sens, generator=g, samples=m)
        f_hat = _logits(p.model, sub.a_dev)
        _record(trial, sub, f_hat, coreset_eval.scaled_error(sub.f, f_hat, sub.M))
        trial.sparsity.append(1 - p.kept.sum().item() / W3.numel())
    return trial


def _pooled(values: list[Tensor]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    v = torch.cat(values)
    return v.mean().item(), v.std().item()


def _violation(values: list[Tensor], bounds: list[float]) -> float:
    if not values:
        return math.nan
    return torch.cat([(v > b).double() for v, b in zip(values, bounds, strict=True)]).mean().item()


def _epsilon_row(regime, method, share, size, trials: list[_Trial]) -> EpsilonFirst:
    err, raw, cen = (
        _pooled([t for tr in trials for t in getattr(tr, k)]) for k in ("error", "raw", "centred")
    )
    per_draw = [tr.bound for tr in trials for _ in tr.error]
    ball = [t for tr in trials for t in tr.ball]
    ball_bounds = [tr.bound for tr in trials for _ in tr.ball]
    ball_mean, ball_std = _pooled(ball)
    error_seed = [_pooled(tr.error)[0] for tr in trials]
    ball_seed = [_pooled(tr.ball)[0] for tr in trials]
    return EpsilonFirst(
        regime=regime,
        method=method,
        share=share,
        size=size,
        bound=[tr.bound for tr in trials],
        samples=[tr.samples for tr in trials],
        sparsity=[s for tr in trials for s in tr.sparsity],
        preserved=[p for tr in trials for p in tr.preserved],
        error_mean=err[0],
        error_std=err[1],
        raw_mean=raw[0],
        raw_std=raw[1],
        centred_mean=cen[0],
        centred_std=cen[1],
        violation=_violation([t for tr in trials for t in tr.error], per_draw),
        nominal=[tr.nominal for tr in trials if not math.isnan(tr.nominal)],
        nominal_samples=[tr.nominal_samples for tr in trials if not math.isnan(tr.nominal)],
        ball_mean=ball_mean,
        ball_std=ball_std,
        ball_violation=_violation(ball, ball_bounds),
        error_seed=error_seed,
        ball_seed=ball_seed,
        ratio=bound_checks.bound_ratio([[tr.bound for tr in trials]], [error_seed]).tolist(),
        ball_ratio=bound_checks.bound_ratio([ball_seed], [error_seed]).tolist(),
        ball_bound_ratio=bound_checks.bound_ratio(
            [[tr.bound for tr in trials]], [ball_seed]
        ).tolist(),
    )


# --- sparsity-first --------------------------------------------------------------------------


def _neurons_sparse(sub: _Subject, keep: float, config, g) -> dict:
    H, C = sub.head[0].out_features, sub.f.shape[1]
    k = max(1, round(keep * H))
    out = dict(
        samples=[], sparsity=[], implied=[], implied_share=[], preserved=[], accuracy=[], raw=[]
    )
    for _ in range(config.draws):
        p = coreset.prune_neurons_mussay(sub.head, 0, beta=sub.beta, generator=g, size=k)
        eps = coreset.implied_epsilon(int(p.samples), config.delta, bound=sub.bound_name, union=C)
        f_hat = _logits(p.model, sub.a_dev)
        out["samples"].append(float(p.samples))
        out["sparsity"].append(1 - k / H)
        out["implied"].append(eps * sub.F)
        out["implied_share"].append(
            coreset_eval.guaranteed_share(sub.f, sub.y, eps * sub.F, rule=config.rule)
        )
        out["preserved"].append(coreset_eval.preserved_share(sub.f, f_hat, sub.y))
        out["accuracy"].append((f_hat.argmax(1) == sub.y).double().mean().item())
        out["raw"].append(guarantees.logit_errors(sub.f, f_hat).raw)
    return out


def _weights_implied(sub: _Subject, m: Tensor, config) -> Tensor:
    """Per-logit bound ``B: [N, C]`` that ``m: [2, C]`` draws imply on the dev set."""
    W3 = sub.head[-1].weight.detach()
    eps = coreset.implied_epsilon(m, config.delta, sub.s.sum(-1), union=2 * sub.f.shape[1])
    return coreset_eval.sipp_logit_bound(W3, coreset.layer_inputs(sub.head, 1, sub.a_dev), eps)


def _weights_sparse(sub: _Subject, keep: float, config, g) -> dict:
    W3 = sub.head[-1].weight
    m = coreset_eval.sipp_samples_for_keep(sub.s, keep)
    B = _weights_implied(sub, m, config)
    share = coreset_eval.guaranteed_share(sub.f, sub.y, B, rule=config.rule)
    out = dict(
        samples=[], sparsity=[], implied=[], implied_share=[], preserved=[], accuracy=[], raw=[]
    )
    for _ in range(config.draws):
        p = coreset.prune_weights_sipp(sub.head, -1, sub.a_sens, generator=g, samples=m)
        f_hat = _logits(p.model, sub.a_dev)
        out["samples"].append(float(m.sum()))
        out["sparsity"].append(1 - p.kept.sum().item() / W3.numel())
        out["implied"].append(B.amax(1).mean().item())
        out["implied_share"].append(share)
        out["preserved"].append(coreset_eval.preserved_share(sub.f, f_hat, sub.y))
        out["accuracy"].append((f_hat.argmax(1) == sub.y).double().mean().item())
        out["raw"].append(guarantees.logit_errors(sub.f, f_hat).raw)
    return out


def _sparsity_row(regime, method, keep, size, parts: list[dict]) -> SparsityFirst:
    joined = {k: [v for p in parts for v in p[k]] for k in parts[0]}
    raw_mean, raw_std = _pooled(joined.pop("raw"))
    implied = [bound_checks.seed_means(p["implied"], 1).item() for p in parts]
    raw = [_pooled(p["raw"])[0] for p in parts]
    ratio = bound_checks.bound_ratio([implied], [raw]).tolist()
    return SparsityFirst(
        regime, method, keep, size, **joined, raw_mean=raw_mean, raw_std=raw_std, ratio=ratio
    )


# --- heuristics and fine-tuning ----------------------------------------------------------------


def _finetuned(sub: _Subject, model: nn.Sequential, config, masks: dict | None = None):
    tuned = copy.deepcopy(model)
    train.fit(
        tuned,
        sub.train,
        epochs=config.finetune_epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        weight_decay=sub.weight_decay,
        seed=sub.seed,
        weight_masks=masks,
        progress=False,
    )
    return tuned


def _before_after(sub: _Subject, pruned: nn.Sequential, config, masks=None) -> dict:
    out = {}
    for when, model in (("before", pruned), ("after", _finetuned(sub, pruned, config, masks))):
        f_hat = _logits(model, sub.a_dev)
        e = guarantees.logit_errors(sub.f, f_hat)
        out[when] = (f_hat.argmax(1) == sub.y).double().mean().item()
        out[f"raw_{when}"] = e.raw.mean().item()
        out[f"centred_{when}"] = e.centred.mean().item()
    return out


def _neuron_heuristics(sub: _Subject, penalty: float, config, g) -> dict[str, dict]:
    """L0 gates on the last hidden layer, and Mussay's coreset at the size L0 reached."""
    H, C = sub.head[0].out_features, sub.f.shape[1]
    gated = copy.deepcopy(sub.head)
    gates, _ = l0.fit_l0(
        gated,
        sub.train,
        penalty=penalty,
        layers=[0],
        epochs=config.l0_epochs,
        lr=config.l0_lr,
        batch_size=config.l0_batch_size,
        seed=sub.seed,
        weight_decay=sub.weight_decay,
        progress=False,
    )
    k = gates.open()
    rows = {"L0": dict(sparsity=1 - k / H, guaranteed=math.nan)}
    rows["L0"] |= _before_after(sub, l0.prune(gated, gates), config)
    if k >= 1:
        p = coreset.prune_neurons_mussay(sub.head, 0, beta=sub.beta, generator=g, size=k)
        eps = coreset.implied_epsilon(int(p.samples), config.delta, bound=sub.bound_name, union=C)
        sure = guarantees.guaranteed_fraction(sub.f, sub.y, additive=eps * sub.F, rule=config.rule)
        rows["Mussay coreset"] = dict(sparsity=1 - k / H, guaranteed=sure)
        rows["Mussay coreset"] |= _before_after(sub, p.model, config)
    return rows


def _weight_heuristics(sub: _Subject, keep: float, config, g) -> dict[str, dict]:
    """SiPP sampling (sparsity-first), then magnitude and deterministic SiPP at its size."""
    W3 = sub.head[-1].weight.detach()
    C = sub.f.shape[1]
    name = f"{models.parse(sub.head).layers[-1].name}.weight"
    m = coreset_eval.sipp_samples_for_keep(sub.s, keep)
    rand = coreset.prune_weights_sipp(sub.head, -1, sub.a_sens, generator=g, samples=m)
    nnz = int(rand.kept.sum())
    mag = coreset_eval.prune_weights_magnitude(sub.head, -1, keep=nnz)
    # deterministic SiPP with sensitivities on the dev set itself: its bound is a certificate there
    a_in = coreset.layer_inputs(sub.head, 1, sub.a_dev)
    det = coreset.prune_weights_topk(sub.head, -1, sub.a_dev, keep=max(1, round(nnz / C)))
    det_bound = coreset.deterministic_bound(W3, coreset.sensitivities(W3, a_in), det.kept, a_in)
    sure = {
        "SiPP (random)": guarantees.guaranteed_fraction(
            sub.f, sub.y, additive=_weights_implied(sub, m, config), rule=config.rule
        ),
        "magnitude": math.nan,
        "SiPP (deterministic)": guarantees.guaranteed_fraction(
            sub.f, sub.y, additive=det_bound, rule=config.rule
        ),
    }
    rows = {}
    for method, p in (("SiPP (random)", rand), ("magnitude", mag), ("SiPP (deterministic)", det)):
        rows[method] = dict(sparsity=1 - p.kept.sum().item() / W3.numel(), guaranteed=sure[method])
        rows[method] |= _before_after(sub, p.model, config, {name: p.kept})
    return rows


# --- scaling the final layer -------------------------------------------------------------------


def _alpha_trial(sub: _Subject, alpha: float, config, g) -> dict:
    head = coreset_eval.scale_weight(sub.head, -1, alpha)
    hidden, out = models.parse(head).layers
    f = _logits(head, sub.a_dev)
    correct = f.argmax(1) == sub.y
    F = coreset.mussay_scale(
        hidden.weight.detach(), hidden.bias.detach(), out.weight.detach(), sub.beta
    )
    crit = coreset_eval.scaled_critical(f, torch.full_like(f, F), rule=config.rule)
    eps = coreset_eval.bound_for_share(crit, correct, config.alpha_share)
    m = coreset.sample_size(eps, config.delta, bound=sub.bound_name, union=f.shape[1])
    res = dict(accuracy=correct.double().mean().item(), bound=eps * F, scale=F, samples=float(m))
    res |= dict(sparsity=[], preserved=[], raw=[])
    if m > config.max_samples:
        res["sparsity"] = [0.0] * config.draws
        return res
    for _ in range(config.draws):
        p = coreset.prune_neurons_mussay(head, 0, beta=sub.beta, generator=g, samples=m)
        f_hat = _logits(p.model, sub.a_dev)
        res["sparsity"].append(1 - p.kept.sum().item() / hidden.width)
        res["preserved"].append(coreset_eval.preserved_share(f, f_hat, sub.y))
        res["raw"].append(guarantees.logit_errors(f, f_hat).raw)
    return res


# --- the study ---------------------------------------------------------------------------------


def _vgg_nets(config: Config, regime: str, split) -> tuple[list[nn.Sequential], float]:
    """Train ``config.vgg_seeds`` VGGs of one regime (dropout in the classifier, or not)."""
    dropout = config.dropout if regime == "dropout" else 0.0
    wd = config.weight_decay if regime == "weight_decay" else 0.0
    nets = []
    for k in range(config.vgg_seeds):
        net = models.vgg(
            config.arch,
            in_shape=tuple(split.train.x.shape[1:]),
            classes=split.train.classes,
            width=config.width,
            dropout=dropout,
            seed=config.seed + k,
        ).to(split.train.x.device)
        train.fit(
            net,
            split.train,
            epochs=config.vgg_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            weight_decay=wd,
            seed=config.seed + k,
            progress=False,
        )
        nets.append(net)
    return nets, wd


def _layerwise(config: Config, net: nn.Sequential, split, g) -> list[LayerRow]:
    """Every dense layer of ``net``'s classifier pruned in turn, per output bound."""
    model = net.to(torch.float64).eval()
    extractor, tail = coreset_eval.split_head(model, layers=None)
    S = _logits(extractor, split.train.x[: config.sensitivity_points].to(torch.float64))
    dev = _logits(extractor, split.test.x.to(torch.float64))
    rows = []
    for target in config.layer_eps:
        stages, _ = coreset.layer_by_layer(
            tail,
            S,
            dev,
            eps=target,
            delta=config.delta,
            generator=g,
            max_samples=config.layer_max_samples,
        )
        rows += [
            LayerRow(
                target,
                **vars(st),
                ratio=bound_checks.bound_ratio([[st.eps]], [[st.observed]]).item(),
            )
            for st in stages
        ]
    return rows


def _arm(config: Config, split, nets_of, model: str, g, advance) -> Results:
    """Every measurement on the nets ``nets_of(regime) -> (nets, seeds, weight decay)``."""
    regimes, eps_rows, sparse_rows, tune_rows, alpha_rows = [], [], [], [], []
    names = config.regimes if not config.checkpoint else ("checkpoint",)
    layerwise: list[LayerRow] = []
    share = math.nan
    for regime in names:
        nets, seeds, wd = nets_of(regime)
        if regime == names[0]:
            layerwise = _layerwise(config, copy.deepcopy(nets[0]), split, g)
        subs = [_subject(n, regime, s, wd, split, config) for n, s in zip(nets, seeds, strict=True)]
        if regime == names[0]:  # the pruned final layer's share of the whole net's weights
            share = subs[0].head[-1].weight.numel() / sum(p.numel() for p in nets[0].parameters())
        H = subs[0].head[0].out_features
        n_weights = subs[0].head[-1].weight.numel()
        regimes.append(_regime_row(regime, config, subs))
        advance(status=f"{model}, {regime}: trained")
        balls = [
            coreset_eval.ball_inputs(
                config.ball_points, sub.a_dev.shape[1], sub.beta, generator=g, dtype=torch.float64
            ).to(sub.a_dev.device)  # drawn on the CPU generator, then moved
            for sub in subs
        ]
        for share_ in config.shares:
            trials = [
                _neurons_first(sub, share_, b, config, g)
                for sub, b in zip(subs, balls, strict=True)
            ]
            eps_rows.append(_epsilon_row(regime, NEURONS, share_, H, trials))
            trials = [_weights_first(sub, share_, config, g) for sub in subs]
            eps_rows.append(_epsilon_row(regime, WEIGHTS, share_, n_weights, trials))
        for keep in config.keep:
            parts = [_neurons_sparse(sub, keep, config, g) for sub in subs]
            sparse_rows.append(_sparsity_row(regime, NEURONS, keep, H, parts))
            parts = [_weights_sparse(sub, keep, config, g) for sub in subs]
            sparse_rows.append(_sparsity_row(regime, WEIGHTS, keep, n_weights, parts))
        advance(status=f"{model}, {regime}: epsilon- and sparsity-first")
        for family, levels, fn in (
            (NEURONS, config.l0_penalties, _neuron_heuristics),
            (WEIGHTS, config.keep, _weight_heuristics),
        ):
            for level in levels:
                per_seed = [fn(sub, level, config, g) for sub in subs]
                for method in dict.fromkeys(m for r in per_seed for m in r):
                    got = [r[method] for r in per_seed if method in r]
                    tune_rows.append(
                        FineTune(
                            regime,
                            family,
                            method,
                            level,
                            **{k: [r[k] for r in got] for k in got[0]},
                        )
                    )
        advance(status=f"{model}, {regime}: heuristics and fine-tuning")
        if regime == names[0]:
            for alpha in config.alphas:
                got = [_alpha_trial(sub, alpha, config, g) for sub in subs]
                raw_mean, raw_std = _pooled([t for r in got for t in r["raw"]])
                alpha_rows.append(
                    AlphaRow(
                        alpha,
                        **{
                            k: [r[k] for r in got]
                            for k in ("accuracy", "bound", "scale", "samples")
                        },
                        sparsity=[s for r in got for s in r["sparsity"]],
                        preserved=[s for r in got for s in r["preserved"]],
                        raw_mean=raw_mean,
                        raw_std=raw_std,
                    )
                )
    head = subs[0].head
    return Results(
        data=split.train.name,
        n_train=len(split.train),
        n_dev=len(split.test),
        widths=(subs[0].a_dev.shape[1], H, head[-1].weight.shape[0]),
        delta=config.delta,
        rule=config.rule,
        regimes=regimes,
        epsilon_first=eps_rows,
        sparsity_first=sparse_rows,
        finetune=tune_rows,
        alpha=alpha_rows,
        alpha_regime=names[0],
        alpha_share=config.alpha_share,
        model=model,
        max_samples=config.max_samples,
        weight_share=share,
        layerwise=layerwise,
        tally=_tally(tune_rows),
    )


def _checkpoint(config: Config, device: torch.device):
    """The checkpoint's net, its data split and a description; errors name the problem."""
    net, meta = checkpoint.load(config.checkpoint)
    method = f"approximation-bounds of {config.checkpoint}"
    try:
        view = ops.parse(net, method=method)
        coreset_eval.split_head(net)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{method}: {e}") from None
    name = config.data if config.data != "mnist5k" or "data" not in meta else meta["data"]
    split = _load(config, name, meta.get("seed", config.seed)).to(device=device)
    view.check_x(split.test.x[:1], f"{method} on data {name!r}", convert=True)
    arch = meta.get("arch") or ("convnet" if view.conv else "MLP")
    return net.to(device), split, f"{Path(config.checkpoint).name} ({arch})", meta


def _load(config: Config, name: str, seed: int, **sizes):
    root = config.data_root or None
    return data.load(name, seed=seed, root=root, **sizes)


ARMS = ("lenet-300-100", "vgg", "checkpoint")  # the study's units of work


def arm_unit(config: Config, arm: str, device: str, progress: bool = False) -> Results:
    """One unit of work: one network's arm (``ARMS``), trained, pruned and measured.

    Each arm draws its samples from its own generator seeded ``config.seed`` (on the CPU: the
    same draws on every device), so an arm's results do not depend on which others run.
    """
    device_ = torch.device(device)
    g = torch.Generator().manual_seed(config.seed)
    regimes = 1 if arm == "checkpoint" else len(config.regimes)
    with track(3 * regimes, f"approximation bounds: {arm}", enabled=progress) as advance:
        if arm == "checkpoint":
            net, split, described, meta = _checkpoint(config, device_)
            wd = float((meta.get("train") or {}).get("weight_decay", 0.0) or 0.0)
            nets = lambda _: ([net], [config.seed], wd)  # noqa: E731
            return files.to_cpu(_arm(config, split, nets, described, g, advance))
        if arm == "lenet-300-100":
            split = data.load(
                "mnist5k", seed=config.seed, n_train=config.n_train, n_test=config.n_dev
            ).to(device=device_)  # dev: held-out images

            def lenet(regime):
                nets, wd = _regime_nets(config, regime, split)
                return nets, [config.seed + k for k in range(config.seeds)], wd

            return files.to_cpu(_arm(config, split, lenet, "LeNet-300-100", g, advance))
        # a built-in set is cut to the LeNet arm's sizes; a folder set is read whole
        sizes = {} if config.data_root else {"n_train": config.n_train, "n_test": config.n_dev}
        vsplit = _load(config, config.data, config.seed, **sizes).to(device=device_)

        def vgg(regime):
            nets, wd = _vgg_nets(config, regime, vsplit)
            return nets, [config.seed + k for k in range(config.vgg_seeds)], wd

        name = f"{config.arch.upper()} ×{config.width:g}"
        arm_config = dataclasses.replace(config, max_samples=config.vgg_max_samples)
        return files.to_cpu(_arm(arm_config, vsplit, vgg, name, g, advance))


def run(
    config: Config,
    out: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    executor: Executor = SERIAL,
) -> Results:
    """Train, prune, measure; every number of the report.

    Everything is computed on ``device`` (initialisations and data are drawn on the CPU and
    moved there; the sampling generators stay on the CPU); the results come back on the CPU.
    The units of work are the arms (LeNet-300-100, the VGG, or the user's checkpoint, whose
    bytes enter the unit's hash), run by ``executor`` (stored units are not computed again).
    """
    where, serial = str(torch.device(device)), executor.kind == "serial"
    if config.checkpoint:
        _checkpoint(config, torch.device("cpu"))  # a net or data it cannot take: refused now
        arms, inputs = ["checkpoint"], (config.checkpoint,)
    else:
        arms, inputs = ["lenet-300-100"] + (["vgg"] if config.arch != "none" else []), ()
    todo = [
        Unit(arm, arm_unit, dict(config=config, arm=arm, device=where,
                                 progress=progress and serial), inputs=inputs)
        for arm in arms
    ]  # fmt: skip
    results, *vgg = run_units(
        todo, out, executor=executor, progress=progress and not serial, description=NAME
    )
    if vgg:
        results.vgg = vgg[0]
    return results


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def headline(results: Results) -> dict[str, float]:
    out: dict[str, float] = {}
    first = results.regimes[0].name
    top = max(r.share for r in results.epsilon_first)
    for row in results.epsilon_first:
        if row.regime == first and row.share == top:
            tag = "neurons" if row.method == NEURONS else "weights"
            out[f"{tag}: samples / layer size at {row.share:.0%} ({first})"] = (
                _mean(row.samples) / row.size
            )
            out[f"{tag}: bound / observed error at {row.share:.0%} ({first})"] = _mean(row.ratio)
    S = len(results.regimes[0].accuracy)
    out["sparsity-first: largest share of correct labels guaranteed"] = _mean(
        bound_checks.largest(_seed_table(results.sparsity_first, "implied_share", S)).tolist()
    )
    for method in ("L0", "magnitude"):
        rows = [t for t in results.finetune if t.regime == first and t.method == method]
        if rows:
            gain = bound_checks.largest_gain([t.after for t in rows], [t.before for t in rows])
            out[f"{method}: accuracy gain from fine-tuning (max over levels, {first})"] = _mean(
                gain.tolist()
            )
    return out


# --- findings ----------------------------------------------------------------------------------


SHARE, RATIO = (0.0, 1.0), (0.0, math.inf)  # the ranges the findings' intervals are clipped to


def _rule(rule, claim: str, values: Tensor, *args, why: str, **kw) -> Finding:
    """``rule(claim, values, *args)``, or not measured (``why``) where a seed has no value."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() == 0 or not v.isfinite().all():
        return rules.not_measured(
            claim, why, source=kw.get("source", ""), section=kw.get("section", "")
        )
    return rule(claim, v, *args, **kw)


def _seed_table(rows, attr: str, seeds: int) -> Tensor:
    """[K, S]: per row, the per-seed means of ``attr`` (a seed x draw list)."""
    return torch.stack([bound_checks.seed_means(getattr(r, attr), seeds) for r in rows])


def _arm_findings(r: Results) -> list[Finding]:
    """The source's claims on one network (``r``): each a rule on per-seed values."""
    pre = "" if r.model == "LeNet-300-100" else f"{r.model}: "
    S = len(r.regimes[0].accuracy)

    def sec(title: str) -> str:
        return titles.arm_title(r.model, title)

    eps, out = r.epsilon_first, []
    neurons = [e for e in eps if e.method == NEURONS]
    samples = torch.tensor([e.samples for e in eps], dtype=torch.float64)  # [K, S]
    never = "no setting was sampled (each needed more than max_samples draws)"
    out.append(
        rules.above(
            pre + titles.CLAIMS["draws"],
            bound_checks.exceed_share(samples, [e.size for e in eps]),
            0.5,
            bounds=SHARE,
            source="samples > layer size (Figs. 2, 6, 10)",
            section=sec(titles.EPSILON),
            detail="share of the (regime, method, guaranteed share) settings needing more draws "
            "than units; holds when more than half do",
        )
    )
    out.append(
        _rule(
            rules.above,
            pre + titles.CLAIMS["far"],
            bound_checks.smallest([e.ratio for e in eps]),
            10.0,
            bounds=RATIO,
            why=never,
            source="bound >> observed error (Figs. 2, 6)",
            section=sec(titles.EPSILON),
            unit="×",
            detail="the smallest bound / mean observed error over the sampled settings; holds "
            f"when it is above 10{_smallest_at(eps)}",
        )
    )
    out.append(
        rules.below(
            pre + "coreset neuron pruning reaches little or no sparsity",
            bound_checks.largest(_seed_table(neurons, "sparsity", S)),
            0.1,
            bounds=SHARE,
            source="sparsity about 0 (Figs. 6, 7, 10)",
            section=sec(titles.EPSILON),
            detail="the largest neuron sparsity over the epsilon-first settings",
        )
    )
    out.append(
        rules.below(
            pre + titles.CLAIMS["few"],
            bound_checks.largest(_seed_table(r.sparsity_first, "implied_share", S)),
            0.5,
            bounds=SHARE,
            source="vacuous guarantee (Fig. 8)",
            section=sec(titles.SPARSITY),
            detail="the largest guaranteed share of the correct labels over the kept fractions",
        )
    )
    tuned = [t for t in r.finetune if len(t.before) == S]
    gain = bound_checks.largest_gain([t.after for t in tuned], [t.before for t in tuned])
    out.append(
        rules.above(
            pre + titles.CLAIMS["gain"],
            gain,
            0.5,
            bounds=(-1.0, 1.0),
            source="> 50 points (Fig. 3)",
            section=sec(titles.HEURISTICS),
            detail="the largest dev accuracy gain from fine-tuning over methods and levels: a "
            "claim about the best case, not a typical one",
        )
    )
    pairs = _pairs(tuned, NEURONS, "L0", "Mussay coreset") + _pairs(
        tuned, WEIGHTS, "magnitude", "SiPP (random)"
    )
    claim = pre + titles.CLAIMS["heuristics"]
    out.append(
        rules.above(
            claim,
            bound_checks.exceed_share(
                torch.tensor([h.after for h, _ in pairs], dtype=torch.float64)
                - torch.tensor([c.after for _, c in pairs], dtype=torch.float64),
                -0.01 - 1e-9,  # within one point: a tie at exactly one point counts
            ),
            0.5,
            bounds=SHARE,
            source="Figs. 5, 9",
            section=sec(titles.HEURISTICS),
            detail="share of (regime, level) pairs, L0 against Mussay's coreset and magnitude "
            "against SiPP sampling at the same sparsity, where the heuristic's dev accuracy "
            "after fine-tuning is within one point of the coreset's or better; holds above 0.5",
        )
        if pairs
        else rules.not_measured(claim, "no heuristic had a coreset at its sparsity")
    )
    det = [t for t in tuned if t.method == "SiPP (deterministic)"]
    rise = torch.tensor([t.raw_after for t in det], dtype=torch.float64) - torch.tensor(
        [t.raw_before for t in det], dtype=torch.float64
    )
    claim = pre + titles.CLAIMS["raw"]
    out.append(
        rules.above(
            claim,
            bound_checks.exceed_share(rise, 0.0),
            0.5,
            bounds=SHARE,
            source="error rises (Fig. 3, middle)",
            section=sec(titles.GAP),
            detail="share of the fine-tuned deterministic SiPP nets whose mean max_c |Delta_c| "
            "rose; holds when more than half did",
        )
        if det
        else rules.not_measured(claim, "no deterministic SiPP net was fine-tuned")
    )
    if r.model != "LeNet-300-100":  # the source's budget is for VGG-16 (Fig. 10)
        out.append(
            _rule(
                rules.above,
                pre + "the draws required exceed the source's budget of 1M",
                bound_checks.exceed_share(samples, 1e6),
                0.5,
                bounds=SHARE,
                why=never,
                source="> 1M samples (Fig. 10, VGG-16)",
                section=sec(titles.EPSILON),
                detail="share of the epsilon-first settings needing more than 1e6 draws. Not "
                f"like with like: ours is {r.model} on {r.data} with a final layer of "
                f"{r.widths[1]} x {r.widths[2]}, the source's a full VGG-16 on CIFAR-10 "
                "(``--arch vgg16 --width 1 --data cifar10`` repeats its setting)",
            )
        )
    out += _dropout_findings(r, pre, sec)
    claim = pre + titles.CLAIMS["ball"]
    out.append(
        _rule(
            rules.above,
            claim,
            bound_checks.smallest([e.ball_bound_ratio for e in neurons]),
            1.0,
            bounds=RATIO,
            why=never,
            source="Fig. 11 (no direction stated)",
            section=sec(titles.BALL),
            unit="×",
            detail="the smallest bound / mean ball error over the sampled neuron settings",
        )
    )
    if r.alpha:
        out.append(
            _rule(
                rules.below,
                pre + "our reading of Fig. 12 (the source states no direction): scaling the "
                "final layer by alpha leaves the draws required unchanged (within 20%)",
                bound_checks.spread([a.samples for a in r.alpha]),
                1.2,
                bounds=(1.0, math.inf),
                why="no draws were computed",
                source="Fig. 12",
                section=sec(titles.ALPHA),
                unit="×",
                detail="largest / smallest draws required over the factors alpha",
            )
        )
    if r.layerwise:
        sampled = [row for row in r.layerwise if not row.skipped]
        claim = pre + "layer by layer, the output errors stay within the bubbled-up bound"
        out.append(
            rules.above(
                claim,
                bound_checks.smallest([[row.within] for row in sampled]),
                0.9,
                bounds=SHARE,
                source="Fig. 1, right",
                section=titles.LAYERS,
                detail="the smallest share of dev inputs within the implied output bound over "
                "the sampled stages (first seed); holds above 1 - delta = 0.9",
            )
            if sampled
            else rules.not_measured(
                claim, "no layer could be sampled within the budget", section=titles.LAYERS
            )
        )
    return out


def _pairs(rows: list[FineTune], family: str, heuristic: str, coreset_: str):
    """(heuristic row, coreset row) at the same regime and level."""
    by = {(t.regime, t.method, t.level): t for t in rows if t.family == family}
    return [
        (t, by[(t.regime, coreset_, t.level)])
        for t in by.values()
        if t.method == heuristic and (t.regime, coreset_, t.level) in by
    ]


def _row_means(rows: list[FineTune], attr: str) -> Tensor:
    """[K, 1]: per fine-tuned row, the mean over seeds of ``attr`` (NaN skipped)."""
    return torch.stack([bound_checks.seed_means(getattr(t, attr), 1) for t in rows])


def _count(diff: Tensor, limit: float = 0.0) -> int:
    """How many of the rows of ``diff`` [K, 1] exceed ``limit``."""
    return round(bound_checks.exceed_share(diff, limit).item() * len(diff)) if len(diff) else 0


def _tally(rows: list[FineTune]) -> dict[str, float]:
    """Counts and extremes over the fine-tuned nets (means over seeds per row) that the
    heuristics and fine-tuning sections state: "within one point" is a difference above -0.01."""
    out: dict[str, float] = {}
    if not rows:
        return out
    after, before = _row_means(rows, "after"), _row_means(rows, "before")
    raw_a, raw_b = _row_means(rows, "raw_after"), _row_means(rows, "raw_before")
    cen_a, cen_b = _row_means(rows, "centred_after"), _row_means(rows, "centred_before")
    gain = bound_checks.largest_gain(after, before).item()
    top = max(range(len(rows)), key=lambda k: (after[k] - before[k]).nan_to_num(-1).item())
    out |= dict(
        nets=len(rows),
        gain=gain,
        gain_row=top,
        certified=bound_checks.largest(_row_means(rows, "guaranteed")).item(),
        accuracy_up=_count(after - before),
        raw_up=_count(raw_a - raw_b),
        raw_down=_count(raw_b - raw_a),
        centred_down=_count(cen_b - cen_a),
        accuracy_and_raw_up=_count(torch.minimum(after - before, raw_a - raw_b)),
    )
    for method in dict.fromkeys(t.method for t in rows):
        k = [i for i, t in enumerate(rows) if t.method == method]
        out[f"raw_up {method}"] = _count(raw_a[k] - raw_b[k])
        out[f"nets {method}"] = len(k)
    det = [i for i, t in enumerate(rows) if t.method == "SiPP (deterministic)"]
    if det:
        out["det_gain"] = bound_checks.largest_gain(after[det], before[det]).item()
        out["det_certified"] = bound_checks.largest(_row_means(rows, "guaranteed")[det]).item()
    one_point = -0.01 - 1e-9  # within one point: a tie at exactly one point counts
    for tag, family, heuristic, coreset_ in (
        ("L0", NEURONS, "L0", "Mussay coreset"),
        ("magnitude", WEIGHTS, "magnitude", "SiPP (random)"),
        ("deterministic", WEIGHTS, "SiPP (deterministic)", "SiPP (random)"),
    ):
        pairs = _pairs(rows, family, heuristic, coreset_)
        if not pairs:
            continue
        h = [rows.index(a) for a, _ in pairs]
        c = [rows.index(b) for _, b in pairs]
        out[f"pairs {tag}"] = len(pairs)
        out[f"{tag} within before"] = _count(before[h] - before[c], one_point)
        out[f"{tag} within after"] = _count(after[h] - after[c], one_point)
        out[f"{tag} below before"] = _count(before[c] - before[h])
        lowest = min(rows[i].level for i in h)
        top_h = [i for i in h if rows[i].level == lowest]
        top_c = [c[h.index(i)] for i in top_h]
        out[f"{tag} pairs at the highest sparsity"] = len(top_h)
        out[f"{tag} coreset ahead at the highest sparsity"] = _count(after[top_c] - after[top_h])
    return out


def _smallest_at(eps: list[EpsilonFirst]) -> str:
    """Where the smallest bound / observed ratio (mean over seeds) is, in words."""
    means = [bound_checks.seed_means(e.ratio, 1).item() if e.ratio else math.nan for e in eps]
    finite = [(m, e) for m, e in zip(means, eps, strict=True) if math.isfinite(m)]
    if not finite:
        return ""
    _, e = min(finite, key=lambda t: t[0])
    return f" (smallest: {e.method}, {e.regime}, guaranteed share {e.share:g})"


def _dropout_findings(r: Results, pre: str, sec) -> list[Finding]:
    """Fig. 7: dropout raises the sensitivities and leaves no sparsity."""
    by = {g.name: g for g in r.regimes}
    c1 = pre + "dropout raises the sensitivities"
    c2 = pre + (
        "after dropout training, coreset neuron pruning reaches a sparsity of 0 (taken as below 5%)"
    )
    if "dropout" not in by or len(by) < 2:
        why = "needs the dropout regime and another one (option regimes)"
        return [rules.not_measured(c, why, source="Fig. 7") for c in (c1, c2)]
    others = torch.tensor([g.sensitivity for g in r.regimes if g.name != "dropout"])
    drop = torch.tensor(by["dropout"].sensitivity)
    rows = [e for e in r.epsilon_first if e.regime == "dropout" and e.method == NEURONS]
    return [
        rules.above(
            c1,
            drop - bound_checks.largest(others),
            0.0,
            source="Fig. 7",
            section=titles.arm_title(r.model, titles.REGIMES),
            detail="the dropout nets' mean total sensitivity minus the largest other regime's",
        ),
        rules.below(
            c2,
            bound_checks.largest(_seed_table(rows, "sparsity", len(drop))),
            0.05,
            bounds=SHARE,
            source="sparsity 0 (Fig. 7)",
            section=titles.arm_title(r.model, titles.EPSILON),
            detail="the largest neuron sparsity of the dropout nets over the guaranteed shares",
        ),
    ]


def findings(results: Results, config: Config | None = None) -> list[Finding]:
    """The source's claims on LeNet-300-100 (or the checkpoint) and, prefixed with its name,
    on the VGG arm's network."""
    out = _arm_findings(results)
    if results.vgg is not None:
        out += _arm_findings(results.vgg)
    elif results.model == "LeNet-300-100":
        out.append(
            rules.not_measured(
                "VGG-16: the draws required exceed the source's budget of 1M",
                "the VGG arm is off (option arch none)",
                source="> 1M samples (Fig. 10, VGG-16)",
            )
        )
    return out

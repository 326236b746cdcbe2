"""Study ``node-criteria``: every node criterion, compared fairly, on an MNIST MLP, the spirals
net and a LeNet-5 convnet on the same MNIST images.

Each net is trained with ``seeds`` seeds (``ensemble.fit_many``; the convnet with ``train.fit``
seed by seed) on one fixed split. On the convnet a unit is a conv channel or a Linear feature. For every
trained net and criterion the node scores are computed once, on a fixed subset of training
points; the nodes with the lowest scores are removed, 10%..90% of them, per layer and globally
(``criteria.select``), with and without mean compensation, and every pruned model is evaluated
on the same test points (``sweep.removal_metrics``, batched over plans, equal to
``surgery.remove_nodes``). The random criterion is the baseline, paired by seed. The report
(:mod:`.node_criteria_report`) shows accuracy and loss curves with 95% intervals, ranking
tables, the parameter count and theoretical speed-up of every pruned model, and what a short
fine-tune of the pruned models (``sweep.masked_equivalent`` + ``ensemble.fit_many``) changes.
Findings and what the runs showed: ``docs/node-criteria.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ..base import checkpoint, data, files, models, stats, train
from ..base.executor import SERIAL, Executor, Unit, run_units
from ..base.progress import track
from ..engines import ensemble, sweep
from ..methods import costs, criteria, curves, surgery
from ..methods import findings as findings_
from ..methods.findings import Finding
from .base import option
from .node_criteria_report import sections  # noqa: F401 (the study's report)

NAME = "node-criteria"
TITLE = "Node criteria: a fair comparison of which hidden nodes to remove"
SUMMARY = "Every node criterion, 10-90% removed, per layer/global, +-mean compensation, seeds."

NETS = ("mnist5k", "spirals", "lenet5")
DATA = {"mnist5k": "mnist5k", "spirals": "spirals", "lenet5": "mnist5k"}  # each net's data set
SCOPES = criteria.SCOPES  # ("layer", "global")
COMPENSATIONS = ("none", "mean")
BASELINE = "random"


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data splits; the nets are trained with seeds seed..")
    seeds: int = option(5, "trained nets (initialisation and batch order) per data set")
    nets: tuple[str, ...] = option(NETS, f"nets to study, from {', '.join(NETS)}")
    criteria: tuple[str, ...] = option(
        tuple(criteria.NODE_CRITERIA), "node criteria to compare (must include 'random')"
    )
    fractions: tuple[float, ...] = option(
        (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), "fractions of hidden nodes removed"
    )
    mnist_widths: tuple[int, ...] = option((784, 300, 100, 10), "layer widths of the MNIST MLP")
    mnist_train: int = option(4000, "mnist5k training images (at most 4000)")
    mnist_epochs: int = option(12, "epochs of the MNIST MLP (Adam)")
    mnist_lr: float = option(1e-3, "Adam learning rate of the MNIST MLP")
    mnist_batch: int = option(64, "mini-batch size of the MNIST MLP")
    spirals_widths: tuple[int, ...] = option((2, 50, 50, 2), "layer widths of the spirals net")
    spirals_train: int = option(1000, "spirals training points (toy-nets: 1000)")
    spirals_epochs: int = option(100, "epochs of the spirals net (toy-nets: 100)")
    spirals_lr: float = option(0.01, "Adam learning rate of the spirals net (toy-nets: 0.01)")
    spirals_batch: int = option(32, "mini-batch size of the spirals net (toy-nets: 32)")
    lenet5_train: int = option(4000, "mnist5k training images of the LeNet-5 (at most 4000)")
    lenet5_epochs: int = option(6, "epochs of the LeNet-5 (Adam)")
    lenet5_lr: float = option(2e-3, "Adam learning rate of the LeNet-5")
    lenet5_batch: int = option(64, "mini-batch size of the LeNet-5")
    n_test: int = option(1000, "test points every pruned model is evaluated on")
    score_points: int = option(
        1000, "training points the scores and the compensation means are taken over"
    )
    finetune_fractions: tuple[float, ...] = option(
        (0.5, 0.8), "fractions removed before the fine-tune (empty: no fine-tune)"
    )
    finetune_scope: str = option("global", "scope of the fine-tuned pruned models")
    finetune_compensate: str = option("mean", "compensation of the fine-tuned pruned models")
    finetune_epochs: int = option(2, "epochs of the fine-tune (at each net's training lr)")
    highlight: int = option(4, "criteria drawn in colour with bands per panel (plus random)")

    QUICK: ClassVar[dict] = {
        "seeds": 2,
        "fractions": (0.2, 0.5, 0.8),
        "mnist_train": 1000,
        "mnist_epochs": 3,
        "spirals_train": 500,
        "spirals_epochs": 30,
        "lenet5_train": 1000,
        "lenet5_epochs": 2,
        "n_test": 500,
        "score_points": 500,
        "finetune_fractions": (0.5,),
        "finetune_epochs": 1,
    }

    def __post_init__(self) -> None:
        bad = [n for n in self.nets if n not in NETS]
        if not self.nets or bad or len(set(self.nets)) < len(self.nets):
            raise ValueError(f"nets={self.nets}: choose distinct names from {list(NETS)}")
        unknown = [c for c in self.criteria if c not in criteria.NODE_CRITERIA]
        if unknown or len(set(self.criteria)) < len(self.criteria):
            raise ValueError(
                f"criteria: unknown or repeated {unknown or self.criteria}; choose from "
                f"{sorted(criteria.NODE_CRITERIA)}"
            )
        if BASELINE not in self.criteria:
            raise ValueError(
                f"criteria must include the baseline {BASELINE!r}; got {self.criteria}"
            )
        for name in ("fractions", "finetune_fractions"):
            f = getattr(self, name)
            if not all(0 < v < 1 for v in f) or list(f) != sorted(set(f)):
                raise ValueError(f"{name} must increase strictly within (0, 1); got {f}")
        if not self.fractions:
            raise ValueError("fractions must not be empty")
        if self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 for intervals over seeds; got {self.seeds}")
        for name in (
            "mnist_train", "mnist_epochs", "spirals_train", "spirals_epochs", "lenet5_train",
            "lenet5_epochs", "n_test",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("score_points", "mnist_batch", "spirals_batch", "lenet5_batch", "highlight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0; got {self.finetune_epochs}")
        if self.finetune_scope not in SCOPES:
            raise ValueError(f"finetune_scope={self.finetune_scope!r}: choose from {SCOPES}")
        if self.finetune_compensate not in COMPENSATIONS:
            raise ValueError(
                f"finetune_compensate={self.finetune_compensate!r}: choose from {COMPENSATIONS}"
            )
        for name, w in (
            ("mnist_widths", self.mnist_widths),
            ("spirals_widths", self.spirals_widths),
        ):
            if len(w) < 3:
                raise ValueError(f"{name} needs at least one hidden layer; got {w}")
        if self.mnist_widths[0] != 784 or self.mnist_widths[-1] != 10:
            raise ValueError(
                f"mnist_widths must start with 784 and end with 10; got {self.mnist_widths}"
            )
        if self.spirals_widths[0] != 2 or self.spirals_widths[-1] != 2:
            raise ValueError(f"spirals_widths must start and end with 2; got {self.spirals_widths}")


@dataclass
class Panel:
    """One (scope, compensation) cell of the grid: curves over fractions for every criterion."""

    scope: str
    compensate: str
    accuracy: Tensor  # [K, S, F] test accuracy per criterion, seed, fraction
    loss: Tensor  # [K, S, F] test cross-entropy
    accuracy_mean: Tensor  # [K, F] mean over seeds
    accuracy_half: Tensor  # [K, F] 95% interval half-width over seeds
    loss_mean: Tensor
    loss_half: Tensor
    log_loss_mean: Tensor  # [K, F] mean of log(loss) over seeds (log of the geometric mean)
    log_loss_half: Tensor  # [K, F] its 95% half-width (a multiplicative band exp(+-half))
    by_accuracy: sweep.Comparison
    by_loss: sweep.Comparison
    # share of test points given the most common predicted class (prediction collapse);
    # absent from runs written before it was measured
    majority: Tensor | None = None  # [K, S, F]
    majority_mean: Tensor | None = None  # [K, F] mean over seeds


@dataclass
class Cost:
    """Size of every pruned model of one scope (the same for both compensations)."""

    scope: str
    parameters: Tensor  # [K, S, F]
    speedup: Tensor  # [K, S, F] dense MACs of the full net / of the pruned net
    parameters_mean: Tensor  # [K, F]
    speedup_mean: Tensor  # [K, F]


@dataclass
class FineTune:
    """Pruned models (one scope and compensation) before and after a short fine-tune."""

    scope: str
    compensate: str
    fractions: list[float]
    epochs: int
    lr: float
    before_accuracy: Tensor  # [K, S, F2]
    after_accuracy: Tensor
    before_loss: Tensor
    after_loss: Tensor
    before_mean: Tensor  # [K, F2] accuracy
    before_half: Tensor
    after_mean: Tensor
    after_half: Tensor
    before: sweep.Comparison
    after: sweep.Comparison


@dataclass
class Contrast:
    """A paired difference of accuracy areas over seeds, per criterion (same nets, same data)."""

    name: str  # e.g. "mean - none, layer"
    mean: Tensor  # [K]
    half: Tensor  # [K] 95% interval half-width


@dataclass
class NetStudy:
    """Everything measured on one data set's nets."""

    name: str
    widths: tuple[int, ...]  # units: inputs (channels for the convnet), hidden layers, classes
    epochs: int
    lr: float
    batch_size: int
    n_train: int
    n_test: int
    score_points: int
    seeds: list[int]
    test_accuracy: Tensor  # [S] full nets
    test_accuracy_half: float  # 95% interval half-width over seeds
    test_loss: Tensor  # [S]
    parameters: int  # full net
    macs: int  # full net, per input
    score_seconds: Tensor  # [K] wall-clock seconds to score all nodes, mean over seeds
    panels: list[Panel]
    contrasts: list[Contrast]  # compensation gain per scope, global gain per compensation
    costs: list[Cost]
    finetune: FineTune | None
    checkpoints: list[str]
    test_majority: Tensor | None = None  # [S] full nets, as Panel.majority
    arch: str = "mlp"  # "mlp" or "lenet5"
    data: str = ""  # the data set (the net's name for the MLPs)

    def panel(self, scope: str, compensate: str) -> Panel:
        return next(p for p in self.panels if (p.scope, p.compensate) == (scope, compensate))


@dataclass
class Results:
    criteria: list[str]
    labelled: list[str]  # criteria that read the labels (the loss)
    fractions: list[float]
    nets: list[NetStudy]
    overall_rank: Tensor  # [K] accuracy rank averaged over every panel of every net
    highlight: int


# --- the pieces ------------------------------------------------------------------------------


def _recipe(name: str, config: Config) -> dict:
    p = {"mnist5k": "mnist", "spirals": "spirals", "lenet5": "lenet5"}[name]
    return dict(
        arch="lenet5" if name == "lenet5" else "mlp",
        widths=tuple(getattr(config, f"{p}_widths", ())),
        n_train=getattr(config, f"{p}_train"),
        epochs=getattr(config, f"{p}_epochs"),
        lr=getattr(config, f"{p}_lr"),
        batch_size=getattr(config, f"{p}_batch"),
    )


def _train(name: str, recipe: dict, config: Config, out: Path, progress: bool, device):
    """The split and ``config.seeds`` nets trained together on it (all on ``device``), saved as
    checkpoints."""
    split = data.load(
        DATA[name], seed=config.seed, n_train=recipe["n_train"], n_test=config.n_test
    ).to(device=device)
    seeds = [config.seed + k for k in range(config.seeds)]
    fit = {k: recipe[k] for k in ("epochs", "lr", "batch_size")}
    if recipe["arch"] == "lenet5":  # convnets train one by one (fit_many stacks MLPs)
        nets = [models.lenet5(seed=s).to(device) for s in seeds]
        with track(len(nets), f"{name}: training", enabled=progress) as advance:
            for s, net in zip(seeds, nets, strict=True):
                train.fit(net, split.train, seed=s, progress=False, **fit)
                advance()
        recipe["widths"] = tuple(costs.widths(nets[0]))
    else:
        nets = [models.mlp(recipe["widths"], seed=s).to(device) for s in seeds]
        ensemble.fit_many(nets, split.train, seeds=seeds, progress=progress, **fit)
    saved = []
    for s, net in zip(seeds, nets, strict=True):
        saved.append(f"{name}_seed{s}.safetensors")
        checkpoint.save(
            out / saved[-1],
            net,
            data=DATA[name],
            seed=s,
            arch=recipe["arch"],
            widths=list(recipe["widths"]),
            train=dict(fit, optimizer="adam", n_train=len(split.train), split_seed=config.seed),
        )
    return split, seeds, nets, saved


def _panel(scope, compensate, accuracy, loss, majority, fractions, baseline) -> Panel:
    acc_mean, acc_half = stats.mean_interval(accuracy, dim=1)
    loss_mean, loss_half = stats.mean_interval(loss, dim=1)
    log_mean, log_half = stats.mean_interval(loss.log(), dim=1)
    return Panel(
        scope,
        compensate,
        accuracy,
        loss,
        acc_mean,
        acc_half,
        loss_mean,
        loss_half,
        log_mean,
        log_half,
        sweep.compare(accuracy, fractions, baseline=baseline),
        sweep.compare(loss, fractions, baseline=baseline, higher_is_better=False),
        majority,
        majority.mean(1),
    )


def _contrast(name: str, panels: list[Panel], a: tuple, b: tuple) -> Contrast:
    """Paired (by seed) difference of the accuracy areas of panels ``a`` and ``b``."""
    area = {(p.scope, p.compensate): p.by_accuracy.area for p in panels}  # [K, S] each
    return Contrast(name, *stats.mean_interval(area[a] - area[b], dim=1))


def _finetune_stacked(split, ref, seeds, nets, plans, recipe, comp, config) -> dict:
    """Fine-tune every pruned MLP at once: each as a full-size copy under a node mask, one
    stacked ``fit_many``; returns ``{(k, s): test metrics}``."""
    pairs = {
        key: sweep.masked_equivalent(nets[key[1]], plan, compensate=comp, x=ref.x)
        for key, plan in plans.items()
    }
    keys = list(pairs)
    copies = [pairs[key][0] for key in keys]
    ensemble.fit_many(
        copies,
        split.train,
        seeds=[seeds[s] for _, s in keys],
        epochs=config.finetune_epochs,
        lr=recipe["lr"],
        batch_size=recipe["batch_size"],
        node_masks=torch.stack([pairs[key][1].to(ref.x.device) for key in keys]),
        progress=False,
    )
    # the removed nodes are masked out in the copy: deleting them changes nothing
    return {
        (k, s): train.evaluate(
            surgery.remove_nodes(model, plans[k, s], compensate="none"), split.test
        )
        for (k, s), model in zip(keys, copies, strict=True)
    }


def _finetune(split, ref, seeds, nets, scores, recipe, config: Config, progress) -> FineTune:
    """Prune at ``finetune_fractions``, evaluate, fine-tune all pruned models together, evaluate."""
    names, fracs = config.criteria, list(config.finetune_fractions)
    K, S, F2 = len(names), len(seeds), len(fracs)
    comp, scope = config.finetune_compensate, config.finetune_scope
    before_acc, before_loss = torch.empty(K, S, F2), torch.empty(K, S, F2)
    after_acc, after_loss = torch.empty(K, S, F2), torch.empty(K, S, F2)
    for f, frac in enumerate(fracs):
        plans = {
            (k, s): criteria.select(scores[k][s], fraction=frac, scope=scope)
            for k in range(K)
            for s in range(S)
        }
        for s, net in enumerate(nets):
            masks = sweep.plan_masks([plans[k, s] for k in range(K)], models.hidden_sizes(net))
            m = sweep.removal_metrics(
                net, split.test, masks.to(ref.x.device), compensate=comp, x_ref=ref.x
            )
            before_loss[:, s, f], before_acc[:, s, f] = m.loss.cpu(), m.accuracy.cpu()
        if recipe["arch"] == "mlp":
            after = _finetune_stacked(split, ref, seeds, nets, plans, recipe, comp, config)
        else:  # convnets: each pruned model fine-tuned on its own
            after = {}
            bar = track(len(plans), f"fine-tune at {frac:.0%}", enabled=progress)
            with bar as advance:
                for (k, s), plan in plans.items():
                    pruned = surgery.remove_nodes(
                        nets[s], plan, compensate=comp, x=ref.x if comp == "mean" else None
                    )
                    fit = {key: recipe[key] for key in ("lr", "batch_size")}
                    train.fit(pruned, split.train, epochs=config.finetune_epochs, seed=seeds[s],
                              progress=False, **fit)  # fmt: skip
                    after[k, s] = train.evaluate(pruned, split.test)
                    advance()
        for (k, s), metrics in after.items():
            after_loss[k, s, f], after_acc[k, s, f] = metrics["loss"], metrics["accuracy"]
    base = names.index(BASELINE)
    b_mean, b_half = stats.mean_interval(before_acc, dim=1)
    a_mean, a_half = stats.mean_interval(after_acc, dim=1)
    return FineTune(
        scope,
        comp,
        fracs,
        config.finetune_epochs,
        recipe["lr"],
        before_acc,
        after_acc,
        before_loss,
        after_loss,
        b_mean,
        b_half,
        a_mean,
        a_half,
        sweep.compare(before_acc, fracs, baseline=base),
        sweep.compare(after_acc, fracs, baseline=base),
    )


def _study_net(name: str, config: Config, out: Path, progress: bool, device) -> NetStudy:
    recipe = _recipe(name, config)
    split, seeds, nets, saved = _train(name, recipe, config, out, progress, device)
    ref = split.train[: config.score_points]  # scores and compensation means come from here
    shape = tuple(split.train.x.shape[1:]) if recipe["arch"] != "mlp" else None  # for MACs
    # the full nets (an all-ones mask): loss, accuracy and prediction collapse in one pass
    full = [
        sweep.removal_metrics(
            net, split.test, torch.ones(1, sum(models.hidden_sizes(net)), device=device)
        )
        for net in nets
    ]
    names, fracs = config.criteria, list(config.fractions)
    K, S, F = len(names), len(seeds), len(fracs)
    # the [scope, compensation, K, S, F] tables live on the CPU: small, filled piece by piece
    accuracy = torch.empty(len(SCOPES), len(COMPENSATIONS), K, S, F)
    loss, majority = torch.empty_like(accuracy), torch.empty_like(accuracy)
    params = torch.empty(len(SCOPES), K, S, F)
    speed = torch.empty_like(params)
    seconds = torch.zeros(K)
    scores: list[list[list[Tensor]]] = [[] for _ in names]
    with track(S * K, f"{name}: scoring and pruning", enabled=progress) as advance:
        for s, (seed, net) in enumerate(zip(seeds, nets, strict=True)):
            plans = {}
            for k, criterion in enumerate(names):
                start = time.perf_counter()
                # only "random" draws from it, on the CPU (then moved): the same on every device
                g = torch.Generator().manual_seed(seed)
                scores[k].append(criteria.node_scores(criterion, net, ref.x, ref.y, generator=g))
                seconds[k] += (time.perf_counter() - start) / S
                for i, scope in enumerate(SCOPES):
                    for f, frac in enumerate(fracs):
                        plan = criteria.select(scores[k][s], fraction=frac, scope=scope)
                        plans[i, k, f] = plan
                        params[i, k, s, f] = costs.parameters(net, plan)
                        speed[i, k, s, f] = costs.speedup(net, plan, in_shape=shape)
                advance()
            keys = list(plans)
            masks = sweep.plan_masks([plans[key] for key in keys], models.hidden_sizes(net))
            masks = masks.to(device)
            where = torch.tensor(keys).T  # [3, M]: scope, criterion, fraction of each mask
            for j, comp in enumerate(COMPENSATIONS):
                m = sweep.removal_metrics(net, split.test, masks, compensate=comp, x_ref=ref.x)
                loss[where[0], j, where[1], s, where[2]] = m.loss.cpu()
                accuracy[where[0], j, where[1], s, where[2]] = m.accuracy.cpu()
                majority[where[0], j, where[1], s, where[2]] = m.majority.cpu()
    base = names.index(BASELINE)
    panels = [
        _panel(scope, comp, accuracy[i, j], loss[i, j], majority[i, j], fracs, base)
        for i, scope in enumerate(SCOPES)
        for j, comp in enumerate(COMPENSATIONS)
    ]
    contrasts = [
        _contrast(f"mean - none, {scope}", panels, (scope, "mean"), (scope, "none"))
        for scope in SCOPES
    ] + [
        _contrast(f"global - layer, {comp}", panels, ("global", comp), ("layer", comp))
        for comp in COMPENSATIONS
    ]
    cost = [
        Cost(scope, params[i], speed[i], params[i].mean(1), speed[i].mean(1))
        for i, scope in enumerate(SCOPES)
    ]
    finetune = None
    if config.finetune_fractions and config.finetune_epochs > 0:
        finetune = _finetune(split, ref, seeds, nets, scores, recipe, config, progress)
    return NetStudy(
        name,
        recipe["widths"],
        recipe["epochs"],
        recipe["lr"],
        recipe["batch_size"],
        len(split.train),
        len(split.test),
        len(ref),
        seeds,
        torch.cat([m.accuracy for m in full]),
        stats.mean_interval(torch.cat([m.accuracy for m in full]))[1].item(),
        torch.cat([m.loss for m in full]),
        costs.parameters(nets[0]),
        costs.macs(nets[0], in_shape=shape),
        seconds,
        panels,
        contrasts,
        cost,
        finetune,
        saved,
        torch.cat([m.majority for m in full]),
        recipe["arch"],
        DATA[name],
    )


def net_unit(name: str, config: Config, out: str, device: str) -> NetStudy:
    """One unit of work: one net's seeds trained, scored, pruned, evaluated and fine-tuned.

    The unit is the net (an arm), not a seed of it: the MLP seeds train together
    (``ensemble.fit_many``), which equals separate fits only to float rounding, so splitting
    them would change the results.
    """
    return _study_net(name, config, Path(out), False, torch.device(device))


def units(config: Config, device: str | torch.device = "cpu") -> list[Unit]:
    """The study's units of work: one per net."""
    kwargs = dict(config=config, device=str(torch.device(device)))
    return [Unit(name, net_unit, dict(name=name, **kwargs), writes=True) for name in config.nets]


def run(
    config: Config,
    out: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    executor: Executor = SERIAL,
) -> Results:
    """Train each net's seeds, score, prune, evaluate and fine-tune; checkpoints go to ``out``.

    Everything is computed on ``device`` (initialisations, data and random scores are drawn on
    the CPU and moved there); the results come back on the CPU. Each net is a unit of work run
    by ``executor`` (stored units are not computed again).
    """
    todo = units(config, device)
    nets = run_units(todo, out, executor=executor, progress=progress, description=NAME)
    ranks = torch.stack([p.by_accuracy.rank_mean for n in nets for p in n.panels])
    return files.to_cpu(
        Results(
            list(config.criteria),
            [c for c in config.criteria if c in criteria.LABELLED],
            list(config.fractions),
            nets,
            ranks.mean(0),
            config.highlight,
        )
    )


def headline(results: Results) -> dict[str, float]:
    out: dict[str, float] = {}
    base = results.criteria.index(BASELINE)
    for n in results.nets:
        out[f"{n.name} full test accuracy"] = n.test_accuracy.mean().item()
        for p in n.panels:
            area = p.by_accuracy.area_mean
            key = f"{n.name} {p.scope}/{p.compensate}"
            out[f"{key} best accuracy area"] = area.max().item()
            out[f"{key} random accuracy area"] = area[base].item()
    return out


# --- the claims --------------------------------------------------------------------------------

# (claim, criterion, compensation, rivals): literature claims checked on the per-layer panels
CLAIMS = (
    (
        "Taylor importance ranks nodes better than weight norms and mean activation "
        "(Molchanov et al. 2017/2019).",
        "taylor",
        "none",
        ("weight_in_norm", "weight_out_norm", "activation_mean_abs"),
    ),
    (
        "Mean replacement saliency suits mean-replacement pruning (Evci et al. 2018).",
        "mean_replacement",
        "mean",
        ("taylor", "activation_mean_abs"),
    ),
    (
        "Pruning the most often zero units (APoZ) beats random removal (Hu et al. 2016).",
        "apoz",
        "none",
        (BASELINE,),
    ),
    (
        "A second-order estimate of the loss change ranks better than the first-order one (OBD).",
        "obd_mask_delta",
        "none",
        ("taylor",),
    ),
)
STD = "activation_std"
COMP_WORDS = {"none": "without compensation", "mean": "with mean compensation"}


def section(net: str) -> str:
    """The title of the report section holding a net's panels."""
    return f"{net}: accuracy and loss as nodes are removed"


def findings(results: Results, config: Config) -> list[Finding]:
    """Per net: std pruning against random (the source's procedure, then without the
    compensation per layer and globally), mean compensation against plain removal, and the
    literature's claims, each a paired difference of accuracy areas over seeds."""
    out = []
    names = results.criteria
    for n in results.nets:
        out += _std_findings(n, names, results.fractions)
        out.append(_compensation_finding(n, names))
        for claim, name, comp, rivals in CLAIMS:
            if name not in names or any(v not in names for v in rivals):
                out.append(
                    findings_.not_measured(
                        f"{n.name}: {claim}",
                        f"{name} or a rival ({', '.join(rivals)}) is not among this run's criteria",
                    )
                )
                continue
            area = n.panel("layer", comp).by_accuracy.area  # [K, S]
            diff, j = curves.rival_difference(
                area, names.index(name), [names.index(v) for v in rivals]
            )
            out.append(
                _above(
                    f"{n.name}: {claim}",
                    diff,
                    source="literature, not the source's claim",
                    detail=f"Measured per layer {COMP_WORDS[comp]}: accuracy area of {name} "
                    f"({findings_.estimate(area[names.index(name)])}) minus that of its strongest "
                    f"rival, {names[j]} ({findings_.estimate(area[j])}). Our setting is one-shot "
                    "removal from small nets without fine-tuning, not the sources' iterative "
                    "pruning of large convnets.",
                    section=section(n.name),
                )
            )
    return out


def _std_findings(n: NetStudy, names: list[str], fractions: list[float]) -> list[Finding]:
    claim = f"{n.name}: Removing the nodes with the smallest activation std beats random removal"
    if STD not in names:
        return [findings_.not_measured(claim + ".", f"{STD} is not among this run's criteria")]
    k, b = names.index(STD), names.index(BASELINE)
    where = section(n.name)

    def diff(scope, comp):
        a = n.panel(scope, comp).by_accuracy.area
        return a[k] - a[b]

    rand = {c: n.panel("layer", c).by_accuracy.area[b] for c in COMPENSATIONS}
    drop = findings_.estimate(rand["mean"] - rand["none"])
    collapse = (
        f"Random removal with mean compensation against without (accuracy area "
        f"{findings_.estimate(rand['mean'])} against {findings_.estimate(rand['none'])}, paired "
        f"difference {drop})"
    )
    if drop.high < 0:
        collapse += ": the baseline collapses under mean compensation" + _collapse(n, b, fractions)
        collapse += ", so this verdict rests on a collapsed baseline; see the findings without it"
    elif drop.mean < 0:
        collapse += (
            f", not significant over {drop.n} seeds; part of the difference may come from a "
            "weakened baseline; see the findings without compensation"
        )
    else:
        collapse += "; the baseline does not lose under mean compensation"
    return [
        _above(
            claim + ", per layer with mean compensation (the source's procedure).",
            diff("layer", "mean"),
            source="'visually indistinguishable' after std pruning",
            detail=f"Measured: paired difference of accuracy areas, {STD} minus random. "
            + collapse
            + ".",
            section=where,
        ),
        _above(
            claim + ", per layer without compensation.",
            diff("layer", "none"),
            detail=f"Measured: paired difference of accuracy areas, {STD} minus random, both "
            "deleting the nodes outright (no baseline collapse).",
            section=where,
        ),
        _above(
            claim + ", globally without compensation.",
            diff("global", "none"),
            detail=f"Measured: paired difference of accuracy areas, {STD} minus random, the "
            "lowest scores of the whole net removed.",
            section=where,
        ),
    ]


def _compensation_finding(n: NetStudy, names: list[str]) -> Finding:
    """Mean replacement against plain removal: per seed, the area gain averaged over every
    criterion but random (whose collapse under compensation is a finding of its own) and both
    scopes; the detail counts the significant gains and losses."""
    chosen = [k for k, name in enumerate(names) if name != BASELINE]
    gains = [
        n.panel(scope, "mean").by_accuracy.area[chosen]
        - n.panel(scope, "none").by_accuracy.area[chosen]
        for scope in SCOPES
    ]  # [K - 1, S] each
    each = [findings_.estimate(g[k]) for g in gains for k in range(len(chosen))]
    up, down = sum(e.low > 0 for e in each), sum(e.high < 0 for e in each)
    return _above(
        f"{n.name}: Replacing removed nodes by their mean beats plain removal (Evci et al. "
        "2018; the bias compensation of Hobson 2022).",
        torch.stack(gains).mean((0, 1)),
        detail="Measured: paired gain in accuracy area from mean compensation, averaged over "
        f"the {len(chosen)} criteria other than random and both scopes. Of the {len(each)} "
        f"(criterion, scope) pairs, {up} gain significantly and {down} lose significantly (95% "
        "intervals, not adjusted for the number of pairs).",
        section="What we found",
    )


def _collapse(n: NetStudy, b: int, fractions: list[float]) -> str:
    """The prediction collapse of random removal per layer at the largest fraction <= 80%."""
    p = {c: n.panel("layer", c) for c in COMPENSATIONS}
    if p["mean"].majority is None:
        return ""
    f = max([i for i, v in enumerate(fractions) if v <= 0.8 + 1e-9] or [0])
    share = {c: findings_.estimate(p[c].majority[b, :, f]) for c in COMPENSATIONS}
    return (
        f" (at {fractions[f]:.0%} removed the most common predicted class takes "
        f"{share['mean']} of the test points with mean compensation, {share['none']} without, "
        f"{findings_.estimate(n.test_majority)} for the full nets)"
    )


def _above(claim, values, threshold: float = 0.0, **kw) -> Finding:
    """``findings.above``, a "differs" saying whether it is the same direction or not."""
    return findings_.noted(findings_.above(claim, values, threshold, **kw), threshold)

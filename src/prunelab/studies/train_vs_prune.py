"""Study ``train-vs-prune``: does it matter whether a net is pruned before or after training?

Hobson (2022), "Train first VS prune first in neural networks": a 2-50-50-2 ReLU net on two
spiral arms, half the nodes of both hidden layers removed at random or by the smallest activation
standard deviation. Arms, all from one initialisation theta0 per seed: train then prune (the
next bias absorbing the removed nodes' means, or not), train then prune then fine-tune, and
prune the same nodes at theta0 then train. Decision regions, weight-vs-weight scatters of the
main hidden-to-hidden matrix with the weights training never moved, node-role and weight
correlations, and the Lipschitz certificate of the discussion against the observed loss change.
A LeNet-5 arm repeats the four arms on mnist5k with the same criteria and seeds (a unit is a
conv channel or a dense feature), for the test scores only. The report is rendered by
:mod:`.train_vs_prune_report`.
Findings and what the runs showed: ``docs/train-vs-prune.md``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import checkpoint, data, files, models, stats, train
from ..base.executor import SERIAL, Executor, Unit, run_units
from ..base.progress import track
from ..engines import ensemble
from ..methods import compare, criteria, curves, surgery
from ..methods import findings as findings_
from ..methods.findings import Finding
from . import toy_nets
from .base import option
from .train_vs_prune_report import sections  # noqa: F401 (the study's report)

NAME = "train-vs-prune"
TITLE = "Train first vs prune first: a spirals net pruned before or after training"
SUMMARY = "Prune half the nodes before or after training (random / activation std); compare."

MAIN = 1  # the Linear between the two hidden layers: the source's "main 50x50 weight matrix"
ARMS = {
    "prune": "train, prune (mean-compensated)",
    "plain": "train, prune (no compensation)",
    "finetune": "train, prune, fine-tune",
    "init": "prune at θ0, then train",
}


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data; net k is initialised and shuffled with seed + k")
    seeds: int = option(5, "initialisations theta0, each run through every arm")
    widths: tuple[int, ...] = option((2, 50, 50, 2), "layer widths (the source: 2-50-50-2)")
    epochs: int = option(100, "training epochs of the full and the prune-at-theta0 nets")
    lr: float = option(0.01, "Adam learning rate (toy-nets' spirals recipe)")
    batch_size: int = option(32, "mini-batch size (Keras' default)")
    n_train: int = option(1000, "training points (also the data of the means and certificates)")
    n_test: int = option(1000, "fresh test points")
    criteria: tuple[str, ...] = option(
        ("random", "activation_std", "std_out_norm"),
        "node criteria choosing the removed half (the source: random and activation_std; "
        "std_out_norm = std x outgoing weight norm tests the discussion's caveat)",
    )
    fraction: float = option(0.5, "fraction of the nodes of every hidden layer to remove")
    finetune_epochs: int = option(
        100,
        "fine-tuning epochs after train-then-prune (the source does not say; by default the "
        "same budget prune-then-train gets)",
    )
    grid: int = option(120, "decision-region resolution (points per side over [-lim, lim])")
    convnet: bool = option(True, "also run the four arms on a LeNet-5 on mnist5k")
    lenet5_train: int = option(4000, "mnist5k training images of the LeNet-5 arm")
    lenet5_epochs: int = option(
        6, "epochs of the LeNet-5 (and of its fine-tune and its prune-first arm)"
    )
    lenet5_lr: float = option(2e-3, "Adam learning rate of the LeNet-5")
    lim: float = option(2.0, "decision regions cover [-lim, lim]^2 (the data lie in the unit disc)")

    QUICK: ClassVar[dict] = {
        "seeds": 2,
        "criteria": ("random", "activation_std"),
        "epochs": 25,
        "finetune_epochs": 25,
        "n_train": 600,
        "grid": 80,
        "lenet5_train": 1000,
        "lenet5_epochs": 2,
    }

    def __post_init__(self) -> None:
        if len(self.widths) < 4 or self.widths[0] != 2 or self.widths[-1] != 2:
            raise ValueError(
                "widths must start and end with 2 and have at least two hidden layers (the "
                f"study compares the matrix between the first two); got {self.widths}"
            )
        unknown = [c for c in self.criteria if c not in criteria.NODE_CRITERIA]
        if not self.criteria or unknown:
            raise ValueError(
                f"criteria {list(self.criteria)}: choose one or more of "
                f"{sorted(criteria.NODE_CRITERIA)}"
            )
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must lie in (0, 1); got {self.fraction}")
        for name in ("seeds", "epochs", "n_train", "n_test", "batch_size", "lenet5_train",
                     "lenet5_epochs"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0; got {self.finetune_epochs}")
        if self.grid < 2 or not self.lim > 0:
            raise ValueError(f"grid must be >= 2 and lim > 0; got {self.grid}, {self.lim}")


@dataclass
class Arm:
    """One arm over the seeds: scores ``[S]`` and the first seed's decision map."""

    key: str  # "full" or a key of ARMS
    criterion: str  # "" for the full net
    label: str
    test_loss: Tensor  # [S]
    test_accuracy: Tensor  # [S]
    train_accuracy: Tensor  # [S]
    agreement: Tensor  # [S] test points put in the same class as the full net
    probability: Tensor  # [G, G] P(class 1) over the plane, first seed, row 0 at -lim


@dataclass
class ConvArm:
    """One arm of the LeNet-5 over the seeds (no decision map: the inputs are images)."""

    key: str
    criterion: str
    label: str
    test_loss: Tensor  # [S]
    test_accuracy: Tensor  # [S]
    train_accuracy: Tensor  # [S]
    agreement: Tensor  # [S] test images put in the same class as the full net


@dataclass
class Convnet:
    """The four arms on a LeNet-5 trained on mnist5k (channels and features as units)."""

    hidden: list[int]  # units per hidden layer of the full net
    pruned_hidden: list[int]
    n_train: int
    n_test: int
    epochs: int
    arms: list[ConvArm]


@dataclass
class Training:
    """The full nets' main matrix, theta0 against trained (what training moved)."""

    theta0: Tensor  # [H_1, H_0] first seed
    trained: Tensor  # [H_1, H_0]
    size: int
    unmoved: Tensor  # [S] entries equal to theta0 to machine precision
    shift_median: Tensor  # [S] median |w_T - w_0| over the moved entries
    shift_mean: Tensor  # [S]
    init_bound: float  # the initialisation is U(-b, b) with b = 1/sqrt(fan_in)
    dead_init: Tensor  # [S, L] hidden nodes dead on all training data at theta0, per layer
    dead_trained: Tensor  # [S, L] ... after training
    died: Tensor  # [S, L] nodes alive at theta0 that training killed
    died_entries: Tensor  # [S] entries of the main matrix into or out of such nodes
    died_moved: Tensor  # [S] ... that moved before the node died
    died_shift: Tensor  # [S] their median |shift|
    other_shift: Tensor  # [S] median |shift| of the other moved entries
    died_mask: Tensor  # [H_1, H_0] bool, first seed: the entries of nodes training killed
    unmoved_live: Tensor  # [S] unmoved entries whose two nodes were both alive at theta0
    never_coactive: Tensor  # [S] entries whose two nodes are active on no common point at theta0
    unmoved_coactive: Tensor  # [S] unmoved entries whose nodes were co-active at theta0


@dataclass
class Matrices:
    """The surviving main matrix of one criterion's pruned nets, compared across arms.

    "trained" is train-then-prune (theta_T's surviving entries; pruning moves no weight),
    "init" prune-at-theta0-then-train, "finetuned" train-prune-fine-tune.
    """

    criterion: str
    theta0: Tensor  # [h_1, h_0] first seed
    trained: Tensor
    init: Tensor
    finetuned: Tensor
    size: int
    trained_unmoved: Tensor  # [S] vs theta0
    trained_shift: Tensor  # [S] median |shift| of the moved entries
    init_unmoved: Tensor  # [S]
    init_shift: Tensor  # [S]
    correlation: Tensor  # [S] Pearson(trained, init)
    shift_correlation: Tensor  # [S] Pearson(trained - theta0, init - theta0)
    equal: Tensor  # [S] entries equal in trained and init (the scatter's exact diagonal)
    init_theta0_correlation: Tensor  # [S] Pearson(theta0, init)
    finetune_correlation: Tensor  # [S] Pearson(finetuned, init)
    finetune_shift_correlation: Tensor  # [S]
    roles_matched: Tensor  # [S, L] mean corr of node j (train-then-prune) with node j (init)
    roles_unmatched: Tensor  # [S, L] mean corr of node j with node k != j
    agreement: Tensor  # [S] test points classified alike by train-then-prune and init
    finetune_agreement: Tensor  # [S] ... by the fine-tuned net and init
    removed_dead: Tensor  # [S, L] removed nodes that were dead in the trained net
    kept_dead: Tensor  # [S, L] kept nodes that were dead in the trained net


@dataclass
class Certificates:
    """The Lipschitz certificate for removing one criterion's nodes from the trained nets."""

    criterion: str
    layers: list[int]
    bound: Tensor  # [S, L] per layer, telescoped (downstream norms)
    source: Tensor  # [S, L] the discussion's product of all operator norms
    observed: Tensor  # [S, L] mean |loss change| of that layer's step
    total_bound: Tensor  # [S]
    total_observed: Tensor  # [S] mean |loss change| with both layers pruned
    loss_change: Tensor  # [S] change of the mean training loss


@dataclass
class Results:
    seeds: list[int]
    widths: tuple[int, ...]
    pruned_widths: tuple[int, ...]
    n_train: int
    n_test: int
    lim: float
    arms: list[Arm]
    training: Training
    matrices: list[Matrices]
    certificates: list[Certificates]
    data_x: Tensor  # [n, 2] training points for the plots
    data_y: Tensor  # [n]
    reference: list[Tensor]  # the spiral arms' centre lines [P, 2]
    explorer: str  # the first seed's full net, for the interactive explorer page
    convnet: Convnet | None = None


# --- the pieces ------------------------------------------------------------------------------


def _fit(nets: list[nn.Sequential], seeds: list[int], epochs: int, split, config, progress):
    """Train same-architecture nets in place with the study's recipe (one batched run)."""
    if nets and epochs > 0:
        ensemble.fit_many(
            nets,
            split.train,
            seeds=seeds,
            epochs=epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            progress=progress,
        )


def _arm(key, criterion, nets, full, split, grid, config) -> Arm:
    test = split.test
    G = config.grid
    return Arm(
        key,
        criterion,
        "trained, full" if key == "full" else ARMS[key],
        torch.tensor([train.evaluate(n, test)["loss"] for n in nets]),
        torch.tensor([train.evaluate(n, test)["accuracy"] for n in nets]),
        torch.tensor([train.evaluate(n, split.train)["accuracy"] for n in nets]),
        torch.tensor([compare.agreement(n, f, test.x) for n, f in zip(nets, full, strict=True)]),
        # 3 decimals are plenty for an image and keep results.json small
        train.predict(nets[0], grid)[:, 1].reshape(G, G).double().round(decimals=3),
    )


def _training(theta0, full, x) -> Training:
    W0 = [models.parse(m).layers[MAIN].weight.detach() for m in theta0]
    WT = [models.parse(m).layers[MAIN].weight.detach() for m in full]
    shifts = [compare.weight_shift(a, b) for a, b in zip(W0, WT, strict=True)]
    # the main matrix reads hidden layer MAIN - 1 (columns) and feeds hidden layer MAIN (rows)
    died = [compare.died(a, b, x) for a, b in zip(theta0, full, strict=True)]
    dead0 = [compare.dead_nodes(m, x) for m in theta0]
    live = [~compare.incident(d[MAIN], d[MAIN - 1]) for d in dead0]
    co = [compare.coactive(m, x, MAIN) for m in theta0]
    masks = [compare.incident(d[MAIN], d[MAIN - 1]) for d in died]
    on_died = [compare.weight_shift(a, b, where=m) for a, b, m in zip(W0, WT, masks, strict=True)]
    others = [compare.weight_shift(a, b, where=~m) for a, b, m in zip(W0, WT, masks, strict=True)]
    return Training(
        theta0=W0[0].clone(),
        trained=WT[0].clone(),
        size=shifts[0].size,
        unmoved=torch.tensor([s.unmoved for s in shifts]),
        shift_median=torch.tensor([s.median for s in shifts]),
        shift_mean=torch.tensor([s.mean for s in shifts]),
        init_bound=W0[0].shape[1] ** -0.5,
        dead_init=torch.tensor([[int(n.sum()) for n in d] for d in dead0]),
        dead_trained=torch.tensor([[int(d.sum()) for d in compare.dead_nodes(m, x)] for m in full]),
        died=torch.tensor([[int(n.sum()) for n in d] for d in died]),
        died_entries=torch.tensor([s.size for s in on_died]),
        died_moved=torch.tensor([s.size - s.unmoved for s in on_died]),
        died_shift=torch.tensor([s.median for s in on_died]),
        other_shift=torch.tensor([s.median for s in others]),
        died_mask=masks[0],
        unmoved_live=torch.tensor(
            [
                compare.weight_shift(a, b, where=m).unmoved
                for a, b, m in zip(W0, WT, live, strict=True)
            ]
        ),
        never_coactive=torch.tensor([int((~c).sum()) for c in co]),
        unmoved_coactive=torch.tensor(
            [
                compare.weight_shift(a, b, where=c).unmoved
                for a, b, c in zip(W0, WT, co, strict=True)
            ]
        ),
    )


def _matrices(criterion, plans, theta0, full, nets, split) -> Matrices:
    x, test_x = split.train.x, split.test.x
    rows = []
    for k, plan in enumerate(plans):
        W0 = compare.surviving_weights(theta0[k], MAIN, plan)
        WT = compare.surviving_weights(full[k], MAIN, plan)
        WP = compare.surviving_weights(nets["init"][k], MAIN, {})
        WF = compare.surviving_weights(nets["finetune"][k], MAIN, {})
        pair = compare.descendants(W0, WT, WP)
        tuned = compare.descendants(W0, WF, WP)
        roles = compare.roles(nets["prune"][k], nets["init"][k], x)
        dead = compare.dead_nodes(full[k], x)
        kept = compare.kept_nodes(full[k], plan)
        rows.append(
            dict(
                W=(W0, WT, WP, WF),
                pair=pair,
                tuned=tuned,
                init_theta0=compare.pearson(W0, WP),
                matched=[r.matched_mean for r in roles],
                unmatched=[r.unmatched for r in roles],
                agreement=compare.agreement(nets["prune"][k], nets["init"][k], test_x),
                finetune_agreement=compare.agreement(nets["finetune"][k], nets["init"][k], test_x),
                removed_dead=[int(d[plan.get(ell, [])].sum()) for ell, d in enumerate(dead)],
                kept_dead=[int(d[kept[ell].to(d.device)].sum()) for ell, d in enumerate(dead)],
            )
        )

    def column(get) -> Tensor:
        return torch.tensor([get(r) for r in rows])

    W0, WT, WP, WF = rows[0]["W"]
    return Matrices(
        criterion=criterion,
        theta0=W0,
        trained=WT,
        init=WP,
        finetuned=WF,
        size=W0.numel(),
        trained_unmoved=column(lambda r: r["pair"].a.unmoved),
        trained_shift=column(lambda r: r["pair"].a.median),
        init_unmoved=column(lambda r: r["pair"].b.unmoved),
        init_shift=column(lambda r: r["pair"].b.median),
        correlation=column(lambda r: r["pair"].correlation),
        shift_correlation=column(lambda r: r["pair"].shift_correlation),
        equal=column(lambda r: r["pair"].equal),
        init_theta0_correlation=column(lambda r: r["init_theta0"]),
        finetune_correlation=column(lambda r: r["tuned"].correlation),
        finetune_shift_correlation=column(lambda r: r["tuned"].shift_correlation),
        roles_matched=column(lambda r: r["matched"]),
        roles_unmatched=column(lambda r: r["unmatched"]),
        agreement=column(lambda r: r["agreement"]),
        finetune_agreement=column(lambda r: r["finetune_agreement"]),
        removed_dead=column(lambda r: r["removed_dead"]),
        kept_dead=column(lambda r: r["kept_dead"]),
    )


def _certificates(criterion, plans, full, x, y) -> Certificates:
    certs = [compare.removal_certificate(m, x, y, p) for m, p in zip(full, plans, strict=True)]
    return Certificates(
        criterion=criterion,
        layers=certs[0].layers,
        bound=torch.stack([c.bound for c in certs]),
        source=torch.stack([c.source for c in certs]),
        observed=torch.stack([c.observed for c in certs]),
        total_bound=torch.tensor([c.total_bound for c in certs]),
        total_observed=torch.tensor([c.total_observed for c in certs]),
        loss_change=torch.tensor([c.loss_change for c in certs]),
    )


def _lenet5_split(config: Config, device) -> data.Split:
    return data.load(
        "mnist5k", seed=config.seed, n_train=config.lenet5_train, n_test=config.n_test
    ).to(device=device)


def lenet5_unit(config: Config, seed: int, device: str) -> dict:
    """One unit of work: one LeNet-5 seed trained, scored and pruned (mean / plain), fine-tuned,
    pruned at theta0 then trained; the same criteria and fraction as the spirals nets.

    Returns the full net and ``nets[criterion][arm]``.
    """
    split = _lenet5_split(config, torch.device(device))
    x, y = split.train.x, split.train.y
    fit = dict(epochs=config.lenet5_epochs, lr=config.lenet5_lr, batch_size=config.batch_size)
    m0 = models.lenet5(seed=seed).to(device)
    m = copy.deepcopy(m0)
    train.fit(m, split.train, seed=seed, progress=False, **fit)
    nets: dict[str, dict[str, nn.Sequential]] = {}
    for c in config.criteria:
        g = torch.Generator().manual_seed(seed)
        scores = criteria.node_scores(c, m.eval(), x, y, generator=g)
        plan = criteria.select(scores, fraction=config.fraction, scope="layer")
        tuned = surgery.remove_nodes(m, plan, compensate="mean", x=x)
        train.fit(tuned, split.train, seed=seed, progress=False, **fit)
        scratch = surgery.remove_nodes(m0, plan, compensate="none")
        train.fit(scratch, split.train, seed=seed, progress=False, **fit)
        nets[c] = {
            "prune": surgery.remove_nodes(m, plan, compensate="mean", x=x),
            "plain": surgery.remove_nodes(m, plan, compensate="none"),
            "finetune": tuned,
            "init": scratch,
        }
    return files.to_cpu(dict(full=m.train(), nets=nets))


def _convnet(config: Config, parts: list[dict], device) -> Convnet:
    """The arms on LeNet-5 from its seeds' units (:func:`lenet5_unit`)."""
    split = _lenet5_split(config, device)
    full = [p["full"].to(device) for p in parts]
    arms = [_conv_arm("full", "", full, full, split)]
    for c in config.criteria:
        for key in ARMS:
            nets = [p["nets"][c][key].to(device) for p in parts]
            arms.append(_conv_arm(key, c, nets, full, split))
    return Convnet(
        models.hidden_sizes(full[0]),
        models.hidden_sizes(parts[0]["nets"][config.criteria[-1]]["init"]),
        len(split.train),
        len(split.test),
        config.lenet5_epochs,
        arms,
    )


def _conv_arm(key, criterion, nets, full, split) -> ConvArm:
    def scores(data_set, what):
        return torch.tensor([train.evaluate(n, data_set)[what] for n in nets])

    return ConvArm(
        key,
        criterion,
        "trained, full" if key == "full" else ARMS[key],
        scores(split.test, "loss"),
        scores(split.test, "accuracy"),
        scores(split.train, "accuracy"),
        torch.tensor(
            [compare.agreement(n, f, split.test.x) for n, f in zip(nets, full, strict=True)]
        ),
    )


def run(
    config: Config,
    out: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    executor: Executor = SERIAL,
) -> Results:
    """Train, prune, fine-tune and prune-then-train every seed; compare the arms.

    Everything is computed on ``device`` (initialisations, data and the random criterion's
    scores are drawn on the CPU and moved there); the results come back on the CPU. The units
    of work (the spirals nets, whose seeds train together, and each LeNet-5 seed) are run by
    ``executor`` (stored units are not computed again).
    """
    where = str(torch.device(device))
    seeds = [config.seed + k for k in range(config.seeds)]
    todo = [Unit("spirals", spirals_unit, dict(config=config, device=where), writes=True)]
    if config.convnet:
        todo += [
            Unit(f"lenet5-seed{s}", lenet5_unit, dict(config=config, seed=s, device=where))
            for s in seeds
        ]
    results, *parts = run_units(todo, out, executor=executor, progress=progress, description=NAME)
    if parts:
        results.convnet = files.to_cpu(_convnet(config, parts, torch.device(device)))
    return results


def spirals_unit(config: Config, out: str, device: str) -> Results:
    """One unit of work: every arm on the spirals nets (their seeds train together with
    ``ensemble.fit_many``, which equals separate fits only to float rounding)."""
    out, device, progress = Path(out), torch.device(device), False
    split = toy_nets.spirals_split(
        toy_nets.Config(seed=config.seed, spirals_train=config.n_train, n_test=config.n_test),
        device=device,
    )
    x, y = split.train.x, split.train.y
    seeds = [config.seed + k for k in range(config.seeds)]
    grid = data.grid(config.grid, config.lim).to(device)

    theta0 = [models.mlp(config.widths, seed=s).to(device) for s in seeds]
    full = [copy.deepcopy(m) for m in theta0]
    _fit(full, seeds, config.epochs, split, config, progress)
    checkpoint.save(out / "explorer.safetensors", full[0], data="spirals", seed=config.seed)

    plans, nets = {}, {}
    for c in config.criteria:
        plans[c] = [
            criteria.select(
                criteria.node_scores(c, m, x, y, generator=torch.Generator().manual_seed(s)),
                fraction=config.fraction,
                scope="layer",
            )
            for m, s in zip(full, seeds, strict=True)
        ]
        pruned = [
            surgery.remove_nodes(m, p, compensate="mean", x=x)
            for m, p in zip(full, plans[c], strict=True)
        ]
        nets[c] = {
            "prune": pruned,
            "plain": [
                surgery.remove_nodes(m, p, compensate="none")
                for m, p in zip(full, plans[c], strict=True)
            ],
            "finetune": [copy.deepcopy(m) for m in pruned],
            "init": [
                surgery.remove_nodes(m, p, compensate="none")
                for m, p in zip(theta0, plans[c], strict=True)
            ],
        }
    # every pruned net has the same widths, so each recipe is one batched training run
    tune = [m for c in config.criteria for m in nets[c]["finetune"]]
    scratch = [m for c in config.criteria for m in nets[c]["init"]]
    if config.finetune_epochs == config.epochs:
        _fit(
            tune + scratch,
            seeds * (2 * len(config.criteria)),
            config.epochs,
            split,
            config,
            progress,
        )
    else:
        _fit(tune, seeds * len(config.criteria), config.finetune_epochs, split, config, progress)
        _fit(scratch, seeds * len(config.criteria), config.epochs, split, config, progress)

    with track(1 + 2 * len(config.criteria), "comparing arms", enabled=progress) as advance:
        arms = [_arm("full", "", full, full, split, grid, config)]
        matrices, certificates = [], []
        for c in config.criteria:
            arms += [_arm(k, c, nets[c][k], full, split, grid, config) for k in ARMS]
            advance(status=c)
            matrices.append(_matrices(c, plans[c], theta0, full, nets[c], split))
            certificates.append(_certificates(c, plans[c], full, x, y))
            advance(status=f"{c}: weights and certificates")
        training = _training(theta0, full, x)
        advance()
    results = Results(
        seeds=seeds,
        widths=tuple(config.widths),
        pruned_widths=(
            config.widths[0],
            *models.parse(nets[config.criteria[0]]["init"][0]).hidden_sizes,
            config.widths[-1],
        ),
        n_train=len(split.train),
        n_test=len(split.test),
        lim=config.lim,
        arms=arms,
        training=training,
        matrices=matrices,
        certificates=certificates,
        data_x=x[:600],
        data_y=y[:600],
        reference=toy_nets.spiral_arms(seed=config.seed),
        explorer="explorer.safetensors",
        convnet=None,
    )
    return files.to_cpu(results)


# --- headline and findings ------------------------------------------------------------------------

SOURCE_SHIFT = 0.59  # the source's typical training shift of the main matrix's weights
SCORES = "What was done"  # the report sections holding the evidence
WEIGHTS = "Weights that training never moved"
ACROSS = "Weight against weight, across arms"
BOUND = "The discussion's certificate"
CONVNET = "A convnet: LeNet-5 on mnist5k"


def _arm_of(arms, key: str, criterion: str = ""):
    return next(a for a in arms if a.key == key and a.criterion == criterion)


def _mean(values) -> float:
    return findings_.estimate(values).mean


def headline(results: Results) -> dict[str, float]:
    r = results
    out = {"full net: test accuracy": _mean(_arm_of(r.arms, "full").test_accuracy)}
    for m in r.matrices:
        c = m.criterion
        out[f"{c}: train, prune: test accuracy"] = _mean(_arm_of(r.arms, "prune", c).test_accuracy)
        out[f"{c}: prune at θ0, train: test accuracy"] = _mean(
            _arm_of(r.arms, "init", c).test_accuracy
        )
    out["main matrix: weights training never moved"] = _mean(r.training.unmoved)
    out["main matrix: median training shift"] = _mean(r.training.shift_median)
    out["certificate / observed, smallest"] = min(
        curves.bound_check(c.bound, c.observed).worst.min().item() for c in r.certificates
    )
    return out


def findings(results: Results, config: Config) -> list[Finding]:
    """The source's claims on the spirals nets and (``results.convnet``) on LeNet-5, each from
    per-seed values (accuracies and their paired differences in points)."""
    r = results
    crits = [m.criterion for m in r.matrices]
    out = _arm_findings(r.arms, crits, "", SCORES)
    if "activation_std" in crits:
        std = _arm_of(r.arms, "prune", "activation_std")
        full = _arm_of(r.arms, "full")
        out.append(
            _above(
                "Pruning half the nodes with the smallest activation std leaves the net "
                "visually indistinguishable (at least 99% of the test points classified as "
                "by the full net).",
                100 * std.agreement.double(),
                99.0,
                source="'visually indistinguishable'",
                detail="Measured: test points classified as by the full net, in %. Test "
                f"accuracy {_pct(std.test_accuracy)} against the full "
                f"net's {_pct(full.test_accuracy)}. Half a layer is more "
                "than its dead nodes; the live nodes removed next can have a small std and "
                "large outgoing weights (the discussion's own caveat).",
                section=SCORES,
                unit="%",
                bounds=(0.0, 100.0),
            )
        )
        m = next(m for m in r.matrices if m.criterion == "activation_std")
        rand = next((m for m in r.matrices if m.criterion == "random"), None)
        out.append(
            _above(
                "The same (smallest-std) nodes removed at θ0 and then trained give weights "
                "correlated with the train-then-prune net's.",
                m.correlation,
                source="'a significant correlation'",
                detail="Measured: Pearson r of the surviving main-matrix block, train-then-prune "
                f"against prune-then-train. Shifts from θ0: r = "
                f"{findings_.estimate(m.shift_correlation)}"
                + (
                    f"; with random pruning r = {findings_.estimate(rand.correlation)}, so the "
                    "correlation is not specific to std pruning when the two overlap"
                    if rand is not None
                    else ""
                )
                + ".",
                section=ACROSS,
            )
        )
        out.append(
            _above(
                "The surviving nodes take similar roles in both nets (node j of one correlates "
                "more with node j of the other than with other nodes).",
                (m.roles_matched.double() - m.roles_unmatched.double()).nanmean(1),
                source="'the remaining neurons often end up in similar roles'",
                detail="Measured: activation correlation of node j with node j minus that with "
                "nodes k != j, averaged over the hidden layers (smallest-std pruning); a layer "
                "whose correlations are undefined (constant, dead nodes) is left out.",
                section=ACROSS,
            )
        )
    t = r.training
    out.append(
        findings_.every(
            "Some weights of the main matrix are never updated by training (the exact "
            "diagonal of the weight-vs-weight plot).",
            t.unmoved,
            lambda v: v > 0,
            "at least one entry is unmoved",
            source="a middle piece on the diagonal to machine precision",
            detail=f"Measured: entries of the {t.size}-entry main matrix equal to θ0 to float32 "
            "precision; their gradient is exactly zero while the two nodes are never active on a "
            "common point.",
            section=WEIGHTS,
            unit=" entries",
        )
    )
    out.append(
        findings_.within(
            f"Training moves the other weights by about ±{SOURCE_SHIFT} (taken as 0.5-0.7).",
            t.shift_median,
            0.5,
            0.7,
            bounds=(0.0, float("inf")),  # a median of absolute changes
            source=f"±{SOURCE_SHIFT}",
            detail="Measured: median |w_T - w_0| of the moved entries. The size of the shift "
            f"follows from the initialisation (here U(±{t.init_bound:.3f})) and the optimiser's "
            "settings (the source used Keras' Glorot initialisation and its own), so the "
            "source's figure is a property of its recipe.",
            section=WEIGHTS,
        )
    )
    out += _bound_findings(r)
    out.append(
        findings_.not_measured(
            "Some neurons are not doing anything, and no small change would make them helpful.",
            "a conjecture of the source; no arm tests small changes to the removed nodes",
        )
    )
    c = r.convnet
    if c is not None:
        out += _arm_findings(c.arms, crits, "LeNet-5: ", CONVNET)
    return out


def _arm_findings(arms, crits: list[str], prefix: str, section: str) -> list[Finding]:
    """Compensation, commuting and std-vs-random claims from the arms' test accuracies."""
    out = []

    def acc(key, c=""):
        return 100 * _arm_of(arms, key, c).test_accuracy.double()

    for c in crits:
        out.append(
            _above(
                prefix + f"Folding the removed nodes' means into the next biases keeps more "
                f"accuracy than deleting them ({c} half).",
                acc("prune", c) - acc("plain", c),
                source="the compensated pruning the source uses throughout",
                detail="Measured: test accuracy, mean-compensated minus plain deletion, paired "
                f"by seed; {_pct(acc('prune', c) / 100)} against {_pct(acc('plain', c) / 100)}.",
                section=section,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
    if "random" in crits:
        out.append(
            _above(
                prefix + "Random pruning and training do not commute: pruning at θ0 then "
                "training beats training then pruning.",
                acc("init", "random") - acc("prune", "random"),
                source="the pruned-then-trained nets are good, the others are not",
                detail="Measured: test accuracy, prune-then-train minus train-then-prune "
                f"(mean-compensated); {_pct(acc('init', 'random') / 100)} against "
                f"{_pct(acc('prune', 'random') / 100)}, full net {_pct(acc('full') / 100)}.",
                section=section,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
        out.append(
            _above(
                prefix + "Fine-tuning the randomly pruned net repairs it: fine-tuned beats pruned.",
                acc("finetune", "random") - acc("prune", "random"),
                source="the fine-tuned nets are good nets",
                detail="Measured: test accuracy, train-prune-fine-tune minus train-prune; "
                "against prune-then-train: "
                f"{findings_.estimate(acc('finetune', 'random') - acc('init', 'random'))} points.",
                section=section,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
    if "random" in crits and "activation_std" in crits:
        rand_gain = findings_.estimate(acc("prune", "random") - acc("plain", "random"))
        collapse = _baseline(rand_gain, "the finding without compensation")
        out.append(
            _above(
                prefix + "Removing the nodes with the smallest activation std beats removing "
                "random ones (mean-compensated, the source's procedure).",
                acc("prune", "activation_std") - acc("prune", "random"),
                source="std pruning keeps the net, random pruning does not",
                detail=f"Measured: test accuracy, std minus random, paired by seed; {collapse}.",
                section=section,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
        out.append(
            _above(
                prefix + "Removing the nodes with the smallest activation std beats removing "
                "random ones, without compensation.",
                acc("plain", "activation_std") - acc("plain", "random"),
                detail="Measured: test accuracy, std minus random, both deleting the nodes.",
                section=section,
                unit=" points",
                bounds=(-100.0, 100.0),  # accuracy points
            )
        )
    return out


def _bound_findings(r: Results) -> list[Finding]:
    """The discussion's bound, in its own form and in the certified form, on every seed."""
    own = [curves.bound_check(c.source, c.observed) for c in r.certificates]
    fixed = [curves.bound_check(c.bound, c.observed) for c in r.certificates]
    total = [curves.bound_check(c.total_bound, c.total_observed) for c in r.certificates]
    worst_own = torch.stack([b.worst for b in own]).amin(0)  # [S] over criteria and layers
    worst_fixed = torch.stack([b.worst for b in fixed + total]).amin(0)
    ratios = torch.cat([b.ratio.flatten() for b in fixed])
    return [
        findings_.every(
            "Removing a node with activation std X raises the loss by at most K X, K the "
            "product of the weight matrices' operator norms.",
            worst_own,
            lambda v: v >= 1,
            "bound / observed mean |loss change| >= 1 for every criterion and layer",
            source="loss increase <= K X",
            detail="Measured: the smallest ratio of the discussion's bound to the observed mean "
            "absolute loss change per seed, over the criteria and pruned layers (each layer's "
            "step replaces its removed nodes by their means). The discussion's form omits "
            "cross-entropy's Lipschitz constant sqrt(2).",
            section=BOUND,
        ),
        findings_.every(
            "The certified form of that bound (sqrt(2), downstream norms only, telescoped over "
            "the layers) holds.",
            worst_fixed,
            lambda v: v >= 1,
            "certificate / observed >= 1 for every criterion, layer and their sum",
            source="",
            detail="Measured: the smallest certificate / observed ratio per seed. It is a "
            f"guarantee, not a prediction: the ratio ranges {ratios.min().item():.2g} to "
            f"{ratios.max().item():.2g} over seeds, criteria and layers.",
            section=BOUND,
        ),
    ]


def _above(claim, values, threshold: float = 0.0, **kw) -> Finding:
    """``findings.above``, a "differs" saying whether it is the same direction or not."""
    return findings_.noted(findings_.above(claim, values, threshold, **kw), threshold)


def _pct(values) -> str:
    """An accuracy [0, 1] per seed as "mean [low, high]%", the interval clipped to [0, 100]."""
    mean, low, high = stats.clipped_interval(100 * torch.as_tensor(values).double(), high=100.0)
    return f"{mean.item():.3g} [{max(low.item(), 0):.3g}, {high.item():.3g}]%"


def _baseline(gain: findings_.Estimate, what: str) -> str:
    """What the random baseline does under mean compensation (``gain``: compensated minus
    plain, per seed), so a verdict resting on a collapsed baseline says so."""
    if gain.high < 0:
        return (
            f"random removal itself loses {gain} points under mean compensation against plain "
            f"deletion: this verdict rests on a collapsed baseline; see {what}"
        )
    if gain.mean < 0:
        return (
            f"random removal loses {gain} points under mean compensation against plain "
            f"deletion (not significant over {gain.n} seeds), so part of the difference may "
            f"come from a weakened baseline; see {what}"
        )
    return f"random removal does not lose under mean compensation ({gain} points)"

"""Study ``relevance``: backward relevance methods side by side, and training against them.

Part 2 of the node-removal source (Hobson, "Visualizing neural networks, how to blame the bias"):
every method of :data:`prunelab.relevance.METHODS` explains the toy circle and spirals nets over
the plane and two digit classifiers' images, an MLP and a LeNet-5; the bias-blame maps show
which biases carry the decision where (per layer and channel in the LeNet-5); a conservation
table and an agreement matrix compare the methods per classifier; the LeNet-5's max pools are
explained under the source's two maximum rules, gradient and radial; and the decoy experiment
tries the source's alignment idea (train with a penalty on relevance in a forbidden region, here
a patch that gives the label away, in a corner or over the strokes) with MLPs and LeNet-5s; the
penalty weight is picked on a dev split held out of the training images. The report is rendered
by :mod:`.relevance_report`; the findings' rules and caveats: ``docs/relevance.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import data, files, models, ops, stats, train
from ..base.executor import SERIAL, Executor, Unit, run_units
from ..methods import alignment, decoy, relevance
from ..methods import findings as rules
from ..methods.findings import Finding
from ..methods.relevance.composed import max_disagreement, pool_windows
from . import relevance_report as titles
from . import toy_nets
from .base import option
from .relevance_report import sections  # noqa: F401 (the study's report)

NAME = "relevance"
TITLE = "Relevance: blame the bias, compare the methods, train against a decoy"
SUMMARY = "Relevance maps of every method on toy nets and digits, bias blame, conservation, decoy."
IMAGE_SETS = {"digits": 8, "mnist5k": 28}  # name: image side
TARGET_CLASS = 1  # the toy nets' explained logit: class 1 (outside the circle / the second arm)
CONSERVATION_TOL = 1e-4  # relative |input + bias - f| / |f| that counts as conserved (float32)
DISAGREE = 0.01  # two max compositions disagree on a window when d > 1% (composed.max_disagreement)


@dataclass(frozen=True)
class Config:
    seed: int = option(0, "seed of the data, the nets, the decoy patches and the first decoy run")
    circle_epochs: int = option(60, "epochs of the toy-nets circle net (toy-nets' recipe)")
    spirals_epochs: int = option(100, "epochs of the toy-nets spirals net (toy-nets' recipe)")
    grid: int = option(50, "relevance map resolution (grid points per side over [-lim, lim])")
    lim: float = option(2.0, "the toy maps cover [-lim, lim]^2 (training data lies in [-1, 1]^2)")
    blame_nodes: int = option(8, "biases shown per toy net (largest mean |bias relevance|)")
    images: str = option("mnist5k", "image data set: mnist5k (28x28) or digits (8x8)")
    image_hidden: tuple[int, ...] = option((300, 100), "hidden widths of the explained image net")
    image_epochs: int = option(10, "epochs of the image net and of every decoy run")
    lr: float = option(1e-3, "Adam learning rate of the image nets")
    batch_size: int = option(32, "mini-batch size of the image nets")
    samples: int = option(6, "test images shown with their relevance maps")
    agreement_samples: int = option(300, "test images for the conservation and agreement tables")
    decoy_hidden: tuple[int, ...] = option((100,), "hidden widths of the decoy nets")
    patch: int = option(3, "side of the decoy's patch in pixels")
    corners: tuple[str, ...] = option(
        ("top_left", "centre"),
        f"where the patch goes, one decoy experiment each: {', '.join(decoy.CORNERS)}",
    )
    penalty_method: str = option("gradient_x_input", "relevance method of the penalty")
    weights: tuple[float, ...] = option((1.0, 10.0, 100.0), "penalty weights lambda")
    dev_fraction: float = option(
        0.2, "share of the training images held out (seeded) to pick the penalty weight on"
    )
    seeds: int = option(3, "seeds per decoy arm (init and batch order; one data split)")
    sweep_per_level: int = option(
        3, "patch brightness sweep: steps between training levels (odd: no ties at midpoints)"
    )
    convnet: bool = option(True, "also explain a LeNet-5 and run the decoy with LeNet-5s")
    convnet_epochs: int = option(6, "epochs of the explained LeNet-5")
    convnet_lr: float = option(1e-3, "Adam learning rate of every LeNet-5")
    rule_methods: tuple[str, ...] = option(
        ("lrp_epsilon", "blame_bias"),
        "methods explained under the gradient and the radial maximum rule at the max pools",
    )
    convnet_decoy_epochs: int = option(3, "epochs of every LeNet-5 decoy run")
    convnet_weights: tuple[float, ...] = option(
        (10.0,), "penalty weights of the LeNet-5 decoy (fewer arms than the MLP's: time)"
    )
    convnet_corners: tuple[str, ...] = option(
        ("top_left",), "patch positions of the LeNet-5 decoy (empty: no convnet decoy)"
    )
    convnet_seeds: int = option(2, "seeds per LeNet-5 decoy arm")

    QUICK: ClassVar[dict] = {
        "circle_epochs": 20,
        "spirals_epochs": 40,
        "grid": 40,
        "images": "digits",
        "image_hidden": (64,),
        "image_epochs": 20,
        "agreement_samples": 100,
        "decoy_hidden": (64,),
        "patch": 2,
        "weights": (10.0,),
        "corners": ("top_left",),
        "seeds": 2,
        "convnet_epochs": 10,
        "convnet_decoy_epochs": 4,
    }

    def __post_init__(self) -> None:
        if self.images not in IMAGE_SETS:
            raise ValueError(f"images {self.images!r}: choose from {sorted(IMAGE_SETS)}")
        if not self.corners or any(c not in decoy.CORNERS for c in self.corners):
            raise ValueError(f"corners {self.corners!r}: choose from {list(decoy.CORNERS)}")
        if any(c not in decoy.CORNERS for c in self.convnet_corners):
            raise ValueError(
                f"convnet_corners {self.convnet_corners!r}: choose from {list(decoy.CORNERS)}"
            )
        if self.penalty_method not in relevance.METHODS:
            raise ValueError(
                f"penalty_method {self.penalty_method!r}: choose from {sorted(relevance.METHODS)}"
            )
        if not self.rule_methods or any(m not in relevance.METHODS for m in self.rule_methods):
            raise ValueError(
                f"rule_methods {self.rule_methods!r}: choose from {sorted(relevance.METHODS)}"
            )
        if not 1 <= self.patch < IMAGE_SETS[self.images]:
            raise ValueError(
                f"patch must be in 1..{IMAGE_SETS[self.images] - 1} for {self.images}; "
                f"got {self.patch}"
            )
        for name in ("weights", "convnet_weights"):
            if not getattr(self, name) or any(not w > 0 for w in getattr(self, name)):
                raise ValueError(f"{name} must be positive numbers; got {getattr(self, name)}")
        for name in ("grid", "samples", "agreement_samples", "seeds", "sweep_per_level"):
            if getattr(self, name) < (2 if name in ("grid", "agreement_samples") else 1):
                raise ValueError(f"{name} is too small; got {getattr(self, name)}")
        for name in (
            "circle_epochs",
            "spirals_epochs",
            "image_epochs",
            "blame_nodes",
            "convnet_epochs",
            "convnet_decoy_epochs",
            "convnet_seeds",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1); got {self.dev_fraction}")
        if not self.lim > 0 or not self.lr > 0 or not self.convnet_lr > 0 or self.batch_size < 1:
            raise ValueError(
                f"lim, lr and convnet_lr must be > 0 and batch_size >= 1; got lim={self.lim}, "
                f"lr={self.lr}, convnet_lr={self.convnet_lr}, batch_size={self.batch_size}"
            )


@dataclass
class PlaneMaps:
    """Relevance of the class-1 logit of a toy net over a grid of [-lim, lim]^2 (rows: x1 up)."""

    name: str
    widths: tuple[int, ...]
    test_accuracy: float
    lim: float
    probability: Tensor  # [G, G] P(class 1)
    logit: Tensor  # [G, G] the explained value f_1(x)
    logit_origin: float  # f_1(0): deeplift explains f_1(x) - f_1(0)
    input: Tensor  # [M, 2, G, G] relevance (or signal) of x0 and x1
    bias: Tensor  # [M, G, G] total bias relevance
    reference: list[Tensor]  # true boundary / arms, polylines [P, 2]
    blame_names: list[str]  # every bias, "h<layer>.<unit>" or "out.<unit>"
    blame_shown: list[int]  # indices into blame_names of the shown biases (largest first)
    blame: Tensor  # [K, G, G] blame_bias relevance of the shown biases
    blame_active: Tensor  # [K, G, G] bool: the shown bias's unit is on (a > 0)
    blame_layers: Tensor  # [L, G, G] total bias relevance per layer
    dominant: Tensor  # [G, G] index into blame_names of the bias with the largest |relevance|
    always_on: int = 0  # shown hidden biases whose unit is on at every grid point
    layer_peaks: list[float] = field(default_factory=list)  # per layer max |its bias relevance|
    logit_peak: float = float("nan")  # max |f_1| over the grid


@dataclass
class ImageMaps:
    """Relevance of the predicted class of an image classifier (an MLP or a convnet), per
    method; maps flattened to the image's D = C H W pixels whatever shape the model reads."""

    data: str
    model: str  # "MLP" or "LeNet-5"
    side: int
    widths: tuple[int, ...]  # D, units (channels for a conv) per hidden layer, C
    test_accuracy: float
    images: Tensor  # [S, D] the shown test images
    labels: Tensor  # [S]
    predicted: Tensor  # [S]
    input: Tensor  # [M, S, D]
    n_scored: int  # test images behind the conservation and agreement tables
    error_total: Tensor  # [M] median |input + bias - output| / |output|
    error_total_max: Tensor  # [M]
    error_input: Tensor  # [M] median |input - output| / |output|
    bias_fraction: Tensor  # [M] median (sum of bias relevance) / output
    agreement_spearman: Tensor  # [M, M]
    agreement_pearson: Tensor  # [M, M]
    conserved: Tensor | None = None  # [M] share of scored images within CONSERVATION_TOL


@dataclass
class DecoyArm:
    """One way of training on the decoy task, over seeds (index s)."""

    name: str
    trained_on: str  # "random patch" (the reference) or "patch = label"
    weight: float  # penalty lambda (0: none)
    accuracy: Tensor  # [S] test, random patch
    accuracy_true: Tensor  # [S] test, patch = label
    accuracy_swapped: Tensor  # [S] test, patch = another label (accuracy on the true label)
    accuracy_clean: Tensor  # [S] test, no patch
    changed: Tensor  # [S] share of predictions that change when only the patch changes
    follow_rate: Tensor  # [S] share of swapped-patch predictions naming the patch's label
    weight_ratio: Tensor | None  # [S] first-layer weight norm, patch / others; None for a conv
    share: Tensor  # [S, M] share of |relevance| on the patch per method (patch = label)
    loss: Tensor  # [S, E] training cross-entropy per epoch
    penalty: Tensor  # [S, E] training share (penalty method, true class) per epoch
    mean_relevance: Tensor  # [D] mean |relevance| (penalty method) over test images, first seed
    sweep_accuracy: Tensor  # [S, V]
    sweep_follow: Tensor  # [S, V]
    sweep_share: Tensor  # [S, V]
    accuracy_dev: Tensor | None = None  # [S] dev split (held-out training images), random patch


@dataclass
class Decoy:
    data: str
    model: str  # "MLP" or "LeNet-5"
    side: int
    patch: int
    corner: str
    region: Tensor  # [D] bool
    method: str
    seeds: list[int]
    levels: Tensor  # [C] training brightness levels
    sweep_values: Tensor  # [V]
    example_train: Tensor  # [4, D] training images with their label patch
    example_test: Tensor  # [4, D] test images with a random patch
    example_labels: Tensor  # [4]
    arms: list[DecoyArm]
    selected: str = ""  # the penalised arm with the best mean dev accuracy (decoy.select)
    n_dev: int = 0  # training images held out as the dev split


@dataclass
class BiasBlame:
    """blame_bias on a convnet per layer and channel (a Linear: per unit), averaged over the
    scored test images; with the input's part, the shares add up to 1 (conservation)."""

    layers: list[str]  # "conv1", ..., "fc1", ..., "out"
    conv: list[bool]
    channel: list[Tensor]  # per layer [C_l]: mean bias relevance, summed over positions
    layer_share: Tensor  # [L] mean over images of (layer's bias relevance) / f_t(x)
    input_share: float  # mean over images of (input relevance) / f_t(x)
    output: float  # mean f_t(x), the explained (predicted) logit
    n_scored: int
    conv_share: float = float("nan")  # the convolutions' biases together
    largest_layer: str = ""  # the layer whose biases carry the largest share in size


@dataclass
class MaxRules:
    """Input relevance of a convnet under the source's two maximum rules at every max pool:
    "gradient" (winner takes all) and "radial" (split among the positive inputs)."""

    methods: list[str]  # K methods
    side: int
    images: Tensor  # [S, D] the shown test images
    gradient: Tensor  # [K, S, D] input relevance, gradient maximum rule
    radial: Tensor  # [K, S, D] input relevance, radial maximum rule
    pearson: Tensor  # [K, N] per-image Pearson correlation of the two maps, N scored images
    error_gradient: Tensor  # [K, N] conservation error |input + bias - f| / |f|
    error_radial: Tensor  # [K, N]
    bias_gradient: Tensor  # [K, N] bias share of f_t(x)
    bias_radial: Tensor  # [K, N]
    # the two compositions of the maximum (softmax limit, a + relu(b - a)), DeepLIFT relevance
    # of every window of the first max pool (composed.max_disagreement d), scored images
    composed_windows: int = 0  # windows whose maximum moves against the mean training image
    composed_share: float = float("nan")  # share of them with d > DISAGREE
    composed_median: float = float("nan")  # median d
    composed_share_black: float = float("nan")  # share with d > DISAGREE, black reference
    # per method [K]: medians over the scored images (stats.nanmedian) and the lowest Pearson
    pearson_median: list[float] = field(default_factory=list)
    pearson_min: list[float] = field(default_factory=list)
    error_median_gradient: list[float] = field(default_factory=list)
    error_median_radial: list[float] = field(default_factory=list)
    bias_median_gradient: list[float] = field(default_factory=list)
    bias_median_radial: list[float] = field(default_factory=list)


@dataclass
class Results:
    methods: list[str]
    circle: PlaneMaps
    spirals: PlaneMaps
    images: ImageMaps
    decoys: list[Decoy]  # one per patch position
    convnet: ImageMaps | None = None  # the LeNet-5 (config.convnet)
    blame: BiasBlame | None = None
    max_rules: MaxRules | None = None
    convnet_decoys: list[Decoy] = field(default_factory=list)


# --- the toy nets ------------------------------------------------------------------------------


@torch.no_grad()  # maps only: the explanations need no graph
def _plane(
    name: str, model: nn.Sequential, split: data.Split, config: Config, reference
) -> PlaneMaps:
    G, methods = config.grid, list(relevance.METHODS)
    grid = data.grid(G, config.lim).to(split.test.x.device)
    rs = [relevance.explain(model, grid, method=m, target=TARGET_CLASS) for m in methods]
    net = models.parse(model)
    blame = relevance.explain(model, grid, method="blame_bias", target=TARGET_CLASS)
    per_bias = torch.cat(blame.bias, 1)  # [G*G, U]: every bias, layer by layer
    names = [
        f"{'out' if k == len(net.layers) - 1 else f'h{k + 1}'}.{j}"
        for k, layer in enumerate(net.layers)
        for j in range(layer.width)
    ]
    shown = per_bias.abs().mean(0).argsort(descending=True)[: config.blame_nodes].tolist()
    active = torch.cat(
        [
            *(a > 0 for a in net.activations(grid)),
            torch.ones_like(blame.bias[-1], dtype=torch.bool),
        ],
        1,
    )
    return PlaneMaps(
        name=name,
        widths=(2, *net.hidden_sizes, net.out_features),
        test_accuracy=train.evaluate(model, split.test)["accuracy"],
        lim=config.lim,
        probability=train.predict(model, grid)[:, TARGET_CLASS].reshape(G, G),
        logit=rs[0].output.reshape(G, G),
        logit_origin=(rs[0].output - rs[methods.index("deeplift")].output).mean().item(),
        input=torch.stack([r.input.T.reshape(2, G, G) for r in rs]),
        bias=torch.stack([sum(b.sum(1) for b in r.bias).reshape(G, G) for r in rs]),
        reference=reference,
        blame_names=names,
        blame_shown=shown,
        blame=per_bias[:, shown].T.reshape(-1, G, G),
        blame_active=active[:, shown].T.reshape(-1, G, G),
        blame_layers=torch.stack([b.sum(1).reshape(G, G) for b in blame.bias]),
        dominant=per_bias.abs().argmax(1).reshape(G, G),
        always_on=sum(bool(active[:, u].all()) for u in shown if not names[u].startswith("out")),
        layer_peaks=[b.sum(1).abs().max().item() for b in blame.bias],
        logit_peak=rs[0].output.abs().max().item(),
    )


def _toy(config: Config, device: torch.device) -> tuple[PlaneMaps, PlaneMaps]:
    toy = toy_nets.Config(
        seed=config.seed,
        circle_epochs=config.circle_epochs,
        spirals_epochs=config.spirals_epochs,
    )
    circle = _plane(
        "circle",
        toy_nets.circle_net(toy, device=device),
        toy_nets.circle_split(toy, device=device),
        config,
        [toy_nets.circle_boundary()],
    )
    spirals = _plane(
        "spirals",
        toy_nets.spirals_net(toy, device=device),
        toy_nets.spirals_split(toy, device=device),
        config,
        toy_nets.spiral_arms(seed=config.seed),
    )
    return circle, spirals


# --- the image classifiers -------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """How the study builds and trains one kind of image classifier (MLP or LeNet-5)."""

    name: str  # "MLP" or "LeNet-5"
    build: Callable[[int], nn.Sequential]  # seed -> an untrained model
    epochs: int
    lr: float


def mlp_net(hidden: tuple[int, ...], split: data.Split, epochs: int, config: Config) -> Net:
    widths = (split.train.x[0].numel(), *hidden, split.classes)
    return Net("MLP", lambda seed: models.mlp(widths, seed=seed), epochs, config.lr)


def lenet_net(split: data.Split, epochs: int, config: Config) -> Net:
    shape = tuple(split.train.x.shape[1:])  # (1, side, side)
    return Net(
        "LeNet-5",
        lambda seed: models.lenet5(in_shape=shape, classes=split.classes, seed=seed),
        epochs,
        config.convnet_lr,
    )


def fitted(net: Net, train_data: data.Dataset, config: Config, seed: int) -> nn.Sequential:
    """``net.build(seed)`` trained on ``train_data`` with :func:`prunelab.train.fit`."""
    model = net.build(seed).to(train_data.x.device)
    train.fit(
        model,
        train_data,
        epochs=net.epochs,
        lr=net.lr,
        batch_size=config.batch_size,
        seed=seed,
        progress=False,
    )
    return model


def _scored(split: data.Split, config: Config) -> Tensor:
    """The test images behind the tables: the first ``agreement_samples``, [n, ...]."""
    return split.test.x[: min(config.agreement_samples, len(split.test))]


def _images(model: nn.Sequential, name: str, split: data.Split, config: Config) -> ImageMaps:
    methods = list(relevance.METHODS)
    x = _scored(split, config)
    n = len(x)
    with torch.no_grad():
        rs = {m: relevance.explain(model, x, method=m) for m in methods}
    flat = {m: r.input.flatten(1) for m, r in rs.items()}  # [n, D]: a convnet's [n, C, H, W]
    S = min(config.samples, n)

    def median(f) -> Tensor:
        return torch.stack([f(rs[m]).median() for m in methods])

    return ImageMaps(
        data=config.images,
        model=name,
        side=IMAGE_SETS[config.images],
        widths=(x[0].numel(), *ops.parse(model).hidden_sizes, split.classes),
        test_accuracy=train.evaluate(model, split.test)["accuracy"],
        images=x[:S].flatten(1),
        labels=split.test.y[:S],
        predicted=rs[methods[0]].target[:S],
        input=torch.stack([flat[m][:S] for m in methods]),
        n_scored=n,
        error_total=median(alignment.conservation_error),
        error_total_max=torch.stack([alignment.conservation_error(rs[m]).max() for m in methods]),
        error_input=median(lambda r: alignment.conservation_error(r, include_bias=False)),
        bias_fraction=median(alignment.bias_fraction),
        agreement_spearman=alignment.agreement_matrix(flat, kind="spearman"),
        agreement_pearson=alignment.agreement_matrix(flat, kind="pearson"),
        conserved=torch.tensor(
            [
                stats.share_within(alignment.conservation_error(rs[m]), CONSERVATION_TOL)
                for m in methods
            ]
        ),
    )


def layer_names(model: nn.Sequential) -> list[str]:
    """ "conv1", "conv2", ..., "fc1", ..., "out": the Linear and Conv2d layers in order."""
    layers = ops.parse(model).layers
    conv = [layer.conv for layer in layers]
    names, counts = [], {True: 0, False: 0}
    for k, c in enumerate(conv):
        counts[c] += 1
        names.append("out" if k == len(layers) - 1 else f"{'conv' if c else 'fc'}{counts[c]}")
    return names


@torch.no_grad()
def _bias_blame(model: nn.Sequential, split: data.Split, config: Config) -> BiasBlame:
    r = relevance.explain(model, _scored(split, config), method="blame_bias")
    per_unit = alignment.bias_per_unit(r)  # per layer [n, C_l]
    return BiasBlame(
        layers=layer_names(model),
        conv=[layer.conv for layer in ops.parse(model).layers],
        channel=[b.mean(0) for b in per_unit],
        layer_share=torch.stack([(b.sum(1) / r.output).mean() for b in per_unit]),
        input_share=(r.input.flatten(1).sum(1) / r.output).mean().item(),
        output=r.output.mean().item(),
        n_scored=len(r.output),
        conv_share=sum(
            (b.sum(1) / r.output).mean().item()
            for b, layer in zip(per_unit, ops.parse(model).layers, strict=True)
            if layer.conv
        ),
        largest_layer=layer_names(model)[
            max(range(len(per_unit)), key=lambda k: abs((per_unit[k].sum(1) / r.output).mean()))
        ],
    )


@torch.no_grad()
def _max_rules(model: nn.Sequential, split: data.Split, config: Config) -> MaxRules:
    x = _scored(split, config)
    S = min(config.samples, len(x))
    ms = list(config.rule_methods)
    rs = {
        (m, rule): relevance.explain(model, x, method=m, rules={"maximum": rule})
        for m in ms
        for rule in ("gradient", "radial")
    }

    def each(f) -> Tensor:  # [K, ...] from f(gradient run, radial run)
        return torch.stack([f(rs[m, "gradient"], rs[m, "radial"]) for m in ms])

    return MaxRules(
        methods=ms,
        side=IMAGE_SETS[config.images],
        images=x[:S].flatten(1),
        gradient=each(lambda g, r: g.input.flatten(1)[:S]),
        radial=each(lambda g, r: r.input.flatten(1)[:S]),
        pearson=each(
            lambda g, r: alignment.row_correlation(
                g.input.flatten(1), r.input.flatten(1), kind="pearson"
            )
        ),
        error_gradient=each(lambda g, r: alignment.conservation_error(g)),
        error_radial=each(lambda g, r: alignment.conservation_error(r)),
        bias_gradient=each(lambda g, r: alignment.bias_fraction(g)),
        bias_radial=each(lambda g, r: alignment.bias_fraction(r)),
        **_composed(model, x, split.train.x.mean(0, keepdim=True)),
        **_medians(rs, ms),
    )


def _medians(rs: dict, ms: list[str]) -> dict[str, list[float]]:
    """Per method: the medians over images behind the max-rules table (stats.nanmedian)."""
    out: dict[str, list[float]] = {}
    for m in ms:
        g, r = rs[m, "gradient"], rs[m, "radial"]
        p = alignment.row_correlation(g.input.flatten(1), r.input.flatten(1), kind="pearson")
        for key, value in (
            ("pearson_median", stats.nanmedian(p)),
            ("pearson_min", stats.nanmin(p)),
            ("error_median_gradient", stats.nanmedian(alignment.conservation_error(g))),
            ("error_median_radial", stats.nanmedian(alignment.conservation_error(r))),
            ("bias_median_gradient", stats.nanmedian(alignment.bias_fraction(g))),
            ("bias_median_radial", stats.nanmedian(alignment.bias_fraction(r))),
        ):
            out.setdefault(key, []).append(value)
    return out


def _composed(model: nn.Sequential, x: Tensor, x_mean: Tensor) -> dict:
    """The two compositions of the maximum on every window of the first max pool, against the
    mean training image and against a black one (relevance.composed.max_disagreement)."""
    k = next(i for i, m in enumerate(model) if isinstance(m, nn.MaxPool2d))
    pool, body = model[k], model[:k]
    out = {}
    for tag, x_ref in (("", x_mean), ("_black", torch.zeros_like(x_mean))):
        a = pool_windows(body(x), pool.kernel_size, pool.stride)  # [W, K]
        a_ref = body(x_ref).expand(len(x), -1, -1, -1)  # the reference beside every image
        d = max_disagreement(a, pool_windows(a_ref, pool.kernel_size, pool.stride))
        d = d[~d.isnan()]  # windows whose maximum does not move: nothing to split
        out[f"composed_share{tag}"] = 1 - stats.share_within(d, DISAGREE)
        if not tag:
            out |= dict(composed_windows=len(d), composed_median=stats.nanmedian(d))
    return out


# --- the decoy experiment ----------------------------------------------------------------------


def _decoy_run(
    task: decoy.DecoyTask, net: Net, weight: float, on_random: bool, seed: int, config: Config
):
    model = net.build(seed).to(task.train.x.device)
    history = alignment.fit_penalised(
        model,
        task.train_random if on_random else task.train,
        region=task.region,
        weight=weight,
        method=config.penalty_method,
        epochs=net.epochs,
        lr=net.lr,
        batch_size=config.batch_size,
        seed=seed,
        progress=False,
    )
    return model, history


def _decoy_setup(split: data.Split, config: Config, corner: str):
    """The patch region, the decoy task and the sweep values of one corner."""
    side = IMAGE_SETS[config.images]
    region = decoy.patch_region(side, config.patch, corner).to(split.train.x.device)
    task = decoy.decoy_task(split, region, seed=config.seed, dev=n_dev(split, config))
    return side, region, task, decoy.sweep_values(split.classes, config.sweep_per_level)


def n_dev(split: data.Split, config: Config) -> int:
    """Training images held out as the decoy's dev split."""
    return max(1, round(config.dev_fraction * len(split.train)))


def _decoy_plan(weights: tuple[float, ...]) -> list[tuple[str, float, bool]]:
    """The decoy arms: (name, penalty weight, trained on the random patch)."""
    plan = [("random patch (reference)", 0.0, True), ("plain", 0.0, False)]
    return plan + [(f"penalty {w:g}", w, False) for w in weights]


def _decoy_net(arch: str, split: data.Split, config: Config) -> Net:
    if arch == "MLP":
        return mlp_net(config.decoy_hidden, split, config.image_epochs, config)
    return lenet_net(split, config.convnet_decoy_epochs, config)


def decoy_unit(config: Config, arch: str, corner: str, arm: int, seed: int, device: str):
    """One unit of work: one decoy arm (``_decoy_plan``'s ``arm``) of one net (``arch``: MLP
    or LeNet-5), one corner and one seed, trained and measured."""
    split = data.load(config.images, seed=config.seed).to(device=torch.device(device))
    net = _decoy_net(arch, split, config)
    weights = config.weights if arch == "MLP" else config.convnet_weights
    _, weight, on_random = _decoy_plan(weights)[arm]
    _, region, task, values = _decoy_setup(split, config, corner)
    model, history = _decoy_run(task, net, weight, on_random, seed, config)
    scores = decoy.scores(model, task)
    scores["accuracy_dev"] = train.evaluate(model, task.dev)["accuracy"]
    x = task.test_true.x
    with torch.no_grad():
        methods = list(relevance.METHODS)
        share = torch.stack(
            [alignment.relevance_share(model, x, region, method=m).mean() for m in methods]
        )
        mean_relevance = (
            relevance.explain(model, x, method=config.penalty_method).input.abs().mean(0)
        )
    sweep = decoy.sweep(
        model,
        task.test.x,
        task.test.y,
        region,
        values=values,
        method=config.penalty_method,
        classes=split.classes,
    )
    # a first Conv2d shares its weights over positions: no ratio (patch_weight_ratio)
    first_linear = not ops.parse(model).layers[0].conv
    scores["weight_ratio"] = decoy.patch_weight_ratio(model, region) if first_linear else None
    return files.to_cpu((scores, share, history, mean_relevance, sweep, first_linear))


def _decoy(
    split: data.Split, config: Config, corner: str, arch: str, n_seeds: int, rows: dict
) -> Decoy:
    """The decoy arms (reference, plain, one per penalty weight) over ``n_seeds`` seeds, from
    their units' ``rows[arm, seed]``."""
    side, region, task, values = _decoy_setup(split, config, corner)
    seeds = [config.seed + k for k in range(n_seeds)]
    weights = config.weights if arch == "MLP" else config.convnet_weights
    arms = []
    for a, (name, weight, on_random) in enumerate(_decoy_plan(weights)):
        arm_rows = [rows[a, seed] for seed in seeds]
        first_linear = arm_rows[0][5]

        def stack(key: str, rows=arm_rows) -> Tensor:
            return torch.tensor([r[0][key] for r in rows])

        arms.append(
            DecoyArm(
                name=name,
                trained_on="random patch" if on_random else "patch = label",
                weight=weight,
                accuracy=stack("accuracy"),
                accuracy_true=stack("accuracy_true"),
                accuracy_swapped=stack("accuracy_swapped"),
                accuracy_clean=stack("accuracy_clean"),
                changed=stack("changed"),
                follow_rate=stack("follow_rate"),
                weight_ratio=stack("weight_ratio") if first_linear else None,
                share=torch.stack([r[1] for r in arm_rows]),
                loss=torch.tensor([r[2].loss for r in arm_rows]),
                penalty=torch.tensor([r[2].penalty for r in arm_rows]),
                mean_relevance=arm_rows[0][3].flatten(),
                sweep_accuracy=torch.stack([r[4].accuracy for r in arm_rows]),
                sweep_follow=torch.stack([r[4].follow for r in arm_rows]),
                sweep_share=torch.stack([r[4].share for r in arm_rows]),
                accuracy_dev=stack("accuracy_dev"),
            )
        )
    penalised = [a for a in arms if a.weight > 0]
    chosen = decoy.select(torch.stack([a.accuracy_dev for a in penalised]))
    return Decoy(
        data=config.images,
        model=arch,
        side=side,
        patch=config.patch,
        corner=corner,
        region=region,
        method=config.penalty_method,
        seeds=seeds,
        levels=decoy.levels(split.classes),
        sweep_values=values,
        example_train=task.train.x[:4].flatten(1),
        example_test=task.test.x[:4].flatten(1),
        example_labels=task.test.y[:4],
        arms=arms,
        selected=penalised[chosen].name,
        n_dev=len(task.dev),
    )


def maps_unit(config: Config, device: str) -> dict:
    """One unit of work: relevance maps of the toy nets, the image MLP and the LeNet-5."""
    device_ = torch.device(device)
    circle, spirals = _toy(config, device_)
    split = data.load(config.images, seed=config.seed).to(device=device_)
    mlp = mlp_net(config.image_hidden, split, config.image_epochs, config)
    images = _images(fitted(mlp, split.train, config, config.seed), "MLP", split, config)
    convnet = blame = max_rules = None
    if config.convnet:
        lenet = fitted(
            lenet_net(split, config.convnet_epochs, config), split.train, config, config.seed
        )
        convnet = _images(lenet, "LeNet-5", split, config)
        blame = _bias_blame(lenet, split, config)
        max_rules = _max_rules(lenet, split, config)
    return files.to_cpu(
        dict(circle=circle, spirals=spirals, images=images, convnet=convnet, blame=blame,
             max_rules=max_rules)
    )  # fmt: skip


def _decoy_arms(config: Config) -> list[tuple[str, str, int, int]]:
    """Every decoy unit: (arch, corner, arm, seed)."""
    todo = []
    for arch, corners, weights, n_seeds in (
        ("MLP", config.corners, config.weights, config.seeds),
        ("LeNet-5", config.convnet_corners if config.convnet else (), config.convnet_weights,
         config.convnet_seeds),
    ):  # fmt: skip
        for corner in corners:
            for arm in range(len(_decoy_plan(weights))):
                todo += [(arch, corner, arm, config.seed + k) for k in range(n_seeds)]
    return todo


def run(
    config: Config,
    out: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    executor: Executor = SERIAL,
) -> Results:
    """Relevance maps of the toy nets and the image nets, then the decoy experiment.

    Everything is computed on ``device`` (initialisations and data are drawn on the CPU and
    moved there); the results come back on the CPU. The units of work (the maps, and each decoy
    net, corner, arm and seed) are run by ``executor`` (stored units are
    not computed again).
    """
    where = str(torch.device(device))
    arms = _decoy_arms(config)
    todo = [Unit("maps", maps_unit, dict(config=config, device=where))] + [
        Unit(
            f"decoy-{arch}-{corner}-arm{arm}-seed{seed}",
            decoy_unit,
            dict(config=config, arch=arch, corner=corner, arm=arm, seed=seed, device=where),
        )
        for arch, corner, arm, seed in arms
    ]
    maps, *rows = run_units(todo, out, executor=executor, progress=progress,
                            description=NAME)  # fmt: skip
    by_arm = dict(zip(arms, rows, strict=True))
    split = data.load(config.images, seed=config.seed)
    decoys: dict[str, list[Decoy]] = {"MLP": [], "LeNet-5": []}
    for arch, corners, n_seeds in (
        ("MLP", config.corners, config.seeds),
        ("LeNet-5", config.convnet_corners if config.convnet else (), config.convnet_seeds),
    ):
        for corner in corners:
            rows_ = {(a, s): r for (n, c, a, s), r in by_arm.items() if (n, c) == (arch, corner)}
            decoys[arch].append(_decoy(split, config, corner, arch, n_seeds, rows_))
    results = Results(
        list(relevance.METHODS),
        maps["circle"],
        maps["spirals"],
        maps["images"],
        decoys["MLP"],
        maps["convnet"],
        maps["blame"],
        maps["max_rules"],
        decoys["LeNet-5"],
    )
    return files.to_cpu(results)


def headline(results: Results) -> dict[str, float]:
    m = results.methods
    out = {}
    for i, d in enumerate(results.decoys):
        arms = {a.name: a for a in d.arms}
        plain, reference = arms["plain"], arms["random patch (reference)"]
        best = arms[d.selected]  # picked on the dev split
        k = m.index(d.method)
        where = "" if i == 0 else f" ({d.corner} patch)"
        out |= {
            f"decoy test accuracy, plain{where}": plain.accuracy.mean().item(),
            f"decoy test accuracy, {best.name}{where}": best.accuracy.mean().item(),
            f"decoy test accuracy, reference{where}": reference.accuracy.mean().item(),
            f"predictions changed by the patch, plain{where}": plain.changed.mean().item(),
            f"predictions changed by the patch, {best.name}{where}": best.changed.mean().item(),
        }
        if i == 0:
            out |= {
                "patch relevance share, plain": plain.share[:, k].mean().item(),
                f"patch relevance share, {best.name}": best.share[:, k].mean().item(),
            }
    out["blame_bias conservation error (median)"] = results.images.error_total[
        m.index("blame_bias")
    ].item()
    out["Pearson(lrp_epsilon, gradient_x_input)"] = results.images.agreement_pearson[
        m.index("lrp_epsilon"), m.index("gradient_x_input")
    ].item()
    if results.convnet is not None:
        c, b, mr = results.convnet, results.blame, results.max_rules
        out |= {
            "LeNet-5 test accuracy": c.test_accuracy,
            "LeNet-5 blame_bias conservation error (median)": c.error_total[
                m.index("blame_bias")
            ].item(),
            "LeNet-5 share of f_t(x) carried by biases (blame_bias, mean)": 1 - b.input_share,
            "LeNet-5 Pearson(lrp_epsilon, gradient_x_input)": c.agreement_pearson[
                m.index("lrp_epsilon"), m.index("gradient_x_input")
            ].item(),
        }
        for k, name in enumerate(mr.methods):
            out[f"LeNet-5 {name}: Pearson(gradient, radial max rule), median"] = mr.pearson_median[
                k
            ]
    for d in results.convnet_decoys:
        arms = {a.name: a for a in d.arms}
        best = arms[d.selected]
        out |= {
            f"LeNet-5 decoy test accuracy, plain ({d.corner})": arms["plain"]
            .accuracy.mean()
            .item(),
            f"LeNet-5 decoy test accuracy, {best.name} ({d.corner})": best.accuracy.mean().item(),
            f"LeNet-5 decoy predictions changed, plain ({d.corner})": arms["plain"]
            .changed.mean()
            .item(),
            f"LeNet-5 decoy predictions changed, {best.name} ({d.corner})": best.changed.mean().item(),
        }
    return out


# --- findings ----------------------------------------------------------------------------------


def _classifier_findings(im: ImageMaps, methods: list[str]) -> list[Finding]:
    """LRP = gradient x input and exact conservation with biases as inputs, on one classifier."""
    lrp0, gxi, bb = (methods.index(m) for m in ("lrp_0", "gradient_x_input", "blame_bias"))
    section = titles.AGREEMENT
    return [
        rules.above(
            f"{im.model}: LRP-0 equals gradient x input on a ReLU net (the biases inside the "
            "pre-activations of both)",
            [im.agreement_pearson[lrp0, gxi].item()],
            0.999,
            source="LRP in Q form is the gradient with the slope rule",
            section=section,
            detail=f"mean Pearson correlation of the two input maps over {im.n_scored} test "
            "images (one trained net)",
        ),
        rules.above(
            f"{im.model}: with every bias as an input fixed at 1, relevance is conserved exactly",
            [im.conserved[bb].item()],
            0.99,
            source="biases as weights on constant inputs",
            section=titles.CONSERVATION,
            detail=f"share of {im.n_scored} test images whose blame_bias relevance (inputs and "
            f"biases) sums to f_t(x) within a relative {CONSERVATION_TOL:g}; holds above 99%",
        ),
    ]


def _decoy_findings(d: Decoy, methods: list[str]) -> list[Finding]:
    """The alignment idea on one decoy: the penalised arm picked on the dev split against plain
    training and the random-patch reference, paired by seed."""
    arms = {a.name: a for a in d.arms}
    chosen, plain, ref = arms[d.selected], arms["plain"], arms["random patch (reference)"]
    k = methods.index(d.method)
    where = f"{d.model}, patch in the {titles.where(d)}"
    section = titles.decoy_title(d)
    picked = f"{d.selected}, picked on {d.n_dev} held-out training images"
    clean, clean_ref = chosen.accuracy_clean.mean().item(), ref.accuracy_clean.mean().item()
    if clean < 0.5 * clean_ref:  # a collapsed classifier hides nothing and follows nothing
        picked += (
            f" (collapsed: clean test accuracy {clean:.3f} against the reference's "
            f"{clean_ref:.3f}; the verdicts rest on a net that hardly classifies)"
        )
    return [
        rules.below(
            f"{where}: training against the patch's relevance lowers the relevance measured on it",
            chosen.share[:, k] - 0.5 * plain.share[:, k],
            0.0,
            section=section,
            detail=f"{picked}: its patch share of |{d.method}| minus half of plain training's, "
            "per seed; holds when the interval lies below 0 (the share at least halved)",
        ),
        rules.above(
            f"{where}: the penalised net games the metric (its predictions still follow the patch)",
            chosen.changed - ref.changed,
            0.05,
            source="'rampantly goodharting'",
            section=section,
            detail=f"{picked}: share of predictions changed by swapping only the patch, minus "
            "the reference's (trained on random patches), per seed; holds above 5 points. The "
            "source's task (relevance inside a marked region, an MNIST variant) is not "
            "published in detail",
        ),
    ]


def findings(results: Results, config: Config | None = None) -> list[Finding]:
    """The blame-the-bias source's claims, each by a stated rule on the Results."""
    m, out = results.methods, []
    for im in (results.images, results.convnet):
        if im is not None:
            out += _classifier_findings(im, m)
    mr = results.max_rules
    claim = (
        "the two constructions of the maximum (softmax limit, a + relu(b - a)) give different "
        "relevance (DeepLIFT against the mean training image)"
    )
    if mr is not None and mr.composed_windows:
        out.append(
            rules.above(
                claim,
                [mr.composed_share],
                0.01,
                source="'these 2 computations suggest different relevancies'",
                section=titles.MAX_RULES,
                detail=f"share of {mr.composed_windows} windows of the LeNet-5's first max pool "
                f"(DeepLIFT against the mean training image) where the two split the change of the "
                f"maximum differently by more than {DISAGREE:g} (median {mr.composed_median:.3g}); "
                f"against a black image: {mr.composed_share_black:.3g}, since its reference is "
                "constant within a window",
            )
        )
    else:
        out.append(rules.not_measured(claim, "needs a convnet with max pools (option convnet)"))
    out.append(
        rules.not_measured(
            "the radial maximum rule matches the slope nonlinearity for a maximum of two",
            "the study does not compare the two; the source marks it as a guess",
        )
    )
    out += [
        rules.not_measured(
            "rewritten with Q = R / a, LRP's normalized matrix and ignore rules become the "
            "gradient and slope rules",
            "checked by the library's tests (relevance.explain with q_form=True against the "
            "R form, tests/test_relevance.py), not shown by the study's runs",
        ),
        rules.not_measured(
            "the baseline-difference rule is symmetric in the image and the baseline",
            "the study explains against a black image only",
        ),
        rules.not_measured(
            "scaling equivalence: gradient and slope, and normalized and ignore, treat a "
            "constant factor the same way",
            "the study does not rescale any layer",
        ),
    ]
    for d in (*results.decoys, *results.convnet_decoys):
        out += _decoy_findings(d, m)
    return out

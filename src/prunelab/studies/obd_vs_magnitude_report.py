"""Report sections of the ``obd-vs-magnitude`` study: figures and text from its ``Results``."""

from __future__ import annotations

import torch

from ..base import stats
from . import plots
from .base import Plot, Section, Table

KINDS = ("no dropout", "dropout")  # as in the study module
COLOURS = {
    ("magnitude", "layer"): "#ff7f0e",
    ("magnitude", "global"): "#d62728",
    ("obd", "layer"): "#17becf",
    ("obd", "global"): "#1f77b4",
    ("obd_fisher", "global"): "#2ca02c",
    ("obd_hutchinson", "global"): "#9467bd",
    ("snip", "global"): "#8c564b",
    ("random", "global"): "#7f7f7f",
}
TABLE_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)


def _colour(curve) -> str:
    return COLOURS.get((curve.criterion, curve.scope), "#bcbd22")


def _band(ax, curve, values, *, label, colour, ls="-", lw=1.5, scale=100.0, band=True, clip=True):
    """Mean over seeds with a shaded 95% t-interval (``band=False``: the mean alone), clipped
    to [0, 1] before scaling (``clip=False`` for differences)."""
    bounds = dict(low=0.0, high=1.0) if clip else {}
    mean, lo, hi = stats.clipped_interval(values.double(), **bounds)
    x = 100 * curve.levels.numpy()
    ax.plot(x, scale * mean.numpy(), color=colour, ls=ls, lw=lw, label=label)
    if band:
        ax.fill_between(x, scale * lo.numpy(), scale * hi.numpy(), color=colour, alpha=0.15)


def _mean_pm(values) -> str:
    mean, half = stats.mean_interval(torch.as_tensor(values, dtype=torch.float64))
    return f"{mean.item():.3f} ± {half.item():.3f}"


def _pct_pm(values) -> str:
    mean, half = stats.mean_interval(torch.as_tensor(values, dtype=torch.float64))
    return f"{100 * mean.item():.1f} ± {100 * half.item():.1f}"


def _at(curve, level):
    return int((curve.levels - level).abs().argmin())


def _main_figure(r) -> Plot:
    fig, ax = plots.figure(2, 2, width=6.2, height=4.2)
    for col, kind in enumerate(KINDS):
        for cv in (c for c in r.curves if c.kind == kind):
            main = cv.criterion in ("magnitude", "obd")
            style = dict(
                colour=_colour(cv), ls="-" if main else "--", lw=1.8 if main else 1.1, band=main
            )
            _band(ax[0, col], cv, cv.accuracy, label=cv.label, **style)
            _band(ax[1, col], cv, cv.loss, label=cv.label, scale=1.0, clip=False, **style)
        ax[0, col].set(
            title=f"{kind}: test accuracy",
            xlabel="weights pruned (%)",
            ylabel="accuracy (%)",
            ylim=(0, 100),
        )
        ax[1, col].set(title=f"{kind}: test loss", xlabel="weights pruned (%)", ylabel="loss")
        ax[1, col].set_yscale("log")
        for a in ax[:, col]:
            a.grid(alpha=0.3)
        ax[0, col].legend(fontsize=7, loc="lower left")
    return Plot(
        "accuracy_vs_sparsity",
        fig,
        "Test accuracy (top) and loss (bottom, log scale) against the percentage of weights "
        "pruned, without retraining; mean over seeds, with 95% t-intervals for the source's four "
        "arms (solid); dashed: the extra global arms (means only).",
    )


def _source_figure(r) -> Plot:
    fig, ax = plots.figure(1, 1, width=7.0, height=4.6)
    a = ax[0, 0]
    for cv in (c for c in r.curves if c.kind == KINDS[0] and c.criterion in ("magnitude", "obd")):
        _band(a, cv, cv.accuracy, label=cv.label, colour=_colour(cv))
    drop = r.curve(KINDS[1], "obd", "global")
    _band(a, drop, drop.accuracy, label="obd (global), dropout model", colour="#000000", ls=":")
    a.set(
        title="the source's figure: all arms of the plain model and the dropout model",
        xlabel="weights pruned (%)",
        ylabel="test accuracy (%)",
        ylim=(0, 100),
    )
    a.grid(alpha=0.3)
    a.legend(fontsize=8, loc="lower left")
    return Plot(
        "source_view",
        fig,
        "As the source plots it: magnitude and OBD saliency, layer-wise and global, on the model "
        "trained without dropout, and global OBD on the model trained with dropout (dotted).",
    )


def _fine_figure(r) -> Plot:
    fig, ax = plots.figure(2, 1, width=6.2, height=4.2)
    for col, kind in enumerate(KINDS):
        for cv in (c for c in r.fine if c.kind == kind):
            _band(ax[0, col], cv, cv.accuracy, label=cv.label, colour=_colour(cv))
        ax[0, col].set(
            title=f"{kind}: even more pruning",
            xlabel="weights pruned (%)",
            ylabel="accuracy (%)",
            ylim=(0, 100),
        )
        ax[0, col].grid(alpha=0.3)
        ax[0, col].legend(fontsize=8, loc="lower left")
    return Plot(
        "heavy_pruning",
        fig,
        "Finer steps at heavy sparsity for the best arms of each model (by their mean accuracy "
        "at the heavy end of the main sweep) and for global OBD, the source's arm.",
    )


def _dropout_figure(r) -> Plot:
    fig, ax = plots.figure(2, 1, width=6.2, height=4.2)
    plain, drop = r.curve(KINDS[0], "obd", "global"), r.curve(KINDS[1], "obd", "global")
    _band(ax[0, 0], plain, plain.accuracy, label="no dropout", colour="#1f77b4")
    _band(ax[0, 0], drop, drop.accuracy, label="dropout (keep 0.8)", colour="#000000", ls=":")
    _band(
        ax[0, 1],
        plain,
        drop.accuracy - plain.accuracy,
        label="global OBD",
        colour="#1f77b4",
        clip=False,
    )
    fp, fd = (
        r.curve(KINDS[0], "obd", "global", fine=True),
        r.curve(KINDS[1], "obd", "global", fine=True),
    )
    if fp is not None and fd is not None:
        _band(
            ax[0, 1],
            fp,
            fd.accuracy - fp.accuracy,
            label="fine steps",
            colour="#d62728",
            clip=False,
        )
    ax[0, 1].axhline(0, color="grey", lw=0.8)
    ax[0, 0].set(
        title="global OBD", xlabel="weights pruned (%)", ylabel="test accuracy (%)", ylim=(0, 100)
    )
    ax[0, 1].set(
        title="dropout minus no dropout",
        xlabel="weights pruned (%)",
        ylabel="accuracy difference (points)",
    )
    for a in ax[0]:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return Plot(
        "dropout",
        fig,
        "Global OBD on the two models; right: the accuracy difference per seed pair (seed k of "
        "each model), mean with 95% t-interval. Below zero the dropout model is worse.",
    )


def _cross_figure(r) -> Plot:
    fig, ax = plots.figure(2, 1, width=6.2, height=4.2)
    colours = {KINDS[0]: "#1f77b4", KINDS[1]: "#000000"}
    for t in r.cross_terms:
        x = 100 * t.levels.numpy()
        for values, ls, what in ((t.actual, "-", "actual"), (t.predicted, "--", "OBD predicted")):
            mean, half = stats.mean_interval(values.double())
            ax[0, 0].plot(x, mean.numpy(), color=colours[t.kind], ls=ls, label=f"{t.kind}, {what}")
            ax[0, 0].fill_between(
                x, (mean - half).numpy(), (mean + half).numpy(), color=colours[t.kind], alpha=0.1
            )
    ax[0, 0].set(
        title="training-loss increase, global OBD",
        xlabel="weights pruned (%)",
        ylabel="loss increase",
    )
    ax[0, 0].set_yscale("symlog", linthresh=1e-3)
    second = r.cross_terms[0].second if r.cross_terms else "the layer before it"
    groups = ["last layer", second.removeprefix("the "), "whole net (est.)"]
    width = 0.38
    for j, t in enumerate(r.cross_terms):
        for i, values in enumerate((t.last_layer, t.third_layer, t.network)):
            if not values:
                continue
            v = torch.tensor(values, dtype=torch.float64)
            mean, lo, hi = stats.clipped_interval(v, low=0.0, high=1.0)  # a share
            ax[0, 1].bar(
                i + (j - 0.5) * width,
                mean.item(),
                width,
                yerr=[[(mean - lo).item()], [(hi - mean).item()]],
                color=colours[t.kind],
                alpha=0.7,
                label=t.kind if i == 0 else None,
            )
    ax[0, 1].set_xticks(range(len(groups)), groups)
    ax[0, 1].set(
        title="off-diagonal share of the Hessian",
        ylabel="||H - diag H||_F / ||H||_F",
        ylim=(0, 1),
    )
    for a in ax[0]:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return Plot(
        "cross_terms",
        fig,
        "Left: OBD's predicted loss increase (sum of the pruned saliencies, dashed) against the "
        "actual increase (solid) on the training images the saliencies were taken on. Right: the "
        "share of the Hessian's Frobenius norm off its diagonal, for the exact blocks of the last "
        f"layer and {second} and estimated for the whole network (95% t-intervals over seeds).",
    )


def _level_table(r) -> Table:
    rows = []
    for kind in KINDS:
        for cv in (c for c in r.curves if c.kind == kind):
            rows.append(
                [kind, cv.label, _pct_pm(cv.accuracy[:, 0])]
                + [_pct_pm(cv.accuracy[:, _at(cv, s)]) for s in TABLE_LEVELS]
            )
    return Table(
        ["model", "arm", "unpruned"] + [f"{100 * s:g}% pruned" for s in TABLE_LEVELS],
        rows,
        "Test accuracy (%) without retraining, mean ± 95% t-interval half-width over seeds.",
    )


def sections(r, config) -> list[Section]:
    widths = "-".join(map(str, r.widths))
    out = [
        Section(
            "What was done",
            [
                "The source prunes a 4-layer fully connected MNIST net of about 50K weights in "
                "1-percentile steps and records the test accuracy with no retraining, ranking the "
                "weights by magnitude or by Optimal Brain Damage's saliency s = h w² / 2, either "
                "within each layer or over all layers at once, and repeats the all-layer OBD arm "
                "on a model trained with dropout (keep probability 0.8).",
                f"We train a {widths} ReLU net ({r.weights:,} weights, plus biases that are never "
                f"pruned) on {r.n_train} mnist5k images with Adam (lr {config.lr}, batch "
                f"{config.batch_size}, {config.epochs} epochs), once without and once with "
                f"dropout p = {config.dropout} after every hidden layer, for seeds {r.seeds}. The "
                f"saliencies use the exact Hessian diagonal (curvature.diag_hessian; for a ReLU "
                f"net it equals the Gauss-Newton diagonal) of the mean cross-entropy on "
                f"{r.score_samples} training images. Extra global arms: OBD with the empirical "
                "Fisher diagonal and with a 100-probe Hutchinson estimate, SNIP (|w g| on the same "
                "images) and random scores. Every curve is measured on the same "
                f"{r.n_test} test images by surgery.sparsity_sweep, which sorts the scores once "
                "and evaluates all levels together (the same numbers as pruning with "
                "torch.nn.utils.prune level by level).",
            ],
            [
                Table(
                    ["model", "final training loss", "test accuracy"],
                    [
                        [kind, _mean_pm(r.train_loss[kind]), _mean_pm(r.test_accuracy[kind])]
                        for kind in KINDS
                    ],
                    "Mean ± 95% t-interval half-width over seeds. The training loss is the "
                    "running mean of the last epoch (with dropout active for the dropout model).",
                )
            ],
        ),
        Section(
            "Accuracy against sparsity, no retraining",
            [
                "Each arm prunes the lowest-scoring weights: layer-wise arms the same fraction of "
                "every layer, global arms one ranking over all 4 layers. The first figure shows "
                "the arms as the source plots them; the second shows every arm of both models, "
                "with the test loss below.",
                *_reading(r),
            ],
            [_level_table(r)],
            [_source_figure(r), _main_figure(r)],
        ),
        Section(
            "Even more pruning",
            [
                f"Steps of {100 * config.fine_step:g}% from {100 * config.fine_start:g}% to "
                "99.9% (at 99% about 500 weights remain, at 99.9% about 50).",
            ],
            plots=[_fine_figure(r)],
        ),
        Section(
            "Dropout",
            [
                "The source expected a dropout-trained model to prune more easily, found it worse "
                "at first and better after a crossing point, and explained the early deficit by "
                "OBD's diagonal assumption: dropout makes weights depend on each other, so the "
                "neglected cross terms of the Hessian matter more.",
                "The findings table at the top gives the paired differences over seeds.",
            ],
            plots=[_dropout_figure(r)],
        ),
        _cross_section(r, config),
        _finetune_section(r),
    ]
    if r.convnet is not None:
        out += _convnet_sections(r, r.convnet, config)
    return out


def _renamed(plot: Plot, prefix: str) -> Plot:
    return Plot(f"{prefix}{plot.name}", plot.figure, plot.caption)


def _convnet_sections(r, c, config) -> list[Section]:
    """The LeNet-5 arm: the same arms and measurements (its findings are in the table atop the
    report, prefixed "LeNet-5: ")."""
    conv, dense = c.conv_weights, c.weights - c.conv_weights
    what = Section(
        "The same on a convnet: LeNet-5",
        [
            f"The source's net is fully connected. We repeat every arm on LeNet-5 ({c.weights:,} "
            f"weights: {conv:,} in its two conv layers, {dense:,} in its Linear layers; biases "
            f"never pruned) trained on the same images with Adam (lr {config.lenet5_lr}, batch "
            f"{config.batch_size}, {config.lenet5_epochs} epochs, one by one with train.fit), "
            f"without and with dropout p = {config.dropout} after its hidden Linear layers, for "
            f"the same seeds; saliencies and Hessian blocks on {c.score_samples} training "
            f"images; extra global arms {', '.join(config.lenet5_extra) or 'none'}. A conv "
            "weight is one element of a kernel; global arms rank conv "
            "and Linear weights together, layer-wise arms prune the same fraction of each of "
            "the five layers. OBD uses the exact Hessian diagonal through the convolutions and "
            "max pools (curvature.diag_hessian). The exact Hessian blocks are those of the last "
            f"layer and of {c.cross_terms[0].second} (all its filter weights and biases).",
        ],
        [
            Table(
                ["model", "final training loss", "test accuracy"],
                [
                    [
                        f"LeNet-5, {kind}",
                        _mean_pm(c.train_loss[kind]),
                        _mean_pm(c.test_accuracy[kind]),
                    ]
                    for kind in KINDS
                ],
                "Mean ± 95% t-interval half-width over seeds.",
            ),
            _level_table(c),
        ],
        [
            _renamed(_main_figure(c), "lenet5_"),
            _renamed(_dropout_figure(c), "lenet5_"),
        ],
    )
    cross = _cross_section(c, config)
    cross.title = "LeNet-5: the Hessian's cross terms"
    cross.plots = [_renamed(p, "lenet5_") for p in cross.plots]
    tuned = _finetune_section(c, "train.fit per seed and level")
    tuned.title = "LeNet-5: with fine-tuning"
    return [what, cross, tuned]


def _mean_at(curve, level) -> float:
    return 100 * curve.accuracy[:, _at(curve, level)].mean().item()


def _reading(r) -> list[str]:
    """What the accuracy figures show, with the numbers read off the curves."""
    base = [c for c in r.curves if c.kind == KINDS[0]]
    by_label = {c.label: c for c in base}
    text = []
    if all(label in by_label for label in ("magnitude (layer)", "obd (layer)")):
        first, last = r.widths[0] * r.widths[1], r.widths[-2] * r.widths[-1]
        text.append(
            "At 70% pruned the plain model keeps "
            + ", ".join(
                f"{_mean_at(by_label[lab], 0.7):.1f}% ({lab})"
                for lab in (
                    "magnitude (layer)",
                    "obd (layer)",
                    "magnitude (global)",
                    "obd (global)",
                )
                if lab in by_label
            )
            + f". A layer-wise arm takes the same fraction of the {last:,} weights of the output "
            f"layer as of the {first:,} of the first layer; a global ranking can spare the small "
            "layers and take more from the large one."
        )
    globals_ = [c for c in base if c.scope == "global"]
    text.append(
        "Global arms at 80% pruned (plain model): "
        + ", ".join(f"{c.criterion} {_mean_at(c, 0.8):.1f}%" for c in globals_)
        + "; at 10%: "
        + ", ".join(f"{c.criterion} {_mean_at(c, 0.1):.1f}%" for c in globals_)
        + ". An arm that already loses accuracy at 10% removes weights that matter first: "
        "random scores do so by design, and the Hutchinson estimate of each h_kk (100 probes) is "
        "noisy enough to turn negative, which ranks the weight first in line."
    )
    return text


def _cross_section(r, config) -> Section:
    rows = []
    for t in r.cross_terms:
        ratio = t.actual[:, -1] / t.predicted[:, -1]
        rows.append(
            [
                t.kind,
                _mean_pm(t.last_layer),
                _mean_pm(t.third_layer) if t.third_layer else "-",
                _mean_pm(t.network),
                _pct_pm(t.zero_saliency),
                _mean_pm(ratio),
            ]
        )
    second = r.cross_terms[0].second if r.cross_terms else "the layer before it"
    return Section(
        "Testing the explanation: the Hessian's cross terms",
        [
            "If the cross terms h_ij (i ≠ j) were negligible, OBD's saliency would be the loss "
            "increase itself. We measure them in two ways. (1) The share of the Hessian's "
            "Frobenius norm that lies off its diagonal, r = ||H - diag H||_F / ||H||_F: exactly "
            f"for the blocks of the last layer and {second} "
            "(hessian_blocks.layer_hessian, weights and biases, "
            f"{r.score_samples} training images), and for the whole {r.weights:,}-weight Hessian "
            f"by Hutchinson's estimate of ||H||_F² ({config.ratio_probes} probes on "
            f"{config.ratio_samples} images) against the exact diagonal. (2) OBD's predicted "
            "training-loss increase (the sum of the pruned saliencies) against the actual increase "
            f"under global OBD pruning up to {100 * config.prediction_max:g}%.",
            *_cross_reading(r, config),
        ],
        [
            Table(
                [
                    "model",
                    "r, last layer",
                    f"r, {second.removeprefix('the ')}",
                    "r, whole net (estimate)",
                    "weights with saliency 0 (%)",
                    f"actual / predicted loss increase at {100 * config.prediction_max:g}%",
                ],
                rows,
                "Mean ± 95% t-interval half-width over seeds. r = 0 for a diagonal Hessian; "
                "r² is the fraction of sum H_ij² that OBD drops. A weight has saliency exactly "
                "0 when its input is 0 on every scoring image (blank border pixels, ReLU units "
                "that never fire): OBD predicts no change for all of them, so the ratio is "
                "taken at the end of the prediction range.",
            )
        ],
        [_cross_figure(r)],
    )


def _cross_reading(r, config) -> list[str]:
    terms = {t.kind: t for t in r.cross_terms}
    plain, drop = terms[KINDS[0]], terms[KINDS[1]]
    lowest = min(min(t.last_layer + t.third_layer) for t in r.cross_terms)
    text = [
        f"Smallest r over the exact layer blocks and seeds: {lowest:.2f}."
        + (
            " Most of the Frobenius norm of both models' blocks lies off the diagonal: OBD's "
            "diagonal assumption is a strong simplification for both, not one that only "
            "dropout breaks."
            if lowest > 0.5
            else ""
        ),
        "OBD's predicted increase at the end of the range is "
        f"{plain.predicted[:, -1].mean():.2g} (no dropout) and {drop.predicted[:, -1].mean():.2g} "
        f"(dropout) against an actual {plain.actual[:, -1].mean():.2g} and "
        f"{drop.actual[:, -1].mean():.2g}. {_pct_pm(plain.zero_saliency)}% (no dropout) and "
        f"{_pct_pm(drop.zero_saliency)}% (dropout) of the weights have saliency exactly 0, so "
        "OBD prunes them first and predicts no change at all.",
    ]
    return text


def _finetune_section(r, how: str = "ensemble.fit_many, all seeds and levels at once") -> Section:
    rows = []
    for f in r.fine_tuned:
        for j, level in enumerate(f.levels):
            rows.append(
                [
                    f.kind,
                    f"{f.criterion} (global)",
                    f"{100 * level:g}%",
                    _pct_pm(f.before[:, j]),
                    _pct_pm(f.after[:, j]),
                ]
            )
    return Section(
        "With fine-tuning",
        [
            "The source prunes without retraining. For comparison we fine-tune the global masks "
            f"of selected arms at a few sparsities ({how}, the masks in force) and report the "
            "test accuracy before and after.",
        ],
        [
            Table(
                ["model", "arm", "pruned", "accuracy before (%)", "after fine-tuning (%)"],
                rows,
                "Mean ± 95% t-interval half-width over seeds.",
            )
        ],
    )

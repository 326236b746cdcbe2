"""Report sections of the ``relevance`` study: figures and text from its ``Results``."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ..base import stats
from ..methods.relevance import METHODS
from . import plots
from .base import Plot, Section, Table

SIGNAL_METHODS = ("gradient", "deconvnet", "guided_backprop")
AGREEMENT = "Agreement between methods"
CONSERVATION = "Conservation"
MAX_RULES = "Max pools: the gradient and the radial maximum rule"
ARM_COLOURS = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf")


def _colours(n: int) -> list[str]:
    return [ARM_COLOURS[i % len(ARM_COLOURS)] for i in range(n)]


def _v(values: torch.Tensor, q: float = 0.99) -> float:
    """A symmetric colour limit: the q-quantile of |values| (never 0)."""
    a = values.detach().abs().flatten().double()
    return max(float(torch.quantile(a, q)) if len(a) else 0.0, 1e-12)


def _diverging(ax, values, lim, title, *, prob=None, reference=()):
    """A [G, G] map over [-lim, lim]^2 on a symmetric red-blue scale, divided by its limit v
    (in the title; the figure's shared colour bar reads value / v), with the net's decision
    boundary."""
    v = _v(values)
    ax.imshow(
        values.detach().numpy() / v,
        origin="lower",
        extent=(-lim, lim, -lim, lim),
        cmap="RdBu_r",
        vmin=-1,
        vmax=1,
        interpolation="nearest",
    )
    if prob is not None:
        g = np.linspace(-lim, lim, prob.shape[0])
        ax.contour(g, g, prob.numpy(), levels=[0.5], colors="black", linewidths=0.8)
    for c in reference:
        ax.plot(c[:, 0].numpy(), c[:, 1].numpy(), color="black", lw=0.8, ls="--")
    ax.add_patch(Rectangle((-1, -1), 2, 2, fill=False, ec="grey", ls=":", lw=0.8))
    ax.set_title(f"{title}  (±{v:.3g})", fontsize=8)
    ax.set_xticks([])  # every panel covers [-lim, lim]^2; tick labels cost most of the drawing
    ax.set_yticks([])


def _colourbar(ax, image) -> None:
    """A small colour bar beside one heat map panel."""
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    bar.ax.tick_params(labelsize=5)


def _shared_bar(fig, axes, label: str) -> None:
    """One colour bar for small multiples each drawn as value / its own limit, on [-1, 1]."""
    mappable = ScalarMappable(Normalize(-1, 1), "RdBu_r")
    bar = fig.colorbar(mappable, ax=list(np.ravel(axes)), shrink=0.5, aspect=30, pad=0.01)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=6)


def _tag(model: str) -> str:
    """File-name suffix of a classifier's figures: "" for the MLP, "_lenet5" for the LeNet-5."""
    return "" if model == "MLP" else "_" + model.lower().replace("-", "")


def _mean_ci(t: torch.Tensor) -> str:
    mean, half = stats.mean_interval(t.double())
    return f"{mean.item():.3f} ± {half.item():.3f}"


# --- the toy nets ------------------------------------------------------------------------------


def _plane_figure(p, methods) -> Plot:
    M = len(methods)
    fig, ax = plots.figure(3, M + 1, width=2.7, height=2.35)
    a = ax[0, 0]
    image = a.imshow(p.probability.numpy(), origin="lower", extent=(-p.lim, p.lim, -p.lim, p.lim),
                     cmap="viridis", vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
    _colourbar(a, image)
    for c in p.reference:
        a.plot(c[:, 0].numpy(), c[:, 1].numpy(), color="white", lw=0.8, ls="--")
    a.set_title("P(class 1)  (dark 0, yellow 1)", fontsize=8)
    a.set_xticks([])
    a.set_yticks([])
    _diverging(ax[0, 1], p.logit, p.lim, "logit f_1(x)", prob=p.probability)
    ax[0, 2].axis("off")
    ax[0, 2].text(
        0,
        0.5,
        f"{p.name} net {'-'.join(map(str, p.widths))}\n"
        f"test accuracy {p.test_accuracy:.3f}\n"
        "red: pushes f_1 up, blue: down\n"
        "(±v: the panel's colour limit)\n"
        "black: the net's boundary P = 0.5\n"
        "dashed: the true boundary\n"
        "dotted: the training square [-1, 1]^2\n"
        "every panel: [-2, 2]^2",
        fontsize=8,
        va="center",
    )
    for i, m in enumerate(methods):
        kind = "signal" if m in SIGNAL_METHODS else "R"
        for j in range(2):
            _diverging(ax[i + 1, j], p.input[i, j], p.lim, f"{m}: {kind}(x{j})", prob=p.probability)
        _diverging(ax[i + 1, 2], p.bias[i], p.lim, f"{m}: all biases", prob=p.probability)
    _shared_bar(fig, [ax[0, 1], *ax[1:].ravel()], "value / the panel's limit ±v (in its title)")
    return Plot(
        f"{p.name}_relevance",
        fig,
        f"{p.name} net: what every method attributes to x0, x1 and the biases when explaining the "
        "class-1 logit, over [-2, 2]^2 (colour scale per panel, symmetric about 0).",
    )


def _blame_figure(p) -> list[Plot]:
    K = len(p.blame_shown)
    cols = min(4, K)
    rows = -(-K // cols)
    fig, ax = plots.figure(cols, rows, width=2.7, height=2.35)
    g = np.linspace(-p.lim, p.lim, p.blame.shape[-1])
    for k in range(rows * cols):
        a = ax[k // cols, k % cols]
        if k >= K:
            a.axis("off")
            continue
        name = p.blame_names[p.blame_shown[k]]
        _diverging(a, p.blame[k], p.lim, f"bias {name}", prob=p.probability)
        if not name.startswith("out"):  # where the unit switches on
            a.contour(
                g,
                g,
                p.blame_active[k].float().numpy(),
                levels=[0.5],
                colors="#ff7f0e",
                linewidths=1.0,
                linestyles="--",
            )
    _shared_bar(fig, ax, "relevance / the panel's limit ±v (in its title)")
    small = Plot(
        f"{p.name}_bias_blame",
        fig,
        f"{p.name} net, blame_bias: the relevance of single biases for the class-1 logit, the "
        f"{K} biases with the largest mean |relevance| over the plane, largest first. Orange "
        "dashes: where the bias's unit switches on (ReLU: it gets relevance only where it is "
        "on); black: the decision boundary.",
    )
    L = p.blame_layers.shape[0]
    fig2, ax2 = plots.figure(L + 1, 1, width=3.1, height=2.7)
    colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
        "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a",
    ]  # fmt: skip
    shown = {u: i for i, u in enumerate(p.blame_shown[: len(colours)])}
    cats = torch.tensor([shown.get(int(u), len(colours)) for u in p.dominant.flatten()])
    cmap = ListedColormap([*colours[: len(shown)], *["#dddddd"] * (len(colours) + 1 - len(shown))])
    a = ax2[0, 0]
    a.imshow(
        cats.reshape(p.dominant.shape).numpy(),
        origin="lower",
        extent=(-p.lim, p.lim, -p.lim, p.lim),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(colours) + 0.5,
        interpolation="nearest",
    )
    a.contour(g, g, p.probability.numpy(), levels=[0.5], colors="black", linewidths=0.8)
    for u, i in shown.items():
        a.plot([], [], "s", color=colours[i], label=p.blame_names[u])
    a.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    a.set_title("which bias carries most", fontsize=8)
    a.set_xticks([])
    a.set_yticks([])
    for k in range(L):
        name = "output bias" if k == L - 1 else f"layer {k + 1} biases"
        _diverging(ax2[0, k + 1], p.blame_layers[k], p.lim, f"sum over {name}", prob=p.probability)
    _shared_bar(fig2, ax2[0, 1:], "relevance / the panel's limit ±v (in its title)")
    overview = Plot(
        f"{p.name}_bias_layers",
        fig2,
        f"{p.name} net: left, the bias with the largest |relevance| at each point (grey: a bias "
        "outside the shown ones); right, the total bias relevance of each layer.",
    )
    return [small, overview]


# --- images ------------------------------------------------------------------------------------


def _image_figure(im, methods) -> Plot:
    S, M, side = len(im.labels), len(methods), im.side
    fig, ax = plots.figure(M + 1, S, width=1.55, height=1.6)
    for s in range(S):
        a = ax[s, 0]
        a.imshow(im.images[s].reshape(side, side).numpy(), cmap="gray_r", vmin=0, vmax=1)
        a.set_title(f"label {int(im.labels[s])}, pred {int(im.predicted[s])}", fontsize=7)
        for i, m in enumerate(methods):
            r = im.input[i, s]
            v = _v(r, 0.995)
            b = ax[s, i + 1]
            b.imshow(r.reshape(side, side).numpy() / v, cmap="RdBu_r", vmin=-1, vmax=1)
            if s == 0:
                b.set_title(m, fontsize=7)
    for a in ax.flat:
        a.set_xticks([])
        a.set_yticks([])
    _shared_bar(fig, ax[:, 1:], "R / the panel's 99.5% quantile of |R|")
    return Plot(
        f"image_relevance{_tag(im.model)}",
        fig,
        f"{im.model} on {im.data}: the relevance of the predicted class for test images, per method (red: "
        "for, blue: against; each panel scaled to its own 99.5% quantile of |R|).",
    )


def _agreement_figure(im, methods) -> Plot:
    fig, ax = plots.figure(2, 1, width=5.0, height=4.4)
    for a, (mat, kind) in zip(
        ax[0], ((im.agreement_spearman, "Spearman"), (im.agreement_pearson, "Pearson")), strict=True
    ):
        _colourbar(a, a.imshow(mat.numpy(), cmap="RdBu_r", vmin=-1, vmax=1))
        for i in range(len(methods)):
            for j in range(len(methods)):
                a.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6)
        a.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        a.set_yticks(range(len(methods)), methods, fontsize=7)
        a.set_title(f"mean {kind} correlation over {im.n_scored} images", fontsize=9)
    return Plot(
        f"agreement{_tag(im.model)}",
        fig,
        f"{im.model}: agreement between the methods' input relevance (signed, all pixels), averaged over "
        "test images.",
    )


def _blame_bars(b) -> Plot:
    """Bars per layer and channel (unit) of the mean blame_bias relevance, and each layer's
    share of f_t(x)."""
    L = len(b.layers)
    fig, ax = plots.figure(L + 1, 1, width=2.6, height=2.8)
    for k, (name, values) in enumerate(zip(b.layers, b.channel, strict=True)):
        a = ax[0, k]
        v = values.numpy()
        a.bar(np.arange(len(v)), v, color=np.where(v >= 0, "#d62728", "#1f77b4"), width=0.9)
        a.axhline(0, color="black", lw=0.5)
        what = "channel" if b.conv[k] else "unit"
        a.set_title(f"{name}: per {what}, share {b.layer_share[k].item():+.1%}", fontsize=8)
        a.set_xlabel(what, fontsize=7)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.tick_params(labelsize=6)
        a.grid(alpha=0.3, axis="y")
    a = ax[0, L]
    names = ["input", *b.layers]
    shares = [b.input_share, *b.layer_share.tolist()]
    a.bar(np.arange(L + 1), shares, color=["#7f7f7f", *_colours(L)])
    a.set_xticks(np.arange(L + 1), names, rotation=45, fontsize=7)
    a.axhline(0, color="black", lw=0.5)
    a.set_title(f"share of f_t(x) (sum {sum(shares):.4f})", fontsize=8)
    a.tick_params(labelsize=6)
    a.grid(alpha=0.3, axis="y")
    return Plot(
        "lenet5_bias_blame",
        fig,
        f"LeNet-5, blame_bias, mean over {b.n_scored} test images: the relevance of each bias "
        "for the predicted logit, a conv channel's summed over its output positions (one "
        "constant input per position), a Linear unit's as is (red: for, blue: against). "
        "Right: the share of f_t(x) that the input pixels and each layer's biases carry; "
        "they add up to 1 (conservation).",
    )


def _max_rules_figure(mr) -> Plot:
    K, S, side = len(mr.methods), mr.images.shape[0], mr.side
    fig, ax = plots.figure(1 + 2 * K, S, width=1.55, height=1.6)
    for s in range(S):
        ax[s, 0].imshow(mr.images[s].reshape(side, side).numpy(), cmap="gray_r", vmin=0, vmax=1)
        for k, m in enumerate(mr.methods):
            for j, (rule, maps) in enumerate((("gradient", mr.gradient), ("radial", mr.radial))):
                r = maps[k, s]
                v = _v(r, 0.995)
                b = ax[s, 1 + 2 * k + j]
                b.imshow(r.reshape(side, side).numpy() / v, cmap="RdBu_r", vmin=-1, vmax=1)
                if s == 0:
                    b.set_title(f"{m}\nmax: {rule}", fontsize=7)
    for a in ax.flat:
        a.set_xticks([])
        a.set_yticks([])
    _shared_bar(fig, ax[:, 1:], "R / the panel's 99.5% quantile of |R|")
    return Plot(
        "lenet5_max_rules",
        fig,
        "LeNet-5: input relevance of the predicted class with the max pools under the "
        "gradient maximum rule (the winner of each window takes all) and the radial rule "
        "(split among the window's positive inputs in proportion to their values); each "
        "panel on its own scale.",
    )


def _max_rules_table(mr) -> Table:
    rows = []
    for k, m in enumerate(mr.methods):
        rows.append(
            [
                m,
                mr.pearson_median[k],
                mr.pearson_min[k],
                mr.error_median_gradient[k],
                mr.error_median_radial[k],
                mr.bias_median_gradient[k],
                mr.bias_median_radial[k],
            ]
        )
    return Table(
        [
            "method",
            "median Pearson(gradient, radial)",
            "min",
            "median conservation error, gradient max",
            "radial max",
            "median bias share, gradient max",
            "radial max",
        ],
        rows,
        caption=f"Over {mr.pearson.shape[1]} test images: per-image Pearson correlation of the "
        "input maps under the two maximum rules, and the conservation error |input + bias - f| "
        "/ |f| and the biases' share of f under each.",
    )


# --- the decoy ---------------------------------------------------------------------------------


def _outline(ax, region, side):
    rows, cols = np.nonzero(region.reshape(side, side).numpy())
    ax.add_patch(
        Rectangle(
            (cols.min() - 0.5, rows.min() - 0.5),
            cols.max() - cols.min() + 1,
            rows.max() - rows.min() + 1,
            fill=False,
            ec="#ff7f0e",
            lw=1.2,
        )
    )


def _decoy_examples(d) -> Plot:
    fig, ax = plots.figure(4, 2, width=1.8, height=1.9)
    for k in range(4):
        for row, (x, what) in enumerate(((d.example_train, "train"), (d.example_test, "test"))):
            a = ax[row, k]
            a.imshow(x[k].reshape(d.side, d.side).numpy(), cmap="gray_r", vmin=0, vmax=1)
            _outline(a, d.region, d.side)
            a.set_title(f"{what}: patch {x[k][d.region][0]:.2f}", fontsize=7)
            a.set_xticks([])
            a.set_yticks([])
    return Plot(
        f"decoy_examples_{d.corner}{_tag(d.model)}",
        fig,
        f"The decoy task on {d.data}: top, training images whose {d.patch}x{d.patch} "
        f"patch ({_where(d)}, orange) has the brightness (label + 1) / 10; bottom, test images "
        "with a random patch.",
    )


def _decoy_bars(d, methods) -> Plot:
    k = methods.index(d.method)
    fig, ax = plots.figure(3, 1, width=3.6, height=3.4)
    names = [a.name for a in d.arms]
    xs = np.arange(len(names))
    panels = (
        ("test accuracy (random patch)", lambda a: a.accuracy),
        ("predictions changed by swapping only the patch", lambda a: a.changed),
        (f"patch share of |R| ({d.method})", lambda a: a.share[:, k]),
    )
    for axis, (title, get) in zip(ax[0], panels, strict=True):
        means, halves = zip(*(stats.mean_interval(get(a).double()) for a in d.arms), strict=True)
        m, h = np.array([x.item() for x in means]), np.array([x.item() for x in halves])
        below, above = m - np.clip(m - h, 0, 1), np.clip(m + h, 0, 1) - m  # shares: in [0, 1]
        axis.bar(xs, m, yerr=np.stack([below, above]), color=_colours(len(names)), capsize=3)
        for s in range(len(d.seeds)):
            axis.scatter(xs, [get(a)[s].item() for a in d.arms], color="black", s=6, zorder=3)
        axis.set_xticks(xs, names, rotation=35, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    return Plot(
        f"decoy_scores_{d.corner}{_tag(d.model)}",
        fig,
        f"Per way of training: mean over {len(d.seeds)} seeds with 95% t-intervals, dots are the "
        "seeds. A net that ignores the patch has the reference's accuracy, and its predictions "
        "do not change when the patch is made to name another label.",
    )


def _decoy_sweep(d) -> Plot:
    fig, ax = plots.figure(3, 1, width=4.0, height=3.3)
    v = d.sweep_values.numpy()
    for a, c in zip(d.arms, _colours(len(d.arms)), strict=True):
        curves = (a.sweep_accuracy, a.sweep_follow, a.sweep_share)
        for axis, curve in zip(ax[0], curves, strict=True):
            axis.plot(v, curve.mean(0).numpy(), color=c, label=a.name, marker=".", ms=3)
    for axis in ax[0]:
        for lv in d.levels.numpy():
            axis.axvline(lv, color="grey", lw=0.4, ls=":")
        axis.set_xlabel("patch brightness (dotted: training levels)", fontsize=8)
        axis.grid(alpha=0.3)
    ax[0, 0].set_title("test accuracy", fontsize=9)
    ax[0, 1].set_title("share naming the brightness's label", fontsize=9)
    ax[0, 2].set_title(f"patch share of |R| ({d.method})", fontsize=9)
    ax[0, 0].legend(fontsize=7)
    return Plot(
        f"decoy_sweep_{d.corner}{_tag(d.model)}",
        fig,
        "Every test image gets the same patch brightness, swept over [0, 1]; mean over seeds. "
        "A net that ignores the patch has flat accuracy and follow curves. Gaming would show "
        "as accuracy or follow curves that move with the brightness while the relevance share "
        "(right) stays low.",
    )


def _decoy_maps(d) -> Plot:
    n = len(d.arms)
    fig, ax = plots.figure(n, 1, width=2.2, height=2.3)
    for i, a in enumerate(d.arms):
        m = a.mean_relevance.reshape(d.side, d.side).numpy()
        _colourbar(
            ax[0, i], ax[0, i].imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-12))
        )
        _outline(ax[0, i], d.region, d.side)
        ax[0, i].set_title(a.name, fontsize=8)
        ax[0, i].set_xticks([])
        ax[0, i].set_yticks([])
    return Plot(
        f"decoy_relevance_maps_{d.corner}{_tag(d.model)}",
        fig,
        f"Mean |{d.method}| relevance of the predicted class over the test images whose patch "
        "encodes their label (first seed; each panel on its own scale; orange: the patch).",
    )


def _decoy_curves(d) -> Plot:
    fig, ax = plots.figure(2, 1, width=4.4, height=3.2)
    for a, c in zip(d.arms, _colours(len(d.arms)), strict=True):
        e = np.arange(1, a.loss.shape[1] + 1)
        ax[0, 0].plot(e, a.loss.mean(0).numpy(), color=c, label=a.name)
        ax[0, 1].plot(e, a.penalty.mean(0).numpy(), color=c, label=a.name)
    ax[0, 0].set(title="training cross-entropy", xlabel="epoch", yscale="log")
    ax[0, 1].set(title=f"training patch share ({d.method}, true class)", xlabel="epoch",
                 yscale="log")  # fmt: skip
    for axis in ax[0]:
        axis.grid(alpha=0.3)
    ax[0, 0].legend(fontsize=7)
    return Plot(
        f"decoy_training_{d.corner}{_tag(d.model)}",
        fig,
        "Training curves, mean over seeds (log scales).",
    )


# --- text --------------------------------------------------------------------------------------


def _decoy_table(d, methods) -> Table:
    k = methods.index(d.method)
    others = [m for m in ("deeplift", "gradient", "guided_backprop") if m != d.method]
    rows = []
    for a in d.arms:
        rows.append(
            [
                a.name,
                a.trained_on,
                a.weight,
                _mean_ci(a.accuracy_dev) if a.accuracy_dev is not None else "-",
                _mean_ci(a.accuracy),
                _mean_ci(a.accuracy_true),
                _mean_ci(a.accuracy_swapped),
                _mean_ci(a.accuracy_clean),
                _mean_ci(a.changed),
                _mean_ci(a.follow_rate),
                _mean_ci(a.share[:, k]),
                *(f"{a.share[:, methods.index(m)].mean().item():.4f}" for m in others),
            ]
        )
    return Table(
        [
            "training",
            "trained on",
            "lambda",
            "dev accuracy (picks lambda)",
            "accuracy, random patch",
            "patch = label",
            "patch = other label",
            "no patch",
            "changed by the patch",
            "follow rate",
            f"patch share ({d.method})",
            *(f"share ({m})" for m in others),
        ],
        rows,
        caption=f"Mean ± 95% t-interval over seeds {d.seeds}. Dev accuracy: {d.n_dev} training "
        "images held out of training, random patch; the penalty weight with the best dev "
        f"accuracy ({d.selected}) is the one the findings use. Test accuracy on four versions of "
        "the same test images; 'changed' is the share of images whose prediction differs "
        "between the 'patch = label' and 'patch = other label' versions, the follow rate the "
        "share of 'other label' predictions that name the patch's label; relevance shares are measured on the 'patch = label' images for "
        "the predicted class, by the penalised method and by three methods that were not "
        "penalised.",
    )


def _decoy_text(d, methods) -> list[str]:
    k = methods.index(d.method)
    arms = {a.name: a for a in d.arms}
    plain, ref = arms["plain"], arms["random patch (reference)"]
    best = arms[d.selected]
    strongest = max((a for a in d.arms if a.weight > 0), key=lambda a: a.weight)

    def m(t):
        return t.mean().item()

    text = [
        f"Plain training picks up the shortcut as one cue among others. On test images whose "
        f"patch tells the truth it scores {m(plain.accuracy_true):.3f}; with a random patch "
        f"{m(plain.accuracy):.3f}, with a patch naming another label "
        f"{m(plain.accuracy_swapped):.3f}, without a patch {m(plain.accuracy_clean):.3f}. "
        f"Swapping only the patch changes {m(plain.changed):.1%} of its predictions, and "
        f"{m(plain.follow_rate):.1%} then name the patch's label. Its {d.method} relevance "
        f"puts {m(plain.share[:, k]):.1%} of |R| on the {d.patch * d.patch} patch pixels "
        f"({d.patch * d.patch / d.side**2:.1%} of the image). The reference, trained with "
        f"random patches, reaches {m(ref.accuracy):.3f} with a random patch.",
        f"The penalty weight is picked on a dev split: {d.n_dev} training images held out "
        "(seeded) of every arm's training, with random patches like the test images; the test "
        f"images are used only to report. The pick, {best.name} (dev accuracy "
        f"{m(best.accuracy_dev):.3f}), reaches {m(best.accuracy):.3f} on the test images with "
        f"a random patch; swapping the patch changes {m(best.changed):.1%} of its "
        f"predictions, and the patch share is {m(best.share[:, k]):.2%}. At the largest "
        f"weight ({strongest.name}) the four test versions score {m(strongest.accuracy):.3f} / "
        f"{m(strongest.accuracy_true):.3f} / {m(strongest.accuracy_swapped):.3f} / "
        f"{m(strongest.accuracy_clean):.3f} (random / true / other label / none).",
    ]
    if best.weight_ratio is not None:
        text.append(
            "The first-layer weights that read the patch end at "
            f"{m(best.weight_ratio):.2f} times the mean norm of the other pixels' weights after "
            f"{best.name} (plain: {m(plain.weight_ratio):.2f}, reference: "
            f"{m(ref.weight_ratio):.2f}): a ratio near 0 means the penalty cut the patch off "
            "at the input rather than hiding its use."
        )
    else:
        text.append(
            f"The first-layer weight ratio does not apply to the {d.model}: its first layer is "
            "a convolution, which reads every position with the same kernel."
        )
    text.append(
        "Whether the penalised net games the metric (a low measured share with predictions "
        "that still follow the patch) is decided in the Findings table, by the rules stated "
        "there."
    )
    return text


def _conservation_table(im, methods) -> Table:
    rows = [
        [
            m,
            METHODS[m]["propagates"],
            im.error_total[i].item(),
            im.error_total_max[i].item(),
            im.error_input[i].item(),
            im.bias_fraction[i].item(),
            im.conserved[i].item() if im.conserved is not None else float("nan"),
        ]
        for i, m in enumerate(methods)
    ]
    return Table(
        [
            "method",
            "propagates",
            "median |input + bias - f| / |f|",
            "max",
            "median |input - f| / |f|",
            "median bias share of f",
            "share conserved (≤ 1e-4)",
        ],
        rows,
        caption=f"{im.model}, over {im.n_scored} test images of {im.data}, explaining the predicted logit f "
        "(deeplift: f(x) - f(0), against a black image). A method conserves when the first "
        "column is 0; the third shows how much of f the input relevance alone leaves out (the "
        "biases' part for a conserving method).",
    )


def where(d) -> str:
    """Where a decoy's patch is, in words."""
    return "centre" if d.corner == "centre" else d.corner.replace("_", " ") + " corner"


_where = where


def decoy_title(d) -> str:
    """The title of a decoy's section (its findings link to it)."""
    return f"Training against the relevance of a decoy: patch in the {where(d)}" + (
        "" if d.model == "MLP" else f", {d.model}"
    )


def _decoy_section(d, methods) -> Section:
    return Section(
        decoy_title(d),
        [
            f"The decoy task (prunelab.decoy): {d.data} images with a {d.patch}x{d.patch} "
            f"patch in the {_where(d)} whose brightness is (label + 1) / 10 in training and "
            "uniform on [0, 1] at test: a dogs-on-grass shortcut. We train "
            f"{len(d.arms)} ways, each over the same seeds: on random patches (the reference, "
            "which never sees the shortcut), plainly on the decoy, and on the decoy with the "
            "penalty lambda * mean share of |R| on the patch "
            f"({d.method} relevance of the true class, differentiated through the backward "
            "rules) for each weight lambda. Gaming would mean a low measured share with "
            "predictions that still depend on the patch; we check the dependence by "
            "behaviour alone (changing only the patch) and by methods that were not "
            "penalised.",
            *(
                []
                if d.model == "MLP"
                else [
                    f"With {d.model}s the decoy runs fewer arms than with MLPs, to keep the "
                    f"study's time in bounds: {len(d.seeds)} seed(s), penalty weights "
                    f"{', '.join(f'{a.weight:g}' for a in d.arms if a.weight > 0)}, one run "
                    f"per patch position in options convnet_corners (epochs: option "
                    "convnet_decoy_epochs). The MLPs' first-layer weight ratio is not "
                    "applicable: a convolution reads every position with one kernel, so no "
                    "weight reads the patch alone (decoy.patch_weight_ratio refuses a first "
                    "Conv2d)."
                ]
            ),
            *_decoy_text(d, methods),
        ],
        [_decoy_table(d, methods)],
        [
            _decoy_examples(d),
            _decoy_bars(d, methods),
            _decoy_sweep(d),
            _decoy_maps(d),
            _decoy_curves(d),
        ],
    )


def _convnet_image_sections(r, methods) -> list[Section]:
    """The LeNet-5's maps, its bias blame per layer and channel, and the two maximum rules."""
    c, b, mr = r.convnet, r.blame, r.max_rules
    if c is None:
        return []
    gxi, lrp, bb = (methods.index(m) for m in ("gradient_x_input", "lrp_epsilon", "blame_bias"))
    p = ", ".join(
        f"{m} {mr.pearson_median[k]:.3f} (min {mr.pearson_min[k]:.3f})"
        for k, m in enumerate(mr.methods)
    )
    return [
        Section(
            "Relevance on images: a LeNet-5",
            [
                f"The same methods explain a LeNet-5 (conv 6@5x5, max pool, conv 16@5x5, max "
                f"pool, Linear {c.widths[-3]}-{c.widths[-2]}-{c.widths[-1]}; ReLU) trained on "
                f"{c.data} (test accuracy {c.test_accuracy:.3f}), with the max pools under the "
                "gradient rule (winner takes all, the LRP default). The convolutions are linear "
                "ops like the MLP's Linear layers, so the same rules apply and the same "
                "equalities hold: lrp_epsilon and gradient x input agree to "
                f"{c.agreement_pearson[lrp, gxi].item():.4f} (Pearson, over {c.n_scored} "
                "images) and blame_bias conserves the logit to a median relative error of "
                f"{c.error_total[bb].item():.1e} (max {c.error_total_max[bb].item():.1e}; the "
                "second conservation table). As for the MLP, the relevance methods and gradient x "
                "input mark the strokes, and the signal methods (gradient, deconvnet, guided "
                "backprop) also light up the background around them.",
            ],
            plots=[_image_figure(c, methods)],
        ),
        Section(
            "Blaming the bias in a convnet: per layer and channel",
            [
                "With blame_bias a Conv2d bias is an input fixed at 1 at every output position "
                "of its channel, so it gets a relevance map per channel; summed over positions "
                "it is the channel's bias relevance. Averaged over "
                f"{b.n_scored} test images (mean explained logit {b.output:.2f}), the input "
                f"pixels carry {b.input_share:.1%} of f_t(x) and the biases "
                f"{1 - b.input_share:+.1%}: "
                + ", ".join(
                    f"{n} {s:+.2%}" for n, s in zip(b.layers, b.layer_share.tolist(), strict=True)
                )
                + f" (the convolutions together {b.conv_share:+.2%}; the largest in size: "
                f"{b.largest_layer}). Input and bias shares add up to "
                f"{b.input_share + b.layer_share.sum().item():.6f} (conservation).",
            ],
            plots=[_blame_bars(b)],
        ),
        Section(
            MAX_RULES,
            [
                "The source gives two rules for a maximum b = max_i a_i: 'gradient', which "
                "passes R(b) whole to the winning input, and 'radial', which splits it among "
                "the positive inputs in proportion to their values (s_i = a_i / sum of the "
                "positive a_j; all of it to the winner only if no other input is positive). "
                "Both pass on exactly R(b), so conservation is the same under either (median "
                "error "
                + ", ".join(
                    f"{m} {g:.1e} against {r:.1e}"
                    for m, g, r in zip(
                        mr.methods, mr.error_median_gradient, mr.error_median_radial, strict=True
                    )
                )
                + "), but after a ReLU every input of a pool window is >= 0, so the radial "
                "rule hands relevance also to the losers of the window, and the maps spread "
                "from the winning positions to their neighbours. Per-image Pearson correlation "
                f"between the two maps: {p}. Only the gradient rule keeps LRP equal to "
                "gradient x input; the radial rule is not the derivative of the maximum, and "
                "the source notes that credit splitting of this kind is inconsistent when a "
                "maximum is rewritten (max(a, c) = max(a, c, c)).",
                "The source also builds the maximum from basic layers in two ways, the limit of "
                "a soft maximum and max(a, b) = a + relu(b - a) chained, and notes that they "
                "suggest different relevances (relevance.composed_max_relevance, DeepLIFT's "
                "rescale rule through each). On the windows of the LeNet-5's first max pool, "
                f"explained against the mean training image, {mr.composed_share:.1%} of the "
                f"{mr.composed_windows} windows whose maximum moves split its change differently "
                "by more than 1% (d = sum |C_soft - C_relu| / (2 |change of the maximum|); "
                f"median d {mr.composed_median:.3g}). Against a black image, whose activations "
                "are constant within a window, both give the winner everything: "
                f"{mr.composed_share_black:.1%} disagree.",
            ],
            [_max_rules_table(mr)],
            [_max_rules_figure(mr)],
        ),
    ]


def sections(results, config) -> list[Section]:
    r, methods = results, results.methods
    im = r.images
    gxi, lrp = methods.index("gradient_x_input"), methods.index("lrp_epsilon")
    lrp0, bb = methods.index("lrp_0"), methods.index("blame_bias")
    dl, grad = methods.index("deeplift"), methods.index("gradient")
    method_rows = [
        ["gradient", "gradient", "gradient", "one-hot", "signal"],
        ["gradient_x_input", "gradient", "gradient", "one-hot", "x · signal"],
        ["deconvnet", "gradient", "repeat (relu of the signal)", "one-hot", "signal"],
        ["guided_backprop", "gradient", "guided (relu of gradient)", "one-hot", "signal"],
        ["lrp_0", "normalized, eps = 0", "ignore", "f_t(x)", "R"],
        ["lrp_epsilon", "normalized, eps = 1e-6", "ignore", "f_t(x)", "R"],
        ["blame_bias", "normalized, eps = 0, biases as inputs", "ignore", "f_t(x)", "R"],
        ["deeplift", "normalized on differences", "rescale", "f_t(x) - f_t(0)", "R"],
    ]
    c, s = r.circle, r.spirals
    same = im.agreement_pearson[gxi, lrp].item()
    return [
        Section(
            "What was done",
            [
                "The source (Hobson, 'Visualizing neural networks, how to blame the bias', part 2 "
                "of the node-removal post) describes visualisation methods as one backward pass "
                "with a rule per layer type: a matrix rule for the Linear layer ('gradient' or "
                "LRP's 'normalized'), a nonlinearity rule ('gradient', 'ignore', 'slope', "
                "'repeat') and a maximum rule. It shows that LRP, rewritten in terms of "
                "Q = R / a, becomes the gradient with the 'slope' rule, so the methods differ "
                "mainly in how they treat biases, and proposes to treat every bias as a weight "
                "on an extra input fixed at 1 ('blame the bias'), which makes relevance conserve "
                "exactly and tells how much of a decision is due to each bias. Its closing "
                "section proposes to train a network with a penalty on its relevance so that it "
                "attends to the right part of the image, and reports that the network gamed the "
                "metric instead.",
                "Here every method of prunelab.relevance explains (1) the toy-nets circle and "
                "spirals nets over the plane, (2) an MLP "
                + ("and a LeNet-5 " if r.convnet is not None else "")
                + f"on {im.data} for sample test images, scored for conservation and for agreement "
                "between methods, and (3) the alignment idea is tested on a decoy task built "
                f"from {r.decoys[0].data}, with the patch in the "
                + " and in the ".join(_where(d) for d in r.decoys)
                + ".",
            ],
            [
                Table(
                    ["method", "matrix rule", "nonlinearity rule", "starts with", "input"],
                    method_rows,
                    caption="The methods as rows of rules (relevance.METHODS).",
                )
            ],
        ),
        Section(
            "Relevance over the plane",
            [
                "Each toy net is explained at every point of a grid over [-2, 2]^2, always for "
                "the class-1 logit f_1 (outside the circle; the second spiral arm), so the maps "
                "of one method are one function of the input. For the ReLU nets lrp_0, "
                "lrp_epsilon, blame_bias and gradient_x_input give the same input relevance "
                "(LRP-0 with the bias in the denominator is gradient x input, METHODS.md F2); "
                "their maps differ only through eps. The plain gradient is piecewise constant "
                "(one value per linear region of the ReLU net), so R(x_i) = x_i times it "
                "vanishes on the line x_i = 0 and grows linearly away from it, whatever the net "
                "does there: gradient x input and the LRP maps are largest far from the data. "
                "DeepLIFT explains "
                "f_1(x) - f_1(0) against the origin (here f_1(0) = "
                f"{c.logit_origin:.2f} for the circle, {s.logit_origin:.2f} for the spirals). "
                "Deconvnet passes signals through dead units, so its maps ignore the "
                "activation pattern.",
            ],
            plots=[_plane_figure(c, methods), _plane_figure(s, methods)],
        ),
        Section(
            "Blaming the bias",
            [
                "With blame_bias every bias is an input fixed at 1, and for a ReLU net its "
                "relevance is b_j df_1/db_j: non-zero only where the bias's unit is on (orange "
                "dashes) and its path to the output is open. In the one-hidden-layer circle net "
                "df_1/db_j is the unit's output weight wherever the unit is on, so each bias "
                "blames a constant b_j w_1j on its unit's half-plane and nothing elsewhere. "
                f"{c.always_on} of the {len(c.blame_shown)} largest belong to units that are "
                "on over the whole plane: constant 'bias nodes' like those the node-removal "
                "part of the source found. The units whose half-plane edge cuts the circle add "
                "their constants on one side of it, and the decision boundary is where these "
                "constants and the input relevance balance. In the spirals net the biases of "
                "the layers reach "
                + ", ".join(f"±{v:.3g}" for v in s.layer_peaks)
                + f" (first hidden layer to output; the logit reaches ±{s.logit_peak:.3g} "
                "on the plane): the first-layer biases carry most of it, with both signs, "
                "largest far from the data.",
            ],
            plots=[*_blame_figure(c), *_blame_figure(s)],
        ),
        Section(
            "Relevance on images",
            [
                f"An MLP {'-'.join(map(str, im.widths))} trained on {im.data} (test accuracy "
                f"{im.test_accuracy:.3f}) explains its predicted class for test images. The "
                "relevance methods and gradient x input mark the ink strokes (input times "
                "something is zero on the black background); the gradient, deconvnet and "
                "guided backprop also light up the background, where a change of the pixel "
                "would matter though the pixel is off.",
            ],
            plots=[_image_figure(im, methods)],
        ),
        *_convnet_image_sections(r, methods),
        Section(
            CONSERVATION,
            [
                f"blame_bias conserves the explained logit to rounding (median relative error "
                f"{im.error_total[bb].item():.1e}), and so do lrp_0 "
                f"({im.error_total[lrp0].item():.1e}) and, for a ReLU net, gradient x input "
                f"with the bias terms b_j df/db_j ({im.error_total[gxi].item():.1e}): LRP-0 "
                "counts the bias share in its denominators, which is blame_bias with the "
                "biases' part left implicit. lrp_epsilon loses a little to its stabiliser "
                f"({im.error_total[lrp].item():.1e}). DeepLIFT's contributions sum to "
                f"f(x) - f(0) (error {im.error_total[dl].item():.1e}); biases cancel in "
                "differences. The signal methods do not conserve anything (gradient: "
                f"{im.error_total[grad].item():.2f}). Without the biases, the input relevance "
                f"of blame_bias is off from the logit by a median {im.error_input[bb].item():.1%}: "
                f"the part that the biases carry (median share {im.bias_fraction[bb].item():+.1%}"
                "), which a heatmap of the inputs alone hides.",
            ],
            [_conservation_table(im, methods)]
            + ([_conservation_table(r.convnet, methods)] if r.convnet is not None else []),
        ),
        Section(
            AGREEMENT,
            [
                "Mean correlation, over test images, between the input relevance of every two "
                f"methods. lrp_epsilon and gradient x input agree to {same:.4f} (Pearson): the "
                "source's claim that LRP is the gradient with a different treatment of the "
                "biases, for ReLU nets exactly. DeepLIFT with a black reference correlates "
                f"with them at {im.agreement_pearson[dl, gxi].item():.3f}: its reference "
                "activations differ from 0 only through the biases. The signal methods agree "
                "with each other more than with the relevance methods, because they are not "
                "multiplied by the input; rank correlations over all pixels also count the many "
                "tied zeros of the background.",
            ],
            plots=[_agreement_figure(im, methods)]
            + ([_agreement_figure(r.convnet, methods)] if r.convnet is not None else []),
        ),
        *(_decoy_section(d, methods) for d in r.decoys),
        *(_decoy_section(d, methods) for d in r.convnet_decoys),
    ]

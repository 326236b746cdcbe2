"""Report sections of the ``train-vs-prune`` study: figures and text from its ``Results``."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from ..base import stats
from ..methods import compare, curves
from . import plots
from .base import Plot, Section, Table

SOURCE_SHIFT = 0.59  # the source's typical training shift of the main matrix's weights
NAMES = {
    "random": "random",
    "activation_std": "smallest activation std",
    "std_out_norm": "smallest std x outgoing norm",
}
ARM_ORDER = ("prune", "plain", "finetune", "init")
COLOURS = {"full": "#444444", "prune": "#d62728", "plain": "#ff7f0e", "finetune": "#2ca02c"}
COLOURS["init"] = "#1f77b4"


def _name(criterion: str) -> str:
    return NAMES.get(criterion, criterion)


def _mean(values) -> float:
    return float(torch.as_tensor(values).double().mean())


def _ci(values, digits: int = 3) -> str:
    """``mean ± half-width`` of the 95% t-interval over seeds."""
    mean, half = stats.mean_interval(torch.as_tensor(values).double())
    return f"{mean.item():.{digits}f} ± {half.item():.{digits}f}"


def _range(values, digits: int = 3) -> str:
    v = torch.as_tensor(values).double()
    return f"{v.min().item():.{digits}f}-{v.max().item():.{digits}f}"


def _arm(r, key: str, criterion: str = ""):
    return next(a for a in r.arms if a.key == key and a.criterion == criterion)


def _criteria(r) -> list[str]:
    return [m.criterion for m in r.matrices]


# --- figures ------------------------------------------------------------------------------------


def _region(ax, r, probability, title: str) -> object:
    """One decision-region panel (as ``plots.plane``, without a colour bar of its own)."""
    v = probability.numpy()
    lim = r.lim
    im = ax.imshow(v, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis", vmin=0, vmax=1)
    g = np.linspace(-lim, lim, v.shape[0])
    ax.contour(g, g, v, levels=[0.5], colors="white", linewidths=1.0)
    for c in r.reference:
        ax.plot(c[:, 0], c[:, 1], color="black", lw=0.8, ls="--")
    xs, ys = r.data_x[:300].numpy(), r.data_y[:300].numpy()
    for k in (0, 1):
        sel = ys == k
        ax.scatter(xs[sel, 0], xs[sel, 1], s=3, c=plots.CLASS_COLOURS[k], lw=0)
    ax.plot([-1, 1, 1, -1, -1], [-1, -1, 1, 1, -1], color="white", ls=":", lw=0.8)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)
    return im


def _regions(r) -> Plot:
    crits = _criteria(r)
    fig, ax = plots.figure(1 + len(ARM_ORDER), len(crits), width=2.5, height=2.6)
    for i, c in enumerate(crits):
        for j, key in enumerate(("full", *ARM_ORDER)):
            arm = _arm(r, key, "" if key == "full" else c)
            title = "trained, full\n" if key == "full" else f"{arm.label}\n{_name(c)}"
            im = _region(
                ax[i, j], r, arm.probability, f"{title}\nacc {arm.test_accuracy[0].item():.3f}"
            )
    fig.colorbar(im, ax=ax, shrink=0.5, label="P(class 1)")
    return Plot(
        "decision_regions",
        fig,
        f"First seed ({r.seeds[0]}; the score table has every seed). Each row removes one "
        "criterion's half of the nodes; the "
        "first panel of every row is the same trained full net. Colour: P(class 1) over "
        f"[-{r.lim:g}, {r.lim:g}]^2; white: the decision boundary; dashed: the arms' centre "
        "lines; dots: training data; dotted square: [-1, 1]^2.",
    )


def _scores(r) -> Plot:
    fig, ax = plots.figure(2, 1, width=6.4, height=3.8)
    rng = np.random.default_rng(0)
    centres, names, x = [], [], 0.0
    for c in ["", *_criteria(r)]:
        keys = ("full",) if c == "" else ARM_ORDER
        start = x
        for key in keys:
            arm = _arm(r, key, c)
            label = arm.label if c in ("", _criteria(r)[0]) else None
            for a, values in ((ax[0, 0], arm.test_accuracy), (ax[0, 1], arm.test_loss)):
                v = values.numpy()
                jitter = rng.uniform(-0.15, 0.15, len(v))
                a.scatter(x + jitter, v, s=12, color=COLOURS[key], alpha=0.75, label=label)
            mean, lo, hi = stats.clipped_interval(arm.test_accuracy.double(), low=0.0, high=1.0)
            err = [[(mean - lo).item()], [(hi - mean).item()]]  # clipped to [0, 1]
            ax[0, 0].errorbar(x + 0.3, mean.item(), yerr=err, fmt="_", color="k", lw=1)
            ax[0, 1].scatter(x + 0.3, arm.test_loss.double().mean().item(), marker="_", c="k")
            x += 1
        centres.append((start + x - 1) / 2)
        names.append(
            "full net" if c == "" else _name(c).replace("smallest ", "").replace(" x ", " x\n")
        )
        x += 0.8
    for a in ax[0]:
        a.set_xticks(centres, names, fontsize=7)
        a.grid(alpha=0.3, axis="y")
    ax[0, 0].set(
        title="test accuracy per seed (bar: mean, 95% interval)", ylabel="accuracy", ylim=(0, 1.02)
    )
    ax[0, 1].set(title="test loss per seed (bar: mean)", ylabel="cross-entropy")
    ax[0, 1].set_yscale("log")
    ax[0, 0].legend(fontsize=6, loc="lower left")
    return Plot(
        "scores_by_arm",
        fig,
        "Every seed's net in every arm, grouped by the criterion that chose the removed nodes.",
    )


def _scatter(ax, a, b, title: str, xlabel: str, ylabel: str, lim, ylim=None) -> None:
    """Entry-against-entry scatter; red: equal to machine precision (the exact diagonal)."""
    a, b = a.double(), b.double()
    ylim = lim if ylim is None else ylim
    same = compare.unmoved(a, b).flatten().numpy()
    u, v = a.flatten().numpy(), b.flatten().numpy()
    ax.scatter(u[~same], v[~same], s=3, alpha=0.45, color="#1f77b4", lw=0, label="moved")
    if same.any():
        ax.scatter(u[same], v[same], s=4, color="#d62728", lw=0, label=f"equal ({same.sum()})")
    d = min(lim, ylim)
    ax.plot([-d, d], [-d, d], color="grey", lw=0.6, ls="--")
    ax.set(xlim=(-lim, lim), ylim=(-ylim, ylim), xlabel=xlabel, ylabel=ylabel)
    if lim == ylim:
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="upper left", markerscale=2)


def _training_figure(r) -> Plot:
    t = r.training
    fig, ax = plots.figure(2, 1, width=4.6, height=4.2)
    b = t.init_bound * 1.15
    _scatter(
        ax[0, 0],
        t.theta0,
        t.trained,
        f"main {t.theta0.shape[0]}x{t.theta0.shape[1]} matrix, first seed",
        "θ0",
        "trained",
        b,
        float(t.trained.abs().max()) * 1.05,
    )
    shift = (t.trained - t.theta0).double()
    moved = ~compare.unmoved(t.theta0, t.trained)
    died = t.died_mask.bool()
    bins = np.linspace(float(shift[moved].min()), float(shift[moved].max()), 81)
    ax[0, 1].hist(
        [shift[moved & ~died].numpy(), shift[moved & died].numpy()],
        bins=bins,
        stacked=True,
        color=["#1f77b4", "#ff7f0e"],
        label=["other entries", "entries of nodes training killed"],
    )
    med = t.shift_median[0].item()
    for sign in (-1, 1):
        ax[0, 1].axvline(sign * med, color="black", ls=":", lw=1)
        ax[0, 1].axvline(sign * SOURCE_SHIFT, color="#d62728", ls="--", lw=1)
    ax[0, 1].plot([], [], color="black", ls=":", label=f"± median |shift| ({med:.2f})")
    ax[0, 1].plot([], [], color="#d62728", ls="--", label=f"± the source's {SOURCE_SHIFT}")
    ax[0, 1].set(
        title=f"shift of the {int(moved.sum())} moved entries (first seed)",
        xlabel="trained - θ0",
        ylabel="entries",
    )
    ax[0, 1].yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
    ax[0, 1].legend(fontsize=7)
    return Plot(
        "training_shift",
        fig,
        "Left: every entry of the main hidden-to-hidden matrix, trained against its initial "
        "value (the horizontal axis spans the initial range); red entries equal θ0 to machine "
        "precision (never updated). Right: the signed shift of the others; orange: entries "
        "into or out of nodes that were alive at θ0 and dead after training.",
    )


def _weights_figure(r) -> Plot:
    crits = _criteria(r)
    fig, ax = plots.figure(3, len(crits), width=3.0, height=3.0)
    b = r.training.init_bound * 1.15
    for i, m in enumerate(r.matrices):
        lim = float(torch.stack([m.theta0, m.trained, m.init]).abs().max()) * 1.05
        name = _name(m.criterion)
        _scatter(ax[i, 0], m.theta0, m.init, f"{name}:\nθ0 vs prune-then-train", "θ0", "PT", b, lim)
        _scatter(ax[i, 1], m.trained, m.init, f"{name}:\nTP vs PT", "TP", "PT", lim)
        _scatter(ax[i, 2], m.trained, m.init, f"{name}:\nTP vs PT, zoomed", "TP", "PT", 4 * b)
    h1, h0 = r.matrices[0].theta0.shape
    return Plot(
        "weight_scatter",
        fig,
        f"The surviving {h1}x{h0} block of the main matrix (first seed), entry against entry. "
        "TP: trained, then pruned (its surviving weights are θ_T's, pruning moves none, so "
        "θ0 against TP is part of the figure above); PT: the same nodes removed at θ0, then "
        "trained. Red: entries equal to machine precision (the exact diagonal). The θ0 axis "
        "spans the initial range; the zoomed panel shows ±4 times it, as the source's zoomed "
        "plot. The fine-tuned net's weights against PT look like TP's (correlations in the "
        "table).",
    )


def _certificate_figure(r) -> Plot:
    fig, ax = plots.figure(1, 1, width=6.0, height=4.6)
    a = ax[0, 0]
    markers = ("o", "s", "^", "D", "v")
    layer_colours = ("#1f77b4", "#d62728", "#2ca02c")
    lo, hi = np.inf, 0.0
    for cert, mk in zip(r.certificates, markers, strict=False):
        for i, ell in enumerate(cert.layers):
            obs = cert.observed[:, i].numpy()
            for values, fill in (
                (cert.bound[:, i].numpy(), True),
                (cert.source[:, i].numpy(), False),
            ):
                a.scatter(
                    obs,
                    values,
                    marker=mk,
                    s=22,
                    facecolors=layer_colours[i % 3] if fill else "none",
                    edgecolors=layer_colours[i % 3],
                    label=f"{_name(cert.criterion)}, layer {ell}" if fill else None,
                )
                lo, hi = min(lo, obs.min(), values.min()), max(hi, obs.max(), values.max())
    lo = max(lo, 1e-4)
    a.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=0.8, label="bound = observed")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set(
        xlabel="observed mean |loss change| (training data)",
        ylabel="certified bound",
        title="the Lipschitz certificate against what pruning did",
    )
    a.legend(fontsize=6)
    a.grid(alpha=0.3, which="both")
    return Plot(
        "certificate",
        fig,
        "One point per seed and pruned layer. Filled: the downstream-norm certificate "
        "sqrt(2) ||W^{l+1}[:, S]|| prod ||W^k|| sqrt(sum sigma_j^2), telescoped (the second "
        "layer's term evaluated on the net with the first already pruned). Hollow: the "
        "discussion's form with the product of all operator norms. Everything above the "
        "dashed line is a valid certificate.",
    )


# --- tables -------------------------------------------------------------------------------------


def _score_table(r) -> Table:
    full = _arm(r, "full")
    rows = [
        [
            "trained, full",
            "-",
            _ci(full.test_accuracy),
            _ci(full.test_loss),
            _ci(full.train_accuracy),
            "1",
        ]
    ]
    for c in _criteria(r):
        for key in ARM_ORDER:
            a = _arm(r, key, c)
            rows.append(
                [
                    a.label,
                    _name(c),
                    _ci(a.test_accuracy),
                    _ci(a.test_loss),
                    _ci(a.train_accuracy),
                    _ci(a.agreement),
                ]
            )
    return Table(
        ["arm", "removed", "test accuracy", "test loss", "train accuracy", "agrees with full"],
        rows,
        caption=f"Mean ± 95% t-interval over {len(r.seeds)} seeds ({r.n_test} test points). "
        "'agrees with full': test points put in the same class as the trained full net.",
    )


def _convnet_table(c, seeds: int) -> Table:
    """The LeNet-5 arms: the score table of the spirals nets, on mnist5k."""
    rows = []
    for a in c.arms:
        rows.append(
            [
                a.label,
                _name(a.criterion) if a.criterion else "-",
                _ci(a.test_accuracy),
                _ci(a.test_loss),
                _ci(a.train_accuracy),
                "1" if a.key == "full" else _ci(a.agreement),
            ]
        )
    return Table(
        ["arm", "removed", "test accuracy", "test loss", "train accuracy", "agrees with full"],
        rows,
        caption=f"LeNet-5 on mnist5k, mean ± 95% t-interval over {seeds} seeds ({c.n_test} "
        "test images).",
    )


def _convnet_numbers(c) -> list[str]:
    """Prune first against train first on the convnet, per criterion (the numbers only)."""
    out = []
    for crit in dict.fromkeys(a.criterion for a in c.arms if a.criterion):
        arm = {a.key: a for a in c.arms if a.criterion == crit}
        out.append(
            f"{_name(crit)}: pruning at θ0 then training reaches test accuracy "
            f"{_ci(arm['init'].test_accuracy)}, training, pruning and fine-tuning "
            f"{_ci(arm['finetune'].test_accuracy)}; pruning the trained net without fine-tuning "
            f"gives {_ci(arm['prune'].test_accuracy)} with mean compensation and "
            f"{_ci(arm['plain'].test_accuracy)} without."
        )
    return out


def _shift_table(r) -> Table:
    t = r.training
    rows = [
        [
            f"full net, θ0 vs trained ({t.size} entries)",
            _ci(t.unmoved, 1),
            _ci(t.shift_median),
            _ci(t.shift_mean),
        ]
    ]
    for m in r.matrices:
        rows.append(
            [
                f"{_name(m.criterion)}: θ0 vs train-then-prune ({m.size})",
                _ci(m.trained_unmoved, 1),
                _ci(m.trained_shift),
                "-",
            ]
        )
        rows.append(
            [
                f"{_name(m.criterion)}: θ0 vs prune-then-train ({m.size})",
                _ci(m.init_unmoved, 1),
                _ci(m.init_shift),
                "-",
            ]
        )
    return Table(
        ["matrix", "entries never moved", "median |shift| of the moved", "mean |shift|"],
        rows,
        caption="'Never moved': |w - w0| <= eps |w0| with eps the float32 machine epsilon.",
    )


def _dead_table(r) -> Table:
    t = r.training
    L = t.dead_init.shape[1]
    rows = [
        ["dead at θ0", *(_ci(t.dead_init[:, ell], 1) for ell in range(L))],
        ["dead after training", *(_ci(t.dead_trained[:, ell], 1) for ell in range(L))],
        ["alive at θ0, killed by training", *(_ci(t.died[:, ell], 1) for ell in range(L))],
    ]
    for m in r.matrices:
        rows.append(
            [
                f"{_name(m.criterion)}: dead among the removed",
                *(_ci(m.removed_dead[:, ell], 1) for ell in range(L)),
            ]
        )
        rows.append(
            [
                f"{_name(m.criterion)}: dead among the kept",
                *(_ci(m.kept_dead[:, ell], 1) for ell in range(L)),
            ]
        )
    return Table(
        ["nodes", *(f"hidden layer {ell}" for ell in range(L))],
        rows,
        caption=f"Nodes whose ReLU output is 0 on every training point, of {r.widths[1:-1]} "
        "per hidden layer ('dead among the removed/kept': in the trained net). Mean ± 95% "
        "interval over seeds.",
    )


def _correlation_table(r) -> Table:
    rows = []
    for m in r.matrices:
        L = m.roles_matched.shape[1]
        rows.append(
            [
                _name(m.criterion),
                _ci(m.correlation),
                _ci(m.shift_correlation),
                _ci(m.init_theta0_correlation),
                _ci(m.finetune_correlation),
                _ci(m.equal, 1),
                " / ".join(_ci(m.roles_matched[:, ell], 2) for ell in range(L)),
                " / ".join(_ci(m.roles_unmatched[:, ell], 2) for ell in range(L)),
                _ci(m.agreement),
                _ci(m.finetune_agreement),
            ]
        )
    return Table(
        [
            "removed",
            "r(TP, PT)",
            "r(TP-θ0, PT-θ0)",
            "r(θ0, PT)",
            "r(FT, PT)",
            "equal entries",
            "node j vs node j (layer 0 / 1)",
            "node j vs node k≠j",
            "TP, PT agree",
            "FT, PT agree",
        ],
        rows,
        caption="Pearson correlations of the surviving main-matrix block between arms (TP: "
        "train then prune; PT: prune at θ0 then train; FT: train, prune, fine-tune), of their "
        "shifts from θ0, and of each surviving node's activation over the training data in TP "
        "and in PT; 'agree': test points put in the same class. Mean ± 95% interval over seeds.",
    )


def _certificate_table(r) -> Table:
    rows = []
    for cert in r.certificates:
        for i, ell in enumerate(cert.layers):
            rows.append(
                [
                    _name(cert.criterion),
                    f"layer {ell}",
                    _ci(cert.observed[:, i]),
                    _ci(cert.bound[:, i], 2),
                    _ci(cert.source[:, i], 1),
                    _range(curves.bound_check(cert.bound[:, i], cert.observed[:, i]).ratio, 1),
                    bool(curves.bound_check(cert.bound[:, i], cert.observed[:, i]).holds.all()),
                ]
            )
        rows.append(
            [
                _name(cert.criterion),
                "both (telescoped)",
                _ci(cert.total_observed),
                _ci(cert.total_bound, 2),
                "-",
                _range(curves.bound_check(cert.total_bound, cert.total_observed).ratio, 1),
                bool(curves.bound_check(cert.total_bound, cert.total_observed).holds.all()),
            ]
        )
    return Table(
        [
            "removed",
            "layer",
            "observed mean |Δloss|",
            "certificate",
            "source's form",
            "certificate / observed",
            "bound >= observed, every seed",
        ],
        rows,
        caption="On the training data, whose means the compensation uses (the certificate is "
        "exact for that empirical distribution). Mean ± 95% interval over seeds; the ratio "
        "column gives its range.",
    )


# --- text -------------------------------------------------------------------------------------


def _conclusions(r) -> list[str]:
    full = _arm(r, "full")
    out = []
    crits = _criteria(r)
    if "random" in crits:
        tp, plain, pt = (_arm(r, k, "random") for k in ("prune", "plain", "init"))
        ft = _arm(r, "finetune", "random")
        out.append(
            "Random pruning. Pruning half of each hidden layer of the trained net at random leaves a test "
            f"accuracy of {_ci(tp.test_accuracy)} with the mean folded into the next bias "
            f"({_ci(plain.test_accuracy)} without), against {_ci(full.test_accuracy)} for the "
            f"full net, while removing the same nodes at θ0 and then training gives "
            f"{_ci(pt.test_accuracy)}, and fine-tuning the pruned net {_ci(ft.test_accuracy)} "
            "(the decision regions show where each arm misclassifies the plane)."
        )
    t = r.training
    unmoved = _mean(t.unmoved)
    total = int(t.unmoved.sum())
    dead_share = 1 - int(t.unmoved_live.sum()) / max(total, 1)
    co_share = 1 - int(t.unmoved_coactive.sum()) / max(total, 1)
    out.append(
        f"Weights that training never moved: {unmoved:.0f} of the {t.size} entries of "
        f"the main matrix ({100 * unmoved / t.size:.0f}%, range {_range(t.unmoved, 0)} over "
        "seeds) end training exactly at their initial value. The gradient of w_ij sums "
        "delta_i a_j over the examples, so it is exactly zero unless node j feeds a nonzero "
        "activation and node i is active on the same example, and Adam's step for a zero "
        f"gradient is exactly zero. {100 * co_share:.0f}% of the unmoved entries (over all "
        "seeds) connect two nodes that are active together on no training point at θ0 "
        f"({_ci(t.never_coactive, 0)} such entries per matrix; some become co-active and move "
        f"later), and {100 * dead_share:.0f}% belong to a node that is dead on all the "
        f"training data at θ0 ({_ci(t.dead_init.sum(1).double(), 1)} of the "
        f"{sum(r.widths[1:-1])} hidden nodes), the extreme case. In the weight-vs-weight "
        "scatter they are the exact diagonal, and they keep the initial distribution "
        f"U(-{t.init_bound:.3f}, {t.init_bound:.3f}) with its sharp cut-offs, as in the source."
    )
    med, mean = _mean(t.shift_median), _mean(t.shift_mean)
    out.append(
        f"The typical training shift (the source: about {SOURCE_SHIFT}). The moved entries "
        f"shift by a median of {med:.2f} (mean {mean:.2f}), about "
        f"{med / t.init_bound:.1f} times the initial scale {t.init_bound:.3f}, with tails "
        "beyond ±2. The histogram of the shifts has one sharp peak near zero, and it has a "
        f"cause: training kills {_ci(t.died.sum(1).double(), 1)} nodes that were alive at θ0, "
        f"and the {_ci(t.died_moved, 0)} moved entries into or out of them shifted by a median "
        f"of only {_ci(t.died_shift)} (a few Adam steps of about the learning rate each, "
        f"before the node died), against {_ci(t.other_shift)} for the other moved entries. "
        "There are no clusters at a fixed distance from the diagonal. The size of the shift "
        "follows from the initialisation and the optimiser's settings (the source used Keras' "
        f"Glorot initialisation and its own settings), so the source's {SOURCE_SHIFT} is a "
        "property of its recipe rather than of training."
    )
    for c in ("activation_std", "std_out_norm"):
        if c not in crits:
            continue
        tp, pt = _arm(r, "prune", c), _arm(r, "init", c)
        m = next(m for m in r.matrices if m.criterion == c)
        if c == "activation_std":
            out.append(
                f"Pruning the nodes with the smallest activation std leaves the net nearly "
                f"unchanged (the source: 'visually indistinguishable'). Test accuracy "
                f"{_ci(tp.test_accuracy)} (seeds {_range(tp.test_accuracy)}), and the "
                f"pruned net classifies {_ci(tp.agreement)} of the test points as the full net "
                f"does. The criterion removes every dead node first (dead among the removed: "
                f"{' / '.join(_ci(m.removed_dead[:, ell], 1) for ell in range(m.removed_dead.shape[1]))}"
                " per layer), which is free, but half a layer is more than the dead nodes, and the "
                "live nodes it then removes can have a small std and large outgoing weights. This "
                "is the discussion's own caveat: 'a tiny standard deviation can be amplified by "
                "large values in the kernels'."
            )
        else:
            out.append(
                "Beyond the source, scaling the std by the node's outgoing weight norm (the "
                "per-node factor of the certificate) does what the source expected of the std: "
                f"test accuracy {_ci(tp.test_accuracy)} after pruning, agreement with the full "
                f"net {_ci(tp.agreement)}."
            )
        if c == "activation_std":
            rand = next((m for m in r.matrices if m.criterion == "random"), None)
            L = m.roles_matched.shape[1]
            roles = " / ".join(_ci(m.roles_matched[:, ell], 2) for ell in range(L))
            chance = " / ".join(_ci(m.roles_unmatched[:, ell], 2) for ell in range(L))
            text = (
                "The same nodes removed first and then trained (the source: similar to "
                "train-then-prune but different). Prune-then-train reaches "
                f"{_ci(pt.test_accuracy)}; the two arms classify {_ci(m.agreement)} of the "
                f"test points alike. Their surviving weights correlate (r = "
                f"{_ci(m.correlation)}; r of the shifts from θ0 {_ci(m.shift_correlation)}, "
                f"while θ0 itself correlates with the prune-then-train weights at only "
                f"{_ci(m.init_theta0_correlation)}). Node j of one net correlates with node j of "
                f"the other at {roles} (layer 0 / 1) against {chance} for unmatched nodes, so "
                "the surviving nodes do tend to take the same roles."
            )
            if rand is not None:
                text += (
                    f" With random pruning the weights correlate at r = {_ci(rand.correlation)} "
                    "(training the surviving weights from the same θ0 on the same data "
                    "correlates them whatever the criterion), and the second hidden layer's "
                    f"node j vs node j correlation is {_ci(m.roles_matched[:, -1], 2)} for std "
                    f"against {_ci(rand.roles_matched[:, -1], 2)} for random."
                )
            out.append(text)
    ratios = torch.cat([(c.bound / c.observed).flatten() for c in r.certificates])
    looser = torch.cat([(c.source / c.bound).flatten() for c in r.certificates])
    out.append(
        "The discussion's bound (loss increase at most K times the pruned node's std), in the "
        "corrected form (with CE's Lipschitz constant sqrt(2), downstream norms only): "
        f"{ratios.min().item():.0f} to {ratios.max().item():.0f} times the observed mean |loss "
        "change| over seeds and layers; the source's own form (the product of all operator "
        f"norms) is {looser.min().item():.0f} to {looser.max().item():.0f} times larger still. "
        "It is a guarantee (zero-variance nodes cost nothing; small-variance nodes behind "
        "small weights cost little), not a prediction of the loss change."
    )
    return out


def sections(results, config) -> list[Section]:
    r = results
    crits = ", ".join(_name(c) for c in _criteria(r))
    widths = "-".join(map(str, r.widths))
    pruned = "-".join(map(str, r.pruned_widths))
    return [
        Section(
            "What was done",
            [
                f"A {widths} ReLU net is trained on two spiral arms ({r.n_train} points, Adam at "
                f"learning rate {config.lr}, {config.epochs} epochs in batches of "
                f"{config.batch_size}, the toy-nets recipe) from {len(r.seeds)} initialisations "
                f"θ0 (seeds {r.seeds[0]}-{r.seeds[-1]}). For each criterion ({crits}) half of "
                f"the nodes of both hidden layers are chosen on the trained net, leaving "
                f"{pruned}, and four arms start from the same θ0: (1) train, then remove them "
                "with each next bias absorbing the removed nodes' mean activations (the "
                "source's pruning); (2) the same without that compensation; (3) train, prune "
                f"as in (1), then fine-tune for {config.finetune_epochs} epochs; (4) remove the "
                f"same nodes from θ0, then train the smaller net with the full recipe. For the "
                "random criterion this matches the source; for the std criterion the source "
                "also removed 'those same nodes' at the start.",
                "The trained full net of the first seed is saved in this run folder as "
                f"{r.explorer} for the interactive explorer page.",
            ],
            [_score_table(r)],
            [_scores(r)],
        ),
        Section(
            "Decision regions",
            [
                "What each arm computes over [-2, 2]^2, first seed. Compare each pruned net "
                "with the full net at the left of its row.",
            ],
            plots=[_regions(r)],
        ),
        Section(
            "Weights that training never moved",
            [
                "The source plotted the main 50x50 hidden-to-hidden matrices of its nets "
                "against each other and saw a dashed diagonal: a middle piece exactly on the "
                "diagonal (entries training never changed), with the initial uniform "
                f"distribution's sharp cut-offs, and two offset pieces shifted by about "
                f"±{SOURCE_SHIFT}. Here the trained full net's matrix is plotted against θ0.",
            ],
            [_shift_table(r), _dead_table(r)],
            [_training_figure(r)],
        ),
        Section(
            "Weight against weight, across arms",
            [
                "The surviving block of the main matrix, entry against entry, between θ0, "
                "train-then-prune, prune-then-train and the fine-tuned net. Correlations of "
                "the weights, of their shifts from the common θ0, and of the surviving nodes' "
                "activations (does node j do the same job in both nets?) are in the table.",
            ],
            [_correlation_table(r)],
            [_weights_figure(r)],
        ),
        Section(
            "The discussion's certificate",
            [
                "The discussion argues that removing a node with activation std X raises the "
                "loss by at most K X. METHODS.md D gives the certified version: mean-replacing "
                "a set S of nodes of layer l changes the per-sample cross-entropy by at most "
                "sqrt(2) ||W^{l+1}[:, S]||_2 prod_{k>=l+2} ||W^k||_2 ||a_S(x) - mean||, so the "
                "mean absolute change is at most that constant times sqrt(sum_j sigma_j^2). "
                "Both hidden layers are pruned, so the bound is telescoped: layer 0's term on "
                "the trained net, layer 1's on the net with layer 0 already pruned.",
            ],
            [_certificate_table(r)],
            [_certificate_figure(r)],
        ),
        Section("Reading the results", _conclusions(r)),
        *_convnet_section(r, config),
    ]


def _convnet_section(r, config) -> list[Section]:
    c = getattr(r, "convnet", None)
    if c is None:
        return []
    hidden = "-".join(map(str, c.hidden))
    pruned = "-".join(map(str, c.pruned_hidden))
    return [
        Section(
            "A convnet: LeNet-5 on mnist5k",
            [
                f"The same four arms on a LeNet-5 (units per hidden layer {hidden}: conv "
                f"channels, then dense features; {pruned} after removal), trained on "
                f"{c.n_train} mnist5k images for {c.epochs} epochs with Adam at learning rate "
                f"{config.lenet5_lr}, the same seeds, criteria and fraction per layer. A "
                "channel's statistics are taken over images and positions; its mean "
                "compensation holds it at its mean at every position (surgery.remove_nodes). "
                "The fine-tune and the prune-first net get the full net's epochs. The weight "
                "analyses above are specific to the spirals net's 50x50 matrix and are not "
                "repeated here.",
                *_convnet_numbers(c),
            ],
            [_convnet_table(c, len(r.seeds))],
        )
    ]

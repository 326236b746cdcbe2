"""Report sections of the ``node-criteria`` study: figures, tables and text from its ``Results``."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter, NullFormatter

from . import plots
from .base import Plot, Section, Table

BASELINE = "random"
DESCRIPTIONS = {
    "random": "uniform random scores (the baseline)",
    "activation_std": "std of the activation (Hobson 2022; variance pruning)",
    "activation_mean_abs": "mean |activation|",
    "apoz": "1 - average percentage of zeros (Hu et al. 2016)",
    "weight_in_norm": "norm of incoming weights",
    "weight_out_norm": "norm of outgoing weights",
    "std_out_norm": "std x outgoing weight norm",
    "lipschitz": "certified bound on E|dloss| under mean replacement",
    "taylor": "(dL/dgate)^2 (Molchanov et al. 2019)",
    "mean_replacement": "mean replacement saliency (Evci et al. 2018)",
    "obd_mask": "exact d2L/dgate^2 (OBD on a gate)",
    "obd_mask_delta": "2nd-order estimate of dloss when zeroing",
    "mean_replacement_delta": "2nd-order estimate of dloss when mean-replacing",
}
SCOPE_WORDS = {"layer": "per layer", "global": "global"}
COMP_WORDS = {"none": "no compensation", "mean": "mean compensation"}


def _colours(names: list[str]) -> dict[str, tuple]:
    """A fixed colour per criterion: tab20's dark shades first, then its light ones; random black."""
    cmap = colormaps["tab20"]
    others = [n for n in names if n != BASELINE]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    out = {n: cmap(order[i % 20]) for i, n in enumerate(others)}
    out[BASELINE] = (0.0, 0.0, 0.0, 1.0)
    return out


def _bands(mean, half) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, lower and upper edge of a stored mean ± half-width, as arrays."""
    m, h = mean.numpy(), half.numpy()
    return m, m - h, m + h


def _accuracy_err(mean, half) -> np.ndarray:
    """Error bars [2, K] of accuracies mean ± half, clipped to [0, 1]."""
    m, h = mean.numpy(), half.numpy()
    return np.stack([m - np.clip(m - h, 0, 1), np.clip(m + h, 0, 1) - m])


def _log_ticks(axis) -> None:
    """Plain numbers (1, 2, 5, 10, ...) on a log axis, no crowded minor labels."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _ci(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _signed(mean: float, half: float, digits: int = 3) -> str:
    mark = " *" if mean - half > 0 or mean + half < 0 else ""
    return f"{mean:+.{digits}f} ± {half:.{digits}f}{mark}"


def _order(comparison) -> list[int]:
    """Criteria indices, best area first."""
    area = comparison.area_mean.tolist()
    sign = -1 if comparison.higher_is_better else 1
    return sorted(range(len(area)), key=lambda k: sign * area[k])


# --- figures ---------------------------------------------------------------------------------


def _curve_figure(r, n, quantity: str) -> Plot:
    names, fr = r.criteria, np.array(r.fractions)
    colours = _colours(names)
    fig, axes = plots.figure(2, 2, width=5.4, height=4.0, sharex=True)
    for row, scope in enumerate(("layer", "global")):
        for col, comp in enumerate(("none", "mean")):
            ax = axes[row, col]
            p = n.panel(scope, comp)
            comparison = p.by_accuracy if quantity == "accuracy" else p.by_loss
            if quantity == "accuracy":
                mean, lower, upper = _bands(p.accuracy_mean, p.accuracy_half)
            else:  # geometric mean with a multiplicative band: what a log axis shows
                mean, lower, upper = (np.exp(v) for v in _bands(p.log_loss_mean, p.log_loss_half))
            best = [k for k in _order(comparison) if names[k] != BASELINE][: r.highlight]
            shown = [*best, names.index(BASELINE)]
            grey = True
            for k in range(len(names)):
                if k not in shown:
                    ax.plot(
                        fr, mean[k], color="0.75", lw=0.8, label="other criteria" if grey else None
                    )
                    grey = False
            if quantity == "accuracy":
                full = n.test_accuracy.mean().item()
                lo, hi = 0.0, 1.0
                ax.set(ylabel="test accuracy", ylim=(0, 1.02))
            else:
                full = n.test_loss.mean().item()
                lo = 0.5 * min(full, float(mean[shown].min()))
                hi = 2.0 * float(mean[shown].max())
                ax.set_yscale("log")
                _log_ticks(ax.yaxis)
                ax.set(ylabel="test cross-entropy (log scale)", ylim=(lo, hi))
            for k in shown:
                c = colours[names[k]]
                ax.plot(fr, mean[k], color=c, lw=1.8, marker="o", ms=3, label=names[k])
                band = np.clip(lower[k], lo, hi), np.clip(upper[k], lo, hi)
                ax.fill_between(fr, *band, color=c, alpha=0.15, lw=0)
            ax.axhline(full, color="0.4", ls=":", lw=1, label=f"full net ({full:.3f})")
            ax.set(title=f"{n.name}: {SCOPE_WORDS[scope]}, {COMP_WORDS[comp]}")
            if row == 1:
                ax.set(xlabel="fraction of hidden nodes removed")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left" if quantity == "accuracy" else "upper left")
    what = (
        "Test accuracy (mean"
        if quantity == "accuracy"
        else "Test cross-entropy (geometric mean, i.e. the mean of the log-loss,"
    )
    return Plot(
        f"{n.name}_{quantity}",
        fig,
        f"{what} over {len(n.seeds)} trained nets, with 95% t-intervals as bands) of the "
        f"pruned {n.name} nets against the fraction of hidden nodes removed. Per panel the "
        f"{r.highlight} criteria with the best area under the curve are drawn in colour, with "
        "the random baseline in black; the other criteria are the grey lines. No fine-tuning.",
    )


def _rank_figure(r) -> Plot:
    names = r.criteria
    order = sorted(range(len(names)), key=lambda k: r.overall_rank[k].item())
    cols = [(n, p) for n in r.nets for p in n.panels]
    grid = np.array([[p.by_accuracy.rank_mean[k].item() for n, p in cols] for k in order])
    fig, axes = plots.figure(1, 1, width=0.75 * len(cols) + 4.0, height=0.36 * len(names) + 2.0)
    ax = axes[0, 0]
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto", vmin=1, vmax=len(names))
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(
        [f"{n.name}\n{p.scope}/{p.compensate}" for n, p in cols], fontsize=7, rotation=0
    )
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([names[k] for k in order], fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean rank by accuracy (1 = best)")
    ax.set(title="rank of each criterion, averaged over fractions and seeds")
    return Plot(
        "ranks",
        fig,
        "Mean rank of each criterion's test accuracy among all criteria (1 = best), at every "
        "fraction and seed, averaged; rows sorted by the average over all panels.",
    )


def _cost_figure(r) -> Plot:
    names = r.criteria
    colours = _colours(names)
    fig, axes = plots.figure(2, len(r.nets), width=5.2, height=3.9)
    for row, n in enumerate(r.nets):
        layer = next(c for c in n.costs if c.scope == "layer")
        glob = next(c for c in n.costs if c.scope == "global")
        fr = np.array(r.fractions)
        ax = axes[row, 0]
        for k, name in enumerate(names):
            ax.plot(fr, glob.speedup_mean[k].numpy(), color=colours[name], lw=1, label=name)
        ax.plot(
            fr, layer.speedup_mean[0].numpy(), color="k", ls="--", lw=2, label="per layer (all)"
        )
        ax.set(
            title=f"{n.name}: theoretical speed-up",
            xlabel="fraction of hidden nodes removed",
            ylabel="dense MACs full / pruned",
            yscale="log",
        )
        _log_ticks(ax.yaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        ax = axes[row, 1]
        p = n.panel("global", "mean")
        for k, name in enumerate(names):
            ax.plot(
                glob.speedup_mean[k].numpy(),
                p.accuracy_mean[k].numpy(),
                color=colours[name],
                lw=1.6 if name == BASELINE else 1,
                marker="o",
                ms=2.5,
                label=name,
            )
        pl = n.panel("layer", "mean")
        best = _order(pl.by_accuracy)[0]
        ax.plot(
            layer.speedup_mean[best].numpy(),
            pl.accuracy_mean[best].numpy(),
            color="k",
            ls="--",
            lw=2,
            label=f"per layer: {names[best]}",
        )
        ax.set(
            title=f"{n.name}: accuracy against speed-up (mean compensation)",
            xlabel="theoretical speed-up",
            ylabel="test accuracy",
            xscale="log",
        )
        _log_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return Plot(
        "costs",
        fig,
        "Left: theoretical speed-up (dense multiply-accumulates of the full net over those of "
        "the pruned net) against the fraction of nodes removed. Per-layer removal gives the "
        "same architecture for every criterion (dashed); global removal takes nodes where a "
        "criterion's scores are lowest, so the speed-up depends on the criterion. Right: the "
        "accuracy each global criterion buys at its speed-up (mean over seeds), with the best "
        "per-layer criterion dashed.",
    )


def _finetune_figure(r) -> Plot:
    nets = [n for n in r.nets if n.finetune is not None]
    F2 = len(nets[0].finetune.fractions)
    names = r.criteria
    fig, axes = plots.figure(F2, len(nets), width=6.4, height=3.6)
    x = np.arange(len(names))
    for row, n in enumerate(nets):
        ft = n.finetune
        for f, frac in enumerate(ft.fractions):
            ax = axes[row, f]
            ax.errorbar(
                x - 0.12,
                ft.before_mean[:, f],
                yerr=_accuracy_err(ft.before_mean[:, f], ft.before_half[:, f]),
                fmt="o",
                mfc="white",
                color="#1f77b4",
                ms=4,
                capsize=2,
                label="pruned",
            )
            ax.errorbar(
                x + 0.12,
                ft.after_mean[:, f],
                yerr=_accuracy_err(ft.after_mean[:, f], ft.after_half[:, f]),
                fmt="o",
                color="#d62728",
                ms=4,
                capsize=2,
                label=f"+ {ft.epochs} epoch fine-tune",
            )
            ax.axhline(n.test_accuracy.mean().item(), color="0.4", ls=":", lw=1, label="full net")
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            ax.set(
                title=f"{n.name}: {frac:.0%} removed ({ft.scope}, {ft.compensate})",
                ylabel="test accuracy",
                ylim=(0, 1.02),
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return Plot(
        "finetune",
        fig,
        "Test accuracy of each criterion's pruned nets before (open) and after (filled) a short "
        "fine-tune of the pruned net, mean over seeds with 95% intervals.",
    )


def _collapse_figure(r) -> Plot:
    """Share of test points given the most common class, random removal, every panel."""
    fracs = np.array(r.fractions)
    base = r.criteria.index(BASELINE)
    fig, axes = plots.figure(len(r.nets), 1, width=5.0, height=3.6)
    colours = {"none": "#1f77b4", "mean": "#d62728"}
    for ax, n in zip(axes[0], r.nets, strict=True):
        for p in n.panels:
            ax.plot(
                fracs,
                p.majority_mean[base],
                "o-" if p.scope == "layer" else "s--",
                color=colours[p.compensate],
                ms=3,
                label=f"{SCOPE_WORDS[p.scope]}, {COMP_WORDS[p.compensate]}",
            )
        ax.axhline(n.test_majority.mean().item(), color="0.4", ls=":", lw=1, label="full net")
        ax.set(
            title=f"{n.name}: random removal",
            xlabel="fraction of nodes removed",
            ylabel="share of the most common prediction",
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return Plot(
        "collapse",
        fig,
        "Prediction collapse: the share of test points given the most common predicted class "
        "(1 = every point gets the same class), for random removal, mean over seeds. The full "
        "nets' share (dotted) is close to the largest class's share of the data.",
    )


# --- tables ----------------------------------------------------------------------------------


def _widths(n) -> str:
    """``784-300-100-10``; for the convnet the units per layer with their kind."""
    w = list(n.widths)
    if getattr(n, "arch", "mlp") == "mlp":
        return "-".join(map(str, w))
    return f"{w[0]} ch, conv {w[1]}-{w[2]} ch, dense {'-'.join(map(str, w[3:]))}"


def _setup_table(r) -> Table:
    rows = []
    for n in r.nets:
        rows.append(
            [
                n.name if getattr(n, "arch", "mlp") == "mlp" else f"{n.name} (on {n.data})",
                _widths(n),
                n.parameters,
                n.macs,
                f"{n.epochs} epochs, Adam lr {n.lr:g}, batch {n.batch_size}",
                n.n_train,
                n.score_points,
                n.n_test,
                ", ".join(map(str, n.seeds)),
                _ci(n.test_accuracy.mean().item(), n.test_accuracy_half),
            ]
        )
    return Table(
        [
            "net",
            "widths",
            "parameters",
            "MACs / input",
            "training",
            "train points",
            "score points",
            "test points",
            "seeds",
            "test accuracy (full)",
        ],
        rows,
        caption="Every criterion scores the same trained nets on the same score points; every "
        "pruned net is evaluated on the same test points. Test accuracy: mean ± 95% interval "
        "over seeds.",
    )


def _overall_table(r) -> Table:
    names = r.criteria
    order = sorted(range(len(names)), key=lambda k: r.overall_rank[k].item())
    cols = [(n, p) for n in r.nets for p in n.panels]
    rows = []
    for k in order:
        row = [names[k], "yes" if names[k] in r.labelled else "no"]
        row += [f"{p.by_accuracy.rank_mean[k].item():.1f}" for n, p in cols]
        row.append(f"{r.overall_rank[k].item():.2f}")
        rows.append(row)
    return Table(
        ["criterion", "labels", *[f"{n.name} {p.scope}/{p.compensate}" for n, p in cols], "mean"],
        rows,
        caption="Mean rank by test accuracy (1 = best of the "
        f"{len(names)} criteria) at each fraction and seed, averaged over "
        f"{len(r.fractions)} fractions and the seeds; last column: the average over all panels. "
        "'labels': the criterion reads the training labels (the loss).",
    )


def _panel_table(r, n, p) -> Table:
    names = r.criteria
    acc, loss = p.by_accuracy, p.by_loss
    rows = []
    for k in _order(acc):
        rows.append(
            [
                names[k],
                _ci(acc.area_mean[k].item(), acc.area_half[k].item()),
                "-"
                if names[k] == BASELINE
                else _signed(acc.delta_mean[k].item(), acc.delta_half[k].item()),
                _ci(acc.rank_mean[k].item(), acc.rank_half[k].item(), 1),
                _ci(loss.area_mean[k].item(), loss.area_half[k].item()),
                "-"
                if names[k] == BASELINE
                else _signed(loss.delta_mean[k].item(), loss.delta_half[k].item()),
            ]
        )
    return Table(
        ["criterion", "accuracy area", "vs random", "rank", "loss area", "loss vs random"],
        rows,
        caption=f"{n.name}, {SCOPE_WORDS[p.scope]}, {COMP_WORDS[p.compensate]}. Area: the "
        f"accuracy (loss) curve's mean height over {r.fractions[0]:g}..{r.fractions[-1]:g} "
        "removed (trapezoid rule); 'vs random': the difference to the random baseline on the "
        "same net, mean ± 95% interval over seeds, * where the interval excludes 0 (not "
        "adjusted for the number of comparisons).",
    )


def _cost_table(r, n) -> Table:
    names = r.criteria
    layer = next(c for c in n.costs if c.scope == "layer")
    glob = next(c for c in n.costs if c.scope == "global")

    def cell(c, k, f):
        return f"{c.speedup_mean[k, f].item():.2f}x / {c.parameters_mean[k, f].item() / 1e3:.1f}k"

    rows = [["per layer (every criterion)", *[cell(layer, 0, f) for f in range(len(r.fractions))]]]
    rows += [
        [f"global: {name}", *[cell(glob, k, f) for f in range(len(r.fractions))]]
        for k, name in enumerate(names)
    ]
    return Table(
        ["pruned model", *[f"{f:.0%}" for f in r.fractions]],
        rows,
        caption=f"{n.name} (full: {n.parameters / 1e3:.1f}k parameters, {n.macs / 1e3:.1f}k MACs "
        "per input). Each cell: theoretical speed-up (dense MACs full / pruned) and parameter "
        "count of the pruned net, mean over seeds, for each fraction of hidden nodes removed.",
    )


def _finetune_table(r, n) -> Table:
    ft = n.finetune
    names = r.criteria
    rows = []
    for k in _order(ft.after):
        row = [names[k]]
        for f in range(len(ft.fractions)):
            row += [
                _ci(ft.before_mean[k, f].item(), ft.before_half[k, f].item()),
                _ci(ft.after_mean[k, f].item(), ft.after_half[k, f].item()),
            ]
        row += [
            "-"
            if names[k] == BASELINE
            else _signed(ft.after.delta_mean[k].item(), ft.after.delta_half[k].item()),
            f"{ft.before.rank_mean[k].item():.1f} → {ft.after.rank_mean[k].item():.1f}",
        ]
        rows.append(row)
    cols = ["criterion"]
    for frac in ft.fractions:
        cols += [f"{frac:.0%}: pruned", f"{frac:.0%}: fine-tuned"]
    cols += ["fine-tuned vs random", "rank before → after"]
    return Table(
        cols,
        rows,
        caption=f"{n.name}: {SCOPE_WORDS[ft.scope]} removal with {COMP_WORDS[ft.compensate]}, "
        f"then {ft.epochs} epoch(s) of Adam (lr {ft.lr:g}) on the training set of the "
        "physically pruned net. Test accuracy, mean ± 95% interval over seeds; 'vs random': "
        "paired difference of the mean accuracy over these fractions, * where the 95% interval "
        "excludes 0 (not adjusted for the number of comparisons).",
    )


def _seconds_table(r) -> Table:
    rows = [
        [
            name,
            DESCRIPTIONS.get(name, ""),
            *[f"{n.score_seconds[k].item() * 1e3:.1f}" for n in r.nets],
        ]
        for k, name in enumerate(r.criteria)
    ]
    return Table(
        ["criterion", "what it scores", *[f"{n.name} (ms)" for n in r.nets]],
        rows,
        caption="Wall-clock milliseconds to score every hidden node of one net on the score "
        "points (mean over seeds; a shared machine, so indicative only).",
    )


def _contrast_table(r) -> Table:
    names = r.criteria
    cols = [(n, c) for n in r.nets for c in n.contrasts]
    rows = [
        [name, *[_signed(c.mean[k].item(), c.half[k].item()) for _, c in cols]]
        for k, name in enumerate(names)
    ]
    return Table(
        ["criterion", *[f"{n.name}: {c.name}" for n, c in cols]],
        rows,
        caption="Paired differences (same nets) of the accuracy area: 'mean - none' is what "
        "mean compensation adds, 'global - layer' what global selection adds at the same "
        "fraction of nodes; mean ± 95% interval over seeds, * where it excludes 0.",
    )


# --- text ------------------------------------------------------------------------------------


def _reading(r) -> list[str]:
    names = r.criteria
    out = []
    for n in r.nets:
        parts = []
        for p in n.panels:
            acc = p.by_accuracy
            best = next(k for k in _order(acc) if names[k] != BASELINE)
            parts.append(
                f"{SCOPE_WORDS[p.scope]} with {COMP_WORDS[p.compensate]}: best {names[best]} "
                f"(accuracy area {acc.area_mean[best].item():.3f} against random's "
                f"{acc.area_mean[names.index(BASELINE)].item():.3f})"
            )
        out.append(f"{n.name}: " + "; ".join(parts) + ".")
        k = names.index(BASELINE)
        c = next(c for c in n.contrasts if c.name.startswith("mean - none"))
        out.append(
            f"{n.name}: for random removal, mean compensation changes the accuracy area by "
            f"{c.mean[k].item():+.3f} ± {c.half[k].item():.3f} (per layer; the table below has "
            f"every criterion). {_collapse_text(r, n, k)}"
        )
    if "std_out_norm" in names and "lipschitz" in names:
        i, j = names.index("std_out_norm"), names.index("lipschitz")
        gap = max(
            (p.accuracy[i] - p.accuracy[j]).abs().max().item()
            for n in r.nets
            for p in n.panels
            if p.scope == "layer"
        )
        same = "identical" if gap == 0 else f"different (by up to {gap:.3f} in accuracy)"
        out.append(
            f"std_out_norm and lipschitz give {same} per-layer results. The certified bound is "
            "std_out_norm times a factor shared by all nodes of a layer (sqrt 2 and the "
            "downstream spectral norms), so it ranks a layer's nodes the same way up to ties. "
            "Under global selection the factor differs between layers, and so do the results."
        )
    out.append(
        "The area averages over the whole range of fractions. Curves can cross: a criterion "
        "or a compensation that is best at moderate removal can be worst near 90%, which the "
        "figures show and the area hides."
    )
    for n in (n for n in r.nets if n.finetune is not None):
        ft = n.finetune
        last = len(ft.fractions) - 1
        before, after = ft.before_mean[:, last], ft.after_mean[:, last]
        k_worst, k_best = int(after.argmin()), int(after.argmax())
        text = (
            f"{n.name}, fine-tune at {ft.fractions[last]:.0%} {SCOPE_WORDS[ft.scope]} removal: "
            f"best {names[k_best]} ({after[k_best].item():.3f}), worst {names[k_worst]} "
            f"({after[k_worst].item():.3f}), random {after[names.index(BASELINE)].item():.3f}, "
            f"the full net {n.test_accuracy.mean().item():.3f}; the spread between the best and "
            f"the worst criterion goes from {(before.max() - before.min()).item():.3f} before "
            f"to {(after.max() - after.min()).item():.3f} after the fine-tune."
        )
        if ft.scope == "global":
            text += (
                " A criterion whose raw scores are lowest in one layer can empty it down to the "
                "single node every layer keeps; no fine-tune repairs such a bottleneck (a very "
                "large speed-up at a moderate fraction, or a very small one, in the cost table "
                "marks an emptied layer)."
            )
        out.append(text)
    return out


def _collapse_text(r, n, k: int) -> str:
    """Why mean compensation can lose to plain deletion, measured by prediction collapse."""
    reason = (
        "replacing many nodes by their means keeps the next layer's average input but removes "
        "its variation, so the logits approach the single prediction of the mean activations; "
        "deleting nodes from a ReLU net instead shrinks the signal and the offset together, "
        "which the argmax tolerates better."
    )
    layer = {p.compensate: p for p in n.panels if p.scope == "layer"}
    if layer["mean"].majority_mean is None:  # a run written before collapse was measured
        return f"A likely reason (not measured in this run): {reason}"
    f = max(int(np.searchsorted(r.fractions, 0.8, side="right")) - 1, 0)  # <= 80% removed
    mean, none = (layer[c].majority_mean[k, f].item() for c in ("mean", "none"))
    text = (
        f"At {r.fractions[f]:.0%} random removal per layer the most common predicted class "
        f"takes {mean:.0%} of the test points with mean compensation, against {none:.0%} "
        f"without and {n.test_majority.mean().item():.0%} for the full nets (figure "
        "'prediction collapse')."
    )
    return text + (
        " Where the share is larger with mean compensation, a likely mechanism (not tested "
        f"separately): {reason}"
    )


def sections(results, config) -> list[Section]:
    r = results
    K, _F = len(r.criteria), len(r.fractions)
    S = len(r.nets[0].seeds)
    design = Section(
        "What was done",
        [
            f"Every node criterion of prunelab ({K}, listed below) is compared on the same trained "
            f"nets: {', '.join(n.name for n in r.nets)}, each trained with {S} seeds "
            "(initialisation and batch order) on one fixed data split, the MLPs' seeds at once "
            "with ensemble.fit_many, the LeNet-5's one by one with train.fit. On the LeNet-5 a "
            "node is a conv channel (its whole feature map) or a dense feature, and the "
            "statistics of a channel are taken over samples and positions. For each net and "
            "criterion the node scores are computed once, on a "
            "fixed subset of training points (the same for every criterion; the criteria that "
            "read the loss also get its labels). The lowest-scored nodes are removed, "
            f"{', '.join(f'{f:.0%}' for f in r.fractions)} of them, either per layer (the same "
            "fraction of every hidden layer: every criterion gives the same architecture) or "
            "globally (the lowest scores of the whole net, every layer keeping a node; raw "
            "scores, so a criterion whose scale differs between layers also decides how much "
            "each layer loses). Removed nodes are either deleted (no compensation, the same as "
            "zeroing them) or replaced by their mean activation over the score points, folded "
            "into the next layer's bias (mean compensation, as surgery.remove_nodes does; "
            "behind a zero-padded conv the held channel's effect depends on the position, and "
            "remove_nodes keeps it exactly as a fixed per-position bias).",
            "No pruned net is fine-tuned in the main grid. All pruned nets are evaluated on the "
            "same held-out test points, batched over removal plans (sweep.removal_metrics, which "
            "equals physical removal by surgery.remove_nodes; checked in the tests). This is "
            "the fair design: same trained nets, same data, same fractions, same evaluation, "
            "and the random criterion (one random ranking per net) as the baseline, compared "
            "with each criterion seed by seed (paired differences, 95% Student-t intervals "
            "over seeds).",
            "Summaries per panel: the area under the accuracy (loss) curve, i.e. its mean height "
            "over the fractions, and the rank of the criterion's accuracy among all criteria at "
            "each fraction and seed, averaged. A short fine-tune of the pruned nets follows at "
            "a few fractions, and the cost of each pruned net is counted: parameters and the "
            "theoretical speed-up (dense multiply-accumulates of the full over the pruned net).",
        ],
        [_setup_table(r), _seconds_table(r)],
    )
    ranking = Section(
        "Ranking",
        ["Which criterion keeps the most accuracy, panel by panel and overall."],
        [_overall_table(r)],
        [_rank_figure(r)],
    )
    out = [design, ranking]
    for n in r.nets:
        out.append(
            Section(
                f"{n.name}: accuracy and loss as nodes are removed",
                [
                    "Rows: per-layer and global removal; columns: without and with mean "
                    "compensation. Tables: every criterion's area under the curve, its paired "
                    "difference to random and its mean rank, best first.",
                ],
                [_panel_table(r, n, p) for p in n.panels],
                [_curve_figure(r, n, "accuracy"), _curve_figure(r, n, "loss")],
            )
        )
    out.append(
        Section(
            "Size and theoretical speed-up of the pruned nets",
            [
                "Removing a node of hidden layer l deletes a row of W^l (and its bias) and a "
                "column of W^(l+1). Per-layer removal gives one architecture per fraction, "
                "whatever the criterion; global removal does not. Global criteria that empty the "
                "wide first layer save far more arithmetic than those that thin the narrow "
                "later ones, so the accuracy at a fraction must be read beside the speed-up it "
                "buys (right panels).",
            ],
            [_cost_table(r, n) for n in r.nets],
            [_cost_figure(r)],
        )
    )
    if any(n.finetune is not None for n in r.nets):
        out.append(
            Section(
                "After a short fine-tune",
                [
                    "The pruned nets (one scope and compensation, a few fractions) are trained "
                    "for a few more epochs with the net's own recipe. Each pruned net trains "
                    "as a full-size copy under its node mask (sweep.masked_equivalent, so all "
                    "criteria and seeds train together in one stacked fit_many), which is exactly "
                    "the training of the physically pruned net; it is then physically pruned "
                    "and evaluated.",
                ],
                [_finetune_table(r, n) for n in r.nets if n.finetune is not None],
                [_finetune_figure(r)],
            )
        )
    out.append(
        Section(
            "What we found",
            [
                *_reading(r),
                "Intervals are over seeds (trained nets), not over test points; with "
                f"{S} seeds a difference needs to be consistent across nets to be significant.",
            ],
            [_contrast_table(r)],
            [_collapse_figure(r)] if r.nets[0].test_majority is not None else [],
        )
    )
    out.append(
        Section(
            "How it compares with the literature",
            [
                "No single source ran this grid; these are the published claims the grid can "
                "test, each checked on this run's per-layer panels (accuracy areas, mean ± 95% "
                "interval over seeds, and mean rank). The settings differ from the sources': "
                "here the nets are small MLPs and a LeNet-5, pruning is one-shot and without "
                "fine-tuning, "
                "whereas Molchanov et al. and Hu et al. prune iteratively while fine-tuning "
                "large convolutional nets, and Molchanov et al. accumulate squared minibatch "
                "gradients (which adds a gradient-variance term) where our taylor squares the "
                "gradient of the mean loss over the score points. A claim that differs here "
                "is therefore a statement about this setting. The verdicts, each from a paired "
                "difference of accuracy areas over seeds, are in the findings table at the top.",
            ],
        )
    )
    return out

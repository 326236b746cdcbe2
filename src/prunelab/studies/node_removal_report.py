"""Report sections of the ``node-removal`` study: figures and text from its ``Results``.

The source's toy net has "nodes"; a checkpoint's convnet has units, channels and features, and
the text says so (:func:`_word`). Units are named by layer for a convnet (``conv2 ch 5``,
``fc1 #17``) and by number for an MLP (``node 5``), as in the source.
"""

from __future__ import annotations

import math

import numpy as np

from ..base import stats
from ..methods import findings
from . import plots
from .base import Plot, Section, Table

SOURCE = {
    "full loss": 0.117,
    "mean loss": {0.25: 1.0277, 0.5: 0.8782, 0.75: 0.5844},
    "log-loss mean": {0.25: -0.0802, 0.5: -0.2847, 0.75: -0.7286},
    "log-loss std": {0.25: 0.4478, 0.5: 0.5545, 0.75: 0.6134},
    "gradient mean": {0.25: -0.0693, 0.5: -0.0475, 0.75: -0.0271},
    "gradient std": {0.25: 0.3680, 0.5: 0.3351, 0.75: 0.2671},
    "log-gradient mean": {0.25: -0.0747, 0.5: -0.0584, 0.75: -0.0467},
    "log-gradient std": {0.25: 0.3606, 0.5: 0.3839, 0.75: 0.4456},
    "on/off gradient mean": (0.0558, -0.1726),
    "on/off gradient std": (0.3594, 0.3734),
}
COLOURS = ("#2ca02c", "#ff7f0e", "#1f77b4", "#9467bd", "#8c564b")
LAYER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def titles(r) -> dict[str, str]:
    """The titles of the report's sections (findings link to them) and the word for a unit."""
    w, ws = _word(r), _word(r, True)
    return {
        "word": w,
        "words": ws,
        "loss": f"The loss under random {w} subsets",
        "lognormal": "Is the loss log-normal?",
        "gradients": "Gradients of the loss with respect to the mask",
        "paths": "How much do N flips matter?",
        "bias": f"Dead and bias-like {ws}",
        "removal": "Single and pairwise removal",
        "seeds": "Robustness across training seeds",
    }


def _over_seeds(r, value) -> str:
    """Mean over the main arm's seeds with its 95% interval (``findings.estimate``)."""
    if not r.seeds:
        return "-"
    return str(findings.estimate([float(value(s)) for s in r.seeds]))


def _src(table: str, p: float) -> float | str:
    return SOURCE[table].get(p, "-")


def _conv(r) -> bool:
    return "conv" in r.kinds


def _word(r, plural: bool = False) -> str:
    """ "node" for MLPs (the source's word), "unit" for convnets (a channel or a feature)."""
    return ("units" if plural else "unit") if _conv(r) else ("nodes" if plural else "node")


def _names(r) -> list[str]:
    """A name per hidden unit: ``node j`` on an MLP, ``conv2 ch 5`` / ``fc1 #17`` on a convnet."""
    if not _conv(r):
        return [f"node {j}" for j in range(sum(r.hidden))]
    out, seen = [], {"conv": 0, "linear": 0}
    for kind, size in zip(r.kinds, r.hidden, strict=True):
        seen[kind] += 1
        label = f"conv{seen[kind]} ch" if kind == "conv" else f"fc{seen[kind]} #"
        out += [f"{label} {i}" if kind == "conv" else f"{label}{i}" for i in range(size)]
    return out


def _listed(r, units, limit: int = 12) -> str:
    """Units by name, the first ``limit`` of them, or "none"."""
    if not units:
        return "none"
    names = _names(r)
    shown = ", ".join(names[j] for j in units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")


def _layer_bounds(r) -> list[tuple[int, int, str]]:
    """Per hidden layer: first unit, end, and a label (``conv1``, ``fc2``, ``layer 1``)."""
    out, first, seen = [], 0, {"conv": 0, "linear": 0}
    kinds = r.kinds or ["linear"] * len(r.hidden)
    for kind, size in zip(kinds, r.hidden, strict=True):
        seen[kind] += 1
        label = ("conv" if kind == "conv" else "fc" if _conv(r) else "layer ") + str(seen[kind])
        out.append((first, first + size, label))
        first += size
    return out


def _loss_figures(r) -> list[Plot]:
    fig, ax = plots.figure(2, 1, width=5.6, height=3.9)
    for s, c in zip(r.subsets, COLOURS, strict=False):
        ax[0, 0].plot(s.loss_density.x, s.loss_density.y, color=c, label=f"p = {s.p}")
        ax[0, 1].plot(s.log_loss_density.x, s.log_loss_density.y, color=c, label=f"p = {s.p}")
        f = s.log_loss_fit
        xs = s.log_loss_density.x
        ax[0, 1].plot(xs, stats.normal_pdf(xs, f.mean, f.std), color=c, ls=":", lw=1.2)
    ax[0, 0].axvline(r.full_loss, color="grey", lw=2, label=f"all nodes on ({r.full_loss:.3f})")
    ax[0, 1].axvline(math.log(r.full_loss), color="grey", lw=2)
    ax[0, 0].set(title="loss under random node subsets", xlabel="cross-entropy", ylabel="density")
    ax[0, 1].set(
        title="log-loss, with normal fits (dotted)", xlabel="log cross-entropy", ylabel="density"
    )
    for a in ax[0]:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    return [
        Plot(
            "loss_densities",
            fig,
            "Densities over the random masks of each p (Gaussian kernel). "
            "Left: loss; right: log-loss with the maximum-likelihood normal curves.",
        )
    ]


def _gradient_figures(r) -> list[Plot]:
    fig, ax = plots.figure(2, 1, width=5.6, height=3.9)
    for s, c in zip(r.subsets, COLOURS, strict=False):
        ax[0, 0].plot(s.gradient_density.x, s.gradient_density.y, color=c, label=f"p = {s.p}")
    mid = r.subsets[len(r.subsets) // 2]
    w = _word(r)
    ax[0, 1].plot(mid.on_density.x, mid.on_density.y, color="#d62728", label=f"{w} on")
    ax[0, 1].plot(mid.off_density.x, mid.off_density.y, color="#1f77b4", label=f"{w} off")
    ax[0, 0].set(title=f"d loss / d mask, all {w}s", xlabel="gradient", ylabel="density")
    ax[0, 1].set(title=f"split by {w} state (p = {mid.p})", xlabel="gradient", ylabel="density")
    for a in ax[0]:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    n = len(mid.node_on_densities)
    shown = mid.shown_units or list(range(n))
    names = _names(r)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    grid, gax = plots.figure(cols, rows, width=2.2, height=1.7)
    for j in range(rows * cols):
        a = gax[j // cols, j % cols]
        if j >= n:
            a.axis("off")
            continue
        on, off = mid.node_on_densities[j], mid.node_off_densities[j]
        a.plot(on.x, on.y, color="#d62728", lw=1)
        a.plot(off.x, off.y, color="#1f77b4", lw=1)
        a.axvline(0, color="grey", lw=0.5)
        unit = shown[j]
        dead = " (dead)" if unit in r.dead_nodes else " (bias)" if unit in r.bias_nodes else ""
        a.set_title(f"{names[unit]}{dead}", fontsize=8)
        a.tick_params(labelsize=6)
    which = ""
    if n < sum(r.hidden):
        which = (
            f" Shown: {n} of the {sum(r.hidden)} {w}s, an equal share of each layer, evenly "
            "spaced within it."
        )
    return [
        Plot(
            "gradient_densities",
            fig,
            "Distribution of the gradient of the loss with "
            f"respect to each {w}'s mask value, over random masks.",
        ),
        Plot(
            "gradient_per_node",
            grid,
            f"The same gradients {w} by {w} (p = {mid.p}), red while the {w} is on, blue while "
            f"off; note the different axes: some {w}s barely matter.{which}",
        ),
    ]


def _path_figures(r) -> list[Plot]:
    pc = r.paths.covariance
    fig, ax = plots.figure(2, 1, width=5.2, height=4.2)
    im = ax[0, 0].imshow(pc.cov.numpy(), cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax[0, 0], shrink=0.8, label="covariance of log-loss")
    ax[0, 0].set(title="covariance along flip paths", xlabel="flips done", ylabel="flips done")
    ax[0, 0].xaxis.get_major_locator().set_params(integer=True)
    ax[0, 0].yaxis.get_major_locator().set_params(integer=True)
    k = np.arange(len(pc.from_start))
    ax[0, 1].plot(k, pc.from_start, color="#17becf", label="with the start, by distance from it")
    ax[0, 1].plot(k, pc.from_end, color="#e377c2", label="with the end, by distance from it")
    ax[0, 1].axvline(
        pc.decorrelated_after,
        color="grey",
        ls=":",
        label=f"not significant from {pc.decorrelated_after} flips",
    )
    ax[0, 1].axhline(0, color="grey", lw=0.6)
    ax[0, 1].set(title="reversal symmetry", xlabel="distance (flips)", ylabel="covariance")
    plots.integer_ticks(ax[0, 1])
    ax[0, 1].legend(fontsize=8)
    ax[0, 1].grid(alpha=0.3)
    return [
        Plot(
            "flip_paths",
            fig,
            "Each path starts at a random mask (Bernoulli 0.5) and flips "
            f"every {_word(r)} once in random order, ending at the start's complement.",
        )
    ]


def _map_figures(r) -> list[Plot]:
    m = r.maps
    fig, ax = plots.figure(2, 1, width=5.4, height=4.6)
    plots.plane(
        ax[0, 0],
        m.probability,
        m.lim,
        x=m.data_x,
        y=m.data_y,
        curves=m.reference,
        title="output P(class 1), all nodes on",
    )
    vmax = float(np.quantile(m.loss.numpy(), 0.995))
    plots.plane(
        ax[0, 1],
        m.loss,
        m.lim,
        curves=m.reference,
        title="loss per point",
        cmap="magma",
        vmin=0.0,
        vmax=vmax,
        label="cross-entropy",
        boundary=False,
    )
    H = m.gradients.shape[0]
    n = min(H, 30)
    cols = min(5, n)
    rows = math.ceil(n / cols)
    grid, gax = plots.figure(cols, rows, width=2.3, height=2.2)
    scale = float(np.quantile(np.abs(m.gradients[:n].numpy()), 0.995)) or 1.0
    image = None
    for j in range(rows * cols):
        a = gax[j // cols, j % cols]
        a.axis("off")
        if j >= n:
            continue
        image = a.imshow(
            m.gradients[j].numpy(),
            origin="lower",
            extent=(-m.lim, m.lim, -m.lim, m.lim),
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
        )
        for c in m.reference:
            a.plot(c[:, 0], c[:, 1], color="black", lw=0.6, ls="--")
        bias = " (bias)" if j in r.bias_nodes else " (dead)" if j in r.dead_nodes else ""
        a.set_title(f"node {j}{bias}", fontsize=8)
    plots.shared_colorbar(grid, gax.flatten(), image, "d loss / d m")
    return [
        Plot(
            "heatmaps",
            fig,
            "Left: the network's output with the test data and the true "
            "boundary. Right: the loss of each point of the plane against its true label.",
        ),
        Plot(
            "gradient_maps",
            grid,
            "d loss / d mask of each node at each point (blue: "
            f"turning the node up lowers the loss; red: raises it; colour scale +-{scale:.2g}, "
            f"shared). Nodes listed as (bias) are nearly constant over the data.",
        ),
    ]


def _removal_text(r, names) -> str:
    """The cheapest and the dearest single removal among the live units (removing a dead unit
    changes nothing, so it would be the cheapest by construction)."""
    single = r.removal.single
    live = [j for j in range(len(single)) if j not in set(r.dead_nodes)]
    if not live:
        return "Every unit is dead: removing one changes nothing."
    lo = min(live, key=lambda j: single[j].item())
    hi = max(live, key=lambda j: single[j].item())
    dead = f" {len(r.dead_nodes)} dead units (always 0) are left out." if r.dead_nodes else ""
    return (
        f"Among the live units, removing {names[lo]} alone costs least (loss "
        f"{single[lo].item():.4f}) and removing {names[hi]} costs most "
        f"({single[hi].item():.4f}).{dead}"
    )


def _removal_figure(r) -> Plot:
    H = len(r.removal.single)
    fig, ax = plots.figure(1, 1, width=min(14.0, max(6.0, 0.25 * H)), height=3.4)
    a = ax[0, 0]
    layers = _layer_bounds(r)
    for k, (first, end, label) in enumerate(layers):
        colour = LAYER_COLOURS[k % len(LAYER_COLOURS)] if len(layers) > 1 else "#7f7f7f"
        a.bar(
            np.arange(first, end),
            r.removal.single[first:end].numpy(),
            width=0.8 if H <= 60 else 1.0,
            color=colour,
            label=f"{label} ({end - first})" if len(layers) > 1 else None,
        )
    a.axhline(r.full_loss, color="black", lw=1, ls="--", label=f"all {_word(r, True)} on")
    a.set(
        title=f"loss with one {_word(r)} removed",
        xlabel=f"{_word(r)} (numbered layer by layer)",
        ylabel="cross-entropy",
        xlim=(-1, H),
    )
    plots.integer_ticks(a)
    a.legend(fontsize=8, ncol=min(5, len(layers) + 1))
    return Plot("single_removal", fig, f"Removing each {_word(r)} alone (its mask set to 0).")


def _activity_figure(r, bias_cv: float) -> Plot:
    """|mean| against std of each unit's activation, one colour per layer, with the bias line."""
    fig, ax = plots.figure(1, 1, width=5.6, height=4.2)
    a = ax[0, 0]
    mean, std = r.activation_mean.abs().numpy(), r.activation_std.numpy()
    alive = np.ones(len(mean), dtype=bool)
    alive[r.dead_nodes] = False
    tiny = max(1e-6, float(np.min(np.r_[mean[alive & (mean > 0)], std[alive & (std > 0)], 1.0])))
    for k, (first, end, label) in enumerate(_layer_bounds(r)):
        sel = np.arange(first, end)[alive[first:end]]
        a.scatter(
            np.maximum(mean[sel], tiny / 2),
            np.maximum(std[sel], tiny / 2),
            s=10,
            color=LAYER_COLOURS[k % len(LAYER_COLOURS)],
            label=f"{label} ({end - first})",
        )
    line = np.geomspace(tiny / 2, max(float(mean.max()), tiny), 50)
    a.plot(line, bias_cv * line, color="grey", ls="--", lw=1, label=f"std = {bias_cv} |mean|")
    bias = list(r.bias_nodes)
    if bias:
        a.scatter(
            np.maximum(mean[bias], tiny / 2),
            np.maximum(std[bias], tiny / 2),
            s=60,
            facecolors="none",
            edgecolors="black",
            label="bias-like (gap rule)",
        )
    u = r.units
    if u is not None and u.gap_above:
        cut = math.sqrt(u.gap_below * u.gap_above)
        a.plot(
            line, cut * line, color="black", ls=":", lw=1, label=f"the gap (std = {cut:.2g} |mean|)"
        )
    a.set(
        xscale="log",
        yscale="log",
        xlabel="|mean activation|",
        ylabel="std of the activation",
        title=f"activity of each {_word(r)}",
    )
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    over = " (a channel: over samples and positions of its feature map)" if _conv(r) else ""
    return Plot(
        "unit_activity",
        fig,
        f"Mean and spread of each {_word(r)}'s activation over the test data{over}; dead "
        f"{_word(r, True)} (always 0) are left out.",
    )


def _seed_table(r, rows, ps) -> Table:
    cols = ["seed", "test accuracy", "full loss"]
    cols += [f"mean loss p={p}" for p in ps] + [f"log-loss mean/std p={p}" for p in ps]
    cols += ["flips until decorrelated", "complement corr.", "bias-like (gap / threshold)"]
    out = [
        [
            s.seed,
            s.test_accuracy,
            s.full_loss,
            *s.mean_loss,
            *[f"{m:.3f} / {d:.3f}" for m, d in zip(s.log_loss_mean, s.log_loss_std, strict=True)],
            s.decorrelated_after,
            s.complement_correlation,
            f"{s.bias_nodes} / {s.bias_threshold}",
        ]
        for s in rows
    ]

    def est(value) -> str:
        return str(findings.estimate([float(value(s)) for s in rows]))

    out.append(
        [
            "mean [95%]",
            est(lambda s: s.test_accuracy),
            est(lambda s: s.full_loss),
            *[est(lambda s, i=i: s.mean_loss[i]) for i in range(len(ps))],
            *[
                f"{est(lambda s, i=i: s.log_loss_mean[i])} / {est(lambda s, i=i: s.log_loss_std[i])}"
                for i in range(len(ps))
            ],
            est(lambda s: s.decorrelated_after),
            est(lambda s: s.complement_correlation),
            f"{est(lambda s: s.bias_nodes)} / {est(lambda s: s.bias_threshold)}",
        ]
    )
    out.append(
        [
            "source",
            "-",
            SOURCE["full loss"],
            *[_src("mean loss", p) for p in ps],
            *[f"{_src('log-loss mean', p)} / {_src('log-loss std', p)}" for p in ps],
            "5-6",
            "positive",
            "4",
        ]
    )
    return Table(cols, out)


def _seeds_section(r, config) -> Section:
    title = titles(r)["seeds"]
    if not r.seeds:
        return Section(title, [r.seeds_note])
    ps = r.probabilities
    how = "trained one by one with train.fit" if _conv(r) else "trained together with fit_many"
    if r.toy:
        how = f"seed {r.seeds[0].seed} is the studied net; the others {how}"
    epochs = f" ({r.epochs} epochs)" if r.epochs else ""
    text = [
        f"The main arm: {len(r.seeds)} networks trained from different seeds with the studied "
        f"recipe{epochs} ({how}), measured with the same masks and test points. The findings "
        "above are the means over these seeds with their 95% Student-t intervals.",
    ]
    tables = [_seed_table(r, r.seeds, ps)]
    if r.robust:
        text.append(
            f"The robustness arm: the same seeds trained for {r.robust_epochs} epochs "
            "(toy-nets' default), measured the same way; the findings give its means in their "
            "details."
        )
        tables.append(_seed_table(r, r.robust, ps))
    return Section(title, text, tables)


def _scale_section(r, config) -> Section:
    """How the configured work was cut to the budget, and why."""
    sc = r.scale
    budget = f"{sc.budget:.2g} multiply-adds" if sc.budget else "no limit"
    text = [
        f"The work is sized to the network by one rule (node_removal.scale). One sample costs "
        f"c = {sc.macs:,} multiply-adds here; the analysis costs about N c (3 |p| M + P (H + 1) "
        f"+ H + pairs) for N test points, M masks per p (loss and gradient, a backward pass "
        f"counted as two forward passes), P flip paths of H + 1 = {sc.units + 1} masks, the "
        f"{sc.units} single removals and {sc.pairs} pairs. Budget: {budget}; this run: "
        f"{sc.work:.2g}.",
    ]
    if sc.reduced:
        text.append(
            "Over the budget, test points are cut first (to no fewer than 1000), then flip "
            "paths (to 20), then masks per p (to 100); extra training seeds get what is left. "
            "Cut here: " + "; ".join(sc.reduced) + ". Pass a larger --budget (0: no limit) for "
            "the full amounts."
        )
    else:
        text.append("Nothing was cut: the configured amounts fit the budget.")
    rows = [
        ["test points", config.n_test, sc.n_test],
        ["masks per p", config.masks, sc.masks],
        ["flip paths", config.paths, sc.paths],
        [f"pairs (among at most {config.max_pair_nodes} {_word(r, True)})", "-", sc.pairs],
        ["training seeds, main arm", config.seeds, len(r.seeds)],
        ["training seeds, robustness arm", config.robust_seeds, len(r.robust)],
    ]
    return Section(
        "How the work was sized", text, [Table(["quantity", "configured (at most)", "used"], rows)]
    )


def _what_was_done(r, config) -> Section:
    ps = r.probabilities
    w = _word(r)
    H = sum(r.hidden)
    masks = r.scale.masks if r.scale else config.masks
    if _conv(r):
        channels = sum(h for h, k in zip(r.hidden, r.kinds, strict=True) if k == "conv")
        units = (
            f"It has {H} hidden units: {channels} channels of its conv layers and {H - channels} "
            "features of its hidden Linear layers. A unit mask multiplies each unit after its "
            "activation; a channel's mask value multiplies its whole feature map"
        )
    else:
        units = f"A node mask multiplies each of the {H} hidden nodes after its activation"
    no_maps = ""
    if r.maps is None:
        shape = list(r.in_shape) if r.in_shape else r.widths[0]
        no_maps = (
            f" The source's heatmaps over the plane need 2-D inputs; these are {shape}, so there "
            "are none."
        )
    text = [
        f"We study {r.model} on {r.n_test} fixed test points of {r.data!r} "
        f"(widths {'-'.join(map(str, r.widths))}; test accuracy {r.test_accuracy:.4f}, loss "
        f"{r.full_loss:.4f} with every {w} on). {units}; masks and their gradients are "
        "evaluated all at once by the batched engine (ablation.mask_losses).",
        f"For each keep-probability p in {ps} we draw {masks} Bernoulli(p) masks "
        f"(seeded), as the source does with 1000 masks per p.{no_maps}",
    ]
    if r.toy:
        text.append(
            f"The studied net follows the source's recipe ({r.epochs} epochs of Adam at lr 0.01 "
            "over 1000 points), so the source's numbers compare the same regime; the "
            "robustness arm trains the same seeds for "
            f"{r.robust_epochs or 'more'} epochs. Our circle is the intended balanced one: the "
            "source's code compared the squared norm with sqrt(2/pi), which leaves "
            f"{100 * r.source_outside:.0f}% of its points outside the circle (stats.outside_disc), "
            "where ours has 50%; its absolute losses are therefore not ours exactly."
        )
    else:
        text.append(
            f"The source studied a 2-20-2 net on a circle; this is {r.model} on {r.data!r}, with "
            f"{H} {_word(r, True)}, so its absolute numbers are not comparable with the source's."
        )
    return Section("What was done", text)


def sections(r, config) -> list[Section]:
    t = titles(r)
    w, ws = t["word"], t["words"]
    H = sum(r.hidden)
    paths = r.scale.paths if r.scale else config.paths
    out = [_what_was_done(r, config)]
    if r.scale is not None:
        out.append(_scale_section(r, config))
    k = {p: i for i, p in enumerate(r.probabilities)}
    rows = [
        [
            s.p,
            s.mean_loss,
            _over_seeds(r, lambda q, i=k[s.p]: q.mean_loss[i]),
            _src("mean loss", s.p),
            s.loss_skewness,
            s.distinct,
            s.all_on,
        ]
        for s in r.subsets
    ]
    cols = ["p", "mean loss (studied net)", "over seeds, mean [95%]", "source", "skewness"]
    out.append(
        Section(
            t["loss"],
            [
                f"More {ws} removed means higher loss, and the distribution is skewed to the "
                f"right. Masks that happen to keep every {w} sit on the full-network line.",
            ],
            [Table([*cols, "distinct masks", f"masks with every {w}"], rows)],
            _loss_figures(r),
        )
    )
    rows = [
        [
            s.p,
            _over_seeds(r, lambda q, i=k[s.p]: q.log_loss_mean[i]),
            _src("log-loss mean", s.p),
            _over_seeds(r, lambda q, i=k[s.p]: q.log_loss_std[i]),
            _src("log-loss std", s.p),
            s.log_loss_fit.ks,
            _over_seeds(r, lambda q, i=k[s.p]: q.ks[i]),
            s.log_loss_fit.shapiro_p,
            _over_seeds(r, lambda q, i=k[s.p]: q.shapiro_p[i]),
        ]
        for s in r.subsets
    ]
    out.append(
        Section(
            t["lognormal"],
            [
                "The source judged the log-loss close to normal by eye. We fit a normal by maximum "
                "likelihood and give two goodness-of-fit statistics of the studied net: the "
                "Kolmogorov-Smirnov distance to the fitted normal and the Shapiro-Wilk test; the "
                "finding's verdict follows the Shapiro-Wilk test on every seed.",
            ],
            [
                Table(
                    [
                        "p",
                        "log-loss mean over seeds",
                        "source",
                        "std over seeds",
                        "source",
                        "KS distance (studied net)",
                        "over seeds",
                        "Shapiro p (studied net)",
                        "over seeds",
                    ],
                    rows,
                )
            ],
        )
    )
    rows = [
        [
            s.p,
            _over_seeds(r, lambda q, i=k[s.p]: q.gradient_mean[i]),
            _src("gradient mean", s.p),
            s.gradient_std,
            _src("gradient std", s.p),
            s.log_gradient_mean,
            _src("log-gradient mean", s.p),
            s.log_gradient_std,
            _src("log-gradient std", s.p),
            s.gradient_kurtosis,
        ]
        for s in r.subsets
    ]
    sn = r.sanity
    mid = r.subsets[len(r.subsets) // 2]
    out.append(
        Section(
            t["gradients"],
            [
                f"The derivative of the loss with respect to a {w}'s mask value asks whether the "
                f"network would do better with that {w} turned up a little. Negative means more "
                f"of the {w} would help. Columns other than the means over seeds are the studied "
                "net's.",
                f"The source's check: the mean gradient at p = {sn['p_gradient']} times the "
                f"expected number of extra {ws} between p = {sn['p_low']} and p = "
                f"{sn['p_high']} ({sn['expected extra nodes']:.1f}) is "
                f"{sn['mean gradient x extra nodes']:.4f}; the actual difference in mean loss is "
                f"{sn['mean loss difference']:.4f} (the source: -0.475 against -0.443).",
                f"Split by {w} state at p = {mid.p}, d log L / d m (the source's split): {ws} that "
                f"are on {mid.log_on_mean:.4f} (std {mid.log_on_std:.4f}), {ws} that are off "
                f"{mid.log_off_mean:.4f} (std {mid.log_off_std:.4f}); the source: 0.056 (0.359) "
                f"and -0.173 (0.373). The loss gradient d L / d m, drawn below: on "
                f"{mid.on_mean:.4f}, off {mid.off_mean:.4f}.",
            ],
            [
                Table(
                    [
                        "p",
                        "gradient mean over seeds",
                        "source",
                        "std",
                        "source",
                        "log-gradient mean",
                        "source",
                        "log-gradient std",
                        "source",
                        "excess kurtosis",
                    ],
                    rows,
                )
            ],
            _gradient_figures(r),
        )
    )
    pc = r.paths.covariance
    out.append(
        Section(
            t["paths"],
            [
                f"{paths} paths start at a random mask and flip each of the {H} {ws} once in "
                "random order. The covariance of log-loss with the start, by distance from it, "
                "and with the end, by distance from the end, should agree because the "
                "distribution of paths is symmetric under reversal.",
                f"On the studied net the correlation with the start stops being significant "
                f"(p > {pc.alpha}) after {pc.decorrelated_after} flips (the source: 5-6). The "
                f"log-loss of a mask and of its complement (all {ws} flipped) correlate with r = "
                f"{r.paths.complement_correlation:.3f} (p = {r.paths.complement_p:.2g}). The "
                "source found a surprising positive correlation.",
            ],
            plots=_path_figures(r),
        )
    )
    u = r.units
    gap = (
        f"the highest such gap lies between {u.gap_below:.3g} and "
        f"{u.gap_above:.3g} ({u.gap_above / u.gap_below:.1f}x)"
        if u is not None and u.gap_above
        else f"no gap of {config.bias_gap}x or more lies below std/|mean| = 1"
    )
    threshold = u.bias_threshold if u is not None else []
    out.append(
        Section(
            t["bias"],
            [
                f"A {w} acts as a bias when it is nearly constant over the data. We count them by "
                f"a gap rule (compare.bias_like_gap): the {ws} below the highest gap, of at least "
                f"{config.bias_gap}x, in the sorted coefficient of variation std/|mean| under 1. "
                f"Here {gap}: {len(r.bias_nodes)} of {H} ({_listed(r, r.bias_nodes)}). The fixed "
                f"threshold std < {config.bias_cv} |mean| gives {len(threshold)} "
                f"({_listed(r, threshold)}); a threshold can split a cluster of nearly constant "
                f"{ws}, the gap cannot. Dead {ws} (always 0): {len(r.dead_nodes)} "
                f"({_listed(r, r.dead_nodes)}). The source found 4 bias nodes out of 20.",
            ],
            plots=[_activity_figure(r, config.bias_cv)],
        )
    )
    if r.maps is not None:
        out.append(
            Section(
                "Heatmaps",
                [
                    "Over [-2, 2]^2 (the net was trained on the dotted square). The per-node maps "
                    "show where turning each node up lowers the loss (blue) or raises it (red). "
                    "The source described its own net's maps: bias-like nodes pushing every "
                    "point one way, and nodes cutting off an edge of the plane that help outside "
                    "and hurt just inside the circle; whether ours look so is for the reader to "
                    "judge from the figure (the findings do not score it).",
                ],
                plots=_map_figures(r),
            )
        )
    rm = r.removal
    names = _names(r)
    pair_rows = [["lowest loss", f"{names[i]}, {names[j]}", v] for i, j, v in rm.best_pairs]
    pair_rows += [["highest loss", f"{names[i]}, {names[j]}", v] for i, j, v in rm.worst_pairs]
    among = f"all {ws}"
    if len(rm.pair_nodes) < H:
        among = (
            f"the {len(rm.pair_nodes)} {ws} that cost least and most alone"
            if _conv(r)
            else f"{ws} {rm.pair_nodes}"
        )
    out.append(
        Section(
            t["removal"],
            [_removal_text(r, names) + f" {rm.pairs_checked} pairs were evaluated among {among}."],
            [Table(["pairs", f"{ws} removed", "loss"], pair_rows)],
            [_removal_figure(r)],
        )
    )
    out.append(_seeds_section(r, config))
    return out

"""Report sections of the ``approximation-bounds`` study: figures and text from its ``Results``.

The text is written from the numbers: every comparison it states ("fewer", "in 27 of 54") is
read off the results, so a different run tells its own story.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.lines import Line2D

from ..base import stats
from . import plots
from .base import Plot, Section, Table

COLOURS = {"plain": "#1f77b4", "dropout": "#d62728", "weight_decay": "#2ca02c"}
METHOD_COLOURS = {
    "L0": "#9467bd",
    "Mussay coreset": "#1f77b4",
    "magnitude": "#ff7f0e",
    "SiPP (random)": "#2ca02c",
    "SiPP (deterministic)": "#8c564b",
}
NEURONS, WEIGHTS = "neurons (Mussay coreset)", "weights (SiPP sampling)"
UNITS = {NEURONS: "additive logit error E", WEIGHTS: "relative error per part, eps"}
STYLE_KEY = [
    Line2D([], [], color="black", marker="o", ls="-", label="bound"),
    Line2D([], [], color="black", marker="s", ls="--", alpha=0.7, label="observed, mean ± std"),
]
CLAIMS = {  # the source's claims that the answer reads back from the findings, by key
    "draws": "epsilon-first pruning needs more draws than the layer has neurons or weights",
    "far": "the bounds lie far above the observed errors",
    "few": "sparsity-first, the draws guarantee few of the correct labels",
    "gain": "fine-tuning after pruning adds more than 50 accuracy points where pruning hurt most "
    "(the largest gain over methods and levels)",
    "heuristics": "fine-tuned heuristics without a guarantee do as well as the coresets",
    "raw": "fine-tuning raises the raw logit error (deterministic SiPP)",
    "ball": "our reading of Fig. 11 (the source states no direction): on inputs from the "
    "theorem's L2 ball the errors stay below the bound",
}
EPSILON = "Epsilon-first: the bound, the observed error and the samples required"
REGIMES = "Training regimes and the samples required"
SPARSITY = "Sparsity-first: what the samples imply"
HEURISTICS = "Heuristics and the fine-tuning gap"
GAP = "Raw and centred logit error before and after fine-tuning"
BALL = "Inputs from the L2 ball instead of the data"
ALPHA = "Scaling the final layer by α"
ANSWER = "When are the bounds useful? Our answer"
LAYERS = "Layer by layer: bubbling the errors up"


def arm_title(model: str, title: str) -> str:
    """A section's title on the arm of network ``model`` (LeNet-300-100's stay as they are)."""
    return title if model == "LeNet-300-100" else f"{model}: {title[0].lower()}{title[1:]}"


TUNE_KEY = [
    Line2D([], [], color="black", marker="o", ls="--", mfc="none", label="after pruning"),
    Line2D([], [], color="black", marker="o", ls="-", label="after fine-tuning"),
]


# --- formatting ------------------------------------------------------------------------------


def _m(values) -> float:
    """Mean of the finite values (nan if none): the report's summary of per-seed lists."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    return sum(v) / len(v) if v else math.nan


def _sd(values) -> float:
    v = [float(x) for x in values if math.isfinite(float(x))]
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _ci(values) -> str:
    """``mean ± half-width`` of the 95% t-interval over seeds."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    if not v:
        return "n/a"
    mean, half = stats.mean_interval(torch.tensor(v, dtype=torch.float64))
    return f"{mean.item():.3f} ± {half.item():.3f}"


def _label(regime) -> str:
    if regime.name == "checkpoint":
        return "checkpoint"
    if regime.name == "dropout":
        return f"dropout {regime.dropout:g}"
    if regime.name == "weight_decay":
        return f"weight decay {regime.weight_decay:g}"
    return "plain"


def _short(method: str) -> str:
    return "neurons" if method == NEURONS else "weights"


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f}%"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.3g}"


def _share_err(values_per_row) -> np.ndarray:
    """Error bars of mean ± std for shares, clipped to [0, 1]: [2, rows] (below, above)."""
    means = np.array([_m(v) for v in values_per_row])
    sds = np.array([_sd(v) for v in values_per_row])
    return np.stack([means - np.clip(means - sds, 0, 1), np.clip(means + sds, 0, 1) - means])


def _span(values) -> tuple[float, float]:
    v = [x for x in values if math.isfinite(x)]
    return (min(v), max(v)) if v else (math.nan, math.nan)


def _offsets(n: int, width: float = 0.012) -> list[float]:
    return [(i - (n - 1) / 2) * width for i in range(n)]


def _eps_rows(r, method, regime):
    return [e for e in r.epsilon_first if e.method == method and e.regime == regime]


def _sparse_rows(r, method, regime):
    return [s for s in r.sparsity_first if s.method == method and s.regime == regime]


def _tune_rows(r, family, regime):
    return [t for t in r.finetune if t.family == family and t.regime == regime]


def _size(r, method) -> int:
    return _eps_rows(r, method, r.regimes[0].name)[0].size


def _middle_share(r) -> float:
    shares = sorted({e.share for e in r.epsilon_first})
    return shares[len(shares) // 2]


# --- setup -------------------------------------------------------------------------------------


def _setup(r, config) -> Section:
    rows = [
        [
            _label(g),
            len(g.accuracy),
            _ci(g.accuracy),
            _m(g.gap),
            _m(g.beta),
            _m(g.scale),
            _m(g.sensitivity),
            _m(g.inactive),
        ]
        for g in r.regimes
    ]
    if r.model != "LeNet-300-100":
        return _arm_setup(r, config, rows)
    text = [
        f"LeNet-300-100 ({'-'.join(map(str, r.widths))}, ReLU) is trained with Adam on "
        f"{r.n_train} mnist5k images for {config.epochs} epochs under {len(r.regimes)} regimes "
        f"({', '.join(_label(g) for g in r.regimes)}), {len(r.regimes[0].accuracy)} seed(s) "
        f"each. The dev set is mnist5k's {r.n_dev} held-out images (there is no separate test "
        "set): the bounds are chosen on it and every error and accuracy is measured on it, as "
        "in the source.",
        "Only the final layer is pruned (the source's setting), in two ways. Neuron pruning "
        "samples the 100 neurons of the last hidden layer with the data-independent coreset "
        "of Mussay et al. (2020): Pr(p) ∝ max_i |W3[i, p]| · β‖[W2_p, b2_p]‖, m draws with "
        "replacement, the output layer's columns reweighted by n_p / (m Pr(p)). For every "
        "input [a; 1] in the ball of radius β (the largest norm of the first layer's outputs "
        "on the data, plus the bias coordinate) each logit then moves by at most ε·F, F = Σ_p "
        "max_i |W3[i, p]| β‖p‖, with probability 1 − δ if m ≥ 2 ln(2C/δ) / ε² (Hoeffding for "
        f"signed draws, a union bound over the C = 10 logits; δ = {r.delta}). Weight pruning "
        "samples each output neuron's incoming weights by their empirical sensitivity on a "
        f"batch S of {config.sensitivity_points} training images (Baykal et al. 2019b, SiPP), "
        "positive and negative parts separately; with m ≥ S_tot (6 + 2ε) ln(4C/δ) / (3ε²) "
        "draws per part (Bernstein, a union bound over the 2C parts) each part moves by at most "
        "ε times itself, so |Δ_c| ≤ ε (z⁺_c + z⁻_c). That is weaker than |Δ_c| ≤ ε |f_c| "
        "whenever the parts cancel; the tables also give the samples under that 'nominal' "
        "reading, which is what a multiplicative bound on the logits would need.",
        f"A bound B on every logit keeps the label while B < gap / 2 (rule '{r.rule}', the "
        "source's Figure 1). Epsilon-first picks the largest bound that keeps a given share of "
        "the correctly classified dev images and asks the theorem for the samples; "
        "sparsity-first picks the samples for a target size and asks what they guarantee. The "
        "first hidden layer stays frozen: pruning, L0 training and fine-tuning act on the "
        f"layers after it ({config.finetune_epochs} fine-tuning epochs, the regime's own weight "
        f"decay and dropout). Random draws are repeated {config.draws} times per net; errors "
        "are pooled over nets, draws and dev images (mean ± std).",
        REGIMES_TEXT,
        f"The pruned final layer holds {_share(r.weight_share)} of the network's weights.",
    ]
    return Section("What was done", text, [_setup_table(rows)])


REGIMES_TEXT = (
    "Training regimes. The source reports easy, moderate and difficult training circumstances "
    "but its text does not define them, so we do not claim to reproduce them: we train under "
    "three regimes we can name, plain (Adam, no regularisation), dropout (0.5, the rate of the "
    "source's Figure 7) and weight decay, which change what the bounds depend on (the "
    "sensitivities, the ball, the gaps) in different ways. Read 'regime' below as ours, not as "
    "the source's difficulty levels."
)


def _share(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.2g}%"


def _arm_setup(r, config, rows) -> Section:
    """The first section for a network other than LeNet-300-100: a VGG or a checkpoint."""
    D, H, C = r.widths
    trained = (
        f"a checkpoint, {r.model}, studied as given"
        if r.regimes[0].name == "checkpoint"
        else f"{r.model} (models.vgg, width multiplier {config.width:g}), trained with Adam for "
        f"{config.vgg_epochs} epochs under {len(r.regimes)} regimes, "
        f"{len(r.regimes[0].accuracy)} seed(s) each"
    )
    text = [
        f"The network is {trained}, on {r.n_train} {r.data} training images; the dev set is "
        f"{r.n_dev} held-out images. Its last two dense layers are the head: {D} features "
        f"feed a hidden layer of {H} neurons and the final layer of {C} outputs, "
        f"{H * C} weights, {_share(r.weight_share)} of all the network's weights (the "
        "source's LeNet-300-100: about 0.4%). Everything before the head is the feature "
        "extractor: it runs once on each input set and its features are reused by every arm "
        "(pruning, L0 training, fine-tuning, the ball, scaling).",
        "The methods, bounds and rules are those of the LeNet-300-100 arm (its first section). "
        f"Sampling that needs more than {_num(r.max_samples)} draws is skipped and counted as "
        "sparsity 0, as the source did for VGG-16 beyond 1M draws.",
        REGIMES_TEXT,
    ]
    return Section(f"{r.model}: what was done", text, [_setup_table(rows)])


def _setup_table(rows) -> Table:
    return Table(
        [
            "regime",
            "seeds",
            "dev accuracy (95% CI)",
            "median gap",
            "β (ball radius)",
            "F (Mussay)",
            "S_tot (SiPP, mean)",
            "neurons silent on S",
        ],
        rows,
        "The trained nets (means over seeds). Gap: difference of the two largest logits on the "
        "dev set. F: the scale of Mussay's additive bound (error ≤ ε F). S_tot: total "
        "sensitivity of one part of one output neuron; SiPP's samples grow with it. Silent "
        "neurons: last-hidden neurons that are 0 on every image of S.",
    )


# --- epsilon-first -----------------------------------------------------------------------------


def _epsilon_figure(r) -> Plot:
    fig, ax = plots.figure(3, 2, width=4.4, height=3.5)
    for i, method in enumerate((NEURONS, WEIGHTS)):
        for g, dx in zip(r.regimes, _offsets(len(r.regimes)), strict=True):
            rows = _eps_rows(r, method, g.name)
            x = np.array([100 * e.share for e in rows]) + 100 * dx
            c = COLOURS.get(g.name, "grey")
            ax[i, 0].plot(x, [_m(e.bound) for e in rows], "o-", color=c)
            ax[i, 0].errorbar(
                x,
                [e.error_mean for e in rows],
                yerr=[e.error_std for e in rows],
                fmt="s--",
                color=c,
                alpha=0.7,
                capsize=3,
            )
            ax[i, 1].plot(x, [_m(e.samples) for e in rows], "o-", color=c, label=_label(g))
            if method == WEIGHTS:
                ax[i, 1].plot(
                    x, [_m(e.nominal_samples) for e in rows], "o:", color=c, mfc="none", alpha=0.7
                )
            ax[i, 2].errorbar(
                x,
                [_m(e.sparsity) for e in rows],
                yerr=_share_err([e.sparsity for e in rows]),
                fmt="o-",
                color=c,
                capsize=3,
                label=_label(g),
            )
        size = _size(r, method)
        ax[i, 1].axhline(size, color="black", ls="--", lw=1, label=f"layer size ({size})")
        ax[i, 0].set(
            yscale="log", title=f"{_short(method)}: bound vs observed", ylabel=UNITS[method]
        )
        ax[i, 1].set(yscale="log", title=f"{_short(method)}: samples required", ylabel="draws m")
        ax[i, 2].set(
            ylim=(-0.03, 1.03), title=f"{_short(method)}: sparsity achieved", ylabel="sparsity"
        )
        for a in ax[i]:
            a.set_xlabel("guaranteed share of correct dev labels (%)")
            a.grid(alpha=0.3)
        ax[i, 0].legend(handles=STYLE_KEY, fontsize=7, loc="best")
        ax[i, 1].legend(fontsize=7)
    return Plot(
        "epsilon_first",
        fig,
        "Epsilon-first pruning of the final layer (the source's Figures 2 and 6 showed, for "
        "LeNet-300-100 and VGG-16 under easy, moderate and difficult training, the bound needed "
        "to guarantee a share of the correct dev labels, the observed error with its standard "
        "deviation, the layer size and the samples the theorem requires, noting that sparsity "
        "can differ from the samples because sampling is with replacement). Colours are the "
        "regimes. Left: the bound that guarantees the share (solid) and the observed error, "
        "mean ± std (dashed). Middle: draws required against the layer size (dashed black); "
        "for weights, dotted hollow markers are the samples under the nominal reading |Δ_c| ≤ "
        "ε|f_c|. Right: the sparsity the draws leave, mean ± std.",
    )


def _epsilon_table(r) -> Table:
    rows = [
        [
            e.regime,
            _short(e.method),
            _pct(e.share),
            _m(e.bound),
            f"{_num(e.error_mean)} ± {_num(e.error_std)}",
            _ci(e.ratio),
            e.violation,
            _m(e.samples),
            _m(e.nominal_samples) if e.nominal_samples else "-",
            e.size,
            _m(e.sparsity),
            _m(e.preserved),
        ]
        for e in r.epsilon_first
    ]
    return Table(
        [
            "regime",
            "pruned",
            "share",
            "bound",
            "observed (mean ± std)",
            "bound / observed (95% CI over seeds)",
            "share over the bound",
            "samples required",
            "nominal samples",
            "layer size",
            "sparsity",
            "correct labels kept",
        ],
        rows,
        "Bound and observed error in the bound's units: logits for neurons (E), relative "
        "error per part for weights (ε, observed as max_c |Δ_c| / (z⁺_c + z⁻_c)). 'Share over "
        "the bound': pooled (draw, image) pairs whose error exceeds the bound (the theorem "
        "allows δ). Samples: total draws over the layer (all parts of all output neurons for "
        "weights). Means over seeds and draws.",
    )


def _epsilon_section(r) -> Section:
    eps = r.epsilon_first
    over = [e for e in eps if _m(e.samples) > e.size]
    lo, hi = _span([_m(e.ratio) for e in eps])
    worst = max((e.violation for e in eps if math.isfinite(e.violation)), default=math.nan)
    H = r.widths[-2]
    neuron_sparsity = _span([_m(e.sparsity) for e in eps if e.method == NEURONS])[1]
    weight_rows = [
        f"{_pct(_m(_eps_rows(r, WEIGHTS, g.name)[0].sparsity))} ({_label(g)}, "
        f"{_num(_m(g.inactive))} silent neuron(s) = {_pct(_m(g.inactive) / H)} of the weights)"
        for g in r.regimes
    ]
    nominal = [_m(e.nominal_samples) / e.size for e in eps if e.nominal_samples]
    text = [
        f"In {len(over)} of {len(eps)} settings the theorem asks for more draws than the layer "
        f"has units (neurons or weights). The bounds are {_num(lo)} to {_num(hi)} times the "
        "mean observed error, and at most "
        f"{_pct(worst)} of the (draw, image) pairs exceed them (each bound may fail with "
        f"probability δ = {r.delta:g}).",
        f"Neuron pruning reaches a sparsity of at most {_pct(neuron_sparsity)}: with that many "
        "draws every neuron with a non-negligible probability is drawn. Weight pruning reaches "
        + "; ".join(weight_rows)
        + ". SiPP drops exactly the weights whose sensitivity is 0 on S, those fed by neurons "
        "silent on S, and keeps every other weight: its sparsity is free, not earned by "
        "sampling.",
        f"Under the nominal reading the weights need {_num(_span(nominal)[0])} to "
        f"{_num(_span(nominal)[1])} times as many draws as the layer has weights: the reading "
        "matters by a small factor, the verdict does not change.",
    ]
    return Section(
        EPSILON,
        text,
        [_epsilon_table(r)],
        [_epsilon_figure(r)],
    )


# --- regimes ---------------------------------------------------------------------------------


def _regime_figure(r) -> Plot:
    fig, ax = plots.figure(3, 1, width=4.3, height=3.5)
    x = np.arange(len(r.regimes))
    ax[0, 0].bar(
        x,
        [_m(g.sensitivity) for g in r.regimes],
        color=[COLOURS.get(g.name, "grey") for g in r.regimes],
    )
    for i, g in enumerate(r.regimes):
        ax[0, 0].plot([i] * len(g.sensitivity), g.sensitivity, "k.", ms=5)
    ax[0, 0].set(title="SiPP total sensitivity S_tot", ylabel="per part and output neuron")
    shares = sorted({e.share for e in r.epsilon_first})
    width = 0.8 / len(shares)
    for j, method in enumerate((NEURONS, WEIGHTS)):
        a = ax[0, 1 + j]
        for k, share in enumerate(shares):
            vals = [
                _m(e.samples)
                for g in r.regimes
                for e in _eps_rows(r, method, g.name)
                if e.share == share
            ]
            dx = (k - (len(shares) - 1) / 2) * width
            a.bar(x + dx, vals, width, label=_pct(share), alpha=0.85)
        size = _size(r, method)
        a.axhline(size, color="black", ls="--", lw=1, label=f"layer size ({size})")
        a.set(yscale="log", title=f"{_short(method)}: samples required", ylabel="draws m")
        a.legend(fontsize=7, title="guaranteed share", title_fontsize=7)
    for a in ax[0]:
        a.set_xticks(x, [_label(g) for g in r.regimes], fontsize=8)
        a.grid(alpha=0.3, axis="y")
    return Plot(
        "regimes",
        fig,
        "Training regime and samples required (the source's Figure 7 showed the samples "
        "required and the sparsity, which was 0, for coreset neuron pruning of LeNet-300-100 "
        "trained with dropout 0.5). Left: SiPP's total sensitivity per regime (bars: mean, "
        "dots: seeds). Middle and right: draws required per regime and guaranteed share, "
        "against the layer size.",
    )


def _regime_section(r) -> Section:
    by = {g.name: g for g in r.regimes}
    text = []
    if "dropout" in by and len(by) > 1:
        d = by["dropout"]
        base = by["plain"] if "plain" in by else next(g for g in r.regimes if g.name != "dropout")
        share = _middle_share(r)

        def row(method, regime):
            return next(e for e in _eps_rows(r, method, regime.name) if e.share == share)

        def cmp(a: float, b: float) -> str:
            return "more" if a > b else "fewer"

        dn, bn = row(NEURONS, d), row(NEURONS, base)
        dw, bw = row(WEIGHTS, d), row(WEIGHTS, base)
        more = _m(d.sensitivity) > _m(base.sensitivity)
        text.append(
            f"SiPP's total sensitivity is {_num(_m(d.sensitivity))} with dropout against "
            f"{_num(_m(base.sensitivity))} ({_label(base)}), and {_num(_m(d.inactive))} neurons "
            f"are silent on S against {_num(_m(base.inactive))}. Since SiPP's sample size is "
            "proportional to S_tot, the dropout net needs "
            f"{'more' if more else 'fewer'} draws for the same ε."
        )
        text.append(
            f"Yet to guarantee {_pct(share)} of the correct labels the dropout net needs "
            f"{cmp(_m(dw.samples), _m(bw.samples))} weight draws in total "
            f"({_num(_m(dw.samples))} against {_num(_m(bw.samples))}), because the ε it must "
            f"meet is {_num(_m(dw.bound))} against {_num(_m(bw.bound))}: its z⁺ + z⁻ is smaller "
            "next to its gaps, so the labels tolerate a larger relative error per part. For "
            "neurons it needs "
            f"{cmp(_m(dn.samples), _m(bn.samples))} draws ({_num(_m(dn.samples))} against "
            f"{_num(_m(bn.samples))}): its ball is smaller (β = {_num(_m(d.beta))} against "
            f"{_num(_m(base.beta))}), and so is Mussay's scale F ({_num(_m(d.scale))} against "
            f"{_num(_m(base.scale))}), while the bound the labels need is E = {_num(_m(dn.bound))} "
            f"against {_num(_m(bn.bound))}. The dropout net's draws are "
            f"{_num(_m(dn.samples) / dn.size)} (neurons) and {_num(_m(dw.samples) / dw.size)} "
            "(weights) times the layer's size, and its sparsity is "
            f"{_pct(_m(dn.sparsity))} (neurons) and {_pct(_m(dw.sparsity))} (weights); the "
            "source's Figure 7 shows a sparsity of 0."
        )
    text.append(
        "For neurons the sample size does not depend on the sampling distribution at all "
        "(Hoeffding): only on ε = E / F, the bound the labels need over the scale of the "
        "bound. Regimes change F through the norms of the neurons and the output weights, and "
        "E through the gaps; the first section's table lists both."
    )
    return Section(REGIMES, text, [], [_regime_figure(r)])


# --- sparsity-first ----------------------------------------------------------------------------


def _sparsity_figure(r) -> Plot:
    fig, ax = plots.figure(2, 2, width=5.0, height=3.6)
    for i, method in enumerate((NEURONS, WEIGHTS)):
        for g in r.regimes:
            rows = _sparse_rows(r, method, g.name)
            x = [_m(s.sparsity) for s in rows]
            c = COLOURS.get(g.name, "grey")
            ax[i, 0].errorbar(
                x,
                [_m(s.preserved) for s in rows],
                yerr=_share_err([s.preserved for s in rows]),
                fmt="o-",
                color=c,
                capsize=3,
                label=_label(g),
            )
            ax[i, 0].plot(x, [_m(s.implied_share) for s in rows], "x:", color=c, ms=8)
            ax[i, 1].plot(x, [_m(s.implied) for s in rows], "o-", color=c, label=_label(g))
            ax[i, 1].errorbar(
                x,
                [s.raw_mean for s in rows],
                yerr=[s.raw_std for s in rows],
                fmt="s--",
                color=c,
                alpha=0.7,
                capsize=3,
            )
        key = [Line2D([], [], color="black", marker="x", ls=":", label="guaranteed (implied)")]
        ax[i, 0].set(
            ylim=(-0.03, 1.03),
            title=f"{_short(method)}: correct dev labels kept",
            xlabel="sparsity",
            ylabel="share of correct labels",
        )
        ax[i, 1].set(
            yscale="log",
            title=f"{_short(method)}: logit error",
            xlabel="sparsity",
            ylabel="max_c |Δ_c| (mean over dev)",
        )
        handles = ax[i, 0].get_legend_handles_labels()[0]
        ax[i, 0].legend(handles=handles + key, fontsize=7, loc="center left")
        handles = ax[i, 1].get_legend_handles_labels()[0]
        ax[i, 1].legend(handles=handles + STYLE_KEY, fontsize=7, loc="best")
        for a in ax[i]:
            a.grid(alpha=0.3)
    return Plot(
        "sparsity_first",
        fig,
        "Sparsity-first pruning (the source's Figure 8 showed, for a 'moderate case' "
        "LeNet-300-100, the accuracy and approximation error reached, with the accuracy "
        "guarantee and error bound implied by the number of samples taken). Left: share of the "
        "correct dev labels that stay correct (mean ± std over draws and seeds) and the share "
        "the implied bound guarantees (crosses). Right: the implied per-logit bound (solid, "
        "mean over dev of the largest logit's bound) and the observed max_c |Δ_c| (dashed).",
    )


def _sparsity_section(r) -> Section:
    rows = [
        [
            s.regime,
            _short(s.method),
            _pct(s.keep),
            _m(s.samples),
            _m(s.sparsity),
            _m(s.implied),
            f"{_num(s.raw_mean)} ± {_num(s.raw_std)}",
            _m(s.implied_share),
            _m(s.preserved),
            _m(s.accuracy),
        ]
        for s in r.sparsity_first
    ]
    table = Table(
        [
            "regime",
            "pruned",
            "target kept",
            "draws",
            "sparsity",
            "implied bound (logits)",
            "observed (mean ± std)",
            "guaranteed share",
            "kept share",
            "dev accuracy",
        ],
        rows,
        "Neurons: draws until the target number of distinct neurons (Mussay's code); weights: "
        "per part, the smallest m whose expected number of distinct weights reaches the target. "
        "The implied bound is what the theorem gives for those draws.",
    )
    best = max((_m(s.implied_share) for s in r.sparsity_first), default=math.nan)
    lo, hi = _span([_m(s.ratio) for s in r.sparsity_first])
    half = [s for s in r.sparsity_first if s.keep == max(x.keep for x in r.sparsity_first)]
    kept = _span([_m(s.preserved) for s in half])
    guarantee = (
        "none of the correct labels" if best == 0 else f"at most {_pct(best)} of the correct labels"
    )
    text = [
        f"At every sparsity we tried, the bound implied by the draws guarantees {guarantee}, "
        f"while pruning to {_pct(half[0].keep)} of the units keeps {_pct(kept[0])} to "
        f"{_pct(kept[1])} of them. The implied bounds are {_num(lo)} to {_num(hi)} times the "
        "observed errors. Whether that makes the guarantee vacuous is decided by the finding "
        f"'{CLAIMS['few']}' (Findings, at the top).",
    ]
    return Section(SPARSITY, text, [table], [_sparsity_figure(r)])


# --- heuristics and fine-tuning ------------------------------------------------------------------


def _heuristics_figure(r) -> Plot:
    fig, ax = plots.figure(len(r.regimes), 2, width=4.0, height=3.4)
    for j, g in enumerate(r.regimes):
        for i, family in enumerate((NEURONS, WEIGHTS)):
            a = ax[i, j]
            rows = _tune_rows(r, family, g.name)
            for method in dict.fromkeys(t.method for t in rows):
                sel = sorted((t for t in rows if t.method == method), key=lambda t: _m(t.sparsity))
                x = [_m(t.sparsity) for t in sel]
                c = METHOD_COLOURS.get(method, "grey")
                a.plot(x, [_m(t.before) for t in sel], "o--", color=c, mfc="none", alpha=0.8)
                a.plot(x, [_m(t.after) for t in sel], "o-", color=c, label=method)
            a.axhline(_m(g.accuracy), color="grey", lw=1, ls=":", label="unpruned")
            a.set(
                ylim=(0, 1),
                title=f"{_label(g)}: {_short(family)}",
                xlabel="sparsity of the pruned layer",
                ylabel="dev accuracy",
            )
            a.grid(alpha=0.3)
            handles = a.get_legend_handles_labels()[0]
            a.legend(handles=handles + TUNE_KEY, fontsize=7, loc="lower left")
    return Plot(
        "heuristics_finetuning",
        fig,
        "Heuristics and coresets at matched sparsity, before (dashed, hollow) and after "
        "(solid) fine-tuning (the source's Figure 5 showed the dev accuracy of LeNet-300-100 "
        "after pruning the final layer with L0 regularisation (neurons) and magnitude pruning "
        "(weights), and after fine-tuning). Top: neurons; L0 sets the size (one point per "
        "penalty), the Mussay coreset is drawn to the same size. Bottom: weights; SiPP "
        "sampling sets the size, magnitude and deterministic SiPP keep as many weights.",
    )


def _tune_table(r) -> Table:
    rows = [
        [
            t.regime,
            _short(t.family),
            t.method,
            t.level,
            _m(t.sparsity),
            _m(t.guaranteed),
            _ci(t.before),
            _ci(t.after),
            _m(t.raw_before),
            _m(t.raw_after),
            _m(t.centred_before),
            _m(t.centred_after),
        ]
        for t in r.finetune
    ]
    return Table(
        [
            "regime",
            "pruned",
            "method",
            "level",
            "sparsity",
            "guaranteed accuracy",
            "accuracy (95% CI)",
            "after fine-tuning",
            "raw error",
            "after fine-tuning",
            "centred error",
            "after fine-tuning",
        ],
        rows,
        "Level: the L0 penalty (neurons) or the target kept fraction (weights). Guaranteed "
        "accuracy: the dev accuracy the bound certifies (deterministic SiPP: exact, with "
        "sensitivities taken on the dev set; coresets: implied by the draws, with probability "
        "1 − δ per image; heuristics have none). Raw error: mean over dev of max_c |Δ_c| "
        "against the unpruned logits; centred: ‖Δ − mean(Δ)‖₂, blind to a common shift of the "
        "logits. Means over seeds, with 95% t-intervals for the accuracies.",
    )


def _heuristics_section(r) -> Section:
    t = r.tally
    if not t:  # results written before the counts were stored
        return Section(HEURISTICS, [], [_tune_table(r)], [_heuristics_figure(r)])
    top = r.finetune[int(t["gain_row"])]

    def of(tag: str, what: str) -> str:
        return f"{int(t.get(f'{tag} {what}', 0))} of {int(t.get(f'pairs {tag}', 0))}"

    text = [
        f"Fine-tuning lifts the dev accuracy of the pruned nets by up to {100 * t['gain']:.0f} "
        f"accuracy points ({top.method}, {top.regime}, sparsity {_pct(_m(top.sparsity))}), the "
        "source's 'fine-tuning gap'. What the pruned layer computes right after pruning, all a "
        "bound speaks about, says little about what the net reaches after a few epochs.",
        "Neurons: L0 (whose weights were trained with the gates) is within one point of the "
        f"Mussay coreset or better in {of('L0', 'within before')} cases before fine-tuning and "
        f"in {of('L0', 'within after')} after. Weights: magnitude pruning is within one point "
        f"of SiPP sampling or better in {of('magnitude', 'within before')} cases before "
        f"fine-tuning and in {of('magnitude', 'within after')} after. At the highest sparsity "
        "SiPP sampling stays ahead after fine-tuning in "
        f"{int(t.get('magnitude coreset ahead at the highest sparsity', 0))} of "
        f"{int(t.get('magnitude pairs at the highest sparsity', 0))} regimes.",
        f"The largest accuracy any bound certifies in this section is {_pct(t['certified'])}.",
    ]
    return Section(HEURISTICS, text, [_tune_table(r)], [_heuristics_figure(r)])


def _gap_figure(r) -> Plot:
    g = r.regimes[0]
    rows = sorted(
        (t for t in _tune_rows(r, WEIGHTS, g.name) if t.method == "SiPP (deterministic)"),
        key=lambda t: _m(t.sparsity),
    )
    fig, ax = plots.figure(2, 1, width=5.0, height=3.7)
    x = [_m(t.sparsity) for t in rows]
    ax[0, 0].plot(x, [_m(t.guaranteed) for t in rows], "x:", color="black", label="certified")
    ax[0, 0].plot(x, [_m(t.before) for t in rows], "o--", color="#8c564b", label="after pruning")
    ax[0, 0].plot(x, [_m(t.after) for t in rows], "o-", color="#8c564b", label="fine-tuned")
    ax[0, 0].axhline(_m(g.accuracy), color="grey", ls=":", lw=1, label="unpruned")
    for key, style, name in (
        ("raw_before", "o--", "raw, after pruning"),
        ("raw_after", "o-", "raw, fine-tuned"),
        ("centred_before", "s--", "centred, after pruning"),
        ("centred_after", "s-", "centred, fine-tuned"),
    ):
        colour = "#d62728" if key.startswith("raw") else "#1f77b4"
        ax[0, 1].plot(x, [_m(getattr(t, key)) for t in rows], style, color=colour, label=name)
    ax[0, 0].set(ylim=(-0.03, 1.03), title="dev accuracy", xlabel="sparsity", ylabel="accuracy")
    ax[0, 1].set(
        title="logit error against the unpruned net", xlabel="sparsity", ylabel="mean over dev"
    )
    for a in ax[0]:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return Plot(
        "finetuning_gap",
        fig,
        f"Deterministic SiPP weight pruning, sparsity-first, {_label(g)} regime (the source's "
        "Figure 3 showed, for a 'difficult case' LeNet-300-100, that the accuracy guarantees "
        "vastly under-estimate the accuracy after pruning, that fine-tuning adds more than 50% "
        "accuracy, and that fine-tuning increases the error of the pre-softmax logits, which "
        "softmax's translation invariance makes harmless). Left: certified, pruned and "
        "fine-tuned accuracy. Right: raw error max_c |Δ_c| and centred error ‖PΔ‖₂ (P removes "
        "the common shift) before and after fine-tuning.",
    )


def _gap_section(r) -> Section:
    t = r.tally
    if not t:  # results written before the counts were stored
        return Section(GAP, [], [], [_gap_figure(r)])
    methods = list(dict.fromkeys(row.method for row in r.finetune))
    per = [f"{m} {int(t[f'raw_up {m}'])} of {int(t[f'nets {m}'])}" for m in methods]
    cen_down, raw_down = int(t["centred_down"]), int(t["raw_down"])
    text = [
        f"Deterministic SiPP certifies at most {_pct(t.get('det_certified', math.nan))} "
        "accuracy, is below SiPP sampling right after pruning in "
        f"{int(t.get('deterministic below before', 0))} of {int(t.get('pairs deterministic', 0))} "
        f"cases, and gains up to {100 * t.get('det_gain', math.nan):.0f} accuracy points from "
        "fine-tuning.",
        f"Over the {int(t['nets'])} pruned nets of the previous section, fine-tuning raised the "
        f"accuracy of {int(t['accuracy_up'])}. It raised the raw logit error in "
        f"{int(t['accuracy_and_raw_up'])} of them while raising the accuracy (raw error up, by "
        f"method: {', '.join(per)}), lowered the raw error in {raw_down} and lowered the "
        f"centred error in {cen_down}. Fine-tuning does not aim at the unpruned logits: it "
        "moves them wherever the loss is lower, including by common shifts that softmax "
        "ignores, which the centred error ignores too.",
    ]
    return Section(GAP, text, [], [_gap_figure(r)])


# --- ball inputs -----------------------------------------------------------------------------


def _ball_figure(r) -> Plot:
    fig, ax = plots.figure(len(r.regimes), 1, width=4.0, height=3.4)
    for j, g in enumerate(r.regimes):
        a = ax[0, j]
        rows = _eps_rows(r, NEURONS, g.name)
        x = np.array([100 * e.share for e in rows])
        a.plot(x, [_m(e.bound) for e in rows], "o-", color="black", label="bound E")
        a.errorbar(
            x - 0.8,
            [e.error_mean for e in rows],
            yerr=[e.error_std for e in rows],
            fmt="s--",
            color=COLOURS.get(g.name, "grey"),
            capsize=3,
            label="dev images",
        )
        a.errorbar(
            x + 0.8,
            [e.ball_mean for e in rows],
            yerr=[e.ball_std for e in rows],
            fmt="^--",
            color="#7f7f7f",
            capsize=3,
            label="inputs from the ball",
        )
        a.set(yscale="log", title=_label(g), xlabel="guaranteed share (%)", ylabel="max_c |Δ_c|")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return Plot(
        "ball_inputs",
        fig,
        "Neuron pruning (Mussay coreset, epsilon-first) measured on inputs drawn uniformly "
        "from the L2 ball of radius β that the theorem assumes, instead of the data (the "
        "source's Figure 11 showed the approximation error of coreset neuron pruning on such "
        "inputs). Bound E, observed error on the dev images and on the ball inputs, mean ± std.",
    )


def _ball_section(r) -> Section:
    rows = [e for e in r.epsilon_first if e.method == NEURONS]
    table = Table(
        [
            "regime",
            "share",
            "bound E",
            "dev (mean ± std)",
            "ball (mean ± std)",
            "over the bound: dev",
            "ball",
        ],
        [
            [
                e.regime,
                _pct(e.share),
                _m(e.bound),
                f"{_num(e.error_mean)} ± {_num(e.error_std)}",
                f"{_num(e.ball_mean)} ± {_num(e.ball_std)}",
                e.violation,
                e.ball_violation,
            ]
            for e in rows
        ],
        "Ball inputs are first-layer outputs a with ‖[a; 1]‖ ≤ β, uniform in the ball: signed "
        "and mostly near its surface, unlike the sparse non-negative data.",
    )
    lo, hi = _span([_m(e.ball_ratio) for e in rows])
    side = "smaller than" if hi < 1 else ("larger than" if lo > 1 else "comparable to")
    gap = _span([_m(e.ball_bound_ratio) for e in rows])
    text = [
        f"On inputs from the ball the pruned layer errs {_num(lo)} to {_num(hi)} times as much "
        f"as on the data ({side} it), and the bound is still {_num(gap[0])} to {_num(gap[1])} "
        "times the observed error. The bound is built on |φ(p·x̃)| ≤ β‖p‖, reached only by an "
        f"input aligned with a neuron's weights; a random point of a {r.widths[0]}-dimensional "
        f"ball has |p·x̃| of order β‖p‖/√{r.widths[0]}, and the data, non-negative and correlated with the "
        "weights, sits closer to the worst case than the ball's typical point. So the bound "
        "stays loose even where its assumptions hold exactly: the looseness is the worst-case "
        "construction, not a mismatch between data and assumptions.",
    ]
    return Section(BALL, text, [table], [_ball_figure(r)])


# --- scaling ---------------------------------------------------------------------------------


def _alpha_figure(r) -> Plot:
    rows = r.alpha
    size = _size(r, NEURONS)
    fig, ax = plots.figure(3, 1, width=4.3, height=3.5)
    x = [a.alpha for a in rows]
    ax[0, 0].plot(x, [_m(a.bound) for a in rows], "o-", color="black", label="bound E needed")
    ax[0, 0].plot(x, [_m(a.scale) for a in rows], "d:", color="#9467bd", label="scale F")
    ax[0, 0].errorbar(
        x,
        [a.raw_mean for a in rows],
        yerr=[a.raw_std for a in rows],
        fmt="s--",
        color="#1f77b4",
        capsize=3,
        label="observed, mean ± std",
    )
    ax[0, 0].set(
        xscale="log", yscale="log", title="bound, scale and error", xlabel="α", ylabel="logits"
    )
    ax[0, 1].plot(x, [_m(a.samples) for a in rows], "o-", color="black", label="samples required")
    ax[0, 1].axhline(size, color="black", ls="--", lw=1, label=f"layer size ({size})")
    ax[0, 1].set(xscale="log", yscale="log", title="samples required", xlabel="α", ylabel="draws m")
    ax[0, 2].plot(x, [_m(a.accuracy) for a in rows], "o-", color="#2ca02c", label="dev accuracy")
    ax[0, 2].plot(x, [_m(a.sparsity) for a in rows], "s--", color="#d62728", label="sparsity")
    ax[0, 2].plot(
        x, [_m(a.preserved) for a in rows], "^:", color="#1f77b4", label="correct labels kept"
    )
    ax[0, 2].set(xscale="log", ylim=(-0.03, 1.03), title="accuracy and sparsity", xlabel="α")
    for a in ax[0]:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return Plot(
        "alpha_scaling",
        fig,
        f"Mussay neuron pruning after multiplying the final layer's weight matrix by α "
        f"({r.alpha_regime} regime, bias unchanged, guaranteeing {_pct(r.alpha_share)} of the "
        "correct labels; the source's Figure 12 showed coreset neuron pruning of LeNet-300-100 "
        "after multiplying the pruned layer's weight matrix by a constant α). We read 'the "
        "pruned layer' as the final layer, whose input neurons are sampled.",
    )


def _alpha_section(r) -> Section:
    rows = r.alpha
    table = Table(
        [
            "α",
            "dev accuracy",
            "bound E",
            "F",
            "ε = E / F",
            "samples",
            "sparsity",
            "observed (mean ± std)",
            "correct kept",
        ],
        [
            [
                a.alpha,
                _m(a.accuracy),
                _m(a.bound),
                _m(a.scale),
                _m([b / f for b, f in zip(a.bound, a.scale, strict=True)]),
                _m(a.samples),
                _m(a.sparsity),
                f"{_num(a.raw_mean)} ± {_num(a.raw_std)}",
                _m(a.preserved),
            ]
            for a in rows
        ],
        "F is exactly linear in the output weights; the gaps, and so E, are linear up to the "
        "unscaled bias.",
    )
    samples = _span([_m(a.samples) for a in rows])
    alphas = _span([a.alpha for a in rows])
    acc = _span([_m(a.accuracy) for a in rows])
    text = [
        f"From α = {alphas[0]:g} to {alphas[1]:g} the samples required stay between "
        f"{_num(samples[0])} and {_num(samples[1])} (a factor {_num(samples[1] / samples[0])}) "
        f"and the dev accuracy between {_pct(acc[0])} and {_pct(acc[1])}. Scaling the output "
        "weights scales the gaps and Mussay's F together, so the relative accuracy ε = E / F "
        "the labels need barely moves: an additive bound cannot be made useful by rescaling the "
        "layer it is stated for.",
    ]
    return Section(ALPHA, text, [table], [_alpha_figure(r)])


# --- the answer ------------------------------------------------------------------------------


def _find(found, key: str):
    """The finding of this arm on ``CLAIMS[key]`` (None if absent)."""
    return next((f for f in found if f.claim.endswith(CLAIMS[key])), None)


def _said(found, key: str) -> str:
    """A finding of this arm as text: our value and its verdict ('n/a' if absent)."""
    f = _find(found, key)
    return "n/a" if f is None else f"{f.ours}, {f.verdict}"


def _answer(r, found) -> Section:
    """The answer, its verdict read off the arm's findings ``found``: vacuous when both
    'more draws than units' and 'few labels guaranteed' hold."""
    eps = r.epsilon_first
    n_lo, n_hi = _span([_m(e.samples) / e.size for e in eps if e.method == NEURONS])
    w_lo, w_hi = _span([_m(e.samples) / e.size for e in eps if e.method == WEIGHTS])
    certified = max(
        (_m(t.guaranteed) for t in r.finetune if math.isfinite(_m(t.guaranteed))),
        default=math.nan,
    )
    vacuous = all(getattr(_find(found, k), "verdict", "") == "holds" for k in ("draws", "few"))
    text = [
        "The source asks when neural pruning approximation bounds are useful. For pruning the "
        f"final layer of {r.model} on {r.data} our measurements answer: "
        + (
            "not in any setting we tried: epsilon-first needs more draws than the layer has "
            "units, and sparsity-first guarantees few labels (both findings hold)."
            if vacuous
            else "only in some settings: at least one of the findings 'more draws than units' "
            "and 'few labels guaranteed' differs (see the Findings table)."
        ),
        f"Epsilon-first, every guaranteed share asks for {_num(n_lo)} to {_num(n_hi)} times as "
        f"many draws as there are neurons and {_num(w_lo)} to {_num(w_hi)} times as many as "
        "there are weights. Sparsity-first, the largest guaranteed share of the correct labels "
        f"is {_said(found, 'few')}, and the best certified "
        f"accuracy of any pruned net is {_pct(certified)}. The smallest bound over the mean "
        f"observed error is {_said(found, 'far')} against the rule "
        "'far above' (at least 10 times); on the theorem's own ball it is "
        f"{_said(found, 'ball')}.",
        "The bounds bound the wrong quantity: labels survive while the logit change stays "
        "below half the gap, softmax ignores common shifts a raw bound counts, and fine-tuning "
        "moves the logits freely. The largest accuracy gain from fine-tuning is "
        f"{_said(found, 'gain')} against the source's 50 points; "
        "the share of fine-tuned deterministic SiPP nets whose raw logit error rose is "
        f"{_said(found, 'raw')}. What matters in "
        "practice, the accuracy after fine-tuning, is outside what the bounds speak about; the "
        "share of cases where heuristics without any guarantee (L0, magnitude), once "
        "fine-tuned, are within one point of the coresets at the same sparsity or better is "
        f"{_said(found, 'heuristics')}.",
        "Where could they help? A bound computed on the very data it certifies needs no "
        "probability (deterministic SiPP's bound is exact on S), and milder pruning or weaker "
        "targets than keeping every label would ask less of it; but at the sparsities we "
        f"tried even that certificate reached only {_pct(certified)} accuracy.",
        "The verdict on each of the source's claims, with its rule, is in the Findings table "
        "at the top of the report. Figure 11's captions do not say which way the source's "
        "errors went on ball inputs; ours are in the section on the L2 ball.",
    ]
    return Section(ANSWER, text)


# --- layer by layer ----------------------------------------------------------------------------


def _layer_figure(arms) -> Plot:
    targets = sorted({row.target for arm in arms for row in arm.layerwise})
    fig, ax = plots.figure(len(targets), len(arms), width=4.2, height=3.3)
    for i, arm in enumerate(arms):
        for j, target in enumerate(targets):
            rows = [row for row in arm.layerwise if row.target == target]
            a, x = ax[i, j], [row.layer + 1 for row in rows]
            a.plot(
                x, [row.eps for row in rows], "o-", color="#1f77b4", label="layer's own bound ε_l"
            )
            a.plot(x, [_pos(row.observed) for row in rows], "s--", color="#1f77b4", alpha=0.7,
                   label="layer's observed error (mean)")  # fmt: skip
            a.plot(
                x,
                [row.implied for row in rows],
                "o-",
                color="#d62728",
                label="implied output bound",
            )
            a.plot(x, [_pos(row.output) for row in rows], "s--", color="#d62728", alpha=0.7,
                   label="observed output error (median)")  # fmt: skip
            for row in rows:
                if row.skipped:
                    a.annotate("skipped", (row.layer + 1, row.eps), fontsize=7, rotation=30)
            a.set(yscale="log", title=f"{arm.model}: output ε = {target:g}", xlabel="layers pruned")
            a.set_xticks(x)
            a.grid(alpha=0.3)
            if i == j == 0:
                a.legend(fontsize=7)
    return Plot(
        "layer_by_layer",
        fig,
        "Layer-by-layer pruning (the source's Figure 1, right: each layer pruned in turn with a "
        "guarantee on its own activations, the errors bubbling up to the output). Blue: each "
        "layer's own relative bound ε_l and the observed max_i |ẑ_i − z_i| / (z⁺_i + z⁻_i) on "
        "the dev set, fed by the already pruned layers. Red: the output bound implied after l "
        "layers, (1 + ε/(2L))^l − 1 relative per logit, and the observed relative logit error "
        "(median over dev). 'Skipped': the layer's bound needed more draws than allowed, so it "
        "was left whole (sparsity 0, observed 0). Observed errors of 0 are not drawn on the "
        "log scale.",
    )


def _pos(x: float) -> float:
    """``x`` for a log axis: nan (not drawn) unless positive."""
    return x if x > 0 else math.nan


def _layer_section(arms, config) -> Section:
    rows = [
        [
            arm.model,
            row.target,
            row.layer + 1,
            row.weights,
            row.eps,
            row.samples,
            "skipped" if row.skipped else _pct(row.sparsity),
            row.observed,
            row.violation,
            row.implied,
            row.output,
            row.within,
        ]
        for arm in arms
        for row in arm.layerwise
    ]
    every = [row for arm in arms for row in arm.layerwise]
    sampled = [row for row in every if not row.skipped]
    text = [
        "Pruning every dense layer in turn (CoreNet's scheme, the source's Figure 1 right): for "
        "an output bound ε each of the L layers gets ε_l = ε / (2L) / Π_{k≥l} Δ̂_k, where Δ̂_k "
        "is layer k's worst neuron's mean sign-cancellation factor Σ|w a| / |Σ w a| on S "
        "(without CoreNet's slack κ, which would shrink ε_l further), and is sampled by SiPP "
        "fed the pruned layers below. The layer's own guarantee, a relative error ε_l per part, "
        "bubbles up to an output bound (1 + ε/(2L))^l − 1 after l layers. A layer needing more "
        f"than {_num(config.layer_max_samples)} draws is left whole and counted as sparsity 0, "
        "as the source did for VGG-16.",
        f"Of {len(every)} (bound, layer) stages, {len(sampled)} could be sampled within the "
        "budget"
        + (
            f"; the sampled ones removed {_pct(min(r.sparsity for r in sampled))} to "
            f"{_pct(max(r.sparsity for r in sampled))} of their layer's weights, with layer "
            f"bounds {_num(_span([r.ratio for r in sampled])[0])} to "
            f"{_num(_span([r.ratio for r in sampled])[1])} times the observed layer error."
            if sampled
            else ": the products of cancellation factors make the lower layers' targets so "
            "small that no layer could be pruned."
        )
        + " The per-layer targets shrink by the product of the cancellation factors above "
        "them, so the layers nearest the input need the most draws: the composed guarantee is "
        "paid for by the lowest layers.",
    ]
    table = Table(
        [
            "network",
            "output ε",
            "layer",
            "weights",
            "layer bound ε_l",
            "samples required",
            "sparsity",
            "observed layer error",
            "share over ε_l",
            "implied output bound",
            "observed output error",
            "dev inputs within it",
        ],
        rows,
        "One row per layer pruned, in order (the first seed of the first regime). Observed "
        "layer error: mean over dev of max_i |ẑ_i − z_i| / (z⁺_i + z⁻_i). Output error: median "
        "over dev of max_c |f̂_c − f_c| / |f_c|.",
    )
    return Section(LAYERS, text, [table], [_layer_figure(arms)])


# --- the two networks side by side -------------------------------------------------------------


def _compare_section(r, left, right) -> Section:
    """The two networks' findings side by side (``left``: r's, ``right``: the VGG arm's)."""
    theirs = {f.claim.removeprefix(f"{r.vgg.model}: "): f for f in right}
    rows = [
        [f.claim, f.source, f.ours, f.verdict, theirs[f.claim].ours, theirs[f.claim].verdict]
        for f in left
        if f.claim in theirs
    ]
    agree = sum(row[3] == row[5] for row in rows)
    text = [
        f"The source reports every figure for LeNet-300-100 and VGG-16; here {r.vgg.model} on "
        f"{r.vgg.data} stands in for VGG-16 on CIFAR-10 (run the source's own setting with "
        "--arch vgg16 --width 1 --data cifar10 --data-root DIR --device cuda). Each row is one "
        "of the source's claims with both networks' findings; the rules are in the Findings "
        "table at the top of the report.",
        f"The two networks get the same verdict on {agree} of {len(rows)} claims. The VGG's "
        f"final layer is {_share(r.vgg.weight_share)} of its network's weights against "
        f"{_share(r.weight_share)} for LeNet-300-100, so even a perfect bound on it would prune "
        "little of the network.",
    ]
    table = Table(
        ["the source's claim", "source", r.model, "verdict", r.vgg.model, "verdict"],
        rows,
        "The findings of both networks (means and 95% intervals over seeds).",
    )
    return Section(f"{r.model} and {r.vgg.model} side by side", text, [table])


def _arm_sections(r, config, found) -> list[Section]:
    """Every section for one network; plot names prefixed by the arm so files do not clash."""
    out = [
        _setup(r, config),
        _epsilon_section(r),
        _regime_section(r),
        _sparsity_section(r),
        _heuristics_section(r),
        _gap_section(r),
        _ball_section(r),
        _alpha_section(r),
        _answer(r, found),
    ]
    if r.model == "LeNet-300-100":
        return out
    tag = "vgg" if r.regimes[0].name != "checkpoint" else "checkpoint"
    for sec in out[1:]:
        sec.title = arm_title(r.model, sec.title)
        for p in sec.plots:
            p.name = f"{tag}_{p.name}"
    return out


def sections(r, config) -> list[Section]:
    from .approximation_bounds import _arm_findings  # the findings this report formats

    mine = _arm_findings(r)
    out = _arm_sections(r, config, mine)
    arms = [r] if r.vgg is None else [r, r.vgg]
    if any(arm.layerwise for arm in arms):
        out.append(_layer_section(arms, config))
    if r.vgg is not None:
        theirs = _arm_findings(r.vgg)
        out += [_compare_section(r, mine, theirs), *_arm_sections(r.vgg, config, theirs)]
    return out

"""The node-criteria study on tiny nets: its numbers against independent computations."""

import dataclasses

import pytest
import scipy.stats
import torch

from prunelab import checkpoint, criteria, data, report, surgery, train
from prunelab.studies import node_criteria

CRITERIA = (
    "random", "activation_std", "taylor", "weight_in_norm", "weight_out_norm",
    "activation_mean_abs", "apoz",
)  # fmt: skip
K = len(CRITERIA)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = node_criteria.Config(
        seeds=2,
        criteria=CRITERIA,
        fractions=(0.25, 0.5, 0.75),
        mnist_widths=(784, 12, 8, 10),
        mnist_train=300,
        mnist_epochs=2,
        spirals_widths=(2, 10, 8, 2),
        spirals_train=200,
        spirals_epochs=4,
        lenet5_train=300,
        lenet5_epochs=1,
        n_test=150,
        score_points=100,
        finetune_fractions=(0.5,),
        finetune_epochs=1,
    )
    out = tmp_path_factory.mktemp("run")
    return config, node_criteria.run(config, out, progress=False), out


def _net(config, out, name, s):
    """Trained net s of ``name`` from its checkpoint, and the data the study used."""
    r_net = f"{name}_seed{config.seed + s}.safetensors"
    model, meta = checkpoint.load(out / r_net)
    recipe = node_criteria._recipe(name, config)
    split = data.load(
        node_criteria.DATA[name], seed=config.seed, n_train=recipe["n_train"], n_test=config.n_test
    )
    return model, split, split.train[: config.score_points]


def _macs(model, x) -> int:
    """Multiply-accumulates of one input, counted by hooks on the layers as they run."""
    count = []

    def hook(module, inputs, out):
        positions = out[0, 0].numel() if isinstance(module, torch.nn.Conv2d) else 1
        count.append(module.weight.numel() * positions)

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    x1 = x[:1].flatten(1) if isinstance(layers[0], torch.nn.Linear) else x[:1]  # an MLP
    with torch.no_grad():
        model.eval()(x1)
    for h in handles:
        h.remove()
    return sum(count)


@pytest.mark.parametrize("name", ["spirals", "mnist5k", "lenet5"])
def test_grid_equals_scoring_and_physically_removing_nodes(tiny, name):
    config, r, out = tiny
    n = next(n for n in r.nets if n.name == name)
    s = 1
    model, split, ref = _net(config, out, name, s)
    assert n.test_accuracy[s].item() == pytest.approx(train.evaluate(model, split.test)["accuracy"])
    full_pred = train.predict(model, split.test.x).argmax(1)
    top = torch.bincount(full_pred, minlength=split.test.classes).max().item() / len(full_pred)
    assert n.test_majority[s].item() == pytest.approx(top, abs=1e-6)
    for criterion, scope, comp, f in (
        ("activation_std", "layer", "mean", 1),
        ("taylor", "global", "none", 2),
        ("random", "global", "mean", 0),
        ("weight_in_norm", "layer", "none", 2),
    ):
        k = r.criteria.index(criterion)
        g = torch.Generator().manual_seed(config.seed + s)
        scores = criteria.node_scores(criterion, model, ref.x, ref.y, generator=g)
        plan = criteria.select(scores, fraction=config.fractions[f], scope=scope)
        pruned = surgery.remove_nodes(model, plan, compensate=comp, x=ref.x)
        m = train.evaluate(pruned, split.test)
        p = n.panel(scope, comp)
        assert p.loss[k, s, f].item() == pytest.approx(m["loss"], rel=1e-4)
        assert p.accuracy[k, s, f].item() == pytest.approx(m["accuracy"], abs=1e-6)
        pred = train.predict(pruned, split.test.x).argmax(1)
        top = torch.bincount(pred, minlength=split.test.classes).max().item() / len(pred)
        assert p.majority[k, s, f].item() == pytest.approx(top, abs=1e-6)
        cost = next(c for c in n.costs if c.scope == scope)
        assert cost.parameters[k, s, f].item() == sum(q.numel() for q in pruned.parameters())
        full_macs, small_macs = _macs(model, split.test.x), _macs(pruned, split.test.x)
        assert cost.speedup[k, s, f].item() == pytest.approx(full_macs / small_macs, rel=1e-6)
        if name == "lenet5":
            assert n.macs == full_macs


def test_summaries_are_consistent(tiny):
    config, r, _ = tiny
    base = r.criteria.index("random")
    for n in r.nets:
        layer = next(c for c in n.costs if c.scope == "layer")
        # per-layer removal: one architecture per fraction, whatever the criterion or seed
        assert (layer.speedup == layer.speedup[0, 0]).all()
        for p in n.panels:
            assert p.accuracy.shape == (K, 2, 3)
            assert p.by_accuracy.delta_mean[base].item() == 0
            ranks = p.by_accuracy.rank_mean
            assert ranks.sum().item() == pytest.approx(K * (K + 1) / 2)
            torch.testing.assert_close(p.accuracy_mean, p.accuracy.double().mean(1))
        # the contrast "mean - none, layer" is the paired difference of the two panels' areas
        c = next(c for c in n.contrasts if c.name == "mean - none, layer")
        diff = n.panel("layer", "mean").by_accuracy.area - n.panel("layer", "none").by_accuracy.area
        torch.testing.assert_close(c.mean, diff.mean(1))
    assert r.overall_rank.shape == (K,)


def test_finetune_equals_training_the_pruned_net_alone(tiny):
    config, r, out = tiny
    n = next(n for n in r.nets if n.name == "spirals")
    ft = n.finetune
    assert ft.after_accuracy.shape == (K, 2, 1)
    k, s = r.criteria.index("activation_std"), 0
    model, split, ref = _net(config, out, "spirals", s)
    scores = criteria.node_scores("activation_std", model, ref.x, ref.y)
    plan = criteria.select(scores, fraction=0.5, scope="global")
    pruned = surgery.remove_nodes(model, plan, compensate="mean", x=ref.x)
    before = train.evaluate(pruned, split.test)
    assert ft.before_loss[k, s, 0].item() == pytest.approx(before["loss"], rel=1e-4)
    train.fit(
        pruned,
        split.train,
        epochs=1,
        lr=config.spirals_lr,
        batch_size=config.spirals_batch,
        seed=config.seed + s,
        progress=False,
    )
    after = train.evaluate(pruned, split.test)
    assert ft.after_loss[k, s, 0].item() == pytest.approx(after["loss"], rel=1e-3)
    assert ft.after_loss[k, s, 0].item() != pytest.approx(before["loss"], rel=1e-3)


def test_report_renders_and_results_round_trip(tiny, monkeypatch, tmp_path):
    config, r, _ = tiny
    # one net is enough to render every kind of figure, at half the drawing time
    r = dataclasses.replace(r, nets=[n for n in r.nets if n.name == "spirals"])
    monkeypatch.setitem(report.STUDIES, node_criteria.NAME, node_criteria)
    report.write_run(node_criteria, config, r, tmp_path)
    study, config2, r2, raw = report.load_run(tmp_path)
    found = node_criteria.findings(r, config)
    assert [f["verdict"] for f in raw["findings"]] == [f.verdict for f in found]
    titles = {sec.title for sec in node_criteria.sections(r, config)}
    assert all(f.section in titles for f in found if f.verdict != "not measured")
    assert config2 == config
    torch.testing.assert_close(r2.nets[0].panels[3].loss, r.nets[0].panels[3].loss)
    torch.testing.assert_close(r2.nets[0].panels[3].majority, r.nets[0].panels[3].majority)
    assert r2.nets[0].finetune.after.rank_mean.tolist() == pytest.approx(
        r.nets[0].finetune.after.rank_mean.tolist()
    )
    assert node_criteria.headline(r2) == pytest.approx(node_criteria.headline(r))


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match="baseline 'random'"):
        node_criteria.Config(criteria=("taylor",))
    with pytest.raises(ValueError, match="choose from"):
        node_criteria.Config(criteria=("random", "nope"))
    with pytest.raises(ValueError, match="fractions must increase"):
        node_criteria.Config(fractions=(0.5, 0.2))
    with pytest.raises(ValueError, match="nets="):
        node_criteria.Config(nets=("circle",))
    with pytest.raises(ValueError, match="finetune_scope"):
        node_criteria.Config(finetune_scope="all")
    with pytest.raises(ValueError, match="seeds must be >= 2"):
        node_criteria.Config(seeds=1)


def test_a_run_without_collapse_measurements_renders_with_the_same_verdicts(
    tiny, monkeypatch, tmp_path
):
    """Runs written before prediction collapse was measured still re-render and decide alike."""
    config, r, _ = tiny
    old = [
        dataclasses.replace(
            n,
            test_majority=None,
            panels=[dataclasses.replace(p, majority=None, majority_mean=None) for p in n.panels],
        )
        for n in r.nets
    ]
    monkeypatch.setitem(report.STUDIES, node_criteria.NAME, node_criteria)
    r_old = dataclasses.replace(r, nets=old[1:2])
    report.write_run(node_criteria, config, r_old, tmp_path)
    new = [f.verdict for f in node_criteria.findings(r, config)]
    assert [
        f.verdict for f in node_criteria.findings(dataclasses.replace(r, nets=old), config)
    ] == new


def _area(curve, fractions):
    """Trapezoid area over the fractions divided by their range, by a loop."""
    total = sum(
        (fractions[i + 1] - fractions[i]) * (curve[i] + curve[i + 1]) / 2
        for i in range(len(fractions) - 1)
    )
    return total / (fractions[-1] - fractions[0])


def _t_interval(values):
    v = [float(x) for x in values]
    mean, sem = sum(v) / len(v), scipy.stats.sem(v)
    return (mean, mean) if sem == 0 else scipy.stats.t.interval(0.95, len(v) - 1, mean, sem)


def test_findings_are_paired_area_differences_decided_by_the_interval(tiny):
    config, r, _ = tiny
    found = {f.claim: f for f in node_criteria.findings(r, config)}
    names, fr = r.criteria, r.fractions

    def areas(n, scope, comp, name):
        p = n.panel(scope, comp)
        return [_area(p.accuracy[names.index(name), s].tolist(), fr) for s in range(2)]

    def check(f, values):
        lo, hi = _t_interval(values)
        assert f.estimate.mean == pytest.approx(sum(values) / len(values), abs=1e-6), f.claim
        assert (f.estimate.low, f.estimate.high) == (
            pytest.approx(lo, abs=1e-6),
            pytest.approx(hi, abs=1e-6),
        )
        assert f.verdict == ("holds" if lo > 0 else "differs"), f.claim

    for n in r.nets:
        std = f"{n.name}: Removing the nodes with the smallest activation std beats random removal"
        for scope, comp, tail in (
            ("layer", "mean", ", per layer with mean compensation (the source's procedure)."),
            ("layer", "none", ", per layer without compensation."),
            ("global", "none", ", globally without compensation."),
        ):
            a, b = areas(n, scope, comp, "activation_std"), areas(n, scope, comp, "random")
            check(found[std + tail], [x - y for x, y in zip(a, b, strict=True)])
        # the source's procedure says whether it rests on a collapsed baseline
        gain = [
            x - y
            for x, y in zip(
                areas(n, "layer", "mean", "random"),
                areas(n, "layer", "none", "random"),
                strict=True,
            )
        ]
        main = found[std + ", per layer with mean compensation (the source's procedure)."]
        assert ("rests on a collapsed baseline" in main.detail) == (_t_interval(gain)[1] < 0)
        # mean compensation: the gain averaged over criteria but random and scopes, per seed
        chosen = [c for c in names if c != "random"]
        gains = [
            sum(
                areas(n, sc, "mean", c)[s] - areas(n, sc, "none", c)[s]
                for sc in ("layer", "global")
                for c in chosen
            )
            / (2 * len(chosen))
            for s in range(2)
        ]
        check(next(f for c, f in found.items() if c.startswith(f"{n.name}: Replacing")), gains)
        # Taylor against its strongest rival (highest mean area), per layer, no compensation
        rivals = ("weight_in_norm", "weight_out_norm", "activation_mean_abs")
        best = max(rivals, key=lambda v: sum(areas(n, "layer", "none", v)))
        taylor = next(f for c, f in found.items() if c.startswith(f"{n.name}: Taylor"))
        t, b = areas(n, "layer", "none", "taylor"), areas(n, "layer", "none", best)
        check(taylor, [x - y for x, y in zip(t, b, strict=True)])
        apoz = next(f for c, f in found.items() if c.startswith(f"{n.name}: Pruning the most"))
        a, b = areas(n, "layer", "none", "apoz"), areas(n, "layer", "none", "random")
        check(apoz, [x - y for x, y in zip(a, b, strict=True)])
        # claims whose criteria this run lacks are listed as not measured, never dropped
        missing = [
            f for c, f in found.items() if c.startswith(n.name) and "Evci et al. 2018)." in c
        ]
        assert [f.verdict for f in missing] == ["not measured"]
        assert (
            found[
                f"{n.name}: A second-order estimate of the loss change ranks better than the "
                "first-order one (OBD)."
            ].verdict
            == "not measured"
        )

"""The obd-vs-magnitude study on a tiny config: its numbers against independent computations."""

import copy

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from prunelab import criteria, data, ensemble, hessian_blocks, models, report, surgery, train
from prunelab.studies import obd_vs_magnitude as study

CONFIG = dict(
    widths=(784, 16, 12, 8, 10),
    seeds=2,
    n_train=300,
    n_test=200,
    epochs=5,
    lr=0.01,
    score_samples=200,
    extra=("snip",),
    step=0.1,
    fine_arms=1,
    fine_step=0.02,
    finetune_levels=(0.5,),
    finetune_epochs=1,
    ratio_samples=100,
    ratio_probes=4,
    prediction_max=0.3,
    convnet=False,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = study.Config(**CONFIG)
    out = tmp_path_factory.mktemp("run")
    results = study.run(config, out, progress=False)
    split = data.load("mnist5k", seed=0, n_train=300, n_test=200)
    nets = {}  # the same recipe, trained again (fit_many is deterministic)
    for kind, p in zip(study.KINDS, (0.0, config.dropout)):
        nets[kind] = [models.mlp(config.widths, dropout=p, seed=k) for k in range(2)]
        ensemble.fit_many(
            nets[kind],
            split.train,
            seeds=[0, 1],
            epochs=5,
            lr=0.01,
            batch_size=config.batch_size,
            progress=False,
        )
    return config, results, split, nets, out


def _index(levels, level):
    return int((levels - level).abs().argmin())


def test_curves_equal_pruning_one_level_at_a_time(tiny):
    config, r, split, nets, _ = tiny
    xs, ys = split.train.x[:200].flatten(1), split.train.y[:200]
    for kind in study.KINDS:
        for k, net in enumerate(nets[kind]):
            assert r.test_accuracy[kind][k] == train.evaluate(net, split.test)["accuracy"]
    checks = [
        (study.KINDS[0], "obd", "global", 0.5, False),
        (study.KINDS[0], "magnitude", "layer", 0.7, False),
        (study.KINDS[1], "snip", "global", 0.3, False),
        (study.KINDS[1], "obd", "global", 0.96, True),
    ]
    for kind, crit, scope, level, fine in checks:
        curve = r.curve(kind, crit, scope, fine=fine)
        i = _index(curve.levels, level)
        for k, net in enumerate(nets[kind]):
            scores = criteria.weight_scores(crit, net, xs, ys)
            pruned = surgery.strip(net, surgery.prune_weights(net, scores, level, scope=scope))
            got = train.evaluate(pruned, split.test)
            assert curve.accuracy[k, i].item() == pytest.approx(got["accuracy"], abs=1e-12)
            assert curve.loss[k, i].item() == pytest.approx(got["loss"], rel=1e-5)
    assert r.curves[0].levels[-1].item() == pytest.approx(0.9) and len(r.curves[0].levels) == 10
    arms = {(c.kind, c.criterion, c.scope) for c in r.curves}
    assert len(arms) == 2 * 5  # magnitude and obd x 2 scopes + snip, for both models


def test_fine_tuning_starts_from_the_swept_accuracy_and_keeps_masks(tiny):
    config, r, split, nets, _ = tiny
    assert len(r.fine_tuned) == 4  # (magnitude, obd) x 2 models
    for f in r.fine_tuned:
        curve = r.curve(f.kind, f.criterion, "global")
        i = _index(curve.levels, 0.5)
        torch.testing.assert_close(f.before[:, 0], curve.accuracy[:, i])
        assert f.after.shape == (2, 1)
    # the fine-tune of seed 1 (copy 1 of one level) redone alone with train.fit, mask in force
    xs, ys = split.train.x[:200].flatten(1), split.train.y[:200]
    f = next(f for f in r.fine_tuned if (f.kind, f.criterion) == (study.KINDS[0], "obd"))
    net = nets[study.KINDS[0]][1]
    mask = surgery.prune_weights(net, criteria.weight_scores("obd", net, xs, ys), 0.5)
    pruned = surgery.strip(net, mask)
    train.fit(pruned, split.train, epochs=config.finetune_epochs, lr=config.finetune_lr,
              batch_size=config.batch_size, seed=config.seed + 1, weight_masks=mask,
              progress=False)  # fmt: skip
    for name, p in pruned.named_parameters():
        if name in mask:
            assert (p[mask[name] == 0] == 0).all()  # the pruned weights stayed at zero
    after = train.evaluate(pruned, split.test)["accuracy"]
    assert f.after[1, 0].item() == pytest.approx(after, abs=0.02)


def test_cross_terms_against_autograd(tiny):
    config, r, split, nets, _ = tiny
    xs, ys = split.train.x[:200].flatten(1), split.train.y[:200]
    for t in r.cross_terms:
        net = copy.deepcopy(nets[t.kind][0]).double().eval()  # dropout off
        params = {n: p.detach() for n, p in net.named_parameters()}

        last = models.parse(net).layers[-1].name  # "6" without dropout, "9" with

        def loss(w, b, net=net, params=params, last=last):
            p = {**params, f"{last}.weight": w, f"{last}.bias": b}
            return F.cross_entropy(torch.func.functional_call(net, p, (xs.double(),)), ys)

        W, b = params[f"{last}.weight"], params[f"{last}.bias"]
        H = torch.func.hessian(loss, argnums=(0, 1))(W, b)
        P = W.numel()
        full = torch.cat(
            [
                torch.cat([H[0][0].reshape(P, P), H[0][1].reshape(P, -1)], 1),
                torch.cat([H[1][0].reshape(-1, P), H[1][1]], 1),
            ]
        )
        off = full - torch.diag(torch.diagonal(full))
        assert t.last_layer[0] == pytest.approx((off.norm() / full.norm()).item(), rel=1e-4)
        assert len(t.third_layer) == 2 and all(0 <= v <= 1 for v in t.third_layer)
        assert all(0 <= v <= 1 for v in t.network) and all(se >= 0 for se in t.network_se)
        # OBD's prediction: the sum of the k lowest saliencies (weights only, global)
        net = nets[t.kind][0]
        s = criteria.weight_scores("obd", net, xs, ys)
        flat = torch.cat([v.reshape(-1) for n, v in s.items() if n.endswith("weight")]).double()
        k = round(t.levels[-1].item() * len(flat))
        assert t.predicted[0, -1].item() == pytest.approx(flat.sort().values[:k].sum().item())
        assert t.zero_saliency[0] == pytest.approx((flat == 0).double().mean().item())
        assert hessian_blocks.offdiagonal_ratio(torch.eye(3)) == 0  # sanity of the measure


def _t_low(values):
    """Lower end of the 95% Student-t interval of the mean (scipy), the above() rule's test."""
    v = [float(x) for x in values]
    mean = sum(v) / len(v)
    sem = scipy.stats.sem(v)
    return mean if sem == 0 else scipy.stats.t.interval(0.95, len(v) - 1, mean, sem)[0]


def _area(curve):  # mean accuracy over the levels above 0, per seed, by a loop
    return [
        sum(a for a, f in zip(row, curve.levels.tolist(), strict=True) if f > 0)
        / sum(1 for f in curve.levels.tolist() if f > 0)
        for row in curve.accuracy.tolist()
    ]


def _check_findings(r, config, found, prefix=""):
    """Each observation's per-seed values recomputed by loops; verdict by the interval rule."""
    by = {f.claim.removeprefix(prefix): f for f in found if f.claim.startswith(prefix)}
    base, drop = study.KINDS
    c = r.curve
    mag = [_area(c(base, "magnitude", s)) for s in ("layer", "global")]
    obd = [_area(c(base, "obd", s)) for s in ("layer", "global")]
    want = {
        "Magnitude pruning degrades steadily without retraining, worse than OBD.": [
            100 * ((o1 - m1) + (o2 - m2)) / 2
            for o1, m1, o2, m2 in zip(obd[0], mag[0], obd[1], mag[1], strict=True)
        ],
        "Global ranking beats layer-wise ranking (obd).": [
            100 * (g - w) for g, w in zip(obd[1], obd[0], strict=True)
        ],
        "Global ranking beats layer-wise ranking (magnitude).": [
            100 * (g - w) for g, w in zip(mag[1], mag[0], strict=True)
        ],
    }
    others = [a for a in r.curves if a.kind == base and a.label != "obd (global)"]
    best = max(others, key=lambda a: sum(_area(a)))
    want["Global OBD is the best arm."] = [
        100 * (g - b) for g, b in zip(obd[1], _area(best), strict=True)
    ]
    plain, dropped = c(base, "obd", "global"), c(drop, "obd", "global")
    early = [i for i, f in enumerate(plain.levels.tolist()) if 0 < f <= 0.5]
    want["The dropout model is worse at first (global OBD)."] = [
        100 * sum(p[i] - d[i] for i in early) / len(early)
        for p, d in zip(plain.accuracy.tolist(), dropped.accuracy.tolist(), strict=True)
    ]
    terms = {t.kind: t for t in r.cross_terms}
    want["Dropout strengthens the Hessian's cross terms, which OBD neglects."] = [
        d - n for d, n in zip(terms[drop].last_layer, terms[base].last_layer, strict=True)
    ]
    for claim, values in want.items():
        f = by[claim]
        assert f.estimate.mean == pytest.approx(sum(values) / len(values), abs=1e-9), claim
        assert f.estimate.low == pytest.approx(_t_low(values), abs=1e-9), claim
        assert f.verdict == ("holds" if _t_low(values) > 0 else "differs"), claim
    heavy = by["The dropout model is better under heavy pruning (global OBD)."]
    assert heavy.verdict == ("holds" if heavy.estimate.low > 0 else "differs")
    return by


def test_findings_follow_the_rule_on_recomputed_values(tiny):
    config, r, _, _, _ = tiny
    found = study.findings(r, config)
    by = _check_findings(r, config, found)
    assert len(by) == 8  # 7 observations and one not measured
    assert [f.verdict for f in found if f.verdict == "not measured"] == ["not measured"]
    titles = {s.title for s in study.sections(r, config)}
    assert all(f.section in titles for f in found if f.verdict != "not measured")
    h = study.headline(r)
    assert h["test accuracy (dropout)"] == pytest.approx(sum(r.test_accuracy["dropout"]) / 2)
    plain = r.curve(study.KINDS[0], "obd", "global")
    assert h["accuracy at 90%, obd global (no dropout)"] == pytest.approx(
        plain.accuracy[:, -1].mean().item()
    )


def _synthetic(obd_global, rival):
    """Results by hand: 2 seeds, levels 0, 0.5, 0.9; accuracies per seed as given."""
    levels = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)

    def curve(kind, crit, scope, rows):
        acc = torch.tensor(rows, dtype=torch.float64)
        return study.Curve(kind, crit, scope, levels, acc, 1 - acc)

    low = [[1.0, 0.5, 0.1], [1.0, 0.5, 0.1]]
    plain = study.KINDS[0]
    curves = [
        curve(plain, "magnitude", "layer", low),
        curve(plain, "magnitude", "global", rival),
        curve(plain, "obd", "layer", low),
        curve(plain, "obd", "global", obd_global),
        curve(study.KINDS[1], "obd", "global", low),
    ]
    terms = [
        study.CrossTerms(k, [0.5, 0.6], [0.5, 0.6], [0.5, 0.6], [0.0, 0.0], [0.0, 0.0],
                         levels, torch.ones(2, 3), torch.ones(2, 3))
        for k in study.KINDS
    ]  # fmt: skip
    return study.Results(
        (784, 10), 7840, 10, 10, 10, [0, 1], {k: [0.0, 0.0] for k in study.KINDS},
        {k: [1.0, 1.0] for k in study.KINDS}, curves, [], [], terms,
    )  # fmt: skip


def test_a_positive_mean_whose_interval_holds_zero_differs():
    """Global OBD ahead of its best rival by +5 and -3 points: the mean is positive, the
    interval over the two seeds holds 0, so the verdict must be 'differs' (a planted rule that
    reads the mean alone would say 'holds'); clearly ahead on both seeds: 'holds'."""
    config = study.Config(convnet=False)
    r = _synthetic([[1.0, 0.9, 0.8], [1.0, 0.9, 0.8]], [[1.0, 0.85, 0.75], [1.0, 0.9, 0.86]])
    best = next(f for f in study.findings(r, config) if f.claim == "Global OBD is the best arm.")
    assert best.estimate.mean == pytest.approx(1.0) and best.estimate.low < 0
    assert best.verdict == "differs"
    r = _synthetic([[1.0, 0.9, 0.8], [1.0, 0.9, 0.8]], [[1.0, 0.85, 0.65], [1.0, 0.84, 0.66]])
    best = next(f for f in study.findings(r, config) if f.claim == "Global OBD is the best arm.")
    assert best.estimate.mean == pytest.approx(10.0) and best.verdict == "holds"
    cross = next(f for f in study.findings(r, config) if "cross terms" in f.claim)
    assert cross.verdict == "differs" and cross.estimate.mean == 0  # equal shares


def test_report_renders_and_results_round_trip(tiny, monkeypatch):
    config, r, _, _, out = tiny
    monkeypatch.setitem(report.STUDIES, study.NAME, study)
    report.write_run(study, config, r, out)
    loaded, config2, r2, raw = report.load_run(out)
    assert loaded is study and config2 == config
    torch.testing.assert_close(r2.curves[3].accuracy, r.curves[3].accuracy.float())
    assert [f["verdict"] for f in raw["findings"]] == [f.verdict for f in study.findings(r, config)]
    assert r2.cross_terms[1].last_layer == r.cross_terms[1].last_layer


def test_config_validation():
    with pytest.raises(ValueError, match="criterion"):
        study.Config(extra=("nope",))
    with pytest.raises(ValueError, match="seeds"):
        study.Config(seeds=1)
    with pytest.raises(ValueError, match="widths"):
        study.Config(widths=(10, 5, 10))


# --- the LeNet-5 arm -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    config = study.Config(
        **CONFIG
        | {
            "convnet": True,
            "lenet5_epochs": 1,
            "lenet5_finetune_epochs": 1,
            "lenet5_score_samples": 200,
            "lenet5_extra": ("snip",),
        }
    )
    out = tmp_path_factory.mktemp("run")
    results = study.run(config, out, progress=False)
    split = data.load("mnist5k", seed=0, n_train=300, n_test=200)
    nets = {}  # the same recipe, trained again (train.fit is deterministic)
    for kind, p in zip(study.KINDS, (0.0, config.dropout)):
        nets[kind] = [models.lenet5(dropout=p, seed=k) for k in range(2)]
        for k, net in enumerate(nets[kind]):
            train.fit(
                net,
                split.train,
                epochs=1,
                lr=config.lenet5_lr,
                batch_size=config.batch_size,
                seed=k,
                progress=False,
            )
    return config, results, split, nets, out


def test_lenet5_curves_equal_pruning_one_level_at_a_time(lenet):
    config, r, split, nets, _ = lenet
    c = r.convnet
    assert c.arch == "LeNet-5" and c.widths == (1, 6, 16, 120, 84, 10)
    assert c.conv_weights == 6 * 25 + 16 * 6 * 25 and c.weights == c.conv_weights + sum(
        a * b for a, b in ((400, 120), (120, 84), (84, 10))
    )
    xs, ys = split.train.x[:200], split.train.y[:200]
    for kind in study.KINDS:
        for k, net in enumerate(nets[kind]):
            assert c.test_accuracy[kind][k] == train.evaluate(net, split.test)["accuracy"]
    checks = [
        (study.KINDS[0], "obd", "global", 0.5),
        (study.KINDS[0], "magnitude", "layer", 0.7),
        (study.KINDS[1], "snip", "global", 0.3),
    ]
    for kind, crit, scope, level in checks:
        curve = c.curve(kind, crit, scope)
        i = _index(curve.levels, level)
        for k, net in enumerate(nets[kind]):
            scores = criteria.weight_scores(crit, net, xs, ys)
            pruned = surgery.strip(net, surgery.prune_weights(net, scores, level, scope=scope))
            got = train.evaluate(pruned, split.test)
            assert curve.accuracy[k, i].item() == pytest.approx(got["accuracy"], abs=1e-12)
            assert curve.loss[k, i].item() == pytest.approx(got["loss"], rel=1e-5)


def test_lenet5_cross_terms_are_the_exact_blocks(lenet):
    _, r, split, nets, _ = lenet
    xs, ys = split.train.x[:200], split.train.y[:200]
    for t in r.convnet.cross_terms:
        net = nets[t.kind][0]
        for layer, got in ((-1, t.last_layer[0]), (1, t.third_layer[0])):
            H = hessian_blocks.layer_hessian(net, xs, ys, layer)
            assert got == pytest.approx(hessian_blocks.offdiagonal_ratio(H), rel=1e-6)
        assert t.second == "the second conv layer"
    assert [t.second for t in r.cross_terms] == ["the layer before it"] * 2


def test_lenet5_findings_report_and_round_trip(lenet, monkeypatch):
    config, r, _, _, out = lenet
    found = study.findings(r, config)
    _check_findings(r.convnet, config, found, "LeNet-5: ")
    assert sum(f.claim.startswith("LeNet-5: ") for f in found) == 7
    titles = {s.title for s in study.sections(r, config)}
    assert all(f.section in titles for f in found if f.verdict != "not measured")
    monkeypatch.setitem(report.STUDIES, study.NAME, study)
    report.write_run(study, config, r, out)
    _, _, r2, _ = report.load_run(out)
    assert [f.verdict for f in study.findings(r2, config)] == [f.verdict for f in found]
    torch.testing.assert_close(r2.convnet.curves[0].accuracy, r.convnet.curves[0].accuracy.float())

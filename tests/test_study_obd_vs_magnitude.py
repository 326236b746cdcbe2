"""The obd-vs-magnitude study on a tiny config: its numbers against independent computations."""

import copy
import math

import pytest
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
    _, r, _, _, _ = tiny
    assert len(r.fine_tuned) == 4  # (magnitude, obd) x 2 models
    for f in r.fine_tuned:
        curve = r.curve(f.kind, f.criterion, "global")
        i = _index(curve.levels, 0.5)
        torch.testing.assert_close(f.before[:, 0], curve.accuracy[:, i])
        assert f.after.shape == (2, 1) and ((f.after >= 0) & (f.after <= 1)).all()


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


def test_findings_and_headline(tiny):
    _, r, _, _, _ = tiny
    assert len(r.findings) == 7
    for f in r.findings:
        assert f.verdict in ("reproduced", "same direction, not significant", "not reproduced")
        assert math.isfinite(f.value) and f.half >= 0
    h = study.headline(r)
    assert h["test accuracy (dropout)"] == pytest.approx(sum(r.test_accuracy["dropout"]) / 2)
    plain = r.curve(study.KINDS[0], "obd", "global")
    assert h["accuracy at 90%, obd global (no dropout)"] == pytest.approx(
        plain.accuracy[:, -1].mean().item()
    )


def test_report_renders_and_results_round_trip(tiny, monkeypatch):
    config, r, _, _, out = tiny
    monkeypatch.setitem(report.STUDIES, study.NAME, study)
    report.write_run(study, config, r, out)
    html = (out / "report.html").read_text()
    assert "The source&#x27;s observations, checked" in html or "observations, checked" in html
    assert html.count("<img") >= 5
    loaded, config2, r2, _ = report.load_run(out)
    assert loaded is study and config2 == config
    torch.testing.assert_close(r2.curves[3].accuracy, r.curves[3].accuracy.float())
    assert r2.findings[0] == r.findings[0]
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
    assert len(r.convnet.findings) == len(r.findings) == 7
    assert [f.claim for f in r.convnet.findings] == [f.claim for f in r.findings]
    monkeypatch.setitem(report.STUDIES, study.NAME, study)
    report.write_run(study, config, r, out)
    assert (out / "lenet5_accuracy_vs_sparsity.png").exists()
    _, _, r2, _ = report.load_run(out)
    assert r2.convnet.findings == r.convnet.findings
    torch.testing.assert_close(r2.convnet.curves[0].accuracy, r.convnet.curves[0].accuracy.float())

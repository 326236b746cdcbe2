"""The relevance study on a tiny config: its numbers against independent computations."""

import numpy as np
import pytest
import scipy.stats
import torch

from prunelab import alignment, data, decoy, models, report, train
from prunelab import relevance as rel
from prunelab.studies import relevance, toy_nets

CONFIG = relevance.Config(
    circle_epochs=3,
    spirals_epochs=2,
    grid=12,
    blame_nodes=4,
    images="digits",
    image_hidden=(16,),
    image_epochs=3,
    samples=2,
    agreement_samples=40,
    decoy_hidden=(16,),
    patch=2,
    weights=(5.0,),
    corners=("top_left", "centre"),
    seeds=2,
    sweep_per_level=1,
    convnet_epochs=2,
    convnet_decoy_epochs=2,
    convnet_weights=(5.0,),
    convnet_corners=("top_left",),
    convnet_seeds=1,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return relevance.run(CONFIG, out, progress=False), out


def test_plane_maps_against_autograd(tiny):
    r, _ = tiny
    toy = toy_nets.Config(seed=0, circle_epochs=3, spirals_epochs=2)
    model = toy_nets.circle_net(toy)
    G, m = CONFIG.grid, r.methods
    grid = data.grid(G, CONFIG.lim)
    for point in (0, 37, G * G - 1):
        x = grid[point : point + 1].clone().requires_grad_(True)
        f = model(x)[0, relevance.TARGET_CLASS]
        (g,) = torch.autograd.grad(f, x)
        i, j = divmod(point, G)  # row i: x1, column j: x0
        got = r.circle.input[m.index("gradient"), :, i, j]
        torch.testing.assert_close(got, g[0], rtol=1e-5, atol=1e-6)
        assert r.circle.logit[i, j].item() == pytest.approx(f.item(), rel=1e-5, abs=1e-6)
    # blame_bias conserves: input relevance plus every layer's bias relevance is the logit
    bb = m.index("blame_bias")
    total = r.circle.input[bb].sum(0) + r.circle.blame_layers.sum(0)
    torch.testing.assert_close(total, r.circle.logit, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(r.circle.bias[bb], r.circle.blame_layers.sum(0))


def test_bias_blame_lives_where_the_unit_is_on(tiny):
    r, _ = tiny
    for p in (r.circle, r.spirals):
        assert len(p.blame_shown) == 4 and p.blame.shape == (4, CONFIG.grid, CONFIG.grid)
        assert (p.blame[~p.blame_active] == 0).all()
        assert p.dominant.max() < len(p.blame_names)
        assert len(p.blame_names) == sum(p.widths[1:])
        on = [u for k, u in enumerate(p.blame_shown) if p.blame_active[k].all()]
        assert p.always_on == sum(not p.blame_names[u].startswith("out") for u in on)
        peaks = [max(abs(v) for v in layer.flatten().tolist()) for layer in p.blame_layers]
        assert p.layer_peaks == pytest.approx(peaks)
        assert p.logit_peak == pytest.approx(max(abs(v) for v in p.logit.flatten().tolist()))
    assert r.circle.blame_names[-1] == "out.1" and r.spirals.blame_names[0] == "h1.0"


def test_image_tables(tiny):
    r, _ = tiny
    im, m = r.images, r.methods
    assert im.input.shape == (len(m), 2, 64) and im.n_scored == 40
    assert im.error_total[m.index("blame_bias")] < 1e-4
    assert im.error_total[m.index("gradient")] > 1e-2
    for a in (im.agreement_spearman, im.agreement_pearson):
        torch.testing.assert_close(a, a.T)
        torch.testing.assert_close(a.diagonal(), torch.ones(len(m), dtype=a.dtype))
    assert im.agreement_pearson[m.index("lrp_0"), m.index("gradient_x_input")] > 0.999


def test_decoy_arms_against_plain_train_fit(tiny):
    r, _ = tiny
    assert [d.corner for d in r.decoys] == ["top_left", "centre"]
    assert torch.equal(r.decoys[1].region, decoy.patch_region(8, 2, "centre"))
    d = r.decoys[0]
    split = data.load("digits", seed=0)
    n_dev = relevance.n_dev(split, CONFIG)
    task = decoy.decoy_task(split, decoy.patch_region(8, 2), seed=0, dev=n_dev)
    assert d.n_dev == n_dev == len(task.dev) and len(task.train) == len(split.train) - n_dev
    arms = {a.name: a for a in d.arms}
    assert list(arms) == ["random patch (reference)", "plain", "penalty 5"]
    for name, ds in (("plain", task.train), ("random patch (reference)", task.train_random)):
        for s, seed in enumerate(d.seeds):
            model = models.mlp((64, 16, 10), seed=seed)
            train.fit(model, ds, epochs=3, lr=CONFIG.lr, batch_size=32, seed=seed, progress=False)
            scores = decoy.scores(model, task)
            assert arms[name].accuracy[s].item() == pytest.approx(scores["accuracy"])
            assert arms[name].follow_rate[s].item() == pytest.approx(scores["follow_rate"])
            dev = train.evaluate(model, task.dev)["accuracy"]  # held out of training
            assert arms[name].accuracy_dev[s].item() == pytest.approx(dev)
    pen = arms["penalty 5"]
    assert pen.penalty.shape == (2, 3) and pen.sweep_follow.shape == (2, len(d.sweep_values))
    assert ((pen.share >= 0) & (pen.share <= 1)).all()


def _lenet(train_data, epochs: int, seed: int = 0):
    """The study's LeNet-5 recipe, re-trained (train.fit is deterministic for a seed)."""
    model = models.lenet5(in_shape=(1, 8, 8), seed=seed)
    train.fit(model, train_data, epochs=epochs, lr=CONFIG.convnet_lr, batch_size=32, seed=seed,
              progress=False)  # fmt: skip
    return model


@pytest.fixture(scope="module")
def lenet():
    split = data.load("digits", seed=0)
    return _lenet(split.train, CONFIG.convnet_epochs), split.test.x[: CONFIG.agreement_samples]


def test_convnet_maps_equal_explain(tiny, lenet):
    r, _ = tiny
    model, x = lenet
    c, m = r.convnet, r.methods
    assert c.model == "LeNet-5" and c.input.shape == (len(m), 2, 64) and c.n_scored == 40
    assert c.widths == (64, 6, 16, 120, 84, 10)
    for i, method in enumerate(m):
        e = rel.explain(model, x, method=method)
        torch.testing.assert_close(c.input[i], e.input.flatten(1)[:2], rtol=1e-5, atol=1e-6)
        err = ((e.total - e.output).abs() / e.output.abs()).median()
        torch.testing.assert_close(c.error_total[i], err, rtol=1e-4, atol=1e-7)
    assert c.test_accuracy == pytest.approx(
        train.evaluate(model, data.load("digits").test)["accuracy"]
    )
    # blame_bias conserves on the convnet: input + every bias map = f_t(x), float32
    e = rel.explain(model, x, method="blame_bias")
    total = e.input.sum((1, 2, 3)) + sum(b.flatten(1).sum(1) for b in e.bias)
    assert ((total - e.output).abs() / e.output.abs()).max() < 1e-5
    assert c.error_total_max[m.index("blame_bias")] < 1e-5


def test_bias_blame_per_channel(tiny, lenet):
    r, _ = tiny
    model, x = lenet
    b = r.blame
    e = rel.explain(model, x, method="blame_bias")
    assert b.layers == ["conv1", "conv2", "fc1", "fc2", "out"] and b.conv == [1, 1, 0, 0, 0]
    assert [len(ch) for ch in b.channel] == [6, 16, 120, 84, 10]
    for k, bias in enumerate(e.bias):
        per_unit = bias.sum((2, 3)) if bias.dim() == 4 else bias  # [N, C_l]: over positions
        torch.testing.assert_close(b.channel[k], per_unit.mean(0), rtol=1e-5, atol=1e-6)
        share = (per_unit.sum(1) / e.output).mean()
        torch.testing.assert_close(b.layer_share[k], share, rtol=1e-5, atol=1e-6)
    assert b.input_share == pytest.approx((e.input.sum((1, 2, 3)) / e.output).mean().item())
    assert b.input_share + b.layer_share.sum().item() == pytest.approx(1.0, abs=1e-5)
    conv = [s for s, c in zip(b.layer_share.tolist(), b.conv, strict=True) if c]
    assert b.conv_share == pytest.approx(sum(conv))
    shares = [abs(s) for s in b.layer_share.tolist()]
    assert b.largest_layer == b.layers[shares.index(max(shares))]


def test_max_rules_equal_explain_with_each_rule(tiny, lenet):
    r, _ = tiny
    model, x = lenet
    mr = r.max_rules
    assert mr.methods == list(CONFIG.rule_methods) and mr.pearson.shape == (2, 40)
    for k, method in enumerate(mr.methods):
        g = rel.explain(model, x, method=method, rules={"maximum": "gradient"})
        a = rel.explain(model, x, method=method, rules={"maximum": "radial"})
        torch.testing.assert_close(mr.gradient[k], g.input.flatten(1)[:2])
        torch.testing.assert_close(mr.radial[k], a.input.flatten(1)[:2])
        for n in (0, 17, 39):
            p = np.corrcoef(g.input[n].detach().flatten(), a.input[n].detach().flatten())[0, 1]
            assert mr.pearson[k, n].item() == pytest.approx(p, abs=1e-9)
        p = [v for v in mr.pearson[k].tolist() if not np.isnan(v)]
        lower_middle = sorted(p)[(len(p) - 1) // 2]  # torch's median of an even count
        assert mr.pearson_median[k] == pytest.approx(lower_middle) and mr.pearson_min[k] == min(p)
        for got, errors in (
            (mr.error_median_gradient[k], mr.error_gradient[k]),
            (mr.error_median_radial[k], mr.error_radial[k]),
            (mr.bias_median_gradient[k], mr.bias_gradient[k]),
        ):
            assert got == pytest.approx(sorted(errors.tolist())[(len(errors) - 1) // 2])
        for got, e in ((mr.error_gradient[k], g), (mr.error_radial[k], a)):
            torch.testing.assert_close(got, (e.total - e.output).abs() / e.output.abs())
            assert got.max() < 1e-4  # both rules pass R(b) on whole
    assert (mr.pearson < 1 - 1e-6).any()  # the radial rule moves relevance


def test_convnet_decoy_against_a_retrained_lenet(tiny):
    r, _ = tiny
    (d,) = r.convnet_decoys
    assert d.model == "LeNet-5" and d.corner == "top_left" and d.seeds == [0]
    arms = {a.name: a for a in d.arms}
    assert list(arms) == ["random patch (reference)", "plain", "penalty 5"]
    assert all(a.weight_ratio is None for a in d.arms)  # a first Conv2d: not applicable
    split = data.load("digits", seed=0)
    region = decoy.patch_region(8, 2)
    task = decoy.decoy_task(split, region, seed=0, dev=relevance.n_dev(split, CONFIG))
    model = models.lenet5(in_shape=(1, 8, 8), seed=0)
    history = alignment.fit_penalised(
        model, task.train, region=region, weight=5.0, epochs=2, lr=CONFIG.convnet_lr,
        batch_size=32, seed=0, progress=False,
    )  # fmt: skip
    pen = arms["penalty 5"]
    scores = decoy.scores(model, task)
    for key in ("accuracy", "accuracy_true", "accuracy_swapped", "changed", "follow_rate"):
        assert getattr(pen, key)[0].item() == pytest.approx(scores[key])
    torch.testing.assert_close(pen.penalty[0], torch.tensor(history.penalty))
    share = alignment.relevance_share(model, task.test_true.x, region, method="deeplift").mean()
    assert pen.share[0, r.methods.index("deeplift")].item() == pytest.approx(share.item(), abs=1e-6)
    plain = _lenet(task.train, 2)
    assert arms["plain"].accuracy[0].item() == pytest.approx(decoy.scores(plain, task)["accuracy"])
    with pytest.raises(ValueError, match="Conv2d"):
        decoy.patch_weight_ratio(plain, region)


def test_results_and_findings_round_trip(tiny, monkeypatch):
    r, out = tiny
    monkeypatch.setitem(report.STUDIES, relevance.NAME, relevance)
    report.write_run(relevance, CONFIG, r, out)
    study, config2, r2, raw = report.load_run(out)
    assert config2 == CONFIG
    torch.testing.assert_close(r2.circle.input, r.circle.input)
    assert torch.equal(r2.circle.blame_active, r.circle.blame_active)
    assert torch.equal(r2.decoys[1].region, r.decoys[1].region)
    assert r2.decoys[0].arms[1].name == "plain" and r2.decoys[0].selected == r.decoys[0].selected
    assert r2.images.widths == r.images.widths
    torch.testing.assert_close(r2.convnet.input, r.convnet.input)
    for a, b in zip(r2.blame.channel, r.blame.channel, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(r2.max_rules.pearson, r.max_rules.pearson, check_dtype=False)
    assert r2.convnet_decoys[0].model == "LeNet-5"
    assert r2.convnet_decoys[0].arms[2].weight_ratio is None
    torch.testing.assert_close(r2.decoys[0].arms[0].weight_ratio, r.decoys[0].arms[0].weight_ratio)
    found = relevance.findings(r, CONFIG)
    assert [f["verdict"] for f in raw["findings"]] == [f.verdict for f in found]
    assert [f.verdict for f in relevance.findings(r2, config2)] == [f.verdict for f in found]
    titles = {s.title for s in relevance.sections(r, CONFIG)}
    assert all(f.section in titles for f in found if f.section)  # every link has its target
    h = relevance.headline(r)
    assert h["LeNet-5 test accuracy"] == r.convnet.test_accuracy


def _finding(found, start):
    (f,) = [f for f in found if f.claim.startswith(start)]
    return f


def test_classifier_findings_against_explain(tiny, lenet):
    """LeNet-5: LRP-0 vs gradient x input (numpy Pearson per image) and the share of images
    whose blame_bias relevance sums to the logit within the tolerance, from explain directly."""
    r, _ = tiny
    model, x = lenet
    found = relevance.findings(r, CONFIG)
    lrp = rel.explain(model, x, method="lrp_0").input.flatten(1).detach()
    gxi = rel.explain(model, x, method="gradient_x_input").input.flatten(1).detach()
    p = np.mean([np.corrcoef(lrp[n], gxi[n])[0, 1] for n in range(len(x))])
    f = _finding(found, "LeNet-5: LRP-0 equals gradient x input")
    assert f.estimate.mean == pytest.approx(p, abs=1e-6) and (f.verdict == "holds") == (p > 0.999)
    e = rel.explain(model, x, method="blame_bias")
    err = ((e.total - e.output).abs() / e.output.abs()).detach().tolist()
    share = sum(v <= relevance.CONSERVATION_TOL for v in err) / len(err)
    f = _finding(found, "LeNet-5: with every bias as an input")
    assert f.estimate.mean == pytest.approx(share) and (f.verdict == "holds") == (share > 0.99)


def test_composed_maximum_finding_by_loops(tiny, lenet):
    """The two constructions of the maximum on every window of the LeNet-5's first max pool,
    windows cut out by hand, against the mean training image and a black one."""
    r, _ = tiny
    model, x = lenet
    split = data.load("digits", seed=0)
    body = model[:2]  # conv1, ReLU: the input of the first max pool
    with torch.no_grad():
        a = body(x)
        shares = []
        for ref_image in (split.train.x.mean(0, keepdim=True), torch.zeros_like(x[:1])):
            b = body(ref_image)[0]
            win, ref = [], []
            N, C, H, W = a.shape
            for n in range(N):
                for c in range(C):
                    for i in range(0, H, 2):
                        for j in range(0, W, 2):
                            win.append(a[n, c, i : i + 2, j : j + 2].flatten())
                            ref.append(b[c, i : i + 2, j : j + 2].flatten())
            win, ref = torch.stack(win), torch.stack(ref)
            soft = rel.composed_max_relevance(win, ref, form="softmax", softness=1e-4)
            hard = rel.composed_max_relevance(win, ref, form="relu")
            dm = (win.amax(1) - ref.amax(1)).abs()
            moved = dm > 0
            d = (soft - hard).abs().sum(1)[moved] / (2 * dm[moved])
            shares.append(((d > relevance.DISAGREE).double().mean().item(), int(moved.sum())))
    mr = r.max_rules
    assert mr.composed_share == pytest.approx(shares[0][0], abs=1e-3)
    assert mr.composed_windows == shares[0][1]
    assert mr.composed_share_black == pytest.approx(shares[1][0], abs=1e-3)
    f = _finding(relevance.findings(r, CONFIG), "the two constructions of the maximum")
    assert (f.verdict == "holds") == (shares[0][0] > 0.01)


def test_decoy_findings_follow_their_rules(tiny):
    """Per decoy: the penalised arm picked on the dev split, the seed-paired differences, and
    verdicts from the stated thresholds on scipy's t interval."""
    r, _ = tiny
    found = relevance.findings(r, CONFIG)
    for d in (*r.decoys, *r.convnet_decoys):
        arms = {a.name: a for a in d.arms}
        pen = [a for a in d.arms if a.weight > 0]
        means = [a.accuracy_dev.mean().item() for a in pen]
        assert d.selected == pen[means.index(max(means))].name  # dev, never test
        chosen, plain = arms[d.selected], arms["plain"]
        ref = arms["random patch (reference)"]
        k = r.methods.index(d.method)
        where = f"{d.model}, patch in the {'centre' if d.corner == 'centre' else 'top left corner'}"
        for start, values, threshold, above in (
            ("training against", chosen.share[:, k] - 0.5 * plain.share[:, k], 0.0, False),
            ("the penalised net games", chosen.changed - ref.changed, 0.05, True),
        ):
            f = _finding(found, f"{where}: {start}")
            v = values.double().tolist()
            mean = sum(v) / len(v)
            assert f.estimate.mean == pytest.approx(mean)
            if len(v) > 1:
                low, high = scipy.stats.t.interval(
                    0.95, len(v) - 1, loc=mean, scale=scipy.stats.sem(v)
                )
            else:
                low = high = mean
            assert (f.verdict == "holds") == ((low > threshold) if above else (high < threshold))


def test_a_collapsed_pick_is_said_in_the_decoy_findings(tiny):
    import dataclasses

    r, _ = tiny
    d = r.decoys[0]
    arms = [
        dataclasses.replace(a, accuracy_clean=torch.full_like(a.accuracy_clean, 0.1))
        if a.name == d.selected
        else a
        for a in d.arms
    ]
    ref = next(a for a in d.arms if a.weight == 0 and a.trained_on == "random patch")
    assert 0.5 * ref.accuracy_clean.mean().item() > 0.1  # the rule: below half the reference
    found = relevance._decoy_findings(dataclasses.replace(d, arms=arms), r.methods)
    assert all("collapsed: clean test accuracy 0.100" in f.detail for f in found)
    assert not any("collapsed" in f.detail for f in relevance._decoy_findings(d, r.methods))

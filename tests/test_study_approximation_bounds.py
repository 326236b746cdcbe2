"""The approximation-bounds study on a tiny config: its numbers against independent computations."""

import math

import pytest
import torch
from torch import nn

from prunelab import checkpoint, coreset, data, models, report, train
from prunelab.methods import coreset_eval
from prunelab.studies import approximation_bounds as ab

CONFIG = dict(
    seeds=1,
    regimes=("plain", "dropout"),
    epochs=2,
    n_train=600,
    n_dev=300,
    draws=2,
    shares=(0.5, 0.9),
    alpha_share=0.5,
    sensitivity_points=100,
    keep=(0.2,),
    l0_penalties=(0.03,),
    l0_epochs=1,
    finetune_epochs=1,
    ball_points=50,
    alphas=(1.0, 2.0),
    layer_eps=(10.0,),
    arch="none",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = ab.Config(**CONFIG)
    out = tmp_path_factory.mktemp("run")
    return config, ab.run(config, out, progress=False), out


@pytest.fixture(scope="module")
def plain_net():
    """The plain net retrained by ``train.fit`` (the study trains with ``fit_many``)."""
    split = data.load("mnist5k", seed=0, n_train=600, n_test=300)
    net = models.mlp(ab.WIDTHS, seed=0)
    train.fit(net, split.train, epochs=2, lr=1e-3, batch_size=128, seed=0, progress=False)
    return net.double().eval(), split


def _mussay_by_hand(net, split):
    """Logits, beta and F = sum_p max_i |W3[i, p]| beta ||[W2_p, b2_p]|| written out directly."""
    W1, b1 = net[0].weight.detach(), net[0].bias.detach()
    W2, b2 = net[2].weight.detach(), net[2].bias.detach()
    W3 = net[4].weight.detach()
    x = torch.cat((split.train.x, split.test.x)).double().flatten(1)
    a = torch.relu(x @ W1.T + b1)
    beta = max(math.sqrt(float(row @ row) + 1) for row in a)
    F = sum(
        float(W3[:, p].abs().max()) * beta * math.sqrt(float(W2[p] @ W2[p] + b2[p] ** 2))
        for p in range(W2.shape[0])
    )
    with torch.no_grad():
        f = net(split.test.x.double().flatten(1))
    return f, beta, F


def test_epsilon_first_neuron_bound_and_samples_by_hand(tiny, plain_net):
    config, r, _ = tiny
    net, split = plain_net
    f, beta, F = _mussay_by_hand(net, split)
    y = split.test.y
    top = f.topk(2, dim=1).values
    half_gaps = sorted(
        ((top[n, 0] - top[n, 1]) / 2).item() for n in range(len(y)) if f[n].argmax() == y[n]
    )[::-1]
    assert r.regimes[0].beta[0] == pytest.approx(beta, rel=1e-4)
    assert r.regimes[0].scale[0] == pytest.approx(F, rel=1e-3)
    for row in (e for e in r.epsilon_first if e.regime == "plain" and e.method == ab.NEURONS):
        k = math.ceil(row.share * len(half_gaps))
        E = half_gaps[k - 1]
        assert row.bound[0] == pytest.approx(E, rel=1e-3)
        eps = row.bound[0] / r.regimes[0].scale[0]
        # signed Hoeffding with a union bound over the 10 logits
        assert row.samples[0] == math.ceil(2 * math.log(2 * 10 / config.delta) / eps**2)
        assert row.sparsity == [0.0] * config.draws  # with ~1e5 draws every neuron is drawn
        assert row.violation <= config.delta and row.error_mean < row.bound[0]


def test_dev_accuracy_and_the_nominal_weight_bound(tiny, plain_net):
    _, r, _ = tiny
    net, split = plain_net
    dev = data.Dataset(split.test.x.double(), split.test.y, "dev", 10)
    assert r.regimes[0].accuracy[0] == pytest.approx(train.evaluate(net, dev)["accuracy"], abs=2e-3)
    with torch.no_grad():
        f = net(dev.x.flatten(1))
    y = dev.y
    t = f.argmax(1)
    top = f.topk(2, dim=1).values
    crit = [  # eps*(x) = gap / (2 max_c |f_c|) among the correct examples
        ((top[n, 0] - top[n, 1]) / (2 * f[n].abs().max())).item()
        for n in range(len(y))
        if t[n] == y[n]
    ]
    crit.sort(reverse=True)
    for row in (e for e in r.epsilon_first if e.regime == "plain" and e.method == ab.WEIGHTS):
        assert row.nominal[0] == pytest.approx(crit[math.ceil(row.share * len(crit)) - 1], rel=1e-3)
        assert row.bound[0] <= row.nominal[0]  # cancelling parts need a smaller eps
        assert row.samples[0] >= row.nominal_samples[0]
        assert row.violation <= 0.1


def test_sparsity_first_implied_bound_is_the_inverse_of_hoeffding(tiny):
    config, r, _ = tiny
    F = {g.name: g.scale[0] for g in r.regimes}
    for row in r.sparsity_first:
        if row.method == ab.NEURONS:
            assert row.sparsity == [1 - round(row.keep * 100) / 100] * config.draws
            for m, implied in zip(row.samples, row.implied, strict=True):
                eps = math.sqrt(2 * math.log(2 * 10 / config.delta) / m)
                assert implied == pytest.approx(eps * F[row.regime], rel=1e-9)
        assert all(0 <= s <= 1 for s in row.implied_share + row.preserved + row.accuracy)
        assert all(g <= p + 1e-12 for g, p in zip(row.implied_share, row.preserved, strict=True))
        implied = sum(row.implied) / len(row.implied)  # one seed: its draws
        assert row.ratio[0] == pytest.approx(implied / row.raw_mean)


def test_heuristics_are_matched_in_sparsity(tiny):
    _, r, _ = tiny
    by = {(t.regime, t.method, t.level): t for t in r.finetune}
    for regime in ("plain", "dropout"):
        rand, mag = by[(regime, "SiPP (random)", 0.2)], by[(regime, "magnitude", 0.2)]
        det = by[(regime, "SiPP (deterministic)", 0.2)]
        assert mag.sparsity == rand.sparsity
        assert abs(det.sparsity[0] - rand.sparsity[0]) <= 10 / 1000  # per-row rounding
        assert math.isnan(mag.guaranteed[0]) and 0 <= det.guaranteed[0] <= det.before[0] + 1e-12
        l0 = by[(regime, "L0", 0.03)]
        if (regime, "Mussay coreset", 0.03) in by:
            assert by[(regime, "Mussay coreset", 0.03)].sparsity == l0.sparsity


def test_alpha_one_reproduces_epsilon_first(tiny):
    _, r, _ = tiny
    one = next(a for a in r.alpha if a.alpha == 1.0)
    row = next(
        e
        for e in r.epsilon_first
        if e.regime == r.alpha_regime and e.method == ab.NEURONS and e.share == r.alpha_share
    )
    assert one.bound == pytest.approx(row.bound) and one.samples == row.samples
    two = next(a for a in r.alpha if a.alpha == 2.0)
    assert two.scale[0] == pytest.approx(2 * one.scale[0])  # F is linear in the output weights


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match="regimes"):
        ab.Config(regimes=("plain", "l1"))
    with pytest.raises(ValueError, match="shares"):
        ab.Config(shares=(0.5, 1.5))
    with pytest.raises(ValueError, match="rule"):
        ab.Config(rule="max")


def test_report_renders_and_results_round_trip(tiny, monkeypatch):
    config, r, out = tiny
    monkeypatch.setitem(report.STUDIES, ab.NAME, ab)
    report.write_run(ab, config, r, out)
    assert (out / "report.html").is_file()
    study, config2, r2, _ = report.load_run(out)
    assert r2.vgg is None and len(r2.layerwise) == len(r.layerwise)
    for a, b in zip(r2.layerwise, r.layerwise, strict=True):
        assert {k: v for k, v in vars(a).items() if k != "ratio"} == {
            k: v for k, v in vars(b).items() if k != "ratio"
        }
        assert a.ratio == b.ratio or (math.isnan(a.ratio) and math.isnan(b.ratio))
        if b.observed > 0:  # the layer's bound over its observed error
            assert b.ratio == pytest.approx(b.eps / b.observed)
        else:
            assert math.isnan(b.ratio)
    assert config2 == config
    assert r2.epsilon_first[0].bound == r.epsilon_first[0].bound
    assert r2.finetune[0].after == r.finetune[0].after
    assert r2.regimes[0].inactive == r.regimes[0].inactive
    assert r2.tally == pytest.approx(r.tally)


def test_layer_by_layer_arm_is_the_library_call_on_the_first_net(tiny, plain_net):
    """The study's layer-by-layer rows are coreset.layer_by_layer on the plain net's dense
    layers: same targets and implied bounds, one row per layer and output bound."""
    config, r, _ = tiny
    assert [row.layer for row in r.layerwise] == [0, 1, 2] * len(config.layer_eps)
    net, split = plain_net
    stages, _ = coreset.layer_by_layer(
        net, split.train.x[:100].double().flatten(1), split.test.x.double().flatten(1),
        eps=10.0, delta=config.delta, generator=torch.Generator(), max_samples=0,
    )  # fmt: skip
    for row, st in zip(r.layerwise, stages, strict=True):
        assert row.weights == st.weights and row.implied == pytest.approx(st.implied)
        assert row.eps == pytest.approx(st.eps, rel=0.05)  # fit_many vs fit: close nets
    assert r.weight_share == pytest.approx(1000 / sum(p.numel() for p in net.parameters()))


def _tiny_convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10),
    )  # fmt: skip


def test_checkpoint_convnet_runs_on_features_computed_once(tmp_path, monkeypatch):
    """A convnet checkpoint: its head is pruned on features the extractor computes once per
    input set (train and dev), and its numbers match direct computations."""
    net = _tiny_convnet()
    split = data.load("digits", seed=0)
    train.fit(net, split.train, epochs=3, lr=1e-2, batch_size=64, seed=0, progress=False)
    path = tmp_path / "conv.safetensors"
    checkpoint.save(path, net, data="digits", seed=0)
    calls = []
    real = coreset_eval.split_head

    def counting(model, layers=2):
        extractor, head = real(model, layers)
        if layers == 2:
            extractor.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
        return extractor, head

    monkeypatch.setattr(ab.coreset_eval, "split_head", counting)
    config = ab.Config(**{**CONFIG, "checkpoint": str(path), "sensitivity_points": 50})
    r = ab.run(config, tmp_path, progress=False)
    assert sorted(calls) == sorted([len(split.train), len(split.test)])  # once per input set
    assert [g.name for g in r.regimes] == ["checkpoint"] and r.vgg is None
    assert r.widths == (64, 12, 10) and r.data == split.train.name
    assert r.weight_share == pytest.approx(120 / sum(p.numel() for p in net.parameters()))
    dev = data.Dataset(split.test.x.double(), split.test.y, "dev", 10)
    acc = train.evaluate(net.double().eval(), dev)["accuracy"]
    assert r.regimes[0].accuracy[0] == pytest.approx(acc, abs=1e-12)
    assert {row.layer for row in r.layerwise} == {0, 1}  # the two trailing dense layers


def test_checkpoint_without_a_dense_head_is_refused(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 10))
    path = tmp_path / "bad.safetensors"
    checkpoint.save(path, net, data="digits", seed=0)
    with pytest.raises(ValueError, match="must end in 2 Linear layers"):
        ab.run(ab.Config(checkpoint=str(path)), tmp_path, progress=False)


def test_vgg_arm_measures_a_thin_vgg(tmp_path):
    cfg = {**CONFIG, "arch": "vgg11", "width": 0.0625, "vgg_epochs": 1, "regimes": ("plain",)}
    config = ab.Config(**cfg)
    r = ab.run(config, tmp_path, progress=False)
    v = r.vgg
    hidden = round(512 * 0.0625)
    assert v.widths == (hidden, hidden, 10) and v.model.startswith("VGG11")
    built = models.vgg("vgg11", width=0.0625, in_shape=(1, 28, 28), dropout=0.0)
    assert v.weight_share == pytest.approx(hidden * 10 / sum(p.numel() for p in built.parameters()))
    assert v.max_samples == config.vgg_max_samples
    for row in v.epsilon_first:  # the source's rule: beyond the budget, sparsity 0
        if max(row.samples) > config.vgg_max_samples:
            assert row.sparsity == [0.0] * config.draws
    assert [row.layer for row in v.layerwise] == [0, 1, 2]


def _finding(found, start):
    (f,) = [f for f in found if f.claim.startswith(start)]
    return f


def test_findings_against_loops_over_the_results(tiny):
    """Each finding's number recomputed with plain loops over the Results (one seed), and its
    verdict from the threshold its rule states."""
    config, r, _ = tiny
    found = ab.findings(r, config)
    eps = r.epsilon_first
    for e in eps:  # one seed: the per-seed means are the pooled ones
        if e.error_seed and not math.isnan(e.error_seed[0]):
            assert e.error_seed[0] == pytest.approx(e.error_mean)
            assert e.ratio[0] == pytest.approx(e.bound[0] / e.error_mean)
        if e.method == ab.NEURONS and e.ball_seed and not math.isnan(e.ball_seed[0]):
            assert e.ball_seed[0] == pytest.approx(e.ball_mean)
    over = sum(e.samples[0] > e.size for e in eps) / len(eps)
    f = _finding(found, "epsilon-first pruning needs more draws")
    assert f.estimate.mean == pytest.approx(over) and (f.verdict == "holds") == (over > 0.5)
    ratio = min(e.bound[0] / e.error_mean for e in eps if e.error_mean > 0)
    f = _finding(found, "the bounds lie far above")
    assert f.estimate.mean == pytest.approx(ratio) and (f.verdict == "holds") == (ratio > 10)
    sparse = max(sum(e.sparsity) / len(e.sparsity) for e in eps if e.method == ab.NEURONS)
    f = _finding(found, "coreset neuron pruning reaches little")
    assert f.estimate.mean == pytest.approx(sparse) and (f.verdict == "holds") == (sparse < 0.1)
    share = max(sum(s.implied_share) / len(s.implied_share) for s in r.sparsity_first)
    f = _finding(found, "sparsity-first, the draws guarantee few")
    assert f.estimate.mean == pytest.approx(share) and (f.verdict == "holds") == (share < 0.5)
    gain = max(t.after[0] - t.before[0] for t in r.finetune)
    f = _finding(found, "fine-tuning after pruning adds")
    assert f.estimate.mean == pytest.approx(gain) and (f.verdict == "holds") == (gain > 0.5)
    by = {(t.regime, t.method, t.level): t.after[0] for t in r.finetune}
    pairs = [
        (after, by[(regime, coreset_, level)])
        for (regime, method, level), after in by.items()
        for heuristic, coreset_ in (("L0", "Mussay coreset"), ("magnitude", "SiPP (random)"))
        if method == heuristic and (regime, coreset_, level) in by
    ]
    matched = sum(h >= c - 0.01 for h, c in pairs) / len(pairs)
    f = _finding(found, "fine-tuned heuristics without a guarantee")
    assert f.estimate.mean == pytest.approx(matched) and (f.verdict == "holds") == (matched > 0.5)
    det = [t for t in r.finetune if t.method == "SiPP (deterministic)"]
    rose = sum(t.raw_after[0] > t.raw_before[0] for t in det) / len(det)
    f = _finding(found, "fine-tuning raises the raw logit error")
    assert f.estimate.mean == pytest.approx(rose) and (f.verdict == "holds") == (rose > 0.5)
    f = _finding(found, "VGG-16: the draws required exceed")  # the VGG arm is off
    assert f.verdict == "not measured" and "arch none" in f.detail
    by = {g.name: g for g in r.regimes}
    diff = by["dropout"].sensitivity[0] - by["plain"].sensitivity[0]
    f = _finding(found, "dropout raises the sensitivities")
    assert f.estimate.mean == pytest.approx(diff) and (f.verdict == "holds") == (diff > 0)
    drop = max(
        sum(e.sparsity) / len(e.sparsity)
        for e in eps
        if e.regime == "dropout" and e.method == ab.NEURONS
    )
    f = _finding(found, "after dropout training")
    assert f.estimate.mean == pytest.approx(drop) and (f.verdict == "holds") == (drop < 0.05)
    samples = [a.samples[0] for a in r.alpha]
    f = _finding(found, "our reading of Fig. 12")
    assert f.estimate.mean == pytest.approx(max(samples) / min(samples))
    assert (f.verdict == "holds") == (max(samples) / min(samples) < 1.2)
    ball = min(e.bound[0] / e.ball_mean for e in eps if e.method == ab.NEURONS and e.ball_mean > 0)
    f = _finding(found, "our reading of Fig. 11")
    assert f.estimate.mean == pytest.approx(ball) and (f.verdict == "holds") == (ball > 1)
    # every layer-by-layer stage was over the budget in this config: not measured, with why
    f = _finding(found, "layer by layer")
    assert all(row.skipped for row in r.layerwise) and f.verdict == "not measured"
    assert "budget" in f.detail
    sections = {s.title for s in ab.sections(r, config)}
    assert all(f.section in sections for f in found if f.section)  # every link has its target


def test_vgg_findings_are_prefixed_and_side_by_side(tiny):
    """A second arm (here the same results, but fine-tuning that adds 60 points everywhere)
    gets its own findings, prefixed, and the side-by-side table pairs each claim of the two
    arms, verdicts that differ included."""
    import dataclasses

    config, r, _ = tiny
    tuned = [dataclasses.replace(t, after=[b + 0.6 for b in t.before]) for t in r.finetune]
    twin = dataclasses.replace(r, model="VGG11 ×0.0625", finetune=tuned)
    both = dataclasses.replace(r, vgg=twin)
    found = ab.findings(both, config)
    mine = [f for f in ab.findings(r, config) if not f.claim.startswith("VGG-16")]
    theirs = [f for f in found if f.claim.startswith("VGG11")]
    assert found[: len(mine)] == mine and len(found) == len(mine) + len(theirs)
    million = [f for f in theirs if "budget of 1M" in f.claim]  # the source's VGG-16 budget
    (f,) = million
    share = sum(e.samples[0] > 1e6 for e in r.epsilon_first) / len(r.epsilon_first)
    assert f.estimate.mean == pytest.approx(share) and (f.verdict == "holds") == (share > 0.5)
    paired = [f for f in theirs if f not in million]
    for a, b in zip(mine, paired, strict=True):
        assert b.claim == f"VGG11 ×0.0625: {a.claim}"
    gain = _finding(theirs, "VGG11 ×0.0625: fine-tuning after pruning adds")
    assert gain.estimate.mean == pytest.approx(0.6) and gain.verdict == "holds"
    titles = {s.title: s for s in ab.sections(both, config)}
    assert all(f.section in titles for f in found)
    (table,) = titles["LeNet-300-100 and VGG11 ×0.0625 side by side"].tables
    assert [row[3] for row in table.rows] == [f.verdict for f in mine]
    assert [row[5] for row in table.rows] == [f.verdict for f in paired]
    assert [row[4] for row in table.rows] == [f.ours for f in paired]


def test_tally_against_loops(tiny):
    """The counts the heuristics and fine-tuning sections state, recomputed with plain loops
    (one seed: a row's mean over seeds is its only value)."""
    _, r, _ = tiny
    t, rows = r.tally, r.finetune
    assert t["nets"] == len(rows)
    assert t["accuracy_up"] == sum(x.after[0] > x.before[0] for x in rows)
    assert t["raw_up"] == sum(x.raw_after[0] > x.raw_before[0] for x in rows)
    assert t["raw_down"] == sum(x.raw_after[0] < x.raw_before[0] for x in rows)
    assert t["centred_down"] == sum(x.centred_after[0] < x.centred_before[0] for x in rows)
    assert t["accuracy_and_raw_up"] == sum(
        x.after[0] > x.before[0] and x.raw_after[0] > x.raw_before[0] for x in rows
    )
    assert t["gain"] == pytest.approx(max(x.after[0] - x.before[0] for x in rows))
    sure = [x.guaranteed[0] for x in rows if not math.isnan(x.guaranteed[0])]
    assert t["certified"] == pytest.approx(max(sure))
    by = {(x.regime, x.method, x.level): x for x in rows}
    for tag, heuristic, coreset_ in (
        ("L0", "L0", "Mussay coreset"),
        ("magnitude", "magnitude", "SiPP (random)"),
    ):
        pairs = [
            (x, by[(x.regime, coreset_, x.level)])
            for x in rows
            if x.method == heuristic and (x.regime, coreset_, x.level) in by
        ]
        if not pairs:
            assert f"pairs {tag}" not in t
            continue
        assert t[f"pairs {tag}"] == len(pairs)
        for when in ("before", "after"):
            within = sum(getattr(h, when)[0] >= getattr(c, when)[0] - 0.01 for h, c in pairs)
            assert t[f"{tag} within {when}"] == within

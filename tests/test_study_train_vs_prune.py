"""The train-vs-prune study on a tiny config: its numbers against independent computations.

The independent paths: ``train.fit`` one net at a time (the study uses ``fit_many``); a node
mask that zeroes the removed nodes (the study removes them physically), both for evaluating the
uncompensated pruned net and for training the pruned-at-theta0 net; activation statistics
recomputed by a plain forward pass.
"""

import copy
import dataclasses
import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from prunelab import checkpoint, criteria, models, report, surgery, train
from prunelab.studies import toy_nets, train_vs_prune

CONFIG = train_vs_prune.Config(
    seed=3,
    seeds=2,
    widths=(2, 8, 6, 2),
    epochs=4,
    finetune_epochs=2,
    n_train=160,
    n_test=120,
    criteria=("random", "activation_std"),
    grid=12,
    lenet5_train=200,
    lenet5_epochs=1,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train_vs_prune.run(CONFIG, out, progress=False), out


@pytest.fixture(scope="module")
def nets():
    """The full nets and the split, trained one at a time with ``train.fit``."""
    split = toy_nets.spirals_split(
        toy_nets.Config(seed=CONFIG.seed, spirals_train=CONFIG.n_train, n_test=CONFIG.n_test)
    )
    theta0, full = [], []
    for k in range(CONFIG.seeds):
        m = models.mlp(CONFIG.widths, seed=CONFIG.seed + k)
        theta0.append(copy.deepcopy(m))
        train.fit(
            m,
            split.train,
            epochs=CONFIG.epochs,
            lr=CONFIG.lr,
            batch_size=CONFIG.batch_size,
            seed=CONFIG.seed + k,
            progress=False,
        )
        full.append(m)
    return split, theta0, full


def _arm(r, key, criterion=""):
    return next(a for a in r.arms if a.key == key and a.criterion == criterion)


def _mask(plan, sizes):
    """A node mask [H] with the plan's nodes off."""
    parts = []
    for ell, H in enumerate(sizes):
        m = torch.ones(H)
        m[plan.get(ell, [])] = 0
        parts.append(m)
    return torch.cat(parts)


def _std_plan(model, x):
    """Half of each hidden layer with the smallest activation std, by a plain forward pass."""
    plan, a = {}, x
    for ell, layer in enumerate([model[0], model[2]]):
        a = torch.relu(layer(a)).detach()
        std = a.std(0, correction=0)
        k = round(CONFIG.fraction * len(std))
        plan[ell] = sorted(torch.sort(std, stable=True).indices[:k].tolist())
    return plan


def test_full_nets_match_separate_fits_and_the_explorer_checkpoint(run, nets):
    r, out = run
    split, _, full = nets
    arm = _arm(r, "full")
    for k, m in enumerate(full):
        scores = train.evaluate(m, split.test)
        assert arm.test_loss[k].item() == pytest.approx(scores["loss"], rel=1e-4)
        assert arm.test_accuracy[k].item() == pytest.approx(scores["accuracy"], abs=0.01)
    saved, meta = checkpoint.load(out / "explorer.safetensors")
    assert meta["data"] == "spirals" and meta["seed"] == CONFIG.seed
    for p, q in zip(saved.parameters(), full[0].parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert torch.equal(arm.agreement, torch.ones(CONFIG.seeds, dtype=arm.agreement.dtype))
    assert r.pruned_widths == (2, 4, 3, 2)


def test_uncompensated_pruning_equals_zeroing_the_nodes(run, nets):
    r, _ = run
    split, _, full = nets
    x, y = split.train.x, split.train.y
    for k, m in enumerate(full):
        plan = _std_plan(m, x)
        assert plan == criteria.select(
            criteria.node_scores("activation_std", m, x, y), fraction=0.5, scope="layer"
        )
        masked = train.evaluate(m, split.test, node_masks=_mask(plan, [8, 6]))
        assert _arm(r, "plain", "activation_std").test_loss[k].item() == pytest.approx(
            masked["loss"], rel=1e-3
        )


def test_prune_at_theta0_then_train_equals_training_with_the_nodes_masked(run, nets):
    """Training the smaller net = training the full net with a fixed mask on those nodes."""
    r, _ = run
    split, theta0, full = nets
    x, y = split.train.x, split.train.y
    matrices = {m.criterion: m for m in r.matrices}
    for c in CONFIG.criteria:
        for k in range(CONFIG.seeds):
            g = torch.Generator().manual_seed(CONFIG.seed + k)
            plan = criteria.select(
                criteria.node_scores(c, full[k], x, y, generator=g), fraction=0.5, scope="layer"
            )
            mask = _mask(plan, [8, 6])
            m = copy.deepcopy(theta0[k])
            train.fit(
                m,
                split.train,
                epochs=CONFIG.epochs,
                lr=CONFIG.lr,
                seed=CONFIG.seed + k,
                node_masks=mask,
                progress=False,
            )
            loss = train.evaluate(m, split.test, node_masks=mask)["loss"]
            assert _arm(r, "init", c).test_loss[k].item() == pytest.approx(loss, rel=1e-3)
            if k == 0:
                keep0 = [j for j in range(8) if j not in plan[0]]
                keep1 = [j for j in range(6) if j not in plan[1]]
                W = m[2].weight.detach()[keep1][:, keep0]
                assert torch.allclose(matrices[c].init, W, atol=1e-4)
                W0 = theta0[k][2].weight.detach()[keep1][:, keep0]
                assert torch.equal(matrices[c].theta0, W0)
                WT = full[k][2].weight.detach()[keep1][:, keep0]
                assert int(matrices[c].trained_unmoved[k]) == int((WT == W0).sum())


def test_training_counts_and_certificate(run, nets):
    r, _ = run
    split, theta0, full = nets
    x, y = split.train.x, split.train.y
    for k in range(CONFIG.seeds):
        W0, WT = theta0[k][2].weight.detach(), full[k][2].weight.detach()
        assert int(r.training.unmoved[k]) == int((W0 == WT).sum())
        moved = (WT - W0).abs()[W0 != WT]
        assert r.training.shift_mean[k].item() == pytest.approx(moved.mean().item(), rel=1e-4)
        dead = [int((torch.relu(full[k][0](x)) == 0).all(0).sum())]
        assert int(r.training.dead_trained[k, 0]) == dead[0]
        # never co-active at theta0: no training point turns on both ends of the weight
        with torch.no_grad():
            a = torch.relu(theta0[k][0](x))
            z = theta0[k][2](a)
        together = ((z > 0).float().T @ (a > 0).float()) > 0  # [H_1, H_0]
        assert int(r.training.never_coactive[k]) == int((~together).sum())
        assert int(r.training.unmoved_coactive[k]) == int(((W0 == WT) & together).sum())
    cert = next(c for c in r.certificates if c.criterion == "activation_std")
    for k in range(CONFIG.seeds):
        plan = _std_plan(full[k], x)
        pruned = surgery.remove_nodes(full[k], plan, compensate="mean", x=x)
        with torch.no_grad():
            change = F.cross_entropy(pruned(x), y, reduction="none") - F.cross_entropy(
                full[k](x), y, reduction="none"
            )
        assert cert.total_observed[k].item() == pytest.approx(change.abs().mean().item(), abs=2e-3)
        assert cert.total_bound[k] >= cert.total_observed[k]
        assert (cert.bound[k] >= cert.observed[k]).all()


def test_agreement_between_arms(run, nets):
    r, _ = run
    split, _, full = nets
    m = next(m for m in r.matrices if m.criterion == "activation_std")
    assert ((m.agreement >= 0) & (m.agreement <= 1)).all()
    # the arm's agreement with the full net, recomputed from the predictions of seed 0
    plan = _std_plan(full[0], split.train.x)
    pruned = surgery.remove_nodes(full[0], plan, compensate="mean", x=split.train.x)
    same = train.predict(pruned, split.test.x).argmax(1) == train.predict(
        full[0], split.test.x
    ).argmax(1)
    assert _arm(r, "prune", "activation_std").agreement[0].item() == pytest.approx(
        same.double().mean().item(), abs=0.01
    )


def test_report_renders_and_results_round_trip(run, monkeypatch):
    r, out = run
    monkeypatch.setitem(report.STUDIES, train_vs_prune.NAME, train_vs_prune)
    report.write_run(train_vs_prune, CONFIG, r, out)
    study, config2, r2, raw = report.load_run(out)
    assert config2 == CONFIG and study is train_vs_prune
    assert torch.allclose(r2.arms[3].test_loss, r.arms[3].test_loss)
    assert torch.equal(r2.training.died_mask, r.training.died_mask)
    assert r2.certificates[0].layers == [0, 1]
    assert raw["headline"] == pytest.approx(train_vs_prune.headline(r))
    found = train_vs_prune.findings(r, CONFIG)
    assert [f["verdict"] for f in raw["findings"]] == [f.verdict for f in found]
    titles = {sec.title for sec in train_vs_prune.sections(r, CONFIG)}
    assert all(f.section in titles for f in found if f.verdict != "not measured")


def _t_interval(values):
    v = [float(x) for x in values]
    mean, sem = sum(v) / len(v), scipy.stats.sem(v)
    return (mean, mean) if sem == 0 else scipy.stats.t.interval(0.95, len(v) - 1, mean, sem)


def _check(f, values, threshold=0.0):
    lo, hi = _t_interval(values)
    assert f.estimate.mean == pytest.approx(sum(values) / len(values), abs=1e-6), f.claim
    assert f.estimate.low == pytest.approx(lo, abs=1e-6), f.claim
    assert f.verdict == ("holds" if lo > threshold else "differs"), f.claim


def _acc(arms, key, c=""):
    return [
        100 * float(v)
        for v in next(a for a in arms if a.key == key and a.criterion == c).test_accuracy
    ]


def _minus(a, b):
    return [x - y for x, y in zip(a, b, strict=True)]


def test_findings_recomputed_from_the_arms(run):
    r, _ = run
    found = {f.claim: f for f in train_vs_prune.findings(r, CONFIG)}
    for prefix, arms in (("", r.arms), ("LeNet-5: ", r.convnet.arms)):
        for c in CONFIG.criteria:
            f = found[
                prefix + "Folding the removed nodes' means into the next biases keeps more "
                f"accuracy than deleting them ({c} half)."
            ]
            _check(f, _minus(_acc(arms, "prune", c), _acc(arms, "plain", c)))
        f = next(f for k, f in found.items() if k.startswith(prefix + "Random pruning and"))
        _check(f, _minus(_acc(arms, "init", "random"), _acc(arms, "prune", "random")))
        f = next(f for k, f in found.items() if k.startswith(prefix + "Fine-tuning"))
        _check(f, _minus(_acc(arms, "finetune", "random"), _acc(arms, "prune", "random")))
        std = prefix + "Removing the nodes with the smallest activation std beats removing random "
        f = found[std + "ones (mean-compensated, the source's procedure)."]
        _check(f, _minus(_acc(arms, "prune", "activation_std"), _acc(arms, "prune", "random")))
        gain = _minus(_acc(arms, "prune", "random"), _acc(arms, "plain", "random"))
        assert ("rests on a collapsed baseline" in f.detail) == (_t_interval(gain)[1] < 0)
        f = found[std + "ones, without compensation."]
        _check(f, _minus(_acc(arms, "plain", "activation_std"), _acc(arms, "plain", "random")))
    agree = next(a for a in r.arms if a.key == "prune" and a.criterion == "activation_std")
    f = next(f for k, f in found.items() if k.startswith("Pruning half the nodes"))
    _check(f, [100 * float(v) for v in agree.agreement], 99.0)
    m = next(m for m in r.matrices if m.criterion == "activation_std")
    f = next(f for k, f in found.items() if k.startswith("The surviving nodes take"))
    roles = [
        sum(
            float(a) - float(b)
            for a, b in zip(m.roles_matched[s], m.roles_unmatched[s], strict=True)
        )
        / m.roles_matched.shape[1]
        for s in range(CONFIG.seeds)
    ]
    _check(f, roles)
    f = next(f for k, f in found.items() if k.startswith("Training moves the other weights"))
    lo, hi = _t_interval(r.training.shift_median.tolist())
    assert f.verdict == ("holds" if lo <= 0.7 and hi >= 0.5 else "differs")
    f = next(f for k, f in found.items() if k.startswith("Some weights of the main matrix"))
    assert f.verdict == ("holds" if (r.training.unmoved > 0).all() else "differs")
    assert sum(f.verdict == "not measured" for f in found.values()) == 1


def _ratio(b, o):
    """bound / observed; a zero observed change is certified by any bound (1 if both are 0)."""
    b, o = float(b), float(o)
    return b / o if o > 0 else (math.inf if b > 0 else 1.0)


def _worst(r, bound):
    """Per seed, the smallest bound / observed over criteria and layers (and the sums)."""
    out = []
    for s in range(CONFIG.seeds):
        ratios = []
        for c in r.certificates:
            b = getattr(c, bound)
            ratios += [_ratio(b[s, i], c.observed[s, i]) for i in range(len(c.layers))]
            if bound == "bound":
                ratios.append(_ratio(c.total_bound[s], c.total_observed[s]))
        out.append(min(ratios))
    return out


def test_bound_findings_are_the_worst_ratios_and_fail_when_violated(run):
    r, _ = run
    for bound, start in (
        ("source", "Removing a node with activation std X"),
        ("bound", "The certified"),
    ):
        f = next(f for f in train_vs_prune.findings(r, CONFIG) if f.claim.startswith(start))
        worst = _worst(r, bound)
        assert f.estimate.mean == pytest.approx(sum(worst) / len(worst), rel=1e-6)
        assert f.verdict == ("holds" if min(worst) >= 1 else "differs")
    # a planted violation: one seed's observed change above the certificate
    cert = r.certificates[0]
    broken = dataclasses.replace(cert, observed=cert.observed.clone())
    broken.observed[1, 0] = 2 * cert.bound[1, 0]
    r2 = dataclasses.replace(r, certificates=[broken, *r.certificates[1:]])
    f = next(f for f in train_vs_prune.findings(r2, CONFIG) if f.claim.startswith("The certified"))
    assert f.verdict == "differs" and _worst(r2, "bound")[1] == pytest.approx(0.5)


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match="criteria"):
        train_vs_prune.Config(criteria=("nope",))
    with pytest.raises(ValueError, match="two hidden layers"):
        train_vs_prune.Config(widths=(2, 50, 2))
    with pytest.raises(ValueError, match="fraction"):
        train_vs_prune.Config(fraction=1.0)


def test_convnet_arms_against_separately_trained_and_masked_lenets(run):
    """The LeNet-5 arms: a full net trained alone, its channels scored and removed (plain
    removal equals zeroing the units with a mask), and the prune-first net trained alone."""
    from prunelab import data, masks

    r, _ = run
    c = r.convnet
    split = data.load(
        "mnist5k", seed=CONFIG.seed, n_train=CONFIG.lenet5_train, n_test=CONFIG.n_test
    )
    fit = dict(epochs=CONFIG.lenet5_epochs, lr=CONFIG.lenet5_lr, batch_size=CONFIG.batch_size)
    k, seed = 1, CONFIG.seed + 1
    m0 = models.lenet5(seed=seed)
    m = copy.deepcopy(m0)
    train.fit(m, split.train, seed=seed, progress=False, **fit)
    full = next(a for a in c.arms if a.key == "full")
    assert full.test_accuracy[k].item() == pytest.approx(train.evaluate(m, split.test)["accuracy"])
    m.eval()
    std = [
        a.transpose(0, 1).flatten(1).std(1, correction=0)
        for a in masks.hidden_activations(m, split.train.x)
    ]
    plan = {
        ell: sorted(torch.sort(s_, stable=True).indices[: round(0.5 * len(s_))].tolist())
        for ell, s_ in enumerate(std)
    }
    assert plan == criteria.select(
        criteria.node_scores("activation_std", m, split.train.x), fraction=0.5
    )
    keep = _mask(plan, c.hidden)
    zeroed = train.evaluate(m, split.test, node_masks=keep)
    plain = next(a for a in c.arms if a.key == "plain" and a.criterion == "activation_std")
    assert plain.test_accuracy[k].item() == pytest.approx(zeroed["accuracy"])
    assert plain.test_loss[k].item() == pytest.approx(zeroed["loss"], rel=1e-4)
    scratch = surgery.remove_nodes(m0, plan, compensate="none")
    train.fit(scratch, split.train, seed=seed, progress=False, **fit)
    init = next(a for a in c.arms if a.key == "init" and a.criterion == "activation_std")
    assert init.test_accuracy[k].item() == pytest.approx(
        train.evaluate(scratch, split.test)["accuracy"]
    )
    assert c.pruned_hidden == [3, 8, 60, 42]

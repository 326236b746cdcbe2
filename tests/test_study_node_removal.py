"""The node-removal study on a tiny checkpoint: its numbers against independent computations."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prunelab import checkpoint, costs, data, masks, models, report, surgery, train
from prunelab.faces.cli import app
from prunelab.studies import node_removal


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    split = data.load("circle", seed=0, n_train=300, n_test=400)
    model = models.mlp((2, 6, 2), seed=1)
    train.fit(model, split.train, epochs=15, lr=0.02, seed=1, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    checkpoint.save(
        path,
        model,
        data="circle",
        seed=0,
        widths=[2, 6, 2],
        train=dict(epochs=3, lr=0.02, batch_size=32),
    )
    config = node_removal.Config(
        checkpoint=str(path),
        masks=40,
        n_test=300,
        paths=30,
        grid=16,
        gradient_grid=8,
        seeds=2,
        probabilities=(0.25, 0.75),
    )
    out = tmp_path_factory.mktemp("run")
    return model, config, node_removal.run(config, out, progress=False), out


def test_single_removal_equals_physically_removing_the_node(tiny):
    model, config, r, _ = tiny
    test = data.load("circle", seed=0).test[:300]
    for j in range(6):
        pruned = surgery.remove_nodes(model, {0: [j]}, compensate="none")
        assert r.removal.single[j].item() == pytest.approx(
            train.evaluate(pruned, test)["loss"], rel=1e-5
        )
    worst = r.removal.worst_pairs[0]
    pruned = surgery.remove_nodes(model, {0: [worst[0], worst[1]]}, compensate="none")
    assert worst[2] == pytest.approx(train.evaluate(pruned, test)["loss"], rel=1e-5)
    assert r.removal.pairs_checked == 15


def test_results_round_trip(tiny):
    _, config, r, out = tiny
    report.write_run(node_removal, config, r, out)
    study, config2, r2, _ = report.load_run(out)
    assert config2 == config
    assert torch.allclose(r2.removal.single, r.removal.single.double().float())
    assert r2.subsets[0].log_loss_fit == r.subsets[0].log_loss_fit
    assert r2.removal.best_pairs[0][:2] == r.removal.best_pairs[0][:2]
    assert r2.main == r.main and r2.units.bias == r.units.bias
    assert [f.verdict for f in node_removal.findings(r2, config2)] == [
        f.verdict for f in node_removal.findings(r, config)
    ]


def _masked_loss(model, x, y, m):
    """Cross-entropy of the 2-H-2 MLP with hidden node j multiplied by m[j] after its ReLU: a
    hand-written forward in float64, nothing of the mask engine."""
    first, last = model[0], model[-1]
    h = torch.relu(x.double() @ first.weight.double().T + first.bias.double()) * m
    return F.cross_entropy(h @ last.weight.double().T + last.bias.double(), y)


def test_mask_statistics_equal_autograd_on_the_same_masks(tiny):
    """Loss, d L/dm, d log L/dm and their on/off split per p, against autograd of a hand-written
    forward on the masks the study draws (its generator, in its order)."""
    model, config, r, _ = tiny
    test = data.load("circle", seed=0).test[:300]
    g = torch.Generator().manual_seed(config.seed)
    for s in r.subsets:
        m = masks.bernoulli(config.masks, 6, s.p, generator=g)
        loss, grad, log_grad = [], [], []
        for mk in m.double():
            mk = mk.clone().requires_grad_(True)
            value = _masked_loss(model, test.x, test.y, mk)
            (d,) = torch.autograd.grad(value, mk, retain_graph=True)
            (dlog,) = torch.autograd.grad(value.log(), mk)
            loss.append(value.item())
            grad.append(d)
            log_grad.append(dlog)
        loss, grad, log_grad = torch.tensor(loss), torch.stack(grad), torch.stack(log_grad)
        on, off = m == 1, m == 0
        close = dict(rel=1e-4, abs=1e-6)
        assert s.mean_loss == pytest.approx(loss.mean().item(), **close)
        assert s.gradient_mean == pytest.approx(grad.mean().item(), **close)
        assert s.log_gradient_mean == pytest.approx(log_grad.mean().item(), **close)
        assert s.on_mean == pytest.approx(grad[on].mean().item(), **close)
        assert s.off_mean == pytest.approx(grad[off].mean().item(), **close)
        assert s.log_on_mean == pytest.approx(log_grad[on].mean().item(), **close)
        assert s.log_off_mean == pytest.approx(log_grad[off].mean().item(), **close)
        assert s.log_on_std == pytest.approx(log_grad[on].std(correction=0).item(), **close)
        for j in range(6):
            want = grad[on[:, j], j].mean().item()
            assert s.node_on_mean[j].item() == pytest.approx(want, **close)
        assert s.loss_skewness == pytest.approx(scipy.stats.skew(loss.numpy()), rel=1e-3)
        assert s.gradient_kurtosis == pytest.approx(
            scipy.stats.kurtosis(grad.flatten().numpy()), rel=1e-3, abs=1e-4
        )
        shapiro = scipy.stats.shapiro(loss.log().numpy())
        assert s.log_loss_fit.shapiro_p == pytest.approx(shapiro.pvalue, rel=1e-2, abs=1e-6)
    assert r.sanity["expected extra nodes"] == pytest.approx(0.5 * 6)


def _acts(model, x):
    return torch.relu(x.double() @ model[0].weight.double().T + model[0].bias.double())


def test_units_rows_and_removal_numbers_against_loops(tiny):
    model, config, r, _ = tiny
    test = data.load("circle", seed=0).test[:300]
    a = _acts(model, test.x)
    assert r.dead_nodes == [j for j in range(6) if all(a[n, j] == 0 for n in range(300))]
    mean, std = a.mean(0), a.std(0, correction=0)
    assert r.units.bias_threshold == [
        j for j in range(6) if mean[j] != 0 and std[j] < config.bias_cv * mean[j]
    ]
    main = r.main
    assert main.decorrelated_after == r.paths.covariance.decorrelated_after
    assert main.complement_correlation == r.paths.complement_correlation
    live = [j for j in range(6) if j not in r.dead_nodes]
    least = min(r.removal.single[j].item() for j in live)
    assert main.least_harm == pytest.approx((least - r.full_loss) / r.full_loss, rel=1e-6)
    lo, hi = r.subsets[0], r.subsets[-1]
    mid = r.subsets[len(r.subsets) // 2]
    predicted = mid.gradient_mean * (hi.p - lo.p) * 6
    assert main.sanity_ratio == pytest.approx(predicted / (hi.mean_loss - lo.mean_loss))


def test_bias_and_dead_units_of_a_planted_net():
    """Units with known spread on x uniform in [-1, 1]^2: constant (cv 0), cv 0.006, cv 0.15,
    a ReLU of x0 (cv 1.7), and a dead one. The threshold 0.1 keeps the first two; the gap rule
    the whole nearly constant cluster of three."""
    model = models.mlp((2, 5, 2), seed=0, dtype=torch.float64)
    with torch.no_grad():
        model[0].weight.copy_(
            torch.tensor([[0, 0], [0.01, 0], [0.26, 0], [1, 0], [1, 1]], dtype=torch.float64)
        )
        model[0].bias.copy_(torch.tensor([1, 1, 1, 0, -10], dtype=torch.float64))
    x = torch.rand(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    units = node_removal._units(model, 2 * x - 1, node_removal.Config())
    assert units.dead == [4]
    assert units.bias_threshold == [0, 1]
    assert units.bias == [0, 1, 2]
    assert units.gap_below == pytest.approx(0.26 / math.sqrt(3), rel=0.05)


def _t_interval(v):
    v = np.asarray(v, dtype=float)
    if len(v) < 2 or v.std() == 0:
        return v.mean(), v.mean()
    return scipy.stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=scipy.stats.sem(v))


def _expected_verdicts(r) -> dict[str, str]:
    """Each finding's verdict decided here, from the seed rows, by its stated rule."""
    rows = r.seeds or [r.main]

    def word(ok):
        return "holds" if ok else "differs"

    n = rows[0].paths - 2
    t = scipy.stats.t.ppf(0.975, n)
    crit = t / math.sqrt(n + t * t)
    return {
        "More": word(all(np.all(np.diff(s.mean_loss) < 0) for s in rows)),
        "The loss distribution": word(all(min(s.skewness) > 0 for s in rows)),
        "The log-loss is": word(all(min(s.shapiro_p) >= 0.05 for s in rows)),
        "The mean gradient of": word(_t_interval([max(s.gradient_mean) for s in rows])[1] < 0),
        "The mean gradient times": word(all(0.8 <= s.sanity_ratio <= 1.25 for s in rows)),
        "d log L / d m of a node that is on": word(
            _t_interval([s.log_on_mean for s in rows])[0] > 0
        ),
        "d log L / d m of a node that is off": word(
            _t_interval([s.log_off_mean for s in rows])[1] < 0
        ),
        "The mask gradients": word(all(min(s.gradient_kurtosis) > 0 for s in rows)),
        "Along a flip path": word(all(5 <= s.decorrelated_after <= 6 for s in rows)),
        "The log-losses of a mask": word(all(s.complement_correlation > crit for s in rows)),
        "Removing the least": word(all(s.least_harm < 0.05 for s in rows)),
    }


def _check_findings(r, config):
    found = node_removal.findings(r, config)
    titles = {s.title for s in node_removal.sections(r, config)}
    expected = _expected_verdicts(r)
    checked = 0
    for f in found:
        assert f.section in titles or f.verdict == "not measured", f.section
        for start, verdict in expected.items():
            if start in f.claim:
                assert f.verdict == verdict, (f.claim, f.ours, f.rule)
                checked += 1
    assert checked == len(expected)
    return found


def test_findings_follow_their_rules_on_a_checkpoint(tiny):
    _, config, r, _ = tiny
    found = _check_findings(r, config)
    by = {f.claim: f for f in found}
    # a checkpoint is not the source's net: its absolute numbers are not measured against it
    claim = "With every node on, the trained net's cross-entropy is 0.117 (within 25%)"
    assert by[claim].verdict == "not measured"
    bias = next(f for f in found if "act as a bias" in f.claim)
    holds = _t_interval([s.bias_nodes for s in r.seeds])[0] > 0
    assert bias.verdict == ("holds" if holds else "differs")
    assert all(f.estimate.n == 2 for f in found if f.estimate is not None)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy circle net with the source's recipe cut short (3 epochs) and a 6-epoch
    robustness arm, two seeds each."""
    config = node_removal.Config(
        circle_epochs=3,
        robust_epochs=6,
        masks=30,
        n_test=300,
        paths=20,
        grid=8,
        gradient_grid=4,
        seeds=2,
        max_pair_nodes=4,
    )
    return config, node_removal.run(config, tmp_path_factory.mktemp("toy"), progress=False)


def test_toy_arms_and_findings(toy):
    config, r = toy
    assert [s.epochs for s in r.seeds] == [3, 3] and [s.epochs for s in r.robust] == [6, 6]
    assert (r.epochs, r.robust_epochs) == (3, 6)
    assert r.main.full_loss == pytest.approx(r.full_loss)
    assert r.seeds[0] == r.main  # seed 0 of the main arm is the studied net
    assert r.source_outside == pytest.approx(1 - math.sqrt(2 * math.pi) / 4)
    found = _check_findings(r, config)
    by = {f.claim: f for f in found}
    full = by["With every node on, the trained net's cross-entropy is 0.117 (within 25%)"]
    lo, hi = _t_interval([s.full_loss for s in r.seeds])
    a, b = 0.75 * 0.117, 1.25 * 0.117  # the source's figure and its stated tolerance
    inside, outside = a <= lo and hi <= b, hi < a or lo > b
    assert full.verdict == ("holds" if inside else "differs" if outside else "not measured")
    bias = next(f for f in found if "act as a bias" in f.claim)
    assert bias.verdict == ("holds" if all(s.bias_nodes == 4 for s in r.seeds) else "differs")


# --- convnets: a LeNet-5 checkpoint written by `prunelab train` --------------------------------


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A digits LeNet-5 trained by the CLI (2 epochs), studied with one extra seed."""
    folder = tmp_path_factory.mktemp("lenet")
    path = folder / "lenet.safetensors"
    args = ["train", "--arch", "lenet5", "--data", "digits", "--epochs", "2", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--out", str(path)])
    assert result.exit_code == 0, result.output
    config = node_removal.Config(
        checkpoint=str(path),
        masks=24,
        n_test=150,
        paths=3,
        seeds=1,
        max_pair_nodes=6,
        probabilities=(0.5, 0.9),
        budget=0,
    )
    model, _ = checkpoint.load(path)
    return model, config, node_removal.run(config, folder / "run", progress=False), folder


def _hooked_loss(model, x, y, off: dict[int, list[int]]) -> float:
    """The loss with the listed units of module ``i``'s output zeroed: forward hooks on the
    activations (features or whole channels), no part of the mask engine."""
    handles = []
    for i, units in off.items():

        def zero(module, inputs, out, units=units):
            out = out.clone()
            out[:, units] = 0
            return out

        handles.append(model[i].register_forward_hook(zero))
    try:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(x), y).item()
    finally:
        for h in handles:
            h.remove()


ACTIVATIONS = (1, 4, 8, 10)  # the ReLU after conv1, conv2, fc1, fc2 of models.lenet5


def test_convnet_single_and_pair_removal_equal_hooked_forwards(lenet):
    model, config, r, _ = lenet
    test = data.load("digits", seed=0).test[:150]
    x, y = test.x, test.y
    assert r.hidden == [6, 16, 120, 84] and r.kinds == ["conv", "conv", "linear", "linear"]
    first = [0, 6, 22, 142]
    for layer, unit in [(0, 3), (1, 0), (1, 15), (2, 7), (3, 83)]:
        j = first[layer] + unit
        want = _hooked_loss(model, x, y, {ACTIVATIONS[layer]: [unit]})
        assert r.removal.single[j].item() == pytest.approx(want, rel=1e-5)
    (i, j, loss) = r.removal.worst_pairs[0]
    off: dict[int, list[int]] = {}
    for u in (i, j):
        layer = max(k for k in range(4) if first[k] <= u)
        off.setdefault(ACTIVATIONS[layer], []).append(u - first[layer])
    assert loss == pytest.approx(_hooked_loss(model, x, y, off), rel=1e-5)
    assert r.removal.pairs_checked == 15  # all pairs among the 6 candidates
    assert r.full_loss == pytest.approx(train.evaluate(model, test)["loss"], rel=1e-6)


def test_convnet_channel_statistics_run_over_samples_and_positions(lenet):
    model, _, r, _ = lenet
    x = data.load("digits", seed=0).test[:150].x
    seen = {}
    handles = [
        model[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
        for i in ACTIVATIONS
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    per_unit = [seen[i].transpose(0, 1).reshape(seen[i].shape[1], -1) for i in ACTIVATIONS]
    mean = torch.cat([u.double().mean(1) for u in per_unit])
    std = torch.cat([u.double().std(1, correction=0) for u in per_unit])
    assert sum(len(u) for u in per_unit) == 226
    torch.testing.assert_close(r.activation_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.activation_std.double(), std, rtol=1e-5, atol=1e-6)
    dead = [j for j, u in enumerate(torch.cat([u.abs().amax(1) for u in per_unit])) if u == 0]
    assert r.dead_nodes == dead
    assert r.maps is None and r.in_shape == (1, 8, 8)


def test_convnet_extra_seed_reproduces_the_checkpoint_from_its_recipe(lenet):
    """The recipe `prunelab train` records rebuilds and retrains the same net: seed 0 of the
    robustness table is the checkpoint itself (same init, same batches)."""
    _, config, r, _ = lenet
    assert len(r.seeds) == 1 and r.seeds[0].seed == 0
    assert r.seeds[0].full_loss == pytest.approx(r.full_loss, rel=1e-4)
    assert r.seeds[0].test_accuracy == pytest.approx(r.test_accuracy)
    assert r.seeds[0].mean_loss == pytest.approx([s.mean_loss for s in r.subsets], rel=1e-4)


def test_convnet_report_renders_and_round_trips(lenet):
    _, config, r, folder = lenet
    out = folder / "run"
    report.write_run(node_removal, config, r, out)
    _, config2, r2, _ = report.load_run(out)
    assert config2 == config
    assert r2.kinds == r.kinds and r2.scale.units == 226
    torch.testing.assert_close(r2.removal.single, r.removal.single)
    model2, meta = checkpoint.load(out / "explorer.safetensors")
    assert meta["data"] == "digits"


@settings(max_examples=60, deadline=None)
@given(
    budget=st.floats(1e8, 1e15),
    units=st.integers(1, 3000),
    macs=st.integers(100, 10**8),
    available=st.integers(1, 20000),
    epochs=st.integers(0, 30),
)
def test_scale_fits_the_budget_down_to_its_floors(budget, units, macs, available, epochs):
    config = node_removal.Config(budget=budget, seeds=3)
    sc = node_removal.scale(
        config, units=units, macs=macs, available=available, train_points=5000, epochs=epochs
    )
    n_p, pairs = len(config.probabilities), sc.pairs
    K = min(config.max_pair_nodes, units)
    assert pairs == K * (K - 1) // 2
    work = sc.n_test * macs * (3 * n_p * sc.masks + sc.paths * (units + 1) + units + pairs)
    assert sc.work == pytest.approx(work)
    # never more than configured, never below a floor unless the configured amount is
    assert sc.n_test <= min(config.n_test, available)
    assert sc.n_test >= min(node_removal.N_MIN, config.n_test, available)
    assert node_removal.PATHS_MIN <= sc.paths <= config.paths
    assert node_removal.MASKS_MIN <= sc.masks <= config.masks
    at_floors = (
        sc.n_test == min(node_removal.N_MIN, available)
        and sc.paths == node_removal.PATHS_MIN
        and sc.masks == node_removal.MASKS_MIN
    )
    assert work <= budget * (1 + 1e-12) or at_floors
    assert bool(sc.reduced) == (
        (sc.n_test, sc.masks, sc.paths) != (min(config.n_test, available), 1000, 1000)
        or sc.seeds < config.seeds
    )
    if epochs and sc.seeds:  # the seeds given fit into what the analysis left
        assert work + sc.seeds * sc.seed_work <= budget * (1 + 1e-12) or sc.seeds == 3
    if not epochs:
        assert sc.seeds == config.seeds


def test_scale_without_a_budget_keeps_the_configured_amounts():
    config = node_removal.Config(budget=0)
    sc = node_removal.scale(
        config, units=10**4, macs=10**9, available=10**5, train_points=1, epochs=9
    )
    assert (sc.n_test, sc.masks, sc.paths, sc.seeds, sc.reduced) == (10000, 1000, 1000, 5, [])
    lenet = models.lenet5(in_shape=(1, 28, 28), seed=0)
    assert costs.macs(lenet, in_shape=(1, 28, 28)) > 0 and math.isinf(config.budget or math.inf)


@pytest.mark.parametrize(
    "model, match",
    [
        (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), "no hidden layer"),
        (models.lenet5(in_shape=(3, 8, 8), seed=0), r"digits"),
        (models.mlp((64, 8, 3), seed=0), r"10 classes but the model has 3 outputs"),
    ],
)
def test_a_checkpoint_it_cannot_take_is_named_before_any_work(tmp_path, model, match):
    path = checkpoint.save(tmp_path / "m.safetensors", model.eval(), data="digits")
    config = node_removal.Config(checkpoint=str(path), data="digits")
    with pytest.raises(ValueError, match=r"node-removal of .*m\.safetensors.*" + match):
        node_removal.run(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()

"""The node-removal study on a tiny checkpoint: its numbers against independent computations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prunelab import checkpoint, costs, data, models, report, surgery, train
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


def test_statistics_are_consistent(tiny):
    model, config, r, _ = tiny
    test = data.load("circle", seed=0).test[:300]
    assert r.full_loss == pytest.approx(train.evaluate(model, test)["loss"], rel=1e-6)
    for s in r.subsets:
        assert len(s.loss) == 40 and 1 <= s.distinct <= 40 and s.all_on <= s.distinct
        assert s.log_loss_fit.mean == pytest.approx(s.loss.log().mean().item())
        assert torch.trapezoid(s.loss_density.y, s.loss_density.x).item() == pytest.approx(
            1, abs=0.02
        )
    assert r.sanity["expected extra nodes"] == pytest.approx(0.5 * 6)
    cov = r.paths.covariance.cov
    assert cov.shape == (7, 7) and torch.allclose(cov, cov.T)
    assert r.maps.probability.shape == (16, 16) and r.maps.gradients.shape == (6, 8, 8)
    assert len(r.seeds) == 2 and r.seeds[0].seed == 0


def test_report_renders_and_results_round_trip(tiny):
    _, config, r, out = tiny
    report.write_run(node_removal, config, r, out)
    html = (out / "report.html").read_text()
    assert "How much do N flips matter?" in html and html.count("<img") >= 6
    study, config2, r2, _ = report.load_run(out)
    assert config2 == config
    assert torch.allclose(r2.removal.single, r.removal.single.double().float())
    assert r2.subsets[0].log_loss_fit == r.subsets[0].log_loss_fit
    assert r2.removal.best_pairs[0][:2] == r.removal.best_pairs[0][:2]
    report.rerender(out)


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

"""The node-removal study on a tiny checkpoint: its numbers against independent computations."""

import pytest
import torch

from prunelab import checkpoint, data, models, report, surgery, train
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


@pytest.mark.parametrize(
    "model",
    [
        models.lenet5(in_shape=(1, 8, 8), seed=0),
        torch.nn.Sequential(
            torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 10)
        ),
    ],
)
def test_a_checkpoint_it_cannot_take_is_named_before_any_work(tmp_path, model):
    path = checkpoint.save(tmp_path / "m.safetensors", model.eval(), data="digits")
    config = node_removal.Config(checkpoint=str(path), data="digits")
    with pytest.raises(
        ValueError, match=r"node-removal of .*m\.safetensors: module \d+ \(\w+\): .*MLPs"
    ):
        node_removal.run(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()

"""The relevance study on a tiny config: its numbers against independent computations."""

import pytest
import torch

from prunelab import data, decoy, models, report, train
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
    task = decoy.decoy_task(split, decoy.patch_region(8, 2), seed=0)
    arms = {a.name: a for a in d.arms}
    assert list(arms) == ["random patch (reference)", "plain", "penalty 5"]
    for name, ds in (("plain", task.train), ("random patch (reference)", task.train_random)):
        for s, seed in enumerate(d.seeds):
            model = models.mlp((64, 16, 10), seed=seed)
            train.fit(model, ds, epochs=3, lr=CONFIG.lr, batch_size=32, seed=seed, progress=False)
            scores = decoy.scores(model, task)
            assert arms[name].accuracy[s].item() == pytest.approx(scores["accuracy"])
            assert arms[name].follow_rate[s].item() == pytest.approx(scores["follow_rate"])
    pen = arms["penalty 5"]
    assert pen.penalty.shape == (2, 3) and pen.sweep_follow.shape == (2, len(d.sweep_values))
    assert ((pen.share >= 0) & (pen.share <= 1)).all()


def test_report_renders_and_results_round_trip(tiny, monkeypatch):
    r, out = tiny
    monkeypatch.setitem(report.STUDIES, relevance.NAME, relevance)
    report.write_run(relevance, CONFIG, r, out)
    html = (out / "report.html").read_text()
    assert "Blaming the bias" in html and html.count("<img") >= 17
    study, config2, r2, _ = report.load_run(out)
    assert config2 == CONFIG
    torch.testing.assert_close(r2.circle.input, r.circle.input)
    assert torch.equal(r2.circle.blame_active, r.circle.blame_active)
    assert torch.equal(r2.decoys[1].region, r.decoys[1].region)
    assert r2.decoys[0].arms[1].name == "plain"
    assert r2.images.widths == r.images.widths

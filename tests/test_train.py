import math

import pytest
import torch
import torch.nn.functional as F

from prunelab import data, ensemble, models, ops, train


def params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_fit_is_bitwise_reproducible_and_leaves_global_rng(blobs):
    runs = []
    for _ in range(2):
        m = models.mlp((2, 8, 8, 3), dropout=0.3, seed=0)
        state = torch.get_rng_state()
        h = train.fit(m, blobs, epochs=3, batch_size=16, seed=5, progress=False)
        assert torch.equal(state, torch.get_rng_state())
        runs.append((params(m), h))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0], strict=True))
    assert runs[0][1] == runs[1][1]
    m = models.mlp((2, 8, 8, 3), dropout=0.3, seed=0)
    train.fit(m, blobs, epochs=3, batch_size=16, seed=6, progress=False)
    assert not torch.equal(params(m)[0], runs[0][0][0])


def test_one_full_batch_sgd_step_is_w_minus_lr_grad(blobs):
    m = models.mlp((2, 5, 3), seed=0).double()
    x = blobs.x.double()
    loss = F.cross_entropy(m(x), blobs.y)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    expected = [p.detach() - 0.1 * g for p, g in zip(m.parameters(), grads, strict=True)]
    h = train.fit(m, blobs, epochs=1, lr=0.1, batch_size=None, optimizer="sgd", progress=False)
    for p, e in zip(m.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
    assert h.loss[0] == pytest.approx(loss.item())


def test_history_and_test_curves(blobs):
    """Full-batch SGD: each epoch's history entry is the loss and accuracy of the forward pass
    before its step, and the test entries those of the model after it (a hand-written loop)."""
    m = models.mlp((2, 16, 3), seed=0).double()
    ref = models.mlp((2, 16, 3), seed=0).double()
    test = data.Dataset(blobs.x[::2], blobs.y[::2], "half", blobs.classes)
    h = train.fit(m, blobs, epochs=6, lr=0.2, batch_size=None, optimizer="sgd", test=test,
                  progress=False)  # fmt: skip
    want = {"loss": [], "accuracy": [], "test_loss": [], "test_accuracy": []}
    x, xt = blobs.x.double(), test.x.double()
    for _ in range(6):
        logits = ref(x)
        loss = F.cross_entropy(logits, blobs.y)
        want["loss"].append(loss.item())
        want["accuracy"].append((logits.argmax(1) == blobs.y).double().mean().item())
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads, strict=True):
                p -= 0.2 * g
            out = ref(xt)
        want["test_loss"].append(F.cross_entropy(out, test.y).item())
        want["test_accuracy"].append((out.argmax(1) == test.y).double().mean().item())
    for key, values in want.items():
        assert getattr(h, key) == pytest.approx(values, rel=1e-10, abs=1e-12), key
    assert h.loss[-1] < h.loss[0]  # and the step size is one that learns


def test_evaluate_matches_manual_cross_entropy_and_accuracy(blobs):
    m = models.mlp((2, 6, 3), seed=1)
    logits = m(blobs.x)
    scores = train.evaluate(m, blobs)
    assert scores["loss"] == pytest.approx(F.cross_entropy(logits, blobs.y).item(), rel=1e-6)
    assert scores["accuracy"] == pytest.approx((logits.argmax(1) == blobs.y).float().mean().item())
    probs = train.predict(m, blobs.x)
    torch.testing.assert_close(probs, logits.softmax(1))


def test_weight_masks_keep_pruned_weights_exactly_zero(blobs):
    m = models.mlp((2, 8, 3), seed=0)
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(8, 2, generator=g) > 0.5).float()
    before = m[0].weight.detach().clone()
    train.fit(
        m, blobs, epochs=5, weight_decay=0.01, weight_masks={"0.weight": mask}, progress=False
    )
    w = m[0].weight.detach()
    assert torch.all(w[mask == 0] == 0)
    assert torch.all(w[mask == 1] != before[mask == 1])


def test_node_masks_freeze_the_outgoing_weights_of_masked_nodes(blobs):
    m = models.mlp((2, 6, 5, 3), seed=0)
    before = m[4].weight.detach().clone()
    node_mask = torch.ones(11)
    node_mask[6 + 2] = 0  # node 2 of the second hidden layer
    train.fit(m, blobs, epochs=3, node_masks=node_mask, progress=False)
    # its outgoing column never receives gradient: Adam leaves it exactly at its initial value
    assert torch.equal(m[4].weight[:, 2], before[:, 2])
    assert not torch.equal(m[4].weight[:, 1], before[:, 1])
    masked = train.evaluate(m, blobs, node_masks=node_mask)
    x = torch.relu(m[0](blobs.x))
    x = torch.relu(m[2](x)) * node_mask[6:]
    assert masked["loss"] == pytest.approx(F.cross_entropy(m[4](x), blobs.y).item(), rel=1e-6)


@pytest.mark.parametrize("optimizer, batch_size", [("adam", 16), ("adam", None), ("sgd", 32)])
def test_fit_many_equals_separate_fits(blobs, optimizer, batch_size):
    seeds = [0, 1, 7]
    widths = (2, 7, 5, 3)
    kwargs = dict(
        epochs=4,
        lr=0.02,
        batch_size=batch_size,
        optimizer=optimizer,
        weight_decay=1e-3,
        momentum=0.5,
        progress=False,
    )
    separate = []
    for s in seeds:
        m = models.mlp(widths, seed=s)
        h = train.fit(m, blobs, seed=s, **kwargs)
        separate.append((m, h))
    together = [models.mlp(widths, seed=s) for s in seeds]
    histories = ensemble.fit_many(together, blobs, seeds=seeds, **kwargs)
    for (m, h), m2, h2 in zip(separate, together, histories, strict=True):
        for p, q in zip(m.parameters(), m2.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
        assert h2.loss == pytest.approx(h.loss, abs=1e-5)
        assert h2.accuracy == pytest.approx(h.accuracy, abs=1e-9)


def test_fit_many_with_per_model_node_and_weight_masks(blobs):
    seeds = [3, 4]
    node_masks = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 0, 1]], dtype=torch.float32)
    wmask = torch.ones(2, 5, 2)
    wmask[0, 0, 0] = wmask[1, 4, 1] = 0
    together = [models.mlp((2, 5, 3), seed=s) for s in seeds]
    ensemble.fit_many(
        together,
        blobs,
        seeds=seeds,
        epochs=3,
        node_masks=node_masks,
        weight_masks={"0.weight": wmask},
        progress=False,
    )
    for k, s in enumerate(seeds):
        m = models.mlp((2, 5, 3), seed=s)
        train.fit(
            m,
            blobs,
            seed=s,
            epochs=3,
            node_masks=node_masks[k],
            weight_masks={"0.weight": wmask[k]},
            progress=False,
        )
        for p, q in zip(m.parameters(), together[k].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
    assert together[0][0].weight[0, 0] == 0 and together[1][0].weight[4, 1] == 0


def test_fit_many_with_dropout_trains(blobs):
    """Dropout in fit_many: reproducible, a different seed draws different masks, and the
    models learn (each ends above chance on its training data and below its starting loss)."""

    def run(seeds):
        nets = [models.mlp((2, 16, 3), dropout=0.2, seed=s) for s in (0, 1)]
        hs = ensemble.fit_many(nets, blobs, seeds=seeds, epochs=20, progress=False)
        return nets, hs

    nets, hs = run([0, 1])
    again, hs_again = run([0, 1])
    other, _ = run([0, 2])
    assert [h.loss for h in hs] == [h.loss for h in hs_again]
    assert torch.equal(nets[1][0].weight, again[1][0].weight)
    assert torch.equal(nets[0][0].weight, other[0][0].weight)  # seed 0 in both runs
    assert not torch.equal(nets[1][0].weight, other[1][0].weight)  # another seed, other masks
    for net, h in zip(nets, hs, strict=True):
        assert h.loss[-1] < 0.7 * h.loss[0]
        assert train.evaluate(net, blobs)["accuracy"] > 0.8


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(optimizer="lbfgs"), ValueError, "choose from"),
        (dict(lr=0.0), ValueError, "lr"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(node_masks=torch.ones(4)), ValueError, r"shape \[5\]"),
        (dict(weight_masks={"9.weight": torch.ones(1)}), KeyError, "no parameter"),
        (dict(weight_masks={"0.weight": torch.ones(2, 2)}), ValueError, "has shape"),
    ],
)
def test_fit_errors(blobs, kwargs, error, match):
    with pytest.raises(error, match=match):
        train.fit(models.mlp((2, 5, 3)), blobs, epochs=1, progress=False, **kwargs)


def test_fit_rejects_data_of_the_wrong_width_or_classes(blobs):
    with pytest.raises(ValueError, match="3 input features but the model expects 2"):
        train.fit(
            models.mlp((2, 4, 3)),
            data.Dataset(torch.zeros(4, 3), torch.zeros(4).long()),
            progress=False,
        )
    with pytest.raises(ValueError, match="3 classes but the model has 2 outputs"):
        train.fit(models.mlp((2, 4, 2)), blobs, progress=False)


def test_fit_many_errors(blobs):
    with pytest.raises(ValueError, match="one seed per model"):
        ensemble.fit_many([models.mlp((2, 3, 3))], blobs, seeds=[0, 1], progress=False)
    with pytest.raises(ValueError, match="same architecture"):
        ensemble.fit_many(
            [models.mlp((2, 3, 3)), models.mlp((2, 4, 3))], blobs, seeds=[0, 1], progress=False
        )


# --- convnets --------------------------------------------------------------------------


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()  # top half brighter
    return data.Dataset(x, y, "halves", 2)


def test_one_sgd_step_on_a_batchnorm_convnet_is_autograd(tiny_images):
    model = models.lenet5(in_shape=(1, 8, 8), classes=2, batchnorm=True, seed=0)
    ref = models.lenet5(in_shape=(1, 8, 8), classes=2, batchnorm=True, seed=0)
    ref.train()
    loss = F.cross_entropy(ref(tiny_images.x), tiny_images.y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    train.fit(model, tiny_images, epochs=1, lr=0.1, batch_size=None, optimizer="sgd",
              seed=0, progress=False)  # fmt: skip
    for p, q, g in zip(model.parameters(), ref.parameters(), grads, strict=True):
        torch.testing.assert_close(p, q - 0.1 * g)
    # the BatchNorm's running statistics moved exactly as one training forward moves them
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
    assert model[1].num_batches_tracked.item() == 1


def test_evaluate_and_predict_on_a_convnet(tiny_images):
    model = models.lenet5(in_shape=(1, 8, 8), classes=2, batchnorm=True, dropout=0.5, seed=0)
    model.train()  # evaluate and predict switch to eval mode and back
    scores = train.evaluate(model, tiny_images)
    assert model.training
    with torch.no_grad():
        logits = model.eval()(tiny_images.x)
    model.train()
    assert scores["loss"] == pytest.approx(F.cross_entropy(logits, tiny_images.y).item(), rel=1e-6)
    assert scores["accuracy"] == (logits.argmax(1) == tiny_images.y).double().mean().item()
    torch.testing.assert_close(train.predict(model, tiny_images.x), logits.softmax(1))


def test_channel_masks_in_fit_and_evaluate(tiny_images):
    model = models.lenet5(in_shape=(1, 8, 8), classes=2, seed=0)
    H = sum(ops.parse(model).hidden_sizes)  # 6 + 16 + 120 + 84 units
    mask = torch.ones(H)
    mask[[1, 6 + 3]] = 0  # channel 1 of conv 1, channel 3 of conv 2
    hooks = []
    for k, ch in ((1, 1), (4, 3)):  # the ReLUs after the two convs

        def zero(m, i, out, ch=ch):
            out = out.clone()
            out[:, ch] = 0
            return out

        hooks.append(model[k].register_forward_hook(zero))
    with torch.no_grad():
        logits = model(tiny_images.x)
    for h in hooks:
        h.remove()
    got = train.evaluate(model, tiny_images, node_masks=mask)
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, tiny_images.y).item(), rel=1e-6)
    assert got["loss"] != pytest.approx(train.evaluate(model, tiny_images)["loss"], rel=1e-6)
    before = model[3].weight.detach().clone()
    train.fit(model, tiny_images, epochs=2, node_masks=mask, seed=0, progress=False)
    torch.testing.assert_close(model[3].weight[:, 1], before[:, 1])  # reads a removed channel
    assert not torch.equal(model[3].weight[:, 0], before[:, 0])


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: models.lenet5(in_shape=(3, 8, 8), classes=2), r"shape \[1, 8, 8\].*\[3, H, W\]"),
        (lambda: models.lenet5(in_shape=(1, 28, 28), classes=2), "does not fit the model"),
        (lambda: models.lenet5(in_shape=(1, 8, 8), classes=1 + 1), None),
    ],
)
def test_fit_checks_images_against_the_convnet(tiny_images, build, match):
    model = build()
    if match is None:
        train.fit(model, tiny_images, epochs=1, progress=False)
        return
    with pytest.raises(ValueError, match=match):
        train.fit(model, tiny_images, epochs=1, progress=False)


def test_fit_many_says_it_takes_mlps(tiny_images):
    nets = [models.lenet5(in_shape=(1, 8, 8), classes=2, seed=s) for s in range(2)]
    with pytest.raises(ValueError, match="MLPs .* train.fit"):
        ensemble.fit_many(nets, tiny_images, seeds=[0, 1], progress=False)


def test_a_last_batch_of_one_sample_joins_the_one_before_under_batchnorm(tiny_images):
    model = models.lenet5(in_shape=(1, 8, 8), classes=2, batchnorm=True, seed=0)
    data33 = tiny_images.subset(slice(0, 33))
    history = train.fit(model, data33, epochs=2, batch_size=32, seed=0, progress=False)
    assert len(history.loss) == 2 and all(math.isfinite(v) for v in history.loss)

import math

import pytest
import torch
from torch import nn

from prunelab import models, ops


def test_mlp_structure_and_seeded_init():
    m = models.mlp((3, 5, 4, 2), activation="tanh", dropout=0.2, seed=1)
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    for lin in (m[0], m[3], m[6]):
        bound = 1 / math.sqrt(lin.in_features)
        assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            m.parameters(),
            models.mlp((3, 5, 4, 2), activation="tanh", dropout=0.2, seed=1).parameters(),
        )
    )
    other = models.mlp((3, 5, 4, 2), activation="tanh", seed=2)
    assert not torch.equal(m[0].weight, other[0].weight)


def test_mlp_leaves_global_rng_alone():
    state = torch.get_rng_state()
    models.mlp((4, 8, 2), seed=3)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(widths=(3,)), "at least two"),
        (dict(widths=(3, 0, 2)), "at least two positive"),
        (dict(widths=(3, 2), activation="swish"), "choose from"),
        (dict(widths=(3, 2), dropout=1.0), "dropout"),
    ],
)
def test_mlp_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        models.mlp(**bad)


def test_parse_records_layers_dropout_and_slopes():
    m = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(4, 3),
        nn.Dropout(0.5),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(3, 2),
    )
    net = models.parse(m)
    assert net.flatten and net.input_dropout == pytest.approx(0.1)
    first, out = net.layers
    assert (first.position, first.activation, first.slope) == (2, "leaky_relu", 0.2)
    assert first.dropout_pre == pytest.approx(0.5) and first.dropout == pytest.approx(0.3)
    assert first.end == 5 and out.end == 6 and out.activation == "identity"
    assert net.hidden_sizes == [3] and net.in_features == 4 and net.out_features == 2
    x = torch.randn(5, 2, 2)
    assert net.inputs(x).shape == (5, 4)


def test_parse_functional_forward_matches_module():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    net = models.parse(m)
    x = torch.randn(7, 3)
    a = x
    for layer in net.layers:
        a = layer.phi(a @ layer.weight.T + layer.bias)
    torch.testing.assert_close(a, m(x))


def test_parse_names_unsupported_module_position_and_supported_set():
    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Softmax(dim=1))
    with pytest.raises(TypeError, match=r"module 2 \(Softmax\).*Linear, Conv2d, ReLU"):
        models.parse(m, method="ablation")
    with pytest.raises(TypeError, match="ablation"):
        models.parse(m, method="ablation")


@pytest.mark.parametrize(
    "m, match",
    [
        (nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), "before any Linear"),
        (
            nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Tanh(), nn.Linear(2, 2)),
            "another activation",
        ),
        (nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 2)), "expects 4 inputs"),
        (nn.Sequential(nn.Dropout(0.1)), "no Linear"),
        (nn.Sequential(nn.Linear(2, 2), nn.Flatten(), nn.Linear(2, 2)), "before the first Linear"),
    ],
)
def test_parse_structure_errors(m, match):
    with pytest.raises(ValueError, match=match):
        models.parse(m)


def test_parse_rejects_non_sequential_and_unsupported_activation():
    with pytest.raises(TypeError, match="nn.Sequential"):
        models.parse(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"activation 'tanh'.*\['relu'\]"):
        models.parse(models.mlp((2, 3, 2), activation="tanh"), activations=["relu"])


def test_shared_module_parses_as_two_layers_with_one_name():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(3, 2))
    net = models.parse(m)
    assert [layer.position for layer in net.layers] == [0, 2, 4]
    assert net.layers[0].name == net.layers[1].name == "0"
    assert net.layers[0].linear is net.layers[1].linear


def test_spec_round_trip_keeps_structure_and_sharing():
    lin = nn.Linear(3, 3, bias=False)
    m = nn.Sequential(
        nn.Flatten(),
        lin,
        nn.LeakyReLU(0.3),
        nn.Dropout(0.25),
        lin,
        nn.GELU("tanh"),
        nn.Linear(3, 2),
    )
    rebuilt = models.from_spec(models.spec(m))
    assert [type(x) for x in rebuilt] == [type(x) for x in m]
    assert rebuilt[1] is rebuilt[4] and rebuilt[1].bias is None
    assert rebuilt[2].negative_slope == 0.3 and rebuilt[3].p == 0.25
    assert rebuilt[5].approximate == "tanh"


@pytest.mark.parametrize(
    "records, match",
    [
        ([{"type": "Conv3d"}], "unknown module type"),
        ([{"type": "Conv2d", "in_channels": 1}], r"record 0 \(Conv2d\)"),
        ([{"type": "ref", "of": 0}], "bad reference"),
        ([{"type": "Linear", "in_features": 2}], "record 0"),
    ],
)
def test_from_spec_errors(records, match):
    with pytest.raises(ValueError, match=match):
        models.from_spec(records)


def test_hidden_sizes():
    assert models.hidden_sizes(models.mlp((5, 7, 3, 2))) == [7, 3]


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        ([[0.0, 1.0, 2.0]], {}, TypeError, r"fit: x must be a torch.Tensor \[N, 3\]; got list"),
        (torch.zeros(4, 2), {}, ValueError, r"x must have shape \[N, 3\].*got shape \(4, 2\)"),
        (torch.zeros(4, 3, dtype=torch.float64), {}, TypeError, "float64 on cpu but"),
        (torch.zeros(0, 3), {"name": "reference"}, ValueError, "fit: reference holds no samples"),
        (torch.full((2, 3), float("inf")), {}, ValueError, "NaN or inf"),
        (torch.zeros(2, 3, dtype=torch.long), {"convert": True}, TypeError, "floating-point"),
    ],
)
def test_check_x_names_method_argument_and_problem(x, kwargs, error, match):
    net = models.parse(models.mlp((3, 4, 2), seed=0))
    with pytest.raises(error, match=match):
        net.check_x(x, "fit", **kwargs)


def test_check_x_flattens_converts_and_detaches():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    net = models.parse(model)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    xs = net.check_x(x, "fit", convert=True)
    assert xs.shape == (5, 6) and xs.dtype == torch.float32 and not xs.requires_grad
    torch.testing.assert_close(xs, x.detach().flatten(1).float())


@pytest.mark.parametrize(
    ("y", "error", "match"),
    [
        ([0, 1, 1], TypeError, r"y must be a torch.Tensor \[3\]"),
        (torch.tensor([0.0, 1.0, 1.0]), TypeError, "integer class labels; got torch.float32"),
        (torch.tensor([0, 1]), ValueError, r"y must have shape \[3\] like x; got \(2,\)"),
        (torch.tensor([0, 1, 2]), ValueError, r"\[0, 2\) for a model with 2 outputs.*\[0, 2\]"),
        (torch.tensor([-1, 0, 1]), ValueError, r"got range \[-1, 1\]"),
    ],
)
def test_check_labels_names_the_problem(y, error, match):
    net = models.parse(models.mlp((3, 4, 2), seed=0))
    with pytest.raises(error, match=match):
        net.check_labels(y, 3, "fit")
    ok = net.check_labels(torch.tensor([1, 0, 1], dtype=torch.int32), 3, "fit")
    assert ok.dtype == torch.long and ok.tolist() == [1, 0, 1]


def test_unit_scales_equal_scaling_the_next_layers_weights():
    model = models.mlp((3, 5, 4, 2), seed=0, dtype=torch.float64)
    view = ops.parse(model)
    x = torch.randn(7, 3, dtype=torch.float64)
    m0, m1 = torch.rand(5, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    got = ops.forward(view, x, scales={0: m0, 1: m1})
    a = torch.relu(x @ model[0].weight.T + model[0].bias)
    a = torch.relu(a @ (model[2].weight * m0).T + model[2].bias)  # scaling a = scaling columns
    want = a @ (model[4].weight * m1).T + model[4].bias
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ops.forward(view, x, scales={}), model(x))


# --- convnets --------------------------------------------------------------------------


def test_lenet5_has_the_papers_shape_on_28x28():
    model = models.lenet5(seed=0)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 6, (5, 5)),
        (6, 16, (5, 5)),
    ]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    # 61,706 parameters: conv 156 + 2,416, fc 48,120 + 10,164 + 850
    assert sum(p.numel() for p in model.parameters()) == 61706
    assert ops.parse(model).hidden_sizes == [6, 16, 120, 84]


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_lenet5_takes_small_and_large_images(in_shape, pool):
    model = models.lenet5(in_shape=in_shape, pool=pool, batchnorm=True, dropout=0.2, classes=4)
    assert model.eval()(torch.zeros(2, *in_shape)).shape == (2, 4)


def test_convnet_init_is_seeded_and_leaves_the_global_rng():
    state = torch.get_rng_state()
    a, b, c = models.lenet5(seed=1), models.lenet5(seed=1), models.lenet5(seed=2)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)
    bound = 1 / (1 * 5 * 5) ** 0.5  # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert a[0].weight.abs().max() <= bound and a[0].weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize("config", ["vgg11", "vgg13", "vgg16"])
def test_vgg_layout_and_width(config):
    convs = {"vgg11": 8, "vgg13": 10, "vgg16": 13}[config]
    model = models.vgg(config, width=0.25, seed=0)
    features, avgpool, flatten, classifier = model
    assert isinstance(avgpool, nn.AdaptiveAvgPool2d) and isinstance(flatten, nn.Flatten)
    got = [m.out_channels for m in features if isinstance(m, nn.Conv2d)]
    assert len(got) == convs and max(got) == 128 and min(got) == 16  # 512 and 64 scaled by 1/4
    view = ops.parse(model.eval())
    assert all(layer.norm is not None for layer in view.layers if layer.conv)
    assert view.hidden_sizes[-2:] == [128, 128]
    for shape in [(3, 32, 32), (3, 28, 28), (3, 8, 8)]:
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_full_vgg16_has_its_known_size():
    # 14,714,688 conv parameters of VGG-16 (Simonyan & Zisserman 2015, configuration D) plus
    # BatchNorm (2 x 4,224) and the CIFAR classifier 512-512-512-10 (530,442)
    model = models.vgg("vgg16")
    assert sum(p.numel() for p in model.parameters()) == 14_714_688 + 2 * 4_224 + 530_442


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: models.lenet5(pool="median"), "pool 'median'"),
        (lambda: models.lenet5(in_shape=(28, 28)), "in_shape"),
        (lambda: models.lenet5(in_shape=(1, 3, 3)), "too small"),
        (lambda: models.lenet5(classes=1), "classes"),
        (lambda: models.vgg("vgg19"), "vgg11"),
        (lambda: models.vgg(width=0), "width"),
        (lambda: models.vgg(dropout=1.0), "dropout"),
    ],
)
def test_convnet_builders_reject_bad_arguments(build, error):
    with pytest.raises(ValueError, match=error):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.lenet5(batchnorm=True, dropout=0.1, pool="avg", seed=3),
        lambda: models.vgg("vgg11", width=0.125, seed=3),
    ],
)
def test_convnet_spec_round_trip(build):
    model = build()
    for m in model.modules():  # non-default BatchNorm statistics survive
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    rebuilt = models.from_spec(models.spec(model))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(3, *((1, 28, 28) if isinstance(model[0], nn.Conv2d) else (3, 32, 32)))
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))
    assert models.spec(rebuilt) == models.spec(model)


def test_build_is_each_builder_by_name():
    cases = [
        (
            models.build("mlp", in_shape=(4,), classes=3, widths=(4, 5, 3), seed=2),
            models.mlp((4, 5, 3), seed=2),
        ),
        (
            models.build(
                "lenet5", in_shape=(1, 8, 8), classes=4, pool="avg", batchnorm=True, seed=1
            ),
            models.lenet5(in_shape=(1, 8, 8), classes=4, pool="avg", batchnorm=True, seed=1),
        ),
        (
            models.build("vgg11", in_shape=(3, 16, 16), classes=5, width=0.125, batchnorm=True),
            models.vgg("vgg11", in_shape=(3, 16, 16), classes=5, width=0.125, dropout=0.0),
        ),
    ]
    for got, want in cases:
        assert str(got) == str(want)
        for (n, a), (m, b) in zip(got.state_dict().items(), want.state_dict().items(), strict=True):
            assert n == m and torch.equal(a, b)
    with pytest.raises(ValueError, match=r"build: arch 'resnet'.*choose from mlp, lenet5, vgg11"):
        models.build("resnet", in_shape=(1, 8, 8), classes=10)
    with pytest.raises(ValueError, match="needs widths"):
        models.build("mlp", in_shape=(4,), classes=3)

"""The explorer page's Python side: what it embeds, where it writes, the CLI and the report hook.

The page's arithmetic runs in the browser; tests/test_explorer_browser.py checks it against the
library. Here the embedded arrays are decoded independently and compared with the model, the
data and the statistics recomputed by hand.
"""

import base64
import dataclasses
import json
import math
import re
import tomllib
import types
from pathlib import Path, PurePosixPath

import matplotlib
import numpy as np
import pytest
import torch
from prunelab.cli import app
from prunelab.web import explorer
from typer.testing import CliRunner

import prunelab
from prunelab import checkpoint, data, models, report
from prunelab.studies.base import Section

runner = CliRunner()
NUMPY = {"f64": "<f8", "f32": "<f4", "u8": "u1", "i32": "<i4"}


def decode(a: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(a["b64"]), NUMPY[a["dtype"]]).reshape(a["shape"])


def embedded(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page)
    return json.loads(match.group(1))


@pytest.fixture
def circle_ckpt(tmp_path):
    model = models.mlp((2, 7, 5, 2), activation="tanh", seed=3)
    return checkpoint.save(tmp_path / "net.safetensors", model, data="circle", seed=2), model


def test_payload_embeds_the_exact_weights_data_and_node_statistics():
    model = models.mlp((2, 6, 4, 2), activation="leaky_relu", slope=0.1, seed=1)
    test = data.load("circle", seed=5, n_test=300).test
    p = explorer.payload(model, test, samples=120, grid=9, lim=1.5)
    assert p["widths"] == [2, 6, 4, 2] and p["classes"] == 2 and p["data"] == "circle"
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for layer, linear in zip(p["layers"], linears):
        # float32 -> float64 is exact, so the page computes with the very same numbers
        assert np.array_equal(decode(layer["W"]), linear.weight.detach().double().numpy())
        assert np.array_equal(decode(layer["b"]), linear.bias.detach().double().numpy())
    assert [layer["activation"] for layer in p["layers"]] == ["leaky_relu"] * 2 + ["identity"]
    assert p["layers"][0]["slope"] == pytest.approx(0.1)
    x, y = decode(p["x"]), decode(p["y"])
    assert np.array_equal(x, test.x[:120].numpy()) and np.array_equal(y, test.y[:120].numpy())
    # the statistics by hand: a = leaky_relu(x W.T + b) layer by layer, in float64
    a, acts = torch.tensor(x, dtype=torch.float64), []
    for linear in linears[:-1]:
        z = a @ linear.weight.detach().double().T + linear.bias.detach().double()
        a = torch.where(z > 0, z, 0.1 * z)
        acts.append(a)
    acts = torch.cat(acts, 1)  # [N, H]
    assert np.allclose(decode(p["mean"]), acts.mean(0).numpy(), rtol=0, atol=1e-12)
    std = ((acts - acts.mean(0)) ** 2).mean(0).sqrt()  # population std
    assert np.allclose(decode(p["std"]), std.numpy(), rtol=0, atol=1e-12)


def test_plane_grid_labels_and_colormaps():
    model = models.mlp((2, 5, 2), seed=0)
    test = data.load("circle", seed=0, n_test=200).test
    p = explorer.payload(model, test, grid=11, lim=2.0)
    plane = p["plane"]
    axis = decode(plane["axis"])  # the library's grid, so the page's map is on the same points
    assert np.array_equal(axis, data.grid(11, 2.0, dtype=torch.float64)[:11, 0].numpy())
    assert np.allclose(axis, np.linspace(-2, 2, 11), rtol=0, atol=1e-15)
    points = np.stack(np.meshgrid(np.linspace(-2, 2, 11), np.linspace(-2, 2, 11)), -1)
    outside = (points**2).sum(-1).reshape(-1) > 2 / math.pi  # x1 outer, x0 inner
    assert np.array_equal(decode(plane["labels"]), outside.astype(np.uint8))
    radius = np.hypot(*np.array(plane["reference"]).T)
    assert np.allclose(radius, math.sqrt(2 / math.pi))
    viridis = matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    assert np.abs(decode(p["colormaps"]["prob"]) / 255 - viridis).max() <= 0.5 / 255
    assert p["image"] is None and p["images"] == []


def test_spirals_plane_labels_are_the_nearest_sample():
    test = data.load("spirals", seed=1, n_test=80).test
    p = explorer.payload(models.mlp((2, 4, 2), seed=0), test, grid=7)
    labels = decode(p["plane"]["labels"])
    g = np.linspace(-2, 2, 7)
    for k, (x0, x1) in enumerate((a, b) for b in g for a in g):
        nearest = np.argmin(((test.x.double().numpy() - [x0, x1]) ** 2).sum(1))
        assert labels[k] == test.y[nearest]


def test_image_data_get_sample_images_of_every_class():
    test = data.load("digits", seed=0).test
    p = explorer.payload(models.mlp((64, 8, 10), seed=0), test, samples=100)
    assert p["plane"] is None and p["image"] == [8, 8]
    assert len(p["images"]) == explorer.IMAGES == len(set(p["images"]))
    y = decode(p["y"])
    assert len(y) == 100
    assert {int(y[i]) for i in p["images"]} == set(y.tolist())  # each class, as far as it goes


def test_page_is_self_contained_and_escapes_its_data(tmp_path):
    test = data.load("circle", seed=0, n_test=50).test
    # a title that would end the <script> block if it were not escaped
    page = explorer.page(models.mlp((2, 3, 2), seed=0), test, title="</script><b>x", grid=5)
    assert "{{" not in page and page.count("</script>") == 2
    outside_data = re.sub(r'id="explorer-data">.*?</script>', "", page, flags=re.S)
    assert "<b>x" not in outside_data and "&lt;/script&gt;&lt;b&gt;x" in outside_data
    assert embedded(page)["title"] == "</script><b>x"
    # nothing is fetched: no external scripts, styles, images or fetch calls
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=", page)
    assert "fetch(" not in page and "XMLHttpRequest" not in page and "import(" not in page
    urls = set(re.findall(r"https?://[^\s\"'`)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}  # the SVG namespace name, never fetched
    assert "default-src 'none'" in page  # and the page forbids any request


POOL_FIRST = [torch.nn.MaxPool2d(2), torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten()]
POOL_FIRST.append(torch.nn.Linear(8, 10))


@pytest.mark.parametrize(
    "model, dataset, match",
    [
        (models.mlp((3, 4, 2), seed=0), "circle", "2 features but the model takes 3"),
        (models.mlp((2, 4, 1), seed=0), "circle", "2 classes but the model has 1 outputs"),
        (torch.nn.Sequential(torch.nn.Linear(2, 2)), "circle", "no hidden layer"),
        (torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1)), "circle", "unsupported module 0"),
        (models.lenet5(in_shape=(1, 8, 8)), "circle", r"shape \[2\] but the model's first Conv2d"),
        (models.lenet5(in_shape=(1, 28, 28)), "digits", "cannot take"),
        (
            torch.nn.Sequential(*POOL_FIRST),
            "digits",
            r"module 0 \(MaxPool2d\) pools the input before the first layer",
        ),
    ],
)
def test_bad_inputs_are_named(model, dataset, match):
    test = data.load(dataset, seed=0, n_test=20).test
    with pytest.raises((ValueError, TypeError), match=match):
        explorer.payload(model, test)


def test_from_checkpoint_uses_the_data_and_seed_of_its_metadata(circle_ckpt, tmp_path):
    path, model = circle_ckpt
    page = explorer.from_checkpoint(path, samples=40)
    assert page == path.with_suffix(".html")
    p = embedded(page.read_text())
    assert np.array_equal(decode(p["x"]), data.load("circle", seed=2).test.x[:40].numpy())
    assert "net.safetensors" in p["source"] and p["widths"] == [2, 7, 5, 2]
    bare = checkpoint.save(tmp_path / "bare.safetensors", model)
    with pytest.raises(ValueError, match="names no data"):
        explorer.from_checkpoint(bare)
    p = embedded(
        explorer.from_checkpoint(bare, tmp_path / "o.html", data_name="spirals").read_text()
    )
    assert p["data"] == "spirals"
    with pytest.raises(ValueError, match="neither a built-in set"):
        explorer.from_checkpoint(bare, data_name="cirlce")


def test_run_checkpoint_prefers_explorer_safetensors(tmp_path):
    model = models.mlp((2, 3, 2), seed=0)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        explorer.run_checkpoint(tmp_path)
    checkpoint.save(tmp_path / "a.safetensors", model)
    assert explorer.run_checkpoint(tmp_path).name == "a.safetensors"
    checkpoint.save(tmp_path / "b.safetensors", model)
    with pytest.raises(ValueError, match=r"a\.safetensors, b\.safetensors"):
        explorer.run_checkpoint(tmp_path)
    checkpoint.save(tmp_path / "explorer.safetensors", model)
    assert explorer.run_checkpoint(tmp_path).name == "explorer.safetensors"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        explorer.run_checkpoint(tmp_path / "nope")


def test_cli_explore_writes_and_opens_the_page(circle_ckpt, tmp_path, monkeypatch):
    path, _ = circle_ckpt
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["explore", "--checkpoint", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and opened == [out.resolve().as_uri()]
    run = tmp_path / "run"
    checkpoint.save(run / "explorer.safetensors", models.mlp((64, 5, 10), seed=0), data="digits")
    result = runner.invoke(app, ["explore", "--run", str(run), "--no-open", "--samples", "30"])
    assert result.exit_code == 0, result.output
    assert len(opened) == 1 and str(run / "explorer.html") in result.output
    assert len(decode(embedded((run / "explorer.html").read_text())["y"])) == 30


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "exactly one of --checkpoint FILE or --run RUN_DIR"),
        (["--checkpoint", "a", "--run", "b"], "exactly one of"),
        (["--checkpoint", "/nonexistent.safetensors"], "does not exist"),
        (["--run", "/nonexistent/run"], "does not exist"),
    ],
)
def test_cli_explore_errors(args, match):
    result = runner.invoke(app, ["explore", "--no-open", *args])
    assert result.exit_code == 2 and match in result.output


@dataclasses.dataclass(frozen=True)
class _Config:
    seed: int = 0


_STUDY = types.SimpleNamespace(
    NAME="fake",
    TITLE="A fake study",
    SUMMARY="",
    headline=lambda results: {},
    sections=lambda results, config: [Section("What was done", ["nothing"])],
)


def test_report_links_the_explorer_when_the_run_saved_a_network(tmp_path):
    plain = tmp_path / "plain"
    report.render(_STUDY, _Config(), None, plain)
    assert "explorer" not in (plain / "report.html").read_text()
    assert not (plain / "explorer.html").exists()
    run = tmp_path / "run"
    checkpoint.save(run / "explorer.safetensors", models.mlp((2, 4, 2), seed=0), data="circle")
    report.render(_STUDY, _Config(), None, run)
    html = (run / "report.html").read_text()
    assert "<a href='explorer.html'>Open the interactive explorer</a>" in html
    assert html.index("explorer.html") < html.index("What was done")  # near the top
    assert embedded((run / "explorer.html").read_text())["data"] == "circle"


def test_report_says_why_the_explorer_is_missing(tmp_path):
    run = tmp_path / "run"
    checkpoint.save(run / "explorer.safetensors", models.mlp((3, 4, 2), seed=0), data="circle")
    report.render(_STUDY, _Config(), None, run)
    html = (run / "report.html").read_text()
    assert "could not be written" in html and "2 features but the model takes 3" in html


def test_package_data_ships_the_page_files():
    root = Path(explorer.__file__).parent
    for name in ("explorer.html", "explorer.js", "network.js", "explorer.css"):
        assert (root / name).is_file()
    # the package-data globs of pyproject.toml cover each file, relative to the package root
    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["prunelab"]
    package = Path(prunelab.__file__).parent
    for name in ("explorer.html", "explorer.js", "network.js", "explorer.css"):
        relative = PurePosixPath((root / name).relative_to(package).as_posix())
        assert any(relative.match(g) for g in globs), (relative, globs)


# --- convnets ---------------------------------------------------------------------------------


def _lenet_with_batchnorm(pool: str = "max") -> torch.nn.Sequential:
    model = models.lenet5(in_shape=(1, 8, 8), pool=pool, batchnorm=True, seed=0)
    g = torch.Generator().manual_seed(1)
    for bn in (m for m in model if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)):
        with torch.no_grad():  # running statistics and affine parameters far from 0 and 1
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def test_convnet_payload_folds_batchnorm_and_embeds_channels():
    model = _lenet_with_batchnorm()
    test = data.load("digits", seed=0).test
    p = explorer.payload(model, test, samples=60)
    assert p["widths"] == [64, 6, 16, 120, 84, 10] and p["input"] == [1, 8, 8]
    assert p["conv"] == [True, True, False, False] and p["classes"] == 10
    assert p["title"] == "1x8x8-c6-c16-120-84-10 relu net on digits"
    assert p["image"] == [8, 8] and p["plane"] is None
    assert np.array_equal(decode(p["x"]), test.x[:60].numpy())  # [N, 1, 8, 8], as the conv reads
    layers = [m for m in model if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    norms = [m for m in model if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    for layer, module, bn in zip(p["layers"], layers, [*norms, None]):
        W, b = module.weight.detach().double(), module.bias.detach().double()
        if (
            bn is not None
        ):  # BatchNorm by hand: s (W x + b - mu) + beta, s = gamma / sqrt(var + eps)
            scale = bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()
            W = W * scale.view(-1, *[1] * (W.dim() - 1))
            b = scale * (b - bn.running_mean.double()) + bn.bias.detach().double()
        assert np.allclose(decode(layer["W"]), W.numpy(), rtol=1e-15, atol=0)
        assert np.allclose(decode(layer["b"]), b.numpy(), rtol=1e-14, atol=1e-16)
    conv0, conv1, fc = p["layers"][:3]
    assert conv0["kind"] == "conv" and fc["kind"] == "linear"
    assert (conv0["in"], conv0["out"], conv1["in"], conv1["out"]) == (
        [1, 8, 8], [6, 8, 8], [6, 4, 4], [16, 4, 4]
    )  # fmt: skip
    assert conv0["stride"] == [1, 1] and conv0["padding"] == [2, 2] and conv0["dilation"] == [1, 1]
    assert conv0["pre"] == [{"op": "act", "activation": "relu", "slope": 0.0}]
    (pool,) = conv0["pools"]  # 2x2 max pool of an 8x8 map: output (r, c) reads 4 inputs
    assert pool["kind"] == "max" and pool["out"] == [4, 4]
    index = decode(pool["index"])
    r, c = np.divmod(np.arange(16), 4)
    top = 16 * r + 2 * c
    assert np.array_equal(index, np.stack([top, top + 1, top + 8, top + 9], 1))
    assert fc["pools"] == [] and "stride" not in fc
    # per unit: mean and population std over samples and positions, the modules run by hand
    x = test.x[:60].double()
    net = model.double()
    with torch.no_grad():  # after each hidden activation
        acts = [net[:3](x), net[:7](x), net[:12](x), net[:15](x)]
    per_unit = [a.transpose(0, 1).reshape(a.shape[1], -1) for a in acts]
    mean = torch.cat([a.mean(1) for a in per_unit])
    std = torch.cat([((a - a.mean(1, keepdim=True)) ** 2).mean(1).sqrt() for a in per_unit])
    assert len(decode(p["mean"])) == 226
    assert np.allclose(decode(p["mean"]), mean.numpy(), rtol=0, atol=1e-12)
    assert np.allclose(decode(p["std"]), std.numpy(), rtol=0, atol=1e-12)


POOLS = [
    torch.nn.MaxPool2d(2),
    torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    torch.nn.MaxPool2d(2, stride=1, dilation=2),
    torch.nn.AvgPool2d(2),
    torch.nn.AvgPool2d(3, stride=2, padding=1),  # padded zeros counted
    torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    torch.nn.AvgPool2d(2, divisor_override=3),
    torch.nn.AdaptiveMaxPool2d((3, 2)),  # overlapping windows
    torch.nn.AdaptiveAvgPool2d((3, 4)),
]


@pytest.mark.parametrize("pool", POOLS, ids=repr)
def test_pool_windows_reproduce_the_pool(pool):
    """Each output of the embedded windows, ``max`` or ``sum(weight * input)`` over its
    inputs, equals torch's pooling of random maps (7 x 6, so windows run over the border)."""
    features = 2 * pool(torch.zeros(1, 1, 7, 6))[0, 0].numel()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 1), torch.nn.Tanh(), pool, torch.nn.Flatten(),
        torch.nn.Linear(features, 3),
    )  # fmt: skip
    dataset = data.Dataset(torch.rand(5, 1, 7, 6), torch.arange(5) % 3, "maps", 3)
    (layer, _) = explorer.payload(model, dataset)["layers"]
    (enc,) = layer["pools"]
    index, weight = decode(enc["index"]), decode(enc["weight"])
    maps = torch.randn(4, 7 * 6, dtype=torch.float64)  # [maps, positions]
    want = pool(maps.view(4, 1, 7, 6)).reshape(4, -1).numpy()
    assert enc["out"] == list(pool(maps.view(4, 1, 7, 6)).shape[-2:])
    a = maps.numpy()
    for o in range(index.shape[0]):
        inputs = index[o][index[o] >= 0]
        got = (
            a[:, inputs].max(1) if enc["kind"] == "max" else a[:, inputs] @ weight[o][: len(inputs)]
        )
        assert np.allclose(got, want[:, o], rtol=1e-14, atol=1e-15)


def test_from_checkpoint_cli_and_report_take_convnets(tmp_path, monkeypatch):
    model = _lenet_with_batchnorm(pool="avg")
    path = checkpoint.save(tmp_path / "lenet.safetensors", model, data="digits", seed=0)
    p = embedded(explorer.from_checkpoint(path, samples=40).read_text())
    assert p["conv"] == [True, True, False, False] and len(decode(p["y"])) == 40
    assert decode(p["layers"][0]["pools"][0]["weight"]).tolist() == [[0.25] * 4] * 16
    run = tmp_path / "run"  # a node-removal run folder of a convnet
    checkpoint.save(run / "explorer.safetensors", model, data="digits", seed=0, samples=30)
    monkeypatch.setattr("webbrowser.open", lambda url: None)
    result = runner.invoke(app, ["explore", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert len(decode(embedded((run / "explorer.html").read_text())["y"])) == 30
    (run / "explorer.html").unlink()
    report.render(_STUDY, _Config(), None, run)
    assert (
        "<a href='explorer.html'>Open the interactive explorer</a>"
        in (run / "report.html").read_text()
    )
    assert embedded((run / "explorer.html").read_text())["conv"][0] is True

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


@pytest.mark.parametrize(
    "model, dataset, match",
    [
        (models.mlp((3, 4, 2), seed=0), "circle", "2 features but the model takes 3"),
        (models.mlp((2, 4, 1), seed=0), "circle", "2 classes but the model has 1 outputs"),
        (torch.nn.Sequential(torch.nn.Linear(2, 2)), "circle", "no hidden layer"),
        (torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1)), "circle", "unsupported module 0"),
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
    for name in ("explorer.html", "explorer.js", "explorer.css"):
        assert (root / name).is_file()
    # the package-data globs of pyproject.toml cover each file, relative to the package root
    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["prunelab"]
    package = Path(prunelab.__file__).parent
    for name in ("explorer.html", "explorer.js", "explorer.css"):
        relative = PurePosixPath((root / name).relative_to(package).as_posix())
        assert any(relative.match(g) for g in globs), (relative, globs)

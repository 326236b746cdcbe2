"""One CLI smoke path per command, through typer's CliRunner."""

import json

import pytest
import torch
from prunelab.cli import app
from typer.testing import CliRunner

from prunelab import checkpoint, data

runner = CliRunner()
TINY = [
    "--no-progress",
    "--circle-epochs",
    "2",
    "--spirals-epochs",
    "2",
    "--n-test",
    "300",
    "--grid",
    "24",
    "--circle-train",
    "200",
    "--spirals-train",
    "200",
]


def test_list_names_every_study():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "toy-nets" in result.output


def test_unknown_study_lists_the_valid_ones():
    result = runner.invoke(app, ["run", "toy-netz"])
    assert result.exit_code == 2
    assert "unknown study 'toy-netz'" in result.output and "toy-nets" in result.output


def test_unknown_option_lists_the_valid_ones():
    result = runner.invoke(app, ["run", "toy-nets", "--circle-widht", "3"])
    assert result.exit_code == 2
    assert "--circle-widht" in result.output and "--circle-width" in result.output
    assert "--threads" in result.output


def test_bad_option_value_is_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[toy-nets]\ncircle_width = "wide"\n')
    result = runner.invoke(app, ["run", "toy-nets", "--config", str(cfg), *TINY])
    assert result.exit_code == 2 and "circle_width" in result.output


def test_run_writes_results_report_and_checkpoints_then_rerenders(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("seed = 4\n[toy-nets]\ncircle_width = 6\n")
    result = runner.invoke(
        app,
        [
            "run",
            "toy-nets",
            "--out",
            str(tmp_path),
            "--config",
            str(cfg),
            "--spirals-widths",
            "2,8,8,2",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "toy-nets"
    raw = json.loads((run / "results.json").read_text())
    assert raw["config"]["seed"] == 4 and raw["config"]["circle_width"] == 6
    assert raw["config"]["spirals_widths"] == [2, 8, 8, 2]
    assert raw["versions"]["torch"] == torch.__version__ and raw["device"] == "cpu"
    assert set(raw["headline"]) >= {"circle test accuracy", "spirals test accuracy"}
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "What was done" in html
    model, meta = checkpoint.load(run / "circle.safetensors")
    assert meta["data"] == "circle" and model[0].out_features == 6
    (run / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0 and (run / "report.html").is_file()


def test_report_on_a_folder_without_results():
    result = runner.invoke(app, ["report", "/nonexistent/run"])
    assert result.exit_code == 2 and "no results.json" in result.output


def test_run_all_writes_an_index(tmp_path, monkeypatch):
    # every study runs in `run all`; here the two smallest stand for them (each study has its own
    # test with a tiny config)
    import prunelab.cli as cli

    monkeypatch.setattr(cli, "RUN_ALL", ("toy-nets", "node-removal"))
    cfg = tmp_path / "all.toml"
    toy = "\n".join(
        f"{k.lstrip('-').replace('-', '_')} = {v}" for k, v in zip(TINY[1::2], TINY[2::2])
    )
    cfg.write_text(
        f"[toy-nets]\n{toy}\n[node-removal]\ncircle_epochs = 2\nmasks = 20\nn_test = 200\n"
        "paths = 10\ngrid = 12\ngradient_grid = 6\nseeds = 1\n"
    )
    result = runner.invoke(
        app,
        [
            "run",
            "all",
            "--out",
            str(tmp_path),
            "--config",
            str(cfg),
            "--no-progress",
            "--seed",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    index = (tmp_path / "index.html").read_text()
    assert "toy-nets/report.html" in index and "circle test accuracy" in index
    assert "node-removal/report.html" in index
    assert json.loads((tmp_path / "toy-nets" / "results.json").read_text())["seed"] == 2


def test_run_all_rejects_unknown_tables(tmp_path):
    cfg = tmp_path / "all.toml"
    cfg.write_text("[toy-netz]\nseed = 1\n")
    result = runner.invoke(app, ["run", "all", "--config", str(cfg)])
    assert result.exit_code == 2 and "toy-netz" in result.output


def test_train_writes_a_checkpoint_later_studies_can_load(tmp_path):
    out = tmp_path / "c.safetensors"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            "circle",
            "--widths",
            "2,6,2",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    model, meta = checkpoint.load(out)
    assert meta["data"] == "circle" and meta["widths"] == [2, 6, 2]
    assert model(data.circle(4, seed=0).x).shape == (4, 2)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--data", "cirlce", "--widths", "2,4,2"], "choose from"),
        (["--data", "circle", "--widths", "3,4,2"], "2 input features"),
    ],
)
def test_train_errors(tmp_path, args, match):
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and match in result.output


def test_train_a_convnet_checkpoint_that_loads_back(tmp_path):
    out = tmp_path / "lenet.safetensors"
    args = ["train", "--arch", "lenet5", "--data", "digits", "--epochs", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--batchnorm", "--no-progress"])
    assert result.exit_code == 0, result.output
    model, meta = checkpoint.load(out)
    assert meta["arch"] == "lenet5" and meta["train"]["batchnorm"] is True
    x = data.load("digits", seed=0).test.x[:3]
    assert model(x).shape == (3, 10) and isinstance(model[1], torch.nn.BatchNorm2d)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--arch", "resnet", "--data", "digits"], "choose from mlp, lenet5, vgg11"),
        (["--arch", "lenet5", "--data", "circle"], "takes images [C, H, W]"),
        (["--arch", "mlp", "--data", "digits"], "needs --widths"),
        (["--data", "digits", "--widths", "64,8,10", "--device", "tpu"], "cpu, cuda, auto"),
        (["--data", "mnist", "--widths", "784,8,10", "--data-root", "/nonexistent"], "MNIST"),
        (["--data", "cifar10", "--arch", "vgg11"], "pass --data-root DIR"),
    ],
)
def test_train_convnet_and_device_errors(tmp_path, args, match):
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and match in result.output, result.output


def test_cuda_without_a_gpu_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, ["run", "toy-nets", "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no CUDA device" in result.output
    assert not (tmp_path / "toy-nets").exists()

"""One CLI smoke path per command, through typer's CliRunner."""

import json

import pytest
import torch
from prunelab.cli import app
from typer.testing import CliRunner

from prunelab import checkpoint, data, files

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


TINY_ALL = """
seeds = 2
[toy-nets]
circle_epochs = 2
spirals_epochs = 2
n_test = 300
grid = 24
circle_train = 200
spirals_train = 200
[node-removal]
masks = 20
n_test = 200
paths = 10
grid = 12
gradient_grid = 6
robust_seeds = 1
[train-vs-prune]
widths = [2, 8, 6, 2]
epochs = 4
finetune_epochs = 2
n_train = 160
n_test = 120
grid = 12
lenet5_train = 200
lenet5_epochs = 1
[node-criteria]
criteria = ["random", "activation_std", "taylor"]
fractions = [0.25, 0.5]
mnist_widths = [784, 12, 8, 10]
mnist_train = 200
mnist_epochs = 1
spirals_widths = [2, 10, 8, 2]
spirals_train = 200
spirals_epochs = 3
lenet5_train = 200
lenet5_epochs = 1
n_test = 100
score_points = 100
finetune_fractions = [0.5]
finetune_epochs = 1
[obd-vs-magnitude]
widths = [784, 16, 12, 8, 10]
n_train = 300
n_test = 200
epochs = 3
score_samples = 200
extra = ["snip"]
step = 0.1
fine_arms = 1
fine_step = 0.02
finetune_levels = [0.5]
finetune_epochs = 1
ratio_samples = 100
ratio_probes = 4
convnet = false
[approximation-bounds]
seeds = 1
regimes = ["plain", "dropout"]
epochs = 2
n_train = 600
n_dev = 300
draws = 2
shares = [0.5, 0.9]
alpha_share = 0.5
sensitivity_points = 100
keep = [0.2]
l0_penalties = [0.03]
l0_epochs = 1
finetune_epochs = 1
ball_points = 50
alphas = [1.0, 2.0]
layer_eps = [10.0]
arch = "none"
[relevance]
circle_epochs = 3
spirals_epochs = 2
grid = 12
blame_nodes = 4
images = "digits"
image_hidden = [16]
image_epochs = 3
samples = 2
agreement_samples = 40
decoy_hidden = [16]
patch = 2
weights = [5.0]
corners = ["top_left"]
seeds = 2
sweep_per_level = 1
convnet = false
"""


def test_run_all_runs_every_study_and_scores_every_finding(tmp_path):
    """All seven studies through `run all` on tiny settings: each run's findings are valid data
    linked to a section of its own report, and the scoreboard (index and terminal) holds every
    finding of every study, in run all's order."""
    from prunelab.faces import cli
    from prunelab.faces.report import load_run, scoreboard
    from prunelab.methods import findings

    cfg = tmp_path / "all.toml"
    cfg.write_text(TINY_ALL)
    args = ["run", "all", "--out", str(tmp_path), "--config", str(cfg), "--no-progress"]
    result = runner.invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    total = 0
    for name in cli.RUN_ALL:
        study, config, results, raw = load_run(tmp_path / name)
        stored = raw["findings"]
        assert stored, f"{name} states no findings"
        again = files.to_jsonable(study.findings(results, config))  # from the stored results
        assert [(f["claim"], f["verdict"]) for f in stored] == [
            (f["claim"], f["verdict"]) for f in again
        ]
        titles = {s.title for s in study.sections(results, config)}
        for f in stored:
            assert f["verdict"] in findings.VERDICTS and f["claim"] and f["rule"]
            assert f["section"] in titles | {""}, (name, f["claim"], f["section"])
        total += len(stored)
    board = scoreboard([tmp_path / n for n in cli.RUN_ALL])
    assert len(board) == total
    assert [r["study"] for r in board] == sorted(
        (r["study"] for r in board), key=list(cli.RUN_ALL).index
    )
    printed = runner.invoke(app, ["findings", str(tmp_path)])
    assert printed.exit_code == 0
    counts = {v: sum(r["verdict"] == v for r in board) for v in findings.VERDICTS}
    assert ", ".join(f"{n} {v}" for v, n in counts.items()) in printed.output


def test_run_all_writes_an_index(tmp_path, monkeypatch):
    # the seed given on the line reaches every study (two of them here; all seven above)
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
    from prunelab.faces.report import scoreboard

    runs = [tmp_path / "toy-nets", tmp_path / "node-removal"]
    board = scoreboard(runs)
    stored = [json.loads((r / "results.json").read_text())["findings"] for r in runs]
    assert len(board) == sum(map(len, stored)) and all(stored)
    assert json.loads((tmp_path / "toy-nets" / "results.json").read_text())["seed"] == 2
    assert (tmp_path / "index.html").is_file()


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

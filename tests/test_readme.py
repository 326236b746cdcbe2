"""The README's commands and example are the ones CI runs and users copy: keep them true."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(b.strip() for b in _blocks("bash") if b.strip().endswith("pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert test_command.index("torch==2.13.0") < test_command.index('pip install -e ".[test]"')


def test_readme_main_command_runs_every_study():
    assert any(b.strip().endswith("prunelab run all") for b in _blocks("bash"))


def test_readme_library_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), namespace)
    assert (
        namespace["train"].evaluate(namespace["model"], namespace["split"].test)["accuracy"] > 0.97
    )
    assert len(namespace["histories"]) == 8
    # the methods tour: shapes, and blame-the-bias conservation
    assert namespace["grad"].shape == (1000, 20) and len(namespace["certificate"]) == 20
    assert int(namespace["pruned"].kept.sum()) == 10
    torch.testing.assert_close(namespace["total"], namespace["r"].output, atol=1e-5, rtol=0)
    # convnets: the LeNet-5 recipe, and channel removal keeps the model working
    lenet, images = namespace["lenet"], namespace["images"]
    assert namespace["train"].evaluate(lenet, images.test)["accuracy"] >= 0.95
    assert namespace["ops"].parse(namespace["smaller"]).hidden_sizes == [6, 14, 120, 84]
    # channel masks, criteria, exact mean compensation and bounds on the convnet
    assert namespace["grads"].shape == (200, 226)
    assert namespace["ops"].parse(namespace["lean"]).hidden_sizes == [4, 12, 90, 63]
    assert namespace["train"].evaluate(namespace["lean"], images.test)["accuracy"] >= 0.9
    assert [len(b) for b in namespace["channel_bounds"]] == [6, 16, 120, 84]

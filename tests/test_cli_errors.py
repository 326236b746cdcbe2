"""Bad input to the command line: one line naming the option or file, exit code 2, no
traceback, nothing written; the studies' options as the CLI reads them equal their configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import prunelab.cli as cli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prunelab.cli import app
from typer.testing import CliRunner

from prunelab.studies import STUDIES, catalogue
from prunelab.studies.base import config_fields

runner = CliRunner()
SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SRC = str(Path(cli.__file__).parents[2])  # the src folder this prunelab was imported from


def _user_error(result, *names: str) -> str:
    """Assert a one-line user error (exit 2, no traceback) naming each of ``names``."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_the_catalogue_reads_each_study_as_its_config_defines_it():
    for name, study in STUDIES.items():
        entry = catalogue.entries()[name]
        fields = config_fields(study.Config)
        assert (entry.name, entry.summary) == (study.NAME, study.SUMMARY)
        assert [o.name for o in entry.options] == list(fields)
        for option in entry.options:
            kind, field = fields[option.name]
            assert option.help == field.metadata["help"]
            if not isinstance(option.default, catalogue.Source):
                assert option.default == field.default
            assert option.kind == (kind.__name__ if isinstance(kind, type) else str(kind))
            assert option.cli_type in (int, float, str, bool)  # a type the command line reads


def test_train_help_lists_what_the_library_accepts():
    from prunelab import data, models, train

    assert cli.ARCHITECTURES == models.ARCHITECTURES
    assert tuple(models.ACTIVATIONS) == cli.ACTIVATIONS
    assert tuple(data.LOADERS) == cli.LOADERS and tuple(data.FOLDER_SETS) == cli.FOLDER_SETS
    assert tuple(train.OPTIMIZERS) == cli.OPTIMIZERS
    from prunelab import executor

    assert executor.EXECUTORS == cli.EXECUTORS


TRAIN = ["train", "--data", "circle", "--widths", "2,4,2", "--epochs", "1", "--no-progress"]
BAD_TRAIN = st.one_of(
    st.tuples(st.just("--epochs"), st.integers(max_value=0)),
    st.tuples(st.just("--batch-size"), st.integers(max_value=0)),
    st.tuples(st.just("--seed"), st.integers(max_value=-1) | st.integers(min_value=2**63)),
    st.tuples(st.just("--lr"), st.sampled_from([0.0, -1.0, float("nan"), float("inf")])),
    st.tuples(st.just("--dropout"), st.sampled_from([1.0, -0.1, 2.0, float("nan")])),
    st.tuples(st.just("--threads"), st.integers(max_value=-1)),
    st.tuples(st.just("--widths"), st.sampled_from(["2,0,2", "2,-4,2", "2", "a,b", "2,4.5,2"])),
    st.tuples(st.just("--optimizer"), st.sampled_from(["adamw", "", "SGD"])),
    st.tuples(st.just("--activation"), st.sampled_from(["swish", "Relu"])),
    st.tuples(st.just("--device"), st.sampled_from(["tpu", "gpu"])),
    st.tuples(st.just("--epochs"), st.sampled_from(["abc", "1.5", ""])),
)


@SETTINGS
@given(bad=BAD_TRAIN)
def test_train_rejects_each_bad_value_before_any_work(tmp_path, bad):
    flag, value = bad
    out = tmp_path / "c.safetensors"
    result = runner.invoke(app, [*TRAIN, "--out", str(out), flag, str(value)])
    _user_error(result, flag)
    assert not out.exists()


def test_train_out_naming_a_folder_or_under_a_file(tmp_path):
    _user_error(runner.invoke(app, [*TRAIN, "--out", str(tmp_path)]), "--out", "folder")
    (tmp_path / "f").write_text("")
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path / "f" / "c.safetensors")])
    _user_error(result, "--out", "is a file")


TOY = catalogue.entries()["toy-nets"]
INT_OPTIONS = [o.name for o in TOY.options if o.kind == "int"]


@SETTINGS
@given(
    option=st.sampled_from(INT_OPTIONS),
    value=st.one_of(st.integers(max_value=-1), st.sampled_from(["x", "1.5", "nan"])),
)
def test_run_rejects_bad_option_values_before_writing(tmp_path, option, value):
    flag = "--" + option.replace("_", "-")
    result = runner.invoke(app, ["run", "toy-nets", "--out", str(tmp_path), flag, str(value)])
    line = _user_error(result)
    assert flag in line or option in line, line
    assert not (tmp_path / "toy-nets").exists() and "running" not in result.output


@pytest.mark.parametrize("option", ["circle_width", "circle_epochs", "batch_size", "n_test"])
def test_a_zero_count_is_rejected(tmp_path, option):
    flag = "--" + option.replace("_", "-")
    result = runner.invoke(app, ["run", "toy-nets", "--out", str(tmp_path), flag, "0"])
    _user_error(result, option, ">= 1")


KNOWN = {o.name for e in catalogue.entries().values() for o in e.options}


@SETTINGS
@given(
    key=st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True).filter(
        lambda k: k not in KNOWN and k.replace("_", "-") not in catalogue.MODULES
    ),
    table=st.booleans(),
    command=st.sampled_from([["run", "toy-nets"], ["run", "node-removal"], ["run", "all"]]),
)
def test_unknown_config_keys_and_tables_are_rejected_for_every_command(
    tmp_path, key, table, command
):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[{key.replace('_', '-')}]\nseed = 1\n" if table else f"{key} = 1\n")
    result = runner.invoke(app, [*command, "--config", str(cfg), "--out", str(tmp_path)])
    _user_error(result, "--config", key.replace("_", "-") if table else key)


def test_a_misspelt_key_in_the_study_table_is_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[toy-nets]\ncircel_width = 3\n")
    result = runner.invoke(app, ["run", "toy-nets", "--config", str(cfg)])
    _user_error(result, "circel_width", "circle_width")


@pytest.mark.parametrize("what", ["file", "run folder is a file"])
def test_run_out_naming_a_file(tmp_path, what):
    target = tmp_path / "f" if what == "file" else tmp_path / "toy-nets"
    target.write_text("")
    out = target if what == "file" else tmp_path
    _user_error(runner.invoke(app, ["run", "toy-nets", "--out", str(out)]), "--out", "file")


@SETTINGS
@given(text=st.binary(max_size=40) | st.sampled_from([b"[]", b"{}", b'{"study": "toy-nets"}']))
def test_report_on_a_corrupt_results_file_names_it(tmp_path, text):
    (tmp_path / "results.json").write_bytes(text)
    result = runner.invoke(app, ["report", str(tmp_path)])
    _user_error(result, str(tmp_path / "results.json"))


def test_checkpoint_folder_is_named_by_explore(tmp_path):
    result = runner.invoke(app, ["explore", "--checkpoint", str(tmp_path), "--no-open"])
    _user_error(result, str(tmp_path), "folder")


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "report", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, FileNotFoundError)
    result = runner.invoke(app, ["report", str(tmp_path), "--debug"])
    assert isinstance(result.exception, FileNotFoundError)


def _prunelab(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "prunelab", *args], env=env, capture_output=True, text=True, **kwargs
    )


def test_help_and_list_do_not_import_torch():
    code = (
        "import sys; from prunelab.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner(); "
        "outs = [r.invoke(app, a) for a in (['--help'], ['list'], ['run', '--help'], "
        "['run', 'node-criteria', '--help'], ['train', '--help'], ['report', '--help'], "
        "['explore', '--help'])]; "
        "assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]; "
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_user_error_in_a_real_process_is_one_line_with_exit_2(tmp_path):
    done = _prunelab("train", "--data", "circle", "--widths", "2,0,2", "--out", str(tmp_path / "c"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "--widths" in done.stderr


TINY = [
    "--no-progress", "--threads", "1", "--circle-epochs", "2", "--spirals-epochs", "300",
    "--n-test", "200", "--grid", "12", "--circle-train", "100", "--spirals-train", "100",
]  # fmt: skip


@pytest.mark.slow
def test_a_run_killed_midway_leaves_the_previous_run_whole(tmp_path):
    first = _prunelab("run", "toy-nets", "--out", str(tmp_path), *TINY, "--spirals-epochs", "2")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "toy-nets"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    env = {**os.environ, "PYTHONPATH": SRC}
    args = [sys.executable, "-m", "prunelab", "run", "toy-nets", "--out", str(tmp_path), *TINY]
    proc = subprocess.Popen([*args, "--seed", "1"], env=env, stdout=subprocess.PIPE, text=True)
    assert "running toy-nets" in proc.stdout.readline()
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(".toy-nets.new-*/*.safetensors")):  # mid-run: files written
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the previous run, whole
    assert json.loads((run / "results.json").read_text())["seed"] == 0
    # the next run cleans the dead run's folder and replaces the previous run whole
    again = _prunelab("run", "toy-nets", "--out", str(tmp_path), *TINY, "--spirals-epochs", "2")
    assert again.returncode == 0, again.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["toy-nets"]


@pytest.mark.parametrize("where", ["folder", "missing"])
def test_a_checkpoint_option_is_checked_before_the_run(tmp_path, where):
    path = tmp_path if where == "folder" else tmp_path / "none.safetensors"
    args = ["run", "node-removal", "--checkpoint", str(path), "--out", str(tmp_path / "runs")]
    _user_error(runner.invoke(app, args), "--checkpoint", str(path))
    assert not (tmp_path / "runs").exists()

"""Progress bars: drawn on a terminal, silent in a log file or when switched off."""

import rich.console
from prunelab.progress import track


def _run(enabled: bool = True) -> list[int]:
    steps = []
    with track(3, "counting", enabled=enabled) as advance:
        for i in range(3):
            advance(status=f"step {i}")
            steps.append(i)
    return steps


def test_silent_when_output_is_not_a_terminal(capsys):
    assert _run() == [0, 1, 2]
    assert capsys.readouterr().out == ""  # no stray blank lines in a log file


def test_silent_when_disabled(capsys, monkeypatch):
    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    assert _run(enabled=False) == [0, 1, 2]
    assert capsys.readouterr().out == ""


def test_drawn_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    assert _run() == [0, 1, 2]
    assert "counting" in capsys.readouterr().out

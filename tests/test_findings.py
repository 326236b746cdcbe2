"""Findings and their verdict rules, against scipy's t interval and hand-decided cases; the
scoreboard read back from run folders by `prunelab findings`."""

import json

import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prunelab.faces.cli import app
from prunelab.faces.report import scoreboard
from prunelab.methods import findings

values = st.lists(
    st.floats(-100, 100, allow_nan=False, allow_subnormal=False), min_size=2, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(values)
def test_estimate_is_scipys_t_interval(v):
    e = findings.estimate(v)
    t = torch.tensor(v, dtype=torch.float64)
    sem = scipy.stats.sem(v)
    if sem == 0:
        assert e.low == e.high == pytest.approx(t.mean().item())
        return
    low, high = scipy.stats.t.interval(0.95, len(v) - 1, loc=t.mean().item(), scale=sem)
    assert (e.low, e.high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert e.n == len(v)


@settings(max_examples=60, deadline=None)
@given(values, st.floats(-100, 100))
def test_above_and_below_follow_the_interval(v, t):
    e = findings.estimate(v)
    assert (findings.above("c", v, t).verdict == "holds") == (e.low > t)
    assert (findings.below("c", v, t).verdict == "holds") == (e.high < t)
    # never both
    assert not (findings.above("c", v, t).verdict == findings.below("c", v, t).verdict == "holds")


@settings(max_examples=60, deadline=None)
@given(values, st.floats(-50, 50), st.floats(0, 50), st.floats(0, 10))
def test_within_is_an_equivalence_test_on_the_band(v, low, width, tol):
    high = low + width
    t = torch.tensor(v, dtype=torch.float64)
    sem = scipy.stats.sem(v)
    lo, hi = (
        (t.mean().item(),) * 2
        if sem == 0
        else scipy.stats.t.interval(0.95, len(v) - 1, loc=t.mean().item(), scale=sem)
    )
    a, b = low - tol, high + tol
    if min(abs(lo - a), abs(lo - b), abs(hi - a), abs(hi - b)) < 1e-9:
        return  # on an edge: float round-off decides
    want = "holds" if a <= lo and hi <= b else "differs" if hi < a or lo > b else "not measured"
    assert findings.within("c", v, low, high, tol=tol).verdict == want


def test_one_seed_rules_speak_of_the_value_not_an_interval():
    assert "the value (one seed)" in findings.above("c", [2.0], 1.0).rule
    assert "95% interval" in findings.above("c", [2.0, 3.0], 1.0).rule
    assert "on every seed" not in findings.every("c", [2.0], lambda x: x > 1, "x > 1").rule


def test_rules_on_hand_decided_cases():
    # mean 1, sd 0.079 over 5 seeds: interval [0.902, 1.098]
    v = [0.9, 1.0, 1.1, 0.95, 1.05]
    assert findings.above("c", v, 0.8).verdict == "holds"
    assert findings.above("c", v, 1.0).verdict == "differs"  # the interval contains 1
    assert findings.within("c", v, 0.9, 1.1).verdict == "holds"  # inside the source's range
    assert findings.within("c", v, 1.0, 1.0, tol=0.1).verdict == "holds"  # 1 ± 0.1
    assert findings.within("c", v, 1.09, 1.5).verdict == "not measured"  # straddles 1.09
    assert "Undecided" in findings.within("c", v, 1.09, 1.5).detail
    assert findings.within("c", v, 1.1, 1.5).verdict == "differs"  # wholly below 1.1
    assert findings.within("c", [8, 8, 8], 5, 6).verdict == "differs"  # 8 flips vs 5-6
    assert findings.within("c", [0.12], 0.117, 0.117, tol=0.01).verdict == "holds"  # one seed
    assert findings.within("c", [0.13], 0.117, 0.117, tol=0.01).verdict == "differs"
    assert findings.every("c", [3, 4], lambda x: x > 2, "x > 2").verdict == "holds"
    assert findings.every("c", [3, 1], lambda x: x > 2, "x > 2").verdict == "differs"
    f = findings.not_measured("c", "no study draws it")
    assert f.verdict == "not measured" and f.estimate is None


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="finite"):
        findings.estimate([1.0, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        findings.estimate([])
    with pytest.raises(ValueError, match="low must be <= high"):
        findings.within("c", [1.0], 2, 1)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        findings.within("c", [1.0], 1, 2, tol=-0.5)
    with pytest.raises(ValueError, match="holds, differs, not measured"):
        findings.Finding("c", "", "", "reproduced", "")


def _run(folder, study, found):
    folder.mkdir(parents=True)
    raw = {"study": study, "findings": [json.loads(json.dumps(f, default=vars)) for f in found]}
    (folder / "results.json").write_text(json.dumps(raw, default=lambda o: o.__dict__))


def test_scoreboard_and_findings_command_read_every_run(tmp_path):
    a = [findings.above("nets train", [0.9, 0.95], 0.5), findings.not_measured("x", "why")]
    b = [findings.below("loss falls", [2.0, 3.0], 0.5)]
    _run(tmp_path / "runs" / "node-removal", "node-removal", b)
    _run(tmp_path / "runs" / "toy-nets", "toy-nets", a)
    board = scoreboard([tmp_path / "runs" / "toy-nets", tmp_path / "runs" / "node-removal"])
    assert [(r["study"], r["verdict"]) for r in board] == [
        ("toy-nets", "holds"),
        ("toy-nets", "not measured"),
        ("node-removal", "differs"),
    ]
    result = CliRunner().invoke(app, ["findings", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    # run all's order: toy-nets before node-removal, and the tally of verdicts
    assert result.output.index("nets train") < result.output.index("loss falls")
    assert "1 holds, 1 differs, 1 not measured" in result.output
    bad = CliRunner().invoke(app, ["findings", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_direction_says_significant_same_direction_or_opposite():
    sig = findings.estimate([0.9, 1.0, 1.1])  # [0.75, 1.25]
    weak = findings.estimate([-1.0, 3.0])  # mean 1, interval holds 0
    opposite = findings.estimate([-1.0, -1.1, -0.9])
    assert findings.direction(sig).startswith("The interval lies above")
    assert findings.direction(weak).startswith("Same direction")
    assert findings.direction(opposite).startswith("The opposite direction")
    assert findings.direction(opposite, above=False).startswith("The interval lies below")
    assert findings.direction(weak, 2.0).startswith("The opposite")  # mean 1 is not above 2
    assert findings.direction(weak, 2.0, above=False).startswith("Same direction")
    f = findings.noted(findings.above("c", [-1.0, 3.0], detail="d."))
    assert f.verdict == "differs" and f.detail.startswith("d. Same direction")
    g = findings.above("c", [0.9, 1.0, 1.1])
    assert findings.noted(g) == g  # a verdict that holds is left alone


def test_bounds_clip_the_interval_to_the_quantitys_range():
    # two seeds, 50% and 99% agreement: the t interval reaches past 100% and below 0
    raw = findings.estimate([50.0, 99.0])
    assert raw.low < 0 and raw.high > 100
    e = findings.estimate([50.0, 99.0], bounds=(0.0, 100.0))
    assert (e.mean, e.low, e.high) == (raw.mean, 0.0, 100.0)
    f = findings.above("agree", [50.0, 99.0], 99.0, bounds=(0.0, 100.0), unit="%")
    assert f.verdict == "differs" and "[0, 100]%" in f.ours
    with pytest.raises(ValueError, match="bounds"):
        findings.estimate([1.0], bounds=(1.0, 0.0))


def test_every_shows_each_seeds_value():
    f = findings.every("flips", [8.0, 9.0], lambda x: 5 <= x <= 6, "5 <= flips <= 6", unit=" flips")
    assert f.verdict == "differs" and f.ours == "8, 9 flips (2 seeds)"


def test_a_non_finite_measurement_is_not_measured_and_names_its_seeds():
    for rule in (
        lambda v: findings.above("c", v, 0.0),
        lambda v: findings.below("c", v, 0.0),
        lambda v: findings.within("c", v, 0.0, 1.0),
        lambda v: findings.every("c", v, lambda x: x > 0, "x > 0"),
    ):
        f = rule([1.0, float("nan"), 2.0])
        assert f.verdict == "not measured" and "seed(s) 1 of 3" in f.detail
        assert f.estimate is None and f.rule.startswith("holds iff")

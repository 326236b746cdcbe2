"""Run folders and HTML reports. Renders a study's ``Results``; computes nothing new.

A run folder holds ``results.json`` (config, every number, versions, seed), one PNG per figure
and a self-contained ``report.html`` with the figures embedded. ``run all`` adds ``index.html``
opening with the scoreboard: every finding of every study (the source's claim, its figure, ours,
the verdict), each linked to its report. All writes are atomic. A study that saves
``explorer.safetensors`` (a checkpoint whose metadata names its data) into its folder also gets
``explorer.html``, the interactive explorer of :mod:`prunelab.web.explorer`, linked near the top
of its report.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..base.checkpoint import versions
from ..base.files import atomic_write, from_jsonable, to_jsonable, write_json
from ..methods import findings
from ..methods.findings import Finding
from ..studies import STUDIES
from ..studies.base import Plot, Section, Table
from .web import explorer

CSS = """
body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1040px;
margin:2rem auto;padding:0 1rem;color:#1d2327;background:#fff}
h1{font-size:1.7rem;margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #dde;
padding-bottom:.2rem} .meta{color:#5a6570;font-size:.9rem}
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e3e6ea;padding:.3rem .7rem;text-align:right}
th{background:#f5f7f9} td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;color:#5a6570;font-size:.9rem;text-align:left;padding-top:.3rem}
figure{margin:1.2rem 0} figure img{max-width:100%;height:auto;border:1px solid #eef}
figcaption{color:#5a6570;font-size:.9rem} details{margin:1rem 0} code{background:#f3f4f6;
padding:0 .2rem;border-radius:3px} .headline td:first-child{font-weight:600}
.explore{background:#eef6f9;border:1px solid #b8d8e3;border-radius:6px;padding:.6rem .9rem}
.explore a{font-weight:600} .v-holds{color:#17692f;font-weight:600}
.v-differs{color:#a3261d;font-weight:600} .v-not-measured{color:#6b6f75;font-style:italic}
td.claim,td.text{text-align:left;max-width:26rem} tr:target{background:#fff7d6}
"""

FINDINGS_ANCHOR = "findings"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return html.escape(str(value))
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    v = float(value)
    if v != v:
        return "nan"
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def anchor(title: str) -> str:
    """The HTML id of a report section titled ``title`` (findings link to it)."""
    return "s-" + "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())


def findings_of(study: ModuleType, results: Any, config: Any) -> list[Finding]:
    """The study's findings (``study.findings(results, config)``; none if it defines none)."""
    fn = getattr(study, "findings", None)
    return list(fn(results, config)) if fn is not None else []


def _verdict_cell(verdict: str) -> str:
    return f"<td class=v-{verdict.replace(' ', '-')}>{html.escape(verdict)}</td>"


def _findings_table(rows: Sequence[tuple[str, str, Mapping[str, Any]]], *, study: bool) -> str:
    """Rows of (link, row id, finding as a dict) as a table: [study,] claim, source, ours,
    verdict; each claim links to its evidence."""
    head = (["study"] if study else []) + ["claim of the source", "source", "ours", "verdict"]
    body = []
    for link, row_id, f in rows:
        claim = html.escape(f["claim"])
        if link:
            claim = f"<a href='{html.escape(link)}'>{claim}</a>"
        tip = html.escape(f"rule: {f['rule']}" + (f". {f['detail']}" if f.get("detail") else ""))
        cells = [f"<td class=text>{html.escape(f['study'])}</td>"] if study else []
        cells += [
            f"<td class=claim title='{tip}'>{claim}</td>",
            f"<td class=text>{html.escape(f['source'] or '-')}</td>",
            f"<td class=text>{html.escape(f['ours'])}</td>",
            _verdict_cell(f["verdict"]),
        ]
        body.append(f"<tr id='{html.escape(row_id)}'>" + "".join(cells) + "</tr>")
    cols = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    return f"<table><thead><tr>{cols}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _findings_part(found: Sequence[Finding]) -> list[str]:
    """The report's findings table, each row linked to the section with its evidence, and each
    rule and detail written out below it."""
    if not found:
        return []
    rows = [
        (f"#{anchor(f.section)}" if f.section else "", f"f-{i}", to_jsonable(f))
        for i, f in enumerate(found)
    ]
    counts = ", ".join(f"{n} {v}" for v, n in findings.tally(found).items() if n)
    notes = "".join(
        f"<li><b>{html.escape(f.claim)}</b> {html.escape(f.verdict)} "
        f"({html.escape(f.rule)}){'. ' + html.escape(f.detail) if f.detail else ''}</li>"
        for f in found
    )
    return [
        f"<h2 id={FINDINGS_ANCHOR}>Findings: the source's claims on our runs</h2>",
        f"<p>{html.escape(counts)}. Each verdict follows from the rule written beside it.</p>",
        _findings_table(rows, study=False),
        f"<details><summary>Rules and details</summary><ul>{notes}</ul></details>",
    ]


def _png(plot: Plot) -> bytes:
    buf = io.BytesIO()
    plot.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _explorer_link(run_dir: Path) -> list[str]:
    """Write the run's ``explorer.html`` if it saved ``explorer.safetensors``; a link to it."""
    try:
        page = explorer.for_run(run_dir)
    except (FileNotFoundError, KeyError, ValueError) as e:
        return [
            "<p class=explore>The interactive explorer could not be written: "
            f"{html.escape(str(e.args[0]) if e.args else str(e))}</p>"
        ]
    if page is None:
        return []
    return [
        f"<p class=explore><a href='{html.escape(page.name)}'>Open the interactive explorer</a>: "
        "the studied network with every hidden node a switch. Remove nodes by hand (or a random "
        "subset, or the lowest-std ones), with or without mean compensation, and watch the "
        "loss, the accuracy and the decision map change; hover a node for its gradient map. "
        "One self-contained page that computes in the browser.</p>"
    ]


def _seeds(config: Any) -> str:
    """The banner's seeds: "seed 0", or "seeds 0-4" where the tables are means over seeds
    (every study trains seed, seed + 1, ...)."""
    seed, n = getattr(config, "seed", ""), getattr(config, "seeds", 1)
    return f"seeds {seed}-{seed + n - 1}" if isinstance(n, int) and n > 1 else f"seed {seed}"


def render(
    study: ModuleType,
    config: Any,
    results: Any,
    run_dir: str | os.PathLike,
    *,
    meta: Mapping[str, Any] | None = None,
    found: Sequence[Finding] | None = None,
) -> Path:
    """Write the figures (PNG) and ``report.html`` for ``results`` into ``run_dir``; ``found``:
    the findings to show (default: the study's, computed from ``results``)."""
    run_dir = Path(run_dir)
    sections: Sequence[Section] = study.sections(results, config)
    meta = dict(meta or {})
    parts = [
        f"<h1>{html.escape(study.TITLE)}</h1>",
        f"<p class=meta>prunelab study <code>{html.escape(study.NAME)}</code> · "
        f"{html.escape(_seeds(config))} · "
        f"{html.escape(str(meta.get('created', '')))} · "
        + " · ".join(f"{k} {html.escape(str(v))}" for k, v in meta.get("versions", {}).items())
        + "</p>",
        *_explorer_link(run_dir),
    ]
    headline = study.headline(results)
    if headline:
        parts.append(
            _table(Table(["headline", "value"], [[k, v] for k, v in headline.items()])).replace(
                "<table>", "<table class=headline>", 1
            )
        )
    parts += _findings_part(findings_of(study, results, config) if found is None else found)
    for section in sections:
        parts.append(f"<h2 id={anchor(section.title)}>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(t)}</p>" for t in section.text]
        parts += [_table(t) for t in section.tables]
        for plot in section.plots:
            png = _png(plot)
            atomic_write(run_dir / f"{plot.name}.png", png)
            data = base64.b64encode(png).decode()
            cap = f"<figcaption>{html.escape(plot.caption)}</figcaption>" if plot.caption else ""
            parts.append(
                f'<figure><img alt="{html.escape(plot.name)}" '
                f'src="data:image/png;base64,{data}">{cap}</figure>'
            )
    rows = [
        [k, json.dumps(v) if isinstance(v, list | tuple) else v]
        for k, v in to_jsonable(config).items()
    ]
    parts.append(
        "<details><summary>Configuration</summary>"
        + _table(Table(["option", "value"], rows))
        + "</details>"
    )
    page = (
        f"<!doctype html><html lang=en><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(study.TITLE)}</title><style>{CSS}</style><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    return atomic_write(run_dir / "report.html", page)


def write_run(
    study: ModuleType,
    config: Any,
    results: Any,
    run_dir: str | os.PathLike,
    *,
    device: str = "cpu",
) -> Path:
    """Write ``results.json`` and the report for one finished study into ``run_dir``."""
    run_dir = Path(run_dir)
    meta = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions(),
        "device": device,
    }
    found = findings_of(study, results, config)
    write_json(
        run_dir / "results.json",
        {
            "study": study.NAME,
            "seed": getattr(config, "seed", None),
            **meta,
            "headline": study.headline(results),
            "findings": found,
            "config": config,
            "results": results,
        },
    )
    return render(study, config, results, run_dir, meta=meta, found=found)


def load_run(run_dir: str | os.PathLike) -> tuple[ModuleType, Any, Any, dict]:
    """Read a run folder back: ``(study module, config, results, raw json)``."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder: no results.json in it")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); rerun the study") from None
    name = raw.get("study") if isinstance(raw, dict) else None
    if name not in STUDIES:
        raise ValueError(f"{str(path)!r} names study {name!r}; known studies: {sorted(STUDIES)}")
    study = STUDIES[name]
    try:
        config = from_jsonable(study.Config, raw["config"])
        results = from_jsonable(study.Results, raw["results"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"{str(path)!r} is not a complete {name} result ({type(e).__name__}: {e}); "
            "rerun the study"
        ) from None
    return study, config, results, raw


def rerender(run_dir: str | os.PathLike) -> Path:
    """Re-render ``report.html`` (and figures) of an existing run folder from its results.json."""
    study, config, results, raw = load_run(run_dir)
    stored = raw.get("findings")  # as the run decided them (results.json rounds some numbers)
    return render(
        study,
        config,
        results,
        run_dir,
        meta={"created": raw.get("created", ""), "versions": raw.get("versions", {})},
        found=None if stored is None else from_jsonable(list[Finding], stored),
    )


def scoreboard(run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every finding of the runs in ``run_dirs`` (as stored in their results.json), each with
    ``study`` and ``run`` (its folder) added, in run order."""
    rows = []
    for run_dir in run_dirs:
        raw = _raw(run_dir)
        for i, f in enumerate(raw.get("findings", [])):
            rows.append({"study": raw["study"], "run": str(run_dir), "index": i, **f})
    return rows


def _raw(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder: no results.json in it")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); rerun the study") from None
    if not isinstance(raw, dict) or raw.get("study") not in STUDIES:
        raise ValueError(f"{str(path)!r} is not a prunelab run (no known study named in it)")
    return raw


def write_index(out_dir: str | os.PathLike, run_dirs: Sequence[str | os.PathLike]) -> Path:
    """Write ``index.html`` in ``out_dir``: the scoreboard of every study's findings, then each
    run's report linked with its headline numbers."""
    out_dir = Path(out_dir)
    board = scoreboard(run_dirs)
    counts = {v: sum(r["verdict"] == v for r in board) for v in findings.VERDICTS}
    parts = [
        "<h1>prunelab runs</h1>",
        f"<p class=meta>{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2 id=scoreboard>Scoreboard: the sources' claims on our runs</h2>",
        "<p>"
        + html.escape(", ".join(f"{n} {v}" for v, n in counts.items()))
        + ". Each claim links to its row in the study's report, where the rule that decided "
        "its verdict is written out (hover a claim to see it here).</p>",
        _findings_table(
            [
                (
                    os.path.relpath(Path(r["run"]) / "report.html", out_dir) + f"#f-{r['index']}",
                    f"{r['study']}-{r['index']}",
                    r,
                )
                for r in board
            ],
            study=True,
        ),
    ]
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        raw = _raw(run_dir)
        study = STUDIES[raw["study"]]
        link = os.path.relpath(run_dir / "report.html", out_dir)
        parts.append(
            f"<h2><a href='{html.escape(link)}'>{html.escape(study.TITLE)}</a></h2>"
            f"<p>{html.escape(study.SUMMARY)}</p>"
        )
        parts.append(
            _table(
                Table(["headline", "value"], [[k, v] for k, v in raw.get("headline", {}).items()])
            )
        )
    page = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>prunelab runs</title>"
        f"<style>{CSS}</style><body>" + "\n".join(parts) + "</body></html>\n"
    )
    return atomic_write(out_dir / "index.html", page)

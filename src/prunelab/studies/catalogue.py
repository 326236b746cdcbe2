"""What the command line needs to know about each study, read without importing it.

Importing a study pulls in torch and matplotlib (seconds); ``prunelab --help``, ``prunelab
list`` and ``prunelab run STUDY --help`` need only each study's ``NAME``, ``SUMMARY`` and its
``Config`` fields (name, type, default, help). This module reads them from the study's source
with :mod:`ast`: module-level constants and the ``option(default, help)`` calls in ``class
Config``. ``tests/test_cli.py`` checks that what it reads equals the imported ``Config``.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

# command-line name -> module in this package, in the order ``run all`` runs them (later
# studies reuse what earlier ones build)
MODULES = {
    "toy-nets": "toy_nets",
    "node-removal": "node_removal",
    "train-vs-prune": "train_vs_prune",
    "node-criteria": "node_criteria",
    "obd-vs-magnitude": "obd_vs_magnitude",
    "approximation-bounds": "approximation_bounds",
    "relevance": "relevance",
}

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class Source(str):
    """A default that needs an import to evaluate (a registry), kept as its source text."""


@dataclass(frozen=True)
class Option:
    """One ``Config`` field: ``kind`` is its annotation's text (``"int"``, ``"tuple[int, ...]"``)."""

    name: str
    kind: str
    default: Any
    help: str

    @property
    def cli_type(self) -> type:
        """The type the command line reads: a tuple is read as a comma-separated string."""
        return str if self.kind.startswith("tuple[") else _TYPES[self.kind]


@dataclass(frozen=True)
class Entry:
    """A study as the command line sees it before importing it."""

    name: str
    module: str
    summary: str
    options: tuple[Option, ...]

    def load(self) -> ModuleType:
        """The study module itself (imports torch and matplotlib)."""
        return importlib.import_module(f"{__package__}.{self.module}")


@functools.cache
def entries() -> dict[str, Entry]:
    """Every built-in study by command-line name, in ``run all`` order."""
    return {name: _read(name, module) for name, module in MODULES.items()}


def _read(name: str, module: str) -> Entry:
    spec = importlib.util.find_spec(f"{__package__}.{module}")
    assert spec is not None and spec.origin is not None  # our own package's module
    constants, tree = _constants(Path(spec.origin), imports=True)
    config = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    return Entry(
        constants["NAME"], module, constants["SUMMARY"], tuple(_options(config, constants))
    )


def _constants(path: Path, *, imports: bool = False) -> tuple[dict[str, Any], ast.Module]:
    """The module-level constants of the module at ``path`` (read, not imported) and its tree;
    with ``imports``, also those of the modules it imports as ``from ..layer import name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: dict[str, Any] = {}
    for node in tree.body:
        if imports and isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
            for alias in node.names:  # e.g. from ..methods import decoy: decoy.CORNERS
                where = path.parent.parent / node.module.replace(".", "/") / alias.name
                source = where.with_suffix(".py")
                source = source if source.is_file() else where / "__init__.py"
                if source.is_file():
                    out[alias.asname or alias.name] = SimpleNamespace(**_constants(source)[0])
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(Exception):  # not a constant (a call, a lambda): unused
                out[node.targets[0].id] = _eval(node.value, out)
    return out, tree


def _options(config: ast.ClassDef, constants: dict[str, Any]) -> list[Option]:
    out = []
    for node in config.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        kind = ast.unparse(node.annotation)
        if kind.startswith("ClassVar"):
            continue
        call = node.value
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "option"):
            raise ValueError(f"Config.{node.target.id}: declare fields with option(default, help)")
        try:
            default = _eval(call.args[0], constants)
        except Exception:  # e.g. tuple(criteria.NODE_CRITERIA): shown as written
            default = Source(ast.unparse(call.args[0]))
        out.append(Option(node.target.id, kind, default, _eval(call.args[1], constants)))
    return out


def _eval(node: ast.expr, constants: dict[str, Any]) -> Any:
    """A constant expression of the study's own source (literals, names of constants, f-strings,
    arithmetic), evaluated without builtins."""
    code = compile(ast.Expression(node), "<study>", "eval")
    return eval(code, {"__builtins__": {}}, dict(constants))

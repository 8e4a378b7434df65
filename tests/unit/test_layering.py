"""The rooms of the house, and which way imports may point.

* floor: ``schemas`` (the contracts), then ``claimflow``'s base modules (settings, logging,
  the Maven/Java helpers, the
  port and polling helpers): they import no other package of ours but the contracts;
* shared: ``features`` (one feature code offline and online), then ``modelstore`` (where
  models live), then ``scoring`` (a model loaded and scoring claims, for the model service
  and the trainer alike): they import the floor and what is below them;
* services: ``producer``, ``trainer``, ``scorer``, ``gateway``, ``broker``: they import the
  floor and the shared packages, never each other and never the roof;
* roof: the rest of ``claimflow`` (the CLI, the demo stack, the investigators' simulator,
  docgen) and ``bench``: they may import anything.

Every import is read from the source (ast), including the ones inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.layout import ROOT

FLOOR_BASE = {"claimflow", "claimflow.settings", "claimflow.logging_setup", "claimflow.maven",
              "claimflow.procs"}
SERVICES = ("producer", "trainer", "scorer", "gateway", "broker")
# What each room may import from our packages (a module of claimflow counts by its full name).
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "claimflow-base": {"schemas", *FLOOR_BASE},
    "features": {"schemas", "features"},
    "modelstore": {"schemas", "features", "modelstore"},
    "scoring": {"schemas", "features", "modelstore", "scoring"},
    **{service: {"schemas", "features", "modelstore", "scoring", *FLOOR_BASE, service}
       for service in SERVICES},
}



def room_of(module: str) -> str:
    top = module.split(".")[0]
    if top == "claimflow":
        return "claimflow-base" if module in FLOOR_BASE else "roof"
    return top if top in ALLOWED else "roof"


def our(imported: str) -> str | None:
    """The package (or claimflow module) an import names, when it is one of ours."""
    top = imported.split(".")[0]
    if top == "claimflow":
        parts = imported.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else "claimflow"
    return top if top in {"schemas", "features", "modelstore", "scoring", *SERVICES, "bench"} \
        else None


def modules() -> Iterator[tuple[str, Path]]:
    for package in ("schemas", "claimflow", "features", "modelstore", "scoring", *SERVICES):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            name = ".".join(relative.parts).removesuffix(".__init__")
            yield name, path


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from claimflow import settings` names a module
                yield node.lineno, f"{node.module}.{alias.name}" if node.module == "claimflow" \
                    else node.module


def violations() -> list[str]:
    found = []
    for name, path in modules():
        room = room_of(name)
        if room == "roof":
            continue
        for line, imported in imports_of(path):
            target = our(imported)
            if target is None or target in ALLOWED[room]:
                continue
            found.append(f"{path.relative_to(ROOT)}:{line} ({room}) imports {imported}")
    return found


def test_imports_point_down_only() -> None:
    assert violations() == []


@pytest.mark.parametrize(("module", "room"), [
    ("claimflow.settings", "claimflow-base"), ("claimflow.stack", "roof"),
    ("scorer.loop", "scorer"), ("bench.run", "roof"), ("features.member", "features"),
    ("scoring.model", "scoring"), ("claimflow.procs", "claimflow-base"),
    ("claimflow.stack_plan", "roof"),
])
def test_rooms(module: str, room: str) -> None:
    assert room_of(module) == room


def test_a_service_importing_another_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from scorer.client import ModelClient\n", encoding="utf-8")
    [(line, imported)] = list(imports_of(bad))
    assert line == 1
    assert our(imported) == "scorer"
    assert our(imported) not in ALLOWED["gateway"]


@pytest.mark.parametrize("roof", ["claimflow.stack", "claimflow.cli", "scoring.model"])
def test_the_base_importing_anything_above_it_is_caught(tmp_path: Path, roof: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(f"def later() -> None:\n    import {roof}\n", encoding="utf-8")
    [(line, imported)] = list(imports_of(bad))
    assert line == 2
    assert our(imported) not in ALLOWED[room_of("claimflow.settings")]


def imported_test_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every ``tests...test_*`` module ``path`` imports (also as ``from tests.x import test_y``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_"):
                yield node.lineno, name


def test_modules_import_no_test_module() -> None:
    """Shared test helpers live in helper modules (tests/fake_kafka.py, tests/v1_factory.py,
    tests/integration/worker_harness.py, ...), never in a ``test_*`` module that another
    test or a benchmark imports."""
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for folder in ("tests", "bench") for path in sorted((ROOT / folder).rglob("*.py"))
             for line, name in imported_test_modules(path)]
    assert not found, "\n".join(found)

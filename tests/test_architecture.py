"""The codebase's shape, enforced: one namespace (loadprof), imports in one direction, no cycles.

Every import in every module counts, function-level ones included: a lazy import is still a dependency.
Layers (docs/architecture.md):
  core        loadprof.{errors, clock, units, events, phases, payloads, conclusions, probe_registry, lifetime,
              frames}
  strategies  loadprof.strategies.*   may import core
  results     loadprof.results        may import core, strategies (a TrialResult holds its Strategy)
  probes      loadprof.probes.*       may import core, strategies
  analysis    loadprof.analysis.*     may import core, strategies (shapes, specs), results
  reports     loadprof.reports.*      may import core, results, analysis
  worker      loadprof.worker         may import core, strategies, probes, analysis
  top         loadprof.{cli, api, session, runner, filecache, __init__, ...}: anything
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"profiler": "loadprof", "strategies": "loadprof.strategies", "probes": "loadprof.probes",
           "analysis": "loadprof.analysis", "reports": "loadprof.reports"}
CORE = {"loadprof.errors", "loadprof.clock", "loadprof.units", "loadprof.events",
        "loadprof.phases", "loadprof.payloads", "loadprof.conclusions",
        "loadprof.probe_registry", "loadprof.lifetime", "loadprof.frames"}
ALLOWED = {
    "core": {"core"},
    "strategies": {"core", "strategies"},
    "results": {"core", "strategies", "results"},
    "probes": {"core", "strategies", "probes"},
    "analysis": {"core", "strategies", "results", "analysis"},
    "reports": {"core", "results", "analysis", "reports"},
    "worker": {"core", "strategies", "probes", "analysis"},
    "top": {"core", "strategies", "results", "probes", "analysis", "reports", "worker", "top"},
}
OLD_TOP_LEVEL = set(FOLDERS)  # never importable names once installed: only loadprof is


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module == "loadprof.results":
        return "results"
    if module == "loadprof.worker":
        return "worker"
    for sub in ("strategies", "probes", "analysis", "reports"):
        if module == f"loadprof.{sub}" or module.startswith(f"loadprof.{sub}."):
            return sub
    return "top"


def modules(root: Path) -> dict[str, Path]:
    """loadprof module name -> file, for the package folders under ``root`` (examples are user code, not ours)."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported loadprof module, line) for every import in ``path``; ``from loadprof.x import y`` counts as
    ``loadprof.x.y`` when that is a module. Imports of the bare folder names are returned as themselves."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in known else node.module, node.lineno))
    return [(m, line) for m, line in found if m.split(".")[0] in OLD_TOP_LEVEL | {"loadprof"}]


def violations(root: Path) -> list[str]:
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    bad = []
    for mod, path in mods.items():
        for target, line in imports(path, known):
            where = f"{path.relative_to(root)}:{line}"
            if target.split(".")[0] in OLD_TOP_LEVEL:
                bad.append(f"{where}: imports {target!r}; the installed namespace is loadprof")
                continue
            if target not in known:
                continue  # the package itself (loadprof.__version__ and the like)
            if target != mod:
                graph[mod].add(target)
            if layer(target) not in ALLOWED[layer(mod)]:
                bad.append(f"{where}: {mod} ({layer(mod)}) imports {target} ({layer(target)})")
    bad += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (depth-first search; the graph is small)."""
    found, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                if not any(set(cyc) <= set(c) for c in found):
                    found.append(cyc)
            elif nxt not in done:
                visit(nxt, [*stack, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_imports_run_one_way_without_cycles():
    assert violations(REPO) == []


def _copy(tmp_path: Path) -> Path:
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "examples"))
    return tmp_path


def test_a_planted_upward_import_is_caught(tmp_path):
    root = _copy(tmp_path)
    with open(root / "profiler" / "errors.py", "a") as f:
        f.write("\n\ndef _planted():\n    from loadprof.reports import html  # noqa: F401\n")
    assert any("loadprof.errors (core) imports loadprof.reports.html (reports)" in v for v in violations(root))


def test_a_planted_cycle_and_an_old_top_level_name_are_caught(tmp_path):
    root = _copy(tmp_path)
    with open(root / "strategies" / "shapes.py", "a") as f:
        f.write("\n\nfrom loadprof.strategies import expand  # noqa: E402,F401\n")
    with open(root / "analysis" / "diff.py", "a") as f:
        f.write("\n\nimport profiler.results  # noqa: E402,F401\n")
    found = violations(root)
    assert any(v.startswith("import cycle:") and "loadprof.strategies.shapes" in v for v in found)
    assert any("imports 'profiler.results'" in v for v in found)


def test_only_loadprof_is_installed_at_the_top_level():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {p.split(".")[0] for p in setup["packages"]} == {"loadprof"}
    assert {setup["package-dir"][p] for p in setup["packages"]} == set(FOLDERS)


#: modules allowed past ~400 lines, and why
LONG_MODULES = {
    "strategies/expand.py": "its docstring is the YAML reference (75 lines); the rest is small functions",
    "probes/sampling.py": "py-spy's lifecycle, the speedscope format and the attribution belong together",
    "analysis/estimate.py": "one formula per figure, each beside the code that measures it",
}
#: functions allowed past ~60 lines, and why (none today)
LONG_FUNCTIONS: dict[str, str] = {}


def test_modules_and_functions_stay_small_or_say_why():
    too_long = []
    for path in modules(REPO).values():
        rel = str(path.relative_to(REPO))
        n = len(path.read_text().splitlines())
        if n > 420 and rel not in LONG_MODULES:
            too_long.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60 and f"{rel}:{node.name}" not in LONG_FUNCTIONS:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []

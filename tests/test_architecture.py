"""The codebase's shape, enforced: one namespace (loadprof), imports in one direction, no cycles.

Every import in every module counts: function-level ones, relative ones (``from .. import x``) and
``importlib.import_module("loadprof....")`` calls with a literal name; a lazy import is still a dependency.
The layer of a module is the folder it lives in (docs/architecture.md), never a hand-kept list:
  core        profiler/core/      loadprof.core.*        imports nothing of loadprof above it
  strategies  strategies/         loadprof.strategies.*  may import core
  results     profiler/results/   loadprof.results.*     may import core, strategies (a TrialResult holds its Strategy)
  probes      probes/             loadprof.probes.*      may import core, strategies
  analysis    analysis/           loadprof.analysis.*    may import core, strategies (shapes, specs), results
  reports     reports/            loadprof.reports.*     may import core, results, analysis
  worker      profiler/worker/    loadprof.worker.*      may import core, strategies, probes, analysis
  run         profiler/run/       loadprof.run.*         anything but the CLI
  top         profiler/cli/, profiler/{__init__,api}.py  anything
Third-party presentation libraries (rich, click, matplotlib) are imported only by reports and the CLI.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"profiler": "loadprof", "strategies": "loadprof.strategies", "probes": "loadprof.probes",
           "analysis": "loadprof.analysis", "reports": "loadprof.reports"}
#: the layer of each package (the folder a module lives in); loadprof.cli and the package's own files are top
PACKAGE_LAYER = {"loadprof.core": "core", "loadprof.strategies": "strategies", "loadprof.results": "results",
                 "loadprof.probes": "probes", "loadprof.analysis": "analysis", "loadprof.reports": "reports",
                 "loadprof.worker": "worker", "loadprof.run": "run", "loadprof.cli": "top", "loadprof": "top"}
ALLOWED = {
    "core": {"core"},
    "strategies": {"core", "strategies"},
    "results": {"core", "strategies", "results"},
    "probes": {"core", "strategies", "probes"},
    "analysis": {"core", "strategies", "results", "analysis"},
    "reports": {"core", "results", "analysis", "reports"},
    "worker": {"core", "strategies", "probes", "analysis", "worker"},
    "run": {"core", "strategies", "results", "probes", "analysis", "reports", "worker", "run"},
    "top": {"core", "strategies", "results", "probes", "analysis", "reports", "worker", "run", "top"},
}
#: third-party libraries only some layers may import (the rest of the engine neither prints nor plots)
PRESENTATION = {"rich", "click", "matplotlib"}
PRESENTATION_LAYERS = {"reports", "top"}
OLD_TOP_LEVEL = set(FOLDERS)  # never importable names once installed: only loadprof is


def package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0] or module


def layer(module: str) -> str:
    """The layer of a loadprof module: that of the longest package in PACKAGE_LAYER containing it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in PACKAGE_LAYER and (n < len(parts) or module in PACKAGE_LAYER):
            return PACKAGE_LAYER[".".join(parts[:n])]
    return "top"


def modules(root: Path) -> dict[str, Path]:
    """loadprof module name -> file, for every package folder under ``root`` (examples are user code, not ours)."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder)
            if "examples" in rel.parts or "__pycache__" in rel.parts:
                continue
            parts = [p for p in rel.with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _absolute(mod: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a (possibly relative) ``from`` import names, as seen from ``mod``."""
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def imports(mod: str, path: Path, known: set[str]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(loadprof modules imported, line) and (third-party top-level names imported, line) for ``path``.
    ``from loadprof.x import y`` counts as ``loadprof.x.y`` when that is a module; imports of the bare folder
    names are returned as themselves; ``importlib.import_module("...")`` with a literal name counts too."""
    found, third = [], []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(mod, path, node)
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in known else base, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in {"import_module",
                                                                                         "__import__"}
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    ours = []
    for m, line in found:
        top = m.split(".")[0]
        (ours if top in OLD_TOP_LEVEL | {"loadprof"} else third).append((m if top != "" else m, line))
    return ours, [(m.split(".")[0], line) for m, line in third]


def violations(root: Path) -> list[str]:
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    bad = []
    for mod, path in mods.items():
        ours, third = imports(mod, path, known)
        where_of = lambda line: f"{path.relative_to(root)}:{line}"  # noqa: E731
        for target, line in ours:
            if target.split(".")[0] in OLD_TOP_LEVEL:
                bad.append(f"{where_of(line)}: imports {target!r}; the installed namespace is loadprof")
                continue
            while target not in known and "." in target:
                target = target.rpartition(".")[0]  # loadprof.core.units.bytes_h -> the module
            if target not in known:
                continue
            if target != mod:
                graph[mod].add(target)
            if layer(target) not in ALLOWED[layer(mod)]:
                bad.append(f"{where_of(line)}: {mod} ({layer(mod)}) imports {target} ({layer(target)})")
        for lib, line in third:
            if lib in PRESENTATION and layer(mod) not in PRESENTATION_LAYERS:
                bad.append(f"{where_of(line)}: {mod} ({layer(mod)}) imports {lib}, which only reports and the CLI "
                           "may use")
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
    with open(root / "profiler" / "core" / "errors.py", "a") as f:
        f.write("\n\ndef _planted():\n    from loadprof.reports import html  # noqa: F401\n")
    assert any("loadprof.core.errors (core) imports loadprof.reports.html (reports)" in v for v in violations(root))


def test_a_relative_upward_import_is_caught(tmp_path):
    root = _copy(tmp_path)
    with open(root / "profiler" / "core" / "units.py", "a") as f:
        f.write("\n\ndef _planted():\n    from ..run import session  # noqa: F401\n")
    assert any("loadprof.core.units (core) imports loadprof.run.session (run)" in v for v in violations(root))


def test_an_importlib_call_naming_a_higher_layer_is_caught(tmp_path):
    root = _copy(tmp_path)
    with open(root / "analysis" / "stats.py", "a") as f:
        f.write("\n\ndef _planted():\n    import importlib\n    return importlib.import_module("
                "'loadprof.reports.markdown')\n")
    assert any("loadprof.analysis.stats (analysis) imports loadprof.reports.markdown (reports)" in v
               for v in violations(root))


def test_a_presentation_library_outside_reports_and_cli_is_caught(tmp_path):
    root = _copy(tmp_path)
    with open(root / "analysis" / "stats.py", "a") as f:
        f.write("\n\ndef _planted():\n    import rich  # noqa: F401\n")
    assert any("loadprof.analysis.stats (analysis) imports rich" in v for v in violations(root))


def test_layers_come_from_folders():
    assert layer("loadprof.core.units") == "core" and layer("loadprof.run.session") == "run"
    assert layer("loadprof.cli.main") == "top" and layer("loadprof.worker.trial") == "worker"
    assert {layer(m) for m in modules(REPO)} == set(ALLOWED)  # every layer has modules; none is left over


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
    roots = {p: d for p, d in setup["package-dir"].items()}
    assert set(roots.values()) == set(FOLDERS)
    for package in setup["packages"]:  # each package is a folder under its root's folder
        root = max((r for r in roots if package == r or package.startswith(r + ".")), key=len)
        assert (REPO / roots[root] / package[len(root) + 1:].replace(".", "/") / "__init__.py").exists(), package



#: modules allowed past ~400 lines, and why
LONG_MODULES = {
    "strategies/expand.py": "its docstring is the YAML reference (75 lines); the rest is small functions",
    "probes/sampling.py": "py-spy's lifecycle, the speedscope format and the attribution belong together",
    "analysis/estimate.py": "one formula per figure, each beside the code that measures it",
    "strategies/model.py": "every spec a strategy holds (model, load, generate, program) in one place: expand and "
                           "the schema read their fields as the YAML's keys",
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

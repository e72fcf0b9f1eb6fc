"""The catalogue of figures (loadprof.core.figures) is the one place a figure's key is spelled.

Every other package module names a figure by its constant; a key spelled as a string (a docstring, a dict key, a
constant part of an f-string) is a second copy that can drift, and this test fails on it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from loadprof.analysis import derive, diff, pareto
from loadprof.analysis import groups
from loadprof.core import figures
from loadprof.core.conclusions import ConfigSummary, Estimate
from loadprof.results.model import TrialResult
from tests.helpers import strategy_of

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("profiler", "strategies", "probes", "analysis", "reports")
CATALOGUE_FILE = REPO / "profiler" / "core" / "figures.py"


def package_files(root: Path = REPO) -> list[Path]:
    """Every module of the package (examples are the user's code, not ours)."""
    return [p for folder in PACKAGE_FOLDERS for p in sorted((root / folder).rglob("*.py"))
            if "examples" not in p.relative_to(root).parts and "__pycache__" not in p.parts]


def spelled_keys(source: str, keys: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, key) for each whole key inside a string constant of ``source`` (f-strings' constant parts
    included); ``decode_tok_s`` is not found inside ``decode_tok_s_per_seq`` or ``cold_decode_tok_s``."""
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, keys)) + r")(?![A-Za-z0-9_])")
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [(node.lineno, m.group(1)) for m in pattern.finditer(node.value)]
    return sorted(set(out))


KEYS = tuple(f.key for f in figures.CATALOGUE)


def test_no_package_module_spells_a_figure_key() -> None:
    found = [f"{p.relative_to(REPO)}:{line}: {key!r}" for p in package_files() if p != CATALOGUE_FILE
             for line, key in spelled_keys(p.read_text(), KEYS)]
    assert not found, "use the loadprof.core.figures constant instead:\n" + "\n".join(found)


def test_the_scan_finds_keys_in_strings_docstrings_and_f_strings_only() -> None:
    src = ('"""About ttft_ms."""\n'
           'x = {"decode_tok_s": 1}\n'
           'y = f"{a} load_cost_s {b}"\n'
           'decode_tok_s = "decode_tok_s_per_seq"  # peak_rss_bytes\n'
           'z = "trial_peak_rss_bytes"\n')
    assert spelled_keys(src, KEYS) == [(1, "ttft_ms"), (2, "decode_tok_s"), (3, "load_cost_s"),
                                       (4, "decode_tok_s_per_seq")]


def test_the_scan_sees_every_package_folder() -> None:
    files = {p.relative_to(REPO).parts[0] for p in package_files()}
    assert files == set(PACKAGE_FOLDERS)
    assert CATALOGUE_FILE in package_files()
    assert spelled_keys(CATALOGUE_FILE.read_text(), KEYS)  # the catalogue itself spells them: the scan works


def test_catalogue_keys_are_unique_and_carry_their_unit() -> None:
    assert len(set(KEYS)) == len(KEYS)
    suffix = {"s": "_s", "ms": "_ms", "bytes": "_bytes", "tok/s": "_tok_s", "GB/s": "_gb_s", "fraction": "_fraction"}
    for f in figures.CATALOGUE:
        assert f.key.endswith(suffix[f.unit]) or f.key.endswith(suffix[f.unit] + "_per_seq"), f
        assert figures.by_key(f.key) is f


def test_objectives_derive_from_the_catalogue() -> None:
    assert figures.OBJECTIVE_NAMES == ("load", "memory", "ttft", "throughput")
    assert figures.objective_figure("load") is figures.LOAD_COST_S
    assert figures.objective_figure("ttft") is figures.TTFT_MS
    assert figures.objective_figure("throughput") is figures.DECODE_TOK_S
    assert figures.objective_figure("memory", figures.PEAK_CUDA_ALLOCATED_BYTES) is figures.PEAK_CUDA_ALLOCATED_BYTES
    with pytest.raises(KeyError):
        figures.objective("speed")


def test_derived_figures_are_the_ones_derive_computes() -> None:
    assert {f.key for f in figures.CATALOGUE if f.derived} == set(derive.DERIVATIONS)


def test_diff_compares_every_gated_figure_in_its_group() -> None:
    assert {f.key for f in diff.COMPARED} == {f.key for f in figures.CATALOGUE if f.gate}
    assert all(f.gate in diff.GROUPS for f in diff.COMPARED)


def trial(i: int, **metrics: float) -> TrialResult:
    return TrialResult(trial_id=f"t{i}", strategy_id=f"s{i}", label="", repeat_index=0, status="ok",
                       strategy=strategy_of(), metrics=metrics)


def _cuda(v: float | None) -> dict[str, float]:
    return {} if v is None else {figures.PEAK_CUDA_ALLOCATED_BYTES.key: v}


def test_one_memory_rule_for_recommendations_and_pareto() -> None:
    """CUDA allocator peak only when every compared item has one: the same answer from trials and configurations."""
    for peaks, want in (((1.0, 2.0), figures.PEAK_CUDA_ALLOCATED_BYTES), ((1.0, None), figures.PEAK_RSS_BYTES),
                        ((None, None), figures.PEAK_RSS_BYTES), ((), figures.PEAK_RSS_BYTES)):
        assert figures.memory_figure(_cuda(p) for p in peaks) is want
        trials = [trial(i, **{figures.PEAK_RSS_BYTES.key: 10.0}, **_cuda(p)) for i, p in enumerate(peaks)]
        assert groups.memory_figure(trials) is want
        configs = [ConfigSummary(str(i), str(i), "m", 1, 1, figures={
            figures.PEAK_RSS_BYTES.key: Estimate(10.0, 10.0, 10.0, 1),
            **({} if p is None else {figures.PEAK_CUDA_ALLOCATED_BYTES.key: Estimate(p, p, p, 1)})})
            for i, p in enumerate(peaks)]
        assert pareto.memory_figure(configs) is want


def test_schema_doc_names_every_figure() -> None:
    doc = (REPO / "docs" / "report-schema.md").read_text()
    assert ", ".join(f"`{f.key}`" for f in figures.CATALOGUE) in " ".join(doc.split())  # the catalogue, in order
    for f in figures.CATALOGUE:
        assert f"`{f.key}`" in doc, f.key
    assert all(f"`{f.key}`" in doc.split("## Configurations")[1] for f in figures.PER_CONFIGURATION)

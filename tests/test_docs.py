"""The manual: the README stays short and its links resolve, the site's pages link to files that exist, the
generated YAML reference matches the code, and every finding kind the code can emit is documented."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from .conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
#: the site's own pages; docs/gpu holds committed run outputs (their READMEs link to files of those runs)
PAGES = sorted(p for p in DOCS.rglob("*.md") if "gpu" not in p.relative_to(DOCS).parts)
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
MAX_README_LINES = 200


def _relative_links(path: Path) -> list[str]:
    """Markdown link and image targets that point into the repository (no URL, no bare #anchor), code blocks
    left out."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_yaml_reference", DOCS / "gen_yaml_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_fits_on_two_screens():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file(path):
    links = _relative_links(path)
    missing = [t for t in links if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{path.relative_to(REPO)} links to missing files: {missing}"
    if path == README:
        assert any(t.startswith("docs/") for t in links) and any(t.endswith(".png") for t in links)


def test_the_readmes_first_command_is_the_one_ci_runs():
    first = re.search(r"```bash\n(.*?)\n```", README.read_text(), re.DOTALL).group(1).strip()
    assert first.startswith("python3 -m venv .venv") and "loadprof compare strategies/examples/quickstart.yaml" in first
    assert first in (REPO / ".ci" / "run").read_text()


def test_the_yaml_reference_is_generated_from_the_code():
    gen = _generator()
    text = gen.PAGE.read_text()
    assert gen.render(text) == text, "docs/reference/yaml.md is stale: run python docs/gen_yaml_reference.py"


def test_the_yaml_reference_lists_every_key_and_value_the_validator_takes():
    from loadprof.strategies import model as m

    text = (DOCS / "reference" / "yaml.md").read_text()
    for key in (*m.LOAD_KEYS, *m.GENERATE_KEYS, *m.STRATEGY_KEYS, *m.MODEL_KEYS, *m.LOADER_KEYS):
        assert f"| `{key}` |" in text, key
    for value in (*m.DEVICE_MAPS, *m.DTYPES, *m.QUANTIZATIONS, *m.FILE_CACHES, *m.ISOLATIONS, *m.PROBES):
        assert f"`{value}`" in text, value


def test_a_stale_page_is_refused(tmp_path):
    gen = _generator()
    text = gen.PAGE.read_text()
    stale = text.replace("| `device_map` |", "| `devicemap` |", 1)
    assert stale != text and gen.render(stale) == text  # rendering repairs it, so --check would have failed
    with pytest.raises(KeyError):
        gen.render(text.replace("<!-- BEGIN GENERATED: probes -->", "<!-- BEGIN GENERATED: probez -->"))


def _kinds_in_code() -> set[str]:
    """Finding kinds as the rules write them: ``_f(t, "kind", ...)``, ``.finding("kind", ...)``,
    ``Finding("kind", ...)`` or ``Finding(kind="kind", ...)``, or a ``*_KIND = "kind"`` constant, anywhere in the
    analysis and the engine."""
    pattern = re.compile(r"(?:\b_f\(\s*\w+,|\.finding\(|\bFinding\()\s*(?:kind=)?\s*\"([a-z0-9_]+)\"")
    constant = re.compile(r"^[A-Z_]*KIND\s*=\s*\"([a-z0-9_]+)\"", re.M)
    found: set[str] = set()
    for folder in ("analysis", "profiler", "reports", "probes"):
        for path in (REPO / folder).rglob("*.py"):
            found.update(pattern.findall(path.read_text()) + constant.findall(path.read_text()))
    return found


def test_every_finding_kind_is_documented():
    text = (DOCS / "reference" / "findings.md").read_text()
    table = text[text.index("| kind |"):].split("\n\n")[0]
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", table, re.MULTILINE))
    in_code = _kinds_in_code()
    assert len(in_code) >= 15, in_code  # the pattern still finds the rules
    assert documented == in_code, (f"undocumented: {sorted(in_code - documented)}; "
                                   f"documented but not in the code: {sorted(documented - in_code)}")

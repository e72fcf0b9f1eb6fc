"""Fill the generated blocks of docs/reference/yaml.md from the tables `loadprof schema` is built from.

The page's prose is written by hand; every block between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->`` is rewritten from the code (the JSON Schema of the sweep YAML with its
descriptions and defaults, the probe registry, the synthetic shapes, the input limits), so the reference
cannot drift from the validator. Three ways to run it:

* ``python docs/gen_yaml_reference.py``: rewrite the page in place;
* ``python docs/gen_yaml_reference.py --check``: exit 1 when the committed page is stale (tests do this too);
* as an mkdocs hook (``hooks:`` in mkdocs.yml): ``mkdocs build`` and ``mkdocs serve`` refresh it first.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

PAGE = Path(__file__).resolve().parent / "reference" / "yaml.md"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
                   re.DOTALL)


def _code(v: Any) -> str:
    return f"`{json.dumps(v) if not isinstance(v, str) else v}`"


def _patterns() -> dict[str, str]:
    from loadprof.strategies import model as m
    from loadprof.strategies import schema

    return {m.SIZE_RE.pattern: "a size (`2GiB`, `500MB`) or bytes",
            m.DEVICE_RE.pattern: "a device (`0`, `cuda:1`, `cpu`, `disk`)",
            m.VALIDATION_RE.pattern: "`none`, `sample` (= `sample:10`), `sample:K`, `full`, `deep`",
            schema.RANGE_PATTERN: "a range `a..b*k`, `a..b+k`, `a..b`",
            r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$": "`pkg.module:callable` or `pkg.module:Class.method`"}


def values(node: dict[str, Any], path: str = "") -> str:
    """What a schema node accepts, in words (null, meaning unset, is left out)."""
    from loadprof.strategies.model import ALIASES

    if "anyOf" in node:
        parts = [values(n, path) for n in node["anyOf"]]
        if any(p.startswith(("a size", "a device")) for p in parts):  # bytes and GPU indices are said there
            parts = [p for p in parts if p != "an integer >= 0"]
        return " or ".join(p for p in parts if p)
    if "enum" in node:
        aliases = ALIASES.get(path, {})
        text = ", ".join(_code(v) for v in node["enum"] if v not in aliases)
        return text + (f" (also {', '.join(f'`{a}` = `{c}`' for a, c in aliases.items())})" if aliases else "")
    if "pattern" in node:
        return _patterns().get(node["pattern"], f"a string matching `{node['pattern']}`")
    kind = node.get("type")
    kind = [k for k in kind if k != "null"] if isinstance(kind, list) else [kind] if kind else []
    if kind == ["integer"] or kind == ["number"]:
        word = "an integer" if kind == ["integer"] else "a number"
        lo = node.get("minimum")
        hi = node.get("maximum")
        if lo is not None and hi is not None:
            return f"{word} {lo}..{hi:,}"
        if "exclusiveMinimum" in node:
            return f"{word} > {node['exclusiveMinimum']}"
        return f"{word} >= {lo:,}" if lo is not None else word
    if kind == ["array"]:
        items = node.get("items") or {}
        return f"a list of: {values(items, path)}" if items.get("enum") else "a list of strings"
    if kind == ["object"]:
        if "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
            return f"a mapping of {'device' if 'propertyNames' in node else 'module'} -> " + values(
                node["additionalProperties"], path)
        return "a mapping"
    return {"string": "a string", "boolean": "`true` / `false`", "null": ""}.get(kind[0] if kind else "", "")


def _section_of(node: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema of a section (model, load, ...) inside its anyOf wrapper, or None for a leaf."""
    for n in node.get("anyOf", [node]):
        if n.get("type") == "object" and "properties" in n:
            return n
    return None


def _default(node: dict[str, Any]) -> str:
    if "default" not in node or node["default"] in (None, "", [], {}):
        return ""
    return _code(node["default"])


def _meaning(node: dict[str, Any], path: str) -> str:
    text = node.get("description", "")
    return text.removeprefix(f"{path}: ").replace("|", "\\|")


def key_table(props: dict[str, Any], prefix: str) -> str:
    rows = ["| key | values | default | meaning |", "|---|---|---|---|"]
    for key, node in props.items():
        path = f"{prefix}{key}"
        sub = _section_of(node)
        if sub is not None:
            others = [values(n, path) for n in node.get("anyOf", []) if n is not sub]
            accepted = f"[a mapping](#{path.replace('.', '')})" + "".join(f" or {o}" for o in others if o)
            rows.append(f"| `{key}` | {accepted} | | {_meaning(node, path)} |")
        else:
            rows.append(f"| `{key}` | {values(node, path)} | {_default(node)} | {_meaning(node, path)} |")
    return "\n".join(rows) + "\n"


def _strategy() -> dict[str, Any]:
    from loadprof.strategies.schema import sweep_schema

    return sweep_schema()["properties"]["base"]["anyOf"][0]


def section(path: str) -> str:
    node = _strategy()
    for part in path.split("."):
        node = _section_of(node["properties"][part])
    return key_table(node["properties"], f"{path}.")


def top() -> str:
    from loadprof.strategies.schema import sweep_schema

    props = sweep_schema()["properties"]
    rows = ["| key | values | default | meaning |", "|---|---|---|---|"]
    kinds = {"model": "[a mapping](#model) or a string", "base": "a strategy ([keys](#strategy-keys))",
             "matrix": "a strategy whose leaves are lists", "include": "a list of strategies",
             "exclude": "a list of strategies"}
    for key, node in props.items():
        rows.append(f"| `{key}` | {kinds.get(key) or values(node, key)} | {_default(node)} | {_meaning(node, key)} |")
    return "\n".join(rows) + "\n"


def strategy() -> str:
    return key_table(_strategy()["properties"], "")


def probes() -> str:
    from loadprof.core.probe_registry import REGISTRY
    from loadprof.strategies.model import Strategy

    rows = ["| probe | in `probes:` | runs in | what it measures |", "|---|---|---|---|"]
    rows += [f"| `{e.name}` | {'yes' if e.selectable else 'no'} | {e.runs_in} | {e.description} |" for e in REGISTRY]
    default = next(f.default for f in Strategy.__dataclass_fields__.values() if f.name == "probes")
    return "\n".join(rows) + f"\n\nThe default: `probes: [{', '.join(default)}]`.\n"


def shapes() -> str:
    from loadprof.strategies.shapes import ARCHS, SHAPES

    rows = ["| shape | architecture | copied from |", "|---|---|---|"]
    rows += [f"| `{name}` | `{s.arch}` | {s.source} |" for name, s in SHAPES.items()]
    return "\n".join(rows) + (f"\n\nArchitectures (`arch`): {', '.join(f'`{a}`' for a in ARCHS)}; a shape may be "
                              "put on another compatible architecture.\n")


def limits() -> str:
    from loadprof.strategies import expand, model, yamlload

    return (f"- a sweep file is at most {yamlload.MAX_BYTES // 2**10} KiB, nested at most {yamlload.MAX_DEPTH} "
            f"levels, and at most {yamlload.MAX_NODES:,} nodes with every YAML alias counted each time it is used;\n"
            "- duplicate keys are refused, naming both lines;\n"
            f"- a matrix has at most {expand.MAX_POINTS:,} points, a range at most {expand.MAX_RANGE:,} values, and "
            f"`repeat` and strategies x repeat at most {expand.MAX_TRIALS:,} trials;\n"
            f"- `memory_limit` is at least {model.MIN_MEMORY_LIMIT // 2**20} MiB (what a worker needs to import torch "
            "and transformers).\n")


BLOCKS: dict[str, Callable[[], str]] = {
    "top": top, "strategy": strategy, "model": lambda: section("model"),
    "model.synthetic": lambda: section("model.synthetic"), "load": lambda: section("load"),
    "load.loader": lambda: section("load.loader"), "generate": lambda: section("generate"),
    "program": lambda: section("program"), "probes": probes, "shapes": shapes, "limits": limits,
}


def render(text: str) -> str:
    """The page with every generated block rewritten; an unknown or missing block is an error."""
    seen: list[str] = []

    def fill(mt: re.Match[str]) -> str:
        name = mt.group("name")
        if name not in BLOCKS:
            raise KeyError(f"{PAGE.name}: unknown generated block {name!r}")
        seen.append(name)
        return mt.group(1) + BLOCKS[name]() + mt.group(4)

    out = BLOCK.sub(fill, text)
    missing = sorted(set(BLOCKS) - set(seen))
    if missing:
        raise KeyError(f"{PAGE.name} lacks the generated blocks {missing}")
    return out


def on_pre_build(config: Any) -> None:
    """mkdocs hook: refresh the page before the build reads it (written only when it changed)."""
    text = PAGE.read_text()
    new = render(text)
    if new != text:
        PAGE.write_text(new)


def main(argv: list[str]) -> int:
    text = PAGE.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print(f"{PAGE} is stale: run python docs/gen_yaml_reference.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

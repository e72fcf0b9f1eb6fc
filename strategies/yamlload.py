"""Reading a sweep YAML with bounds: safe_load semantics, answered in well under 2 s whatever the file holds.

``yaml.safe_load`` can never run code, but it happily accepts an alias bomb (nine levels of ``[*a, *a, ...]``
expand to billions of nodes once anything walks the result), a nesting deep enough to exhaust Python's
recursion, and duplicate keys (the last silently wins). Each gets one line here, with the line and column,
before anything is built: a size cap, a nesting cap from the token stream (the scanner is iterative), a cap on
the document's size with every alias counted each time it is used, and duplicate keys naming both lines.
"""

from __future__ import annotations

from typing import Any

import yaml

from loadprof.core.errors import SpecError

#: a sweep file is a few KiB; this bounds parse time (PyYAML's parser) well under 2 s
MAX_BYTES = 256 * 2**10
#: nesting of mappings and lists; a sweep needs about 6
MAX_DEPTH = 64
#: nodes of the document with every alias expanded where it is used; a large sweep has a few thousand
MAX_NODES = 100_000

_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
         yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown place"


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses duplicate keys, naming both lines."""

    source = "<yaml>"

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node:
                    raise SpecError(f"{self.source}: duplicate key {key!r} at {_at(key_node.start_mark)}; first at "
                                    f"{_at(first.start_mark)}", hint="keep one of them: YAML would silently use "
                                                                     "the last")
        return super().construct_mapping(node, deep=deep)


def _check_depth(text: str, source: str) -> None:
    depth = 0
    for tok in yaml.scan(text, Loader=_Base):
        if isinstance(tok, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels at {_at(tok.start_mark)}",
                                hint="a sweep needs a handful of levels; is a bracket unclosed?")
        elif isinstance(tok, _CLOSE):
            depth -= 1


def _expanded_size(root: Any, source: str) -> int:
    """Nodes with aliases expanded (a shared node counts once per use), stopping as soon as MAX_NODES passes."""
    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        kids = ([n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else
                list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        size[id(node)] = 1 + sum(size.get(id(k), 1) for k in kids)
        if size[id(node)] > MAX_NODES:
            raise SpecError(f"{source}: the document expands to more than {MAX_NODES:,} nodes near "
                            f"{_at(node.start_mark)} (aliases count each time they are used)",
                            hint="an alias bomb? write the values out, or use a matrix")
    return size.get(id(root), 0)


def load_yaml(text: str, source: str) -> Any:
    """The document in ``text`` as Python data (safe_load types), or SpecError with the line and column."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SpecError(f"{source} is {len(text.encode('utf-8', 'replace')):,} bytes; a sweep file may be at most "
                        f"{MAX_BYTES // 2**10} KiB", hint="is this the right file?")
    try:
        _check_depth(text, source)
        loader = _Loader(text)
        loader.source = source
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expanded_size(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except SpecError:
        raise
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as e:  # bad dates, !!int x ...
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f" at {_at(mark)}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0][:200]
        raise SpecError(f"invalid YAML in {source}{at}: {problem}", hint="check indentation and quoting there") from None

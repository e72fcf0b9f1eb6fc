"""What a user function's time went to: the calls it made outside the user's own files, each by its public name.

For a sample whose deepest user frame is ``f``, the call that holds it is the outermost frame under ``f`` that is
not the user's, not loadprof's own (a probe's hook wrapped around a library function) and not a pass-through
wrapper (``torch.no_grad``'s decorator, ``nn.Module.__call__``): ``copy.deepcopy``, ``shutil.copytree``,
``AutoModel.from_config``. py-spy sees Python frames only, so a C function called from the user's line
(``gc.collect()``, ``v.clone()``, ``time.sleep``) leaves ``f`` as the leaf: the call is then read off that line's
source, by the known expensive calls first (``.clone(`` -> ``torch.Tensor.clone``), else the line's outermost
call. Each call is keyed with the user's line that makes it, so the same callee from two lines is two rows.
"""

from __future__ import annotations

import linecache
import re
import sysconfig
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from loadprof.probes.stacks import Frame, Sample

#: frames that only pass a call through (a decorator, nn.Module's __call__): the call is named by what they call
PASS_THROUGH: tuple[tuple[str, str], ...] = (
    ("torch.utils._contextlib", "decorate_context"), ("torch.nn.modules.module", "Module._wrapped_call_impl"),
    ("torch.nn.modules.module", "Module._call_impl"), ("contextlib", ""), ("functools", "wraps"),
)
#: (module, qualname) as py-spy reports them -> the public name a user writes (a library's private function
#: under a public one); anything else is named ``module.qualname``
PUBLIC: dict[tuple[str, str], str] = {
    ("transformers.models.auto.auto_factory", "_BaseAutoModelClass.from_config"): "AutoModel.from_config",
    ("transformers.models.auto.auto_factory", "_BaseAutoModelClass.from_pretrained"): "AutoModel.from_pretrained",
    ("transformers.modeling_utils", "PreTrainedModel._from_config"): "PreTrainedModel.from_config",
    ("transformers.modeling_utils", "PreTrainedModel.from_pretrained"): "PreTrainedModel.from_pretrained",
    ("transformers.modeling_utils", "PreTrainedModel.save_pretrained"): "PreTrainedModel.save_pretrained",
    ("transformers.generation.utils", "GenerationMixin.generate"): "GenerationMixin.generate",
    ("torch.nn.modules.module", "Module.load_state_dict"): "torch.nn.Module.load_state_dict",
    ("torch.nn.modules.module", "Module.state_dict"): "torch.nn.Module.state_dict",
    ("torch.nn.modules.module", "Module.to"): "torch.nn.Module.to",
    ("torch.serialization", "load"): "torch.load", ("torch.serialization", "save"): "torch.save",
    ("safetensors.torch", "load_file"): "safetensors.torch.load_file",
    ("safetensors.torch", "save_file"): "safetensors.torch.save_file",
}
#: a C call read off the user's source line: (pattern, public name); the first match names it
SOURCE_CALLS: tuple[tuple[str, str], ...] = (
    (r"\bgc\.collect\s*\(", "gc.collect"), (r"\.clone\s*\(", "torch.Tensor.clone"),
    (r"\bdeepcopy\s*\(", "copy.deepcopy"), (r"\bcopytree\s*\(", "shutil.copytree"),
    (r"\btime\.sleep\s*\(|\bsleep\s*\(", "time.sleep"), (r"\.recv(_into)?\s*\(", "socket.recv"),
    (r"\.accept\s*\(", "socket.accept"), (r"\.connect\s*\(", "socket.connect"),
    (r"\.communicate\s*\(", "Popen.communicate"),
    (r"\.copy_\s*\(", "torch.Tensor.copy_"), (r"\.contiguous\s*\(", "torch.Tensor.contiguous"),
    (r"\.(to|cpu|cuda)\s*\(", "torch.Tensor.to"),
)
_CALL = re.compile(r"([A-Za-z_][\w.]*)\s*\(")
_KEYWORDS = {"if", "for", "while", "return", "yield", "in", "and", "or", "not", "with", "assert", "print", "lambda",
             "elif", "await"}
OWN = "(own code)"


def def_line(file: str, qualname: str, seen_line: int) -> int:
    """The ``def`` line of the function (searched upward from a line seen inside it), else the line seen."""
    name = qualname.rsplit(".", 1)[-1]
    if name.startswith("<"):
        return seen_line
    pat = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*[(\[]")
    try:
        lines = linecache.getlines(file)
    except (OSError, ValueError):  # a torn nonblocking read can leave a garbled file name
        return seen_line
    return next((n for n in range(min(seen_line, len(lines)), 0, -1) if pat.match(lines[n - 1])), seen_line)


_ANONYMOUS = re.compile(r"(\.<locals>)?\.<(genexpr|listcomp|dictcomp|setcomp|lambda)>$")


def enclosing(qualname: str) -> str:
    """A comprehension, generator expression or lambda is part of the function it is written in."""
    while True:
        folded = _ANONYMOUS.sub("", qualname)
        if folded == qualname or not folded:
            return qualname
        qualname = folded


def module_of(file: str) -> str:
    """``.../site-packages/torch/nn/modules/module.py`` -> ``torch.nn.modules.module``; the stdlib likewise."""
    rel = file
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in file:
            rel = file.split(marker, 1)[1]
            break
    else:
        stdlib = sysconfig.get_paths()["stdlib"].rstrip("/") + "/"
        rel = file[len(stdlib):] if file.startswith(stdlib) else Path(file).name
    parts = [p for p in Path(rel).with_suffix("").parts if p not in ("/", "")]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def public_name(f: Frame) -> tuple[str, str]:
    """(public name, module) of a library frame: the PUBLIC table's name, else ``module.qualname``."""
    mod = module_of(f.file)
    return PUBLIC.get((mod, f.function)) or (f"{mod}.{f.function}" if mod else f.function), mod


def _passes_through(f: Frame) -> bool:
    mod = module_of(f.file)
    return any(mod == m and (not q or f.function == q) for m, q in PASS_THROUGH)


@lru_cache(maxsize=4096)
def source_call(file: str, line: int) -> tuple[str, str]:
    """(name, source text) of the call a user's line makes: a known expensive call, else its first call."""
    try:
        text = linecache.getline(file, line).strip()
    except (OSError, ValueError):  # a garbled file name from a torn read
        text = ""
    if not text:
        return OWN, ""
    known = next((name for pat, name in SOURCE_CALLS if re.search(pat, text)), None)
    if known:
        return known, text
    first = next((m.group(1) for m in _CALL.finditer(text) if m.group(1) not in _KEYWORDS), None)
    return (first or OWN), text


def callee_of(stack: Sequence[Frame], at: int, is_user: Callable[[str], bool],
              is_internal: Callable[[str], bool]) -> tuple[str, str, str]:
    """(name, module, how) of the call that holds a sample whose deepest user frame is ``stack[at]``; how is
    'frame' (a sampled Python frame) or 'line' (read off the user's source line: a C call, or the line's own
    work)."""
    below = [f for f in stack[at + 1:] if not is_internal(f.file) and not _passes_through(f)]
    if below and not is_user(below[0].file):
        name, mod = public_name(below[0])
        return name, mod, "frame"
    user = stack[at]
    name, _ = source_call(user.file, user.line)
    return name, "", "line"


class _Row:
    __slots__ = ("seconds", "own_s", "decode_s", "running_s", "cpu_wait_s", "waits", "samples", "module", "how",
                 "memory")

    def __init__(self, module: str, how: str) -> None:
        self.seconds = self.own_s = self.decode_s = self.running_s = self.cpu_wait_s = 0.0
        self.waits: dict[str, float] = defaultdict(float)
        self.samples, self.module, self.how = 0, module, how
        self.memory: dict[str, tuple[int, int]] = {}  # kind (anon, cuda) -> (added, held) bytes (loadprof.probes.memjoin)


def _bytes(memory: dict[str, tuple[int, int]]) -> dict[str, int | None]:
    """A call's memory columns: anon RSS always (None: no timeline joined), the CUDA allocator's where joined."""
    added, held = memory.get("anon", (None, None))
    out = {"added_bytes": added, "held_bytes": held}
    if "cuda" in memory:
        out.update(added_cuda_bytes=memory["cuda"][0], held_cuda_bytes=memory["cuda"][1])
    return out


class Breakdown:
    """Per (user function key, phase): per (call name, user line) the seconds, own/decode parts and states."""

    def __init__(self, is_user: Callable[[str], bool], is_internal: Callable[[str], bool]) -> None:
        self.is_user, self.is_internal = is_user, is_internal
        self.rows: dict[Any, dict[tuple[str, int], _Row]] = defaultdict(dict)

    def add(self, key: Any, s: Sample, at: int, own: bool, decode: bool) -> tuple[str, int]:
        name, mod, how = callee_of(s.stack, at, self.is_user, self.is_internal)
        call = (name, s.stack[at].line)
        row = self.rows[key].get(call) or self.rows[key].setdefault(call, _Row(mod, how))
        row.seconds += s.weight_s
        row.samples += 1
        row.own_s += s.weight_s if own else 0.0
        row.decode_s += s.weight_s if decode else 0.0
        row.cpu_wait_s += s.cpu_wait_s  # another process held the CPU: neither the call's work nor its wait
        if s.state == "running":
            row.running_s += s.weight_s - s.cpu_wait_s
        elif s.state != "unknown":
            row.waits[s.state] += s.weight_s - s.cpu_wait_s
        return call

    def table(self, key: Any, n: int = 8) -> list[dict[str, Any]]:
        """The function's calls, most seconds first (JSON-ready rows of the payload's ``Callee``)."""
        rows = sorted(self.rows.get(key, {}).items(), key=lambda kv: (-kv[1].seconds, kv[0]))[:n]
        return [{"name": name, "module": r.module, "how": r.how, "line": line, "samples": r.samples,
                 "seconds": round(r.seconds, 6), "own_s": round(r.own_s, 6), "decode_s": round(r.decode_s, 6),
                 "running_s": round(r.running_s, 6), "cpu_wait_s": round(r.cpu_wait_s, 6),
                 "waits": {k: round(v, 6) for k, v in r.waits.items()},
                 **_bytes(r.memory)} for (name, line), r in rows]

    def calls(self) -> Iterable[tuple[Any, tuple[str, int], _Row]]:
        return ((k, c, r) for k, rows in self.rows.items() for c, r in rows.items())

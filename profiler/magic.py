"""``%%loadprof``: an IPython cell magic around ``loadprof.profile()`` (``%load_ext loadprof`` registers it).

    %%loadprof [--out DIR] [--name NAME] [--sampling-hz N]
    model = AutoModelForCausalLM.from_pretrained(path)

The cell runs in the notebook's own namespace, in this process (not isolated, as ``loadprof.profile()`` says).
Afterwards the findings are printed, the profile is ``_loadprof`` in the namespace (``_loadprof.result``, a
``SweepResult``), and with ``--out`` the usual report files are written there. IPython is not a dependency:
this module imports nothing of it.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

NAMESPACE_KEY = "_loadprof"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%%loadprof", add_help=False)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default="cell")
    p.add_argument("--sampling-hz", type=int, default=None)
    return p


def summary(result: Any) -> str:
    """A few lines for the notebook: the trial's status and phases' top level, then each finding's title."""
    t = result.trials[0]
    lines = [f"loadprof: {t.status}" + (f" ({t.reason})" if t.reason else "") + ", in-process (not isolated), "
             + ", ".join(f"{p.name} {p.duration_s:.2f} s" for p in t.phases)]
    lines += [f"  {f.severity:<6} {f.title}" for f in result.findings] or ["  no findings"]
    return "\n".join(lines)


def run_cell(ipython: Any, line: str, cell: str) -> Any:
    """The magic's body: the cell under ``loadprof.profile()``; returns the Profile (also ``_loadprof``)."""
    from loadprof.run.inprocess import profile

    try:
        args = parser().parse_args(shlex.split(line))
    except SystemExit:
        print(f"usage: {parser().format_usage().strip()}")
        return None
    shown: BaseException | None = None
    try:
        with profile(args.name, sampling_hz=args.sampling_hz) as p:
            res = ipython.run_cell(cell)
            shown = getattr(res, "error_in_exec", None)
            if shown is not None:  # already shown by IPython: recorded as the block's failure, not raised again
                raise shown
    except BaseException as e:
        if e is not shown:
            raise
    ipython.user_ns[NAMESPACE_KEY] = p
    print(summary(p.result))
    if args.out:
        print(f"loadprof: report written to {p.report(args.out)}")
    return p


def register(ipython: Any) -> None:
    """Register ``%%loadprof`` with this IPython shell."""
    ipython.register_magic_function(lambda line, cell: run_cell(ipython, line, cell) and None, magic_kind="cell",
                                    magic_name="loadprof")

"""loadprof's bootstrap for ``loadprof run -- CMD``: this folder is put first on the program's PYTHONPATH.

Python imports ``sitecustomize`` at interpreter start, whatever started it (``python app.py``, ``python -m pkg``,
a console script), so the hooks are in place before the program's first line without rewriting its command.
Only when ``LOADPROF_EVENTS_FD`` is set does it do anything (loadprof.worker.program.install_from_env); then it
runs the ``sitecustomize`` this one shadows, if any, so a site's own customisation still happens.
"""

from __future__ import annotations

import os
import sys


def _install() -> None:
    if "LOADPROF_EVENTS_FD" not in os.environ:
        return
    try:
        from loadprof.worker.program import install_from_env
    except Exception as e:  # noqa: BLE001 - loadprof not importable by this interpreter: the program runs unhooked
        sys.stderr.write(f"loadprof: hooks not installed in {sys.executable}: {type(e).__name__}: {e}\n")
        return
    install_from_env()


def chain(here: str, path: list[str]) -> object | None:
    """Import and run the next ``sitecustomize`` on ``path`` after ``here`` (None when there is none)."""
    import importlib.machinery
    import importlib.util

    rest = [p for p in path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)
    return module


_install()
chain(os.path.dirname(os.path.abspath(__file__)), list(sys.path))

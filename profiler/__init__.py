"""loadprof engine: CLI, sweep session, isolated trial runner/worker, result model.

Kept import-light on purpose: the parent process never imports torch, so
``loadprof --help`` and YAML validation stay instant. The Python API (``loadprof.compare``,
``loadprof.load_report``, ``loadprof.profile``) lives in ``loadprof.api``; ``%load_ext loadprof`` adds the
``%%loadprof`` cell magic.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["compare", "load_report", "profile", "__version__", "load_ipython_extension"]


def __getattr__(name: str) -> Any:
    """``loadprof.compare`` / ``loadprof.load_report`` (loadprof.api), imported on first use: ``import loadprof``
    stays as light as the CLI needs it."""
    if name in ("compare", "load_report", "profile"):
        from loadprof import api

        return getattr(api, name)
    raise AttributeError(f"module 'loadprof' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext loadprof``: the ``%%loadprof`` cell magic (loadprof.magic)."""
    from loadprof.magic import register

    register(ipython)

"""loadprof engine: CLI, sweep session, isolated trial runner/worker, result model.

Kept import-light on purpose: the parent process never imports torch, so
``loadprof --help`` and YAML validation stay instant.
"""

__version__ = "0.1.0"

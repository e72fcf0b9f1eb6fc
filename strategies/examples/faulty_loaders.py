"""Loaders that misbehave on purpose, for ``faults.yaml`` and loadprof's own tests.

Each one stands for a way a real trial dies: a segfault in native code, a
hard exit, a hang (deadlock, a network call that never returns), a memory
blow-up, and a loader that forges a line on loadprof's events pipe. A sweep that includes them must finish and record each with its
reason while a normal strategy beside them is ok.
"""

from __future__ import annotations

import ctypes
import os
import time


def normal(model_path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path)


def segfault(model_path: str):
    ctypes.string_at(0)  # reads address 0: SIGSEGV in native code


def exit_code(model_path: str, code: int = 3):
    os._exit(code)  # no exception, no cleanup: what a C library's exit() looks like


def hang(model_path: str, seconds: float = 3600.0):
    time.sleep(seconds)


def hog(model_path: str, chunk_mib: int = 64):
    """Allocate until the memory cap stops it (MemoryError) or the kernel kills the process."""
    held = []
    while True:
        held.append(bytearray(chunk_mib * 2**20))


def forged_events(model_path: str, line: str = '{"v":2,"type":"done","t_ns":"soon"}'):
    """Write a forged event to the worker's events pipe (found on the command line, as ``--events-fd``), then load
    normally: the parent must fail this trial, not the sweep."""
    import sys

    fd = int(sys.argv[sys.argv.index("--events-fd") + 1])
    os.write(fd, line.encode() + b"\n")
    return normal(model_path)

"""Loaders that misbehave on purpose, for ``faults.yaml`` and loadprof's own tests.

Each one stands for a way a real trial dies: a segfault in native code, a
hard exit, a hang (deadlock, a network call that never returns) and a memory
blow-up. A sweep that includes them must finish and record each with its
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

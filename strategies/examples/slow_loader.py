"""TEST FIXTURE, not an example to copy: a custom loader that simulates a slowed-down loader.

``tests/test_diff.py`` runs the same strategy twice, with ``delay_s: 0`` and ``delay_s: 1.5``, and checks that
``loadprof diff`` flags the ``load`` phase. The sleep stands in for a regression in the user's own loading code;
otherwise this is the plain built-in load.
"""

from __future__ import annotations

import time
from typing import Any


def load(model_path: str, delay_s: float = 0.0) -> Any:
    time.sleep(delay_s)  # the simulated regression
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path)

"""A home-made model manager of the kind many teams write, with its typical costly habits.

It stands in for "your own loader" in ``loading_methods.yaml``: loadprof runs it under
its probes and names where its time goes. Nothing here sleeps: every cost is real work.
- settings are read twice (once to pick the device, once again for the kwargs);
- ``max_memory`` is passed although the device map is fixed (it only matters for
  auto/balanced/sequential maps), and ``low_cpu_mem_usage`` although transformers 5
  discards it;
- after loading, ``_validate_all_modules`` checks every module for parameters left on
  the meta device *and* that its weights are finite, walking each module's whole
  subtree: every weight is scanned once per ancestor, so the cost grows with model
  size times depth. On a 7B model this kind of loop costs minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ModelManager:
    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self._settings_blob = json.dumps(settings or {"device": "cpu", "dtype": "auto", "max_memory_gib": 20})

    def _load_settings(self) -> dict[str, Any]:
        return json.loads(self._settings_blob)

    def load_model(self, model_path: str, validate: bool = True) -> Any:
        from transformers import AutoModelForCausalLM

        device = self._load_settings()["device"]
        settings = self._load_settings()  # read again: the value above was not kept
        model = AutoModelForCausalLM.from_pretrained(
            model_path,
            device_map=device,
            dtype=settings["dtype"],
            max_memory={"cpu": f"{settings['max_memory_gib']}GiB"},
            low_cpu_mem_usage=True,
        )
        if validate:
            self._validate_all_modules(model)
        return model

    def _validate_all_modules(self, model: Any) -> None:
        import torch

        for name, module in model.named_modules():
            for pname, param in module.named_parameters():  # recursive: the whole subtree, for every module
                if param.device.type == "meta":
                    raise RuntimeError(f"{name}.{pname} was not loaded (still on the meta device)")
                if not bool(torch.isfinite(param).all()):
                    raise RuntimeError(f"{name}.{pname} has non-finite values")


def load_quick(model_path: str) -> Any:
    """The same load without the habits: one settings read, no validation loop."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, device_map="cpu", dtype="auto")


if __name__ == "__main__":  # a manual check: python strategies/examples/model_manager.py CHECKPOINT
    import sys
    import time

    t = time.perf_counter()
    ModelManager().load_model(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MODEL", str(Path.cwd())))
    print(f"loaded in {time.perf_counter() - t:.2f} s")

"""Worker-side facts about the loaded model: bytes, tied weights, placement per device, meta tensors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from loadprof.worker.trial import model_facts  # noqa: E402
from loadprof.strategies.validation import mapped_device, offloaded, validate  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied


def test_longest_prefix_wins():
    dm = {"": "cpu", "layers": "disk", "layers.2": "cpu"}
    assert mapped_device("layers.1.weight", dm) == "disk"
    assert mapped_device("layers.2.weight", dm) == "cpu"
    assert mapped_device("layersX.weight", dm) == "cpu"
    assert mapped_device("x", {"a": "cpu"}) is None


def test_tied_weights_counted_once_and_bytes_exact():
    m = Tiny()
    f = model_facts(m)
    assert f["param_count"] == 10 * 4 + 3 * (16 + 4)
    assert f["weights_bytes"] == f["param_count"] * 4 and f["bytes_by_dtype"] == {"float32": f["weights_bytes"]}
    assert "placement" not in f and f["meta_tensors"] == 0


def test_placement_counts_layers_and_offloaded_meta_is_expected():
    m = Tiny()
    with torch.device("meta"):
        m.layers[1] = torch.nn.Linear(4, 4)  # offloaded to disk: weights live on meta
        m.layers[2] = torch.nn.Linear(4, 4)  # not offloaded: really missing
    m.hf_device_map = {"embed": "cpu", "head": "cpu", "layers.0": "cpu", "layers.1": "disk", "layers.2": "cpu"}
    f = model_facts(m)
    assert f["placement"]["disk"] == {"bytes": 80, "layers": 1, "entries": 1}
    assert f["placement"]["cpu"]["layers"] == 2 and f["placement"]["cpu"]["entries"] == 4
    assert f["meta_tensors"] == 2 and f["meta_tensor_examples"] == ["layers.2.weight", "layers.2.bias"]


def test_cpu_entries_of_a_map_with_a_gpu_are_offloaded_so_their_meta_tensors_are_expected():
    """accelerate's CPU offload keeps the module's tensors on meta (seen on an H200, transformers 5.17)."""
    m = Tiny()
    with torch.device("meta"):
        m.layers[1] = torch.nn.Linear(4, 4)  # cpu-offloaded next to a GPU: weights live in a weights map
        m.layers[2] = torch.nn.Linear(4, 4)  # disk
    m.hf_device_map = {"embed": 0, "head": 0, "layers.0": 0, "layers.1": "cpu", "layers.2": "disk"}
    assert offloaded("layers.1.weight", m.hf_device_map) and offloaded("layers.2.bias", m.hf_device_map)
    assert not offloaded("layers.0.weight", m.hf_device_map)
    assert not offloaded("layers.1.weight", {"": "cpu"})  # a CPU-only map offloads nothing
    f = model_facts(m)
    assert f["meta_tensors"] == 0
    assert f["placement"]["cpu"]["layers"] == 1 and f["placement"]["disk"]["layers"] == 1
    report = validate(m, "full", 0, lambda: 0)
    assert report.meta_tensors == ()


def test_an_exception_whose_str_raises_is_described_by_its_type():
    from loadprof.core.errors import describe_exception

    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe_exception(Hostile()) == "<Hostile whose str() raised RuntimeError>"
    assert describe_exception(ValueError("fine")) == "fine"

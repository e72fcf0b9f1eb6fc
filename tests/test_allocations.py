"""The generate-start tracer: new storages with their call sites, alive vs freed at the first token."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from loadprof.probes.allocations import make_tracer, summarize  # noqa: E402


def _held_and_temp(held: list) -> None:
    held.append(torch.zeros(64, 64))         # 16 KiB, kept: a pre-allocation
    tmp = torch.ones(128, 128)              # 64 KiB, freed before the "first token"
    _ = tmp.view(-1)[:10]                   # a view: not a new storage
    tmp.add_(1)                             # in place: not a new storage
    del tmp
    torch.ones(2)                           # below the threshold


def test_alive_views_inplace_and_sites():
    held: list = []
    tracer = make_tracer(min_bytes=4096)
    with tracer:
        _held_and_temp(held)
    tracer.mark_alive()
    s = summarize(tracer.allocations)
    assert s.generate_start_alloc_count == 2
    assert s.generate_start_alloc_bytes == 64 * 64 * 4
    assert s.generate_start_alloc_total_bytes == 64 * 64 * 4 + 128 * 128 * 4
    top = s.generate_start_alloc_sites[0]
    assert top.op == "zeros" and top.alive_bytes == 16384 and "_held_and_temp" in top.site
    assert top.site.startswith(__file__.rsplit("/", 2)[-2]) or "test_allocations.py" in top.site


def test_reused_address_counts_as_a_new_allocation():
    tracer = make_tracer(min_bytes=4096)
    with tracer:
        for _ in range(3):
            a = torch.empty(1024, 4)
            del a  # the allocator typically hands the same address back next time
    assert len(tracer.allocations) == 3


def test_call_site_skips_torch_by_its_folder_not_a_torch_substring():
    """Seen on the lent H200: python lives in /opt/torch/.venv, so a '/torch/' substring hid transformers'
    frames and the pre-allocation was billed to loadprof's own worker."""
    import traceback

    from loadprof.probes.allocations import call_site

    venv = "/opt/torch/.venv/lib/python3.12/site-packages/"
    frames = [traceback.FrameSummary("/work/main/profiler/worker.py", 154, "step_trace"),
              traceback.FrameSummary(venv + "transformers/cache_utils.py", 438, "lazy_initialization"),
              traceback.FrameSummary(venv + "torch/_tensor.py", 10, "zeros"),
              traceback.FrameSummary("/work/main/probes/allocations.py", 70, "__torch_dispatch__")]
    site, stack = call_site(frames=frames, skip_dir=venv + "torch/")
    assert site == "transformers/cache_utils.py:438 lazy_initialization"
    assert stack == ["/work/main/profiler/worker.py:154 step_trace", site]

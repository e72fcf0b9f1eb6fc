"""Page-cache control is verified, not assumed: mincore says what is resident."""

from __future__ import annotations

import os

from loadprof.run import filecache


def test_evict_then_warm_then_bandwidth(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(os.urandom(8 * 2**20))
    (tmp_path / "notes.bin.tmp").write_bytes(b"x")  # not a checkpoint file: ignored
    os.sync()
    cold = filecache.evict(tmp_path)
    assert cold.files == 1 and cold.bytes_total == 8 * 2**20
    assert cold.resident_fraction < 0.05, cold.note
    warm = filecache.warm(tmp_path)
    assert warm.resident_fraction == 1.0 and warm.action == "warm" and warm.note == ""
    again = filecache.warm(tmp_path)  # everything resident: verified by mincore, not re-read
    assert again.resident_fraction == 1.0 and again.note == "already resident: not re-read"
    bw = filecache.sequential_read_bandwidth(tmp_path)
    assert bw["bytes"] == 8 * 2**20 and bw["gb_s"] > 0
    assert bw["resident_fraction_after_evict"] < 0.05
    assert filecache.resident_bytes(f) < 2**20

"""Shared fixtures: an isolated model cache, offline env, and a guard against leaked hooks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadprof.probes._hooks import active_hooks

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "strategies" / "examples"


@pytest.fixture(scope="session", autouse=True)
def _offline_and_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never touch the network; keep synthesized checkpoints out of the user's cache (shared by the session)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("LOADPROF_CACHE", str(tmp_path_factory.mktemp("loadprof-cache")))


@pytest.fixture(autouse=True)
def _no_leaked_hooks():
    before = active_hooks()
    yield
    assert active_hooks() == before, "a test left a monkeypatch installed (HookSet not undone)"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A real tiny Qwen2 checkpoint (sharded safetensors), built once per test session."""
    from loadprof.strategies.model import SyntheticSpec
    from loadprof.strategies.synthetic import make_model

    return make_model(SyntheticSpec(shape="tiny", dtype="bfloat16", max_shard_size="200KB"))

"""The user's loader is resolved and called the way the README says."""

from __future__ import annotations

import sys
import textwrap

import pytest

from loadprof.strategies.loaders import _unpack, resolve_target
from loadprof.strategies.model import LoaderSpec


@pytest.fixture()
def user_pkg(tmp_path):
    (tmp_path / "mgr_mod.py").write_text(textwrap.dedent("""
        class Manager:
            def __init__(self, tag="default"):
                self.tag = tag
            def load(self, model_path, extra=0):
                return ("model", self.tag, model_path, extra)
        def plain(**kw):
            return kw
    """))
    yield tmp_path
    sys.modules.pop("mgr_mod", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_class_method_gets_an_instance_with_init_kwargs(user_pkg):
    fn = resolve_target(LoaderSpec("mgr_mod:Manager.load", init_kwargs={"tag": "t1"}, sys_path=(str(user_pkg),)))
    assert fn(model_path="/m", extra=2) == ("model", "t1", "/m", 2)


def test_plain_function_and_return_shapes(user_pkg):
    fn = resolve_target(LoaderSpec("mgr_mod:plain", sys_path=(str(user_pkg),)))
    assert fn(a=1) == {"a": 1}
    assert _unpack(("m", "tok")) == ("m", "tok")
    assert _unpack({"model": "m"}) == ("m", None)
    assert _unpack("m") == ("m", None)

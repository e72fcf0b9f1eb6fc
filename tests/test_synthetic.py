"""Synthetic checkpoints: real shapes, exact sizes, real loads, atomic cache, seeded weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadprof.core.errors import SpecError
from loadprof.strategies import synthetic as syn
from loadprof.strategies.model import SyntheticSpec
from loadprof.strategies.shapes import SHAPES, dims

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

# Public numbers: hidden, layers, heads, kv heads, intermediate, vocab, tied, positions, rope_theta, eps.
PUBLIC = {
    "gpt2": (768, 12, 12, 12, 3072, 50257, True, 1024, None, 1e-5),
    "gpt2-medium": (1024, 24, 16, 16, 4096, 50257, True, 1024, None, 1e-5),
    "qwen2.5-0.5b": (896, 24, 14, 2, 4864, 151936, True, 32768, 1e6, 1e-6),
    "qwen2.5-1.5b": (1536, 28, 12, 2, 8960, 151936, True, 131072, 1e6, 1e-6),
    "qwen2.5-7b": (3584, 28, 28, 4, 18944, 152064, False, 131072, 1e6, 1e-6),
    "llama-3.2-1b": (2048, 16, 32, 8, 8192, 128256, True, 131072, 5e5, 1e-5),
    "mistral-7b": (4096, 32, 32, 8, 14336, 32000, False, 32768, 1e4, 1e-5),
    "tiny": (64, 2, 4, 2, 128, 1000, True, 2048, 1e4, 1e-6),
    "tiny-gpt2": (64, 2, 4, 4, 256, 1000, True, 1024, None, 1e-5),
}
# Parameter counts the model cards / HF report for the real checkpoints.
PUBLIC_PARAMS = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "qwen2.5-0.5b": 494_032_768,
                 "qwen2.5-1.5b": 1_543_714_304, "qwen2.5-7b": 7_615_616_512,
                 "llama-3.2-1b": 1_235_814_400, "mistral-7b": 7_241_732_096}
NATIVE = {"gpt2": "gpt2", "gpt2-medium": "gpt2", "qwen2.5-0.5b": "qwen2", "qwen2.5-1.5b": "qwen2",
          "qwen2.5-7b": "qwen2", "llama-3.2-1b": "llama", "mistral-7b": "mistral", "tiny": "qwen2", "tiny-gpt2": "gpt2"}


def _combos() -> list[tuple[str, str]]:
    out = []
    for shape in SHAPES:
        for arch in syn.ARCHS:
            d = dims(SHAPES[shape])
            if arch != "gpt2" or d["kv_heads"] == d["heads"]:
                out.append((shape, arch))
    return out


def _tiny(arch: str, **kw) -> SyntheticSpec:
    return SyntheticSpec(arch=arch, shape="tiny-gpt2" if arch == "gpt2" else "tiny", **kw)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _load(path: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)


# ---- shape table and analytical sizes (torch-free) ----

def test_shape_table_is_exactly_the_known_set() -> None:
    assert set(SHAPES) == set(PUBLIC)
    assert {s: sh.arch for s, sh in SHAPES.items()} == NATIVE


@pytest.mark.parametrize("shape", sorted(PUBLIC))
def test_shape_matches_public_config(shape: str) -> None:
    hidden, layers, heads, kv, inter, vocab, tie, positions, theta, eps = PUBLIC[shape]
    d = dims(SHAPES[shape])
    assert (d["hidden"], d["layers"], d["heads"], d["kv_heads"], d["intermediate"], d["vocab"], d["tie"],
            d["positions"], d["eps"]) == (hidden, layers, heads, kv, inter, vocab, tie, positions, eps)
    cfg = syn.config_dict(SyntheticSpec(shape=shape))
    assert cfg["model_type"] == NATIVE[shape]
    assert cfg["architectures"] == [syn.ARCHS[NATIVE[shape]][1]]
    assert cfg["torch_dtype"] == cfg["dtype"] == "bfloat16"
    if theta is not None:
        assert cfg["rope_theta"] == theta
    if shape == "llama-3.2-1b":
        assert cfg["rope_scaling"] == {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        assert cfg["head_dim"] == 64


@pytest.mark.parametrize("shape,arch", _combos())
def test_param_count_equals_meta_model(shape: str, arch: str) -> None:
    spec = SyntheticSpec(shape=shape, arch=arch)
    model = syn.meta_model(spec)
    assert syn.param_count(spec) == sum(p.numel() for p in model.parameters())  # parameters() dedupes tied
    assert syn.checkpoint_bytes(spec) == sum(t.numel() * 2 for t in syn._tensors_to_save(model).values())
    if arch == NATIVE[shape] and shape in PUBLIC_PARAMS:
        assert syn.param_count(spec) == PUBLIC_PARAMS[shape]


def test_checkpoint_bytes_per_dtype() -> None:
    n = syn.param_count(SyntheticSpec(shape="gpt2"))
    assert syn.checkpoint_bytes(SyntheticSpec(shape="gpt2", dtype="float32")) == 4 * n
    assert syn.checkpoint_bytes(SyntheticSpec(shape="gpt2", dtype="float16")) == 2 * n


def test_shape_on_foreign_arch_keeps_its_numbers() -> None:
    cfg = syn.config_dict(SyntheticSpec(shape="qwen2.5-0.5b", arch="llama"))
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_key_value_heads"], cfg["vocab_size"]) == ("llama", 896, 2, 151936)
    assert cfg["tie_word_embeddings"] is True and cfg["rope_theta"] == 1e6
    g = syn.config_dict(SyntheticSpec(shape="qwen2.5-0.5b", arch="llama"))
    assert g == cfg  # deterministic
    gpt = syn.config_dict(SyntheticSpec(shape="gpt2", arch="qwen2"))
    assert (gpt["hidden_size"], gpt["intermediate_size"], gpt["max_position_embeddings"]) == (768, 3072, 1024)


def test_content_key_stable_and_sensitive() -> None:
    base = SyntheticSpec(shape="tiny")
    k = syn.content_key(base)
    assert len(k) == 12 and int(k, 16) >= 0
    assert syn.content_key(SyntheticSpec(shape="tiny")) == k
    assert syn.content_key(SyntheticSpec(shape="tiny", arch="qwen2")) == k  # explicit native arch is the same model
    assert syn.content_key(SyntheticSpec(shape="tiny", max_shard_size="0.2GB")) == k  # same bytes, same key
    variants = [SyntheticSpec(shape="tiny", seed=1), SyntheticSpec(shape="tiny", dtype="float32"),
                SyntheticSpec(shape="tiny", arch="llama"), SyntheticSpec(shape="tiny-gpt2"),
                SyntheticSpec(shape="tiny", max_shard_size="100KB")]
    keys = {syn.content_key(v) for v in variants}
    assert k not in keys and len(keys) == len(variants)
    # the same in a fresh interpreter (no hash randomisation)
    out = subprocess.run([sys.executable, "-c", "from loadprof.strategies.synthetic import content_key as c; "
                          "from loadprof.strategies.model import SyntheticSpec as S; print(c(S(shape='tiny')))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert out == k


def test_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SyntheticSpec(shape="tiny", seed=3)
    monkeypatch.setenv("LOADPROF_CACHE", str(tmp_path / "c"))
    assert syn.cache_root() == tmp_path / "c"
    assert syn.model_dir(spec) == tmp_path / "c" / "models" / f"qwen2-tiny-bfloat16-s3-{syn.content_key(spec)}"
    assert syn.model_dir(spec, tmp_path).parent == tmp_path / "models"
    monkeypatch.delenv("LOADPROF_CACHE")
    assert syn.cache_root() == Path.home() / ".cache" / "loadprof"


def test_parent_side_is_torch_free(tmp_path: Path) -> None:
    code = ("import sys; from loadprof.strategies import synthetic as s; from loadprof.strategies.model import SyntheticSpec as S\n"
            "for sh in s.SHAPES:\n  x = S(shape=sh); s.config_dict(x); s.param_count(x); s.checkpoint_bytes(x); "
            f"s.content_key(x); s.model_dir(x); s.is_built(x, {str(tmp_path)!r})\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---- bad input ----

@pytest.mark.parametrize("kw,needle,suggest", [
    ({"shape": "qwen2.5-05b"}, "unknown shape", "qwen2.5-0.5b"),
    ({"shape": "Qwen2.5-7B"}, "unknown shape", "qwen2.5-7b"),
    ({"shape": "gpt2", "arch": "lama"}, "unknown arch", "llama"),
    ({"shape": "tiny", "arch": "gpt-2"}, "unknown arch", "gpt2"),
])
def test_bad_name_did_you_mean(kw: dict, needle: str, suggest: str) -> None:
    with pytest.raises(SpecError) as e:
        syn.resolve_arch(SyntheticSpec(**kw))
    assert needle in str(e.value) and f"did you mean {suggest!r}" in str(e.value)
    assert e.value.exit_code == 2
    for allowed in (syn.ARCHS if "arch" in needle else SHAPES):
        assert allowed in str(e.value)


@pytest.mark.parametrize("shape", ["tiny", "qwen2.5-0.5b", "llama-3.2-1b", "mistral-7b"])
def test_gqa_shape_on_gpt2_is_refused(shape: str) -> None:
    with pytest.raises(SpecError, match="grouped-query attention") as e:
        syn.config_dict(SyntheticSpec(shape=shape, arch="gpt2"))
    assert "tiny-gpt2" in str(e.value)  # names what does fit


def test_bad_seed_and_dtype() -> None:
    with pytest.raises(SpecError):
        syn.content_key(SyntheticSpec(shape="tiny", seed=-1))
    with pytest.raises(SpecError):
        SyntheticSpec(shape="tiny", dtype="int8")


# ---- building and loading ----

@pytest.mark.parametrize("arch", list(syn.ARCHS))
def test_tiny_builds_sharded_and_loads_clean(tmp_path: Path, arch: str) -> None:
    spec = _tiny(arch, max_shard_size="100KB")
    path = syn.make_model(spec, tmp_path)
    assert path == syn.model_dir(spec, tmp_path) and syn.is_built(spec, tmp_path)
    shards = sorted(path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (path / "model.safetensors").exists()
    assert [s.name for s in shards] == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    index = json.loads((path / syn.INDEX_NAME).read_text())
    tensors = _tensors(path)
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == {s.name for s in shards}
    on_disk = sum(t.numel() * t.element_size() for t in tensors.values())
    assert on_disk == index["metadata"]["total_size"] == syn.checkpoint_bytes(spec)
    assert index["metadata"]["total_parameters"] == syn.param_count(spec)
    from safetensors import safe_open
    for s in shards:
        with safe_open(str(s), "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert all(index["weight_map"][k] == s.name for k in f.keys())
    assert (path / "config.json").is_file() and (path / "generation_config.json").is_file()
    model, info = _load(path)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.model_type == arch
    assert sum(p.numel() for p in model.parameters()) == syn.param_count(spec)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tiny ties, like the small real ones


def test_untied_shape_writes_lm_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dict(SHAPES["tiny"].config, tie_word_embeddings=False)
    monkeypatch.setitem(SHAPES, "tiny-untied", SHAPES["tiny"]._replace(config=cfg))
    spec = SyntheticSpec(shape="tiny-untied")
    path = syn.make_model(spec, tmp_path)
    assert "lm_head.weight" in _tensors(path)
    model, info = _load(path)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    assert sum(p.numel() for p in model.parameters()) == syn.param_count(spec)


@pytest.mark.parametrize("arch", list(syn.ARCHS))
def test_layout_matches_save_pretrained(tmp_path: Path, arch: str) -> None:
    """Same files, same shard of every tensor, same index as save_pretrained of the same model."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = _tiny(arch, max_shard_size="100KB")
    ours = syn.make_model(spec, tmp_path)
    theirs = tmp_path / "save_pretrained"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ours)).save_pretrained(theirs, max_shard_size="100KB")
    assert sorted(p.name for p in ours.iterdir() if p.name != syn.MARKER) == sorted(p.name for p in theirs.iterdir())
    assert json.loads((ours / syn.INDEX_NAME).read_text()) == json.loads((theirs / syn.INDEX_NAME).read_text())
    for f in ours.glob("*.safetensors"):
        with safe_open(str(f), "pt") as a, safe_open(str(theirs / f.name), "pt") as b:
            assert list(a.keys()) == list(b.keys())


def test_single_shard_is_model_safetensors(tmp_path: Path) -> None:
    path = syn.make_model(SyntheticSpec(shape="tiny"), tmp_path)  # 200MB default: one file, no index
    assert (path / "model.safetensors").is_file() and not (path / syn.INDEX_NAME).exists()
    assert sum(t.numel() * t.element_size() for t in _tensors(path).values()) == syn.checkpoint_bytes(SyntheticSpec(shape="tiny"))


def test_float32_build(tmp_path: Path) -> None:
    import torch
    spec = SyntheticSpec(shape="tiny", dtype="float32")
    tensors = _tensors(syn.make_model(spec, tmp_path))
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    assert sum(t.nbytes for t in tensors.values()) == syn.checkpoint_bytes(spec) == 4 * syn.param_count(spec)


def test_cached_build_is_not_rewritten_and_force_rewrites(tmp_path: Path) -> None:
    spec = SyntheticSpec(shape="tiny")
    path = syn.make_model(spec, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    inode = path.stat().st_ino
    assert syn.make_model(spec, tmp_path) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before and path.stat().st_ino == inode
    data = (path / "model.safetensors").read_bytes()
    assert syn.make_model(spec, tmp_path, force=True) == path
    assert path.stat().st_ino != inode  # a fresh dir swapped in
    assert (path / "model.safetensors").read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp/old dirs left


def test_interrupted_build_is_not_built(tmp_path: Path) -> None:
    spec = SyntheticSpec(shape="tiny")
    target = syn.model_dir(spec, tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"partial")  # crashed mid-write: no marker
    stale = target.parent / f".tmp-{target.name}-999999999-deadbeef"  # a dead builder's temp dir
    stale.mkdir()
    old = target.parent / f".old-{target.name}-cafebabe"  # a swap that died between its two renames
    old.mkdir()
    assert not syn.is_built(spec, tmp_path)
    (target / syn.MARKER).write_text(json.dumps({"content_key": "000000000000"}))  # someone else's marker
    assert not syn.is_built(spec, tmp_path)
    path = syn.make_model(spec, tmp_path)
    assert syn.is_built(spec, tmp_path) and not stale.exists() and not old.exists()
    _, info = _load(path)
    assert not info["missing_keys"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        syn.make_model(SyntheticSpec(shape="tiny"), tmp_path)
    assert not syn.is_built(SyntheticSpec(shape="tiny"), tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_weights_are_seeded(tmp_path: Path) -> None:
    import torch
    a = _tensors(syn.make_model(SyntheticSpec(shape="tiny", seed=7), tmp_path / "a"))
    b = _tensors(syn.make_model(SyntheticSpec(shape="tiny", seed=7), tmp_path / "b"))
    c = _tensors(syn.make_model(SyntheticSpec(shape="tiny", seed=8), tmp_path / "c"))
    d = _tensors(syn.make_model(SyntheticSpec(shape="tiny", seed=7, max_shard_size="50KB"), tmp_path / "d"))
    assert a.keys() == b.keys() == c.keys() == d.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], d[k]) for k in a)  # shard plan does not matter
    mats = [k for k in a if a[k].dim() == 2]
    assert all(not torch.equal(a[k], c[k]) for k in mats)
    assert len({a[k].flatten()[:8].float().sum().item() for k in mats}) == len(mats)  # tensors differ from each other
    for k, t in a.items():
        if k.endswith(".bias"):
            assert not t.any()
        elif t.dim() == 1:
            assert bool((t == 1).all())
    emb = a["model.embed_tokens.weight"].float()
    assert abs(emb.mean().item()) < 2e-3 and abs(emb.std().item() - 0.02) < 1e-3


# ---- CLI ----

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadprof.strategies.synthetic", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.e2e
def test_cli_builds_then_reuses(tmp_path: Path) -> None:
    first = _cli("--shape", "tiny", "--arch", "llama", "--seed", "2", "--max-shard-size", "100KB", "--root", str(tmp_path))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    spec = SyntheticSpec(shape="tiny", arch="llama", seed=2, max_shard_size="100KB")
    assert out["path"] == str(syn.model_dir(spec, tmp_path)) and out["built"] is True
    assert out["bytes"] == syn.checkpoint_bytes(spec) and out["params"] == syn.param_count(spec) and out["seconds"] >= 0
    assert "wrote model-00001-of-" in first.stderr
    again = json.loads(_cli("--shape", "tiny", "--arch", "llama", "--seed", "2", "--max-shard-size", "100KB",
                            "--root", str(tmp_path)).stdout)
    assert again["built"] is False and again["path"] == out["path"]


@pytest.mark.parametrize("args,needle", [
    (["--shape", "qwen2.5-0.5"], "did you mean 'qwen2.5-0.5b'"),
    (["--shape", "tiny", "--arch", "gpt3"], "did you mean 'gpt2'"),
    (["--shape", "tiny", "--dtype", "fp16"], "allowed: float32, float16, bfloat16"),
    (["--shape", "tiny", "--arch", "gpt2"], "grouped-query attention"),
])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    r = _cli(*args, "--root", str(tmp_path))
    assert r.returncode == 2 and needle in r.stderr and r.stdout == ""
    assert "Traceback" not in r.stderr


# ---- a real-size model ----

@pytest.mark.e2e
def test_qwen05b_streams_with_bounded_memory(tmp_path: Path) -> None:
    """~1 GB bf16 checkpoint; peak RSS above a tiny build's stays near one shard + one tensor."""
    code = ("import json, resource, sys; from loadprof.strategies.synthetic import make_model; "
            "from loadprof.strategies.model import SyntheticSpec as S; p = make_model(S(shape=sys.argv[1]), sys.argv[2]); "
            "print(json.dumps([str(p), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))")
    def run(shape: str) -> list:
        return json.loads(subprocess.run([sys.executable, "-c", code, shape, str(tmp_path)], cwd=REPO,
                                         capture_output=True, text=True, check=True).stdout)

    _, base_rss = run("tiny")
    path, rss = run("qwen2.5-0.5b")
    spec = SyntheticSpec(shape="qwen2.5-0.5b")
    largest = 151936 * 896 * 2  # the embedding, alone in its shard
    assert rss - base_rss < 2 * largest + 100 * 2**20 < syn.checkpoint_bytes(spec)
    path = Path(path)
    index = json.loads((path / syn.INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == syn.checkpoint_bytes(spec) == 988_065_536
    assert len(set(index["weight_map"].values())) == 5
    model, info = _load(path)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert sum(p.numel() for p in model.parameters()) == 494_032_768

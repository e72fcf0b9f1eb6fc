"""The cost model's terms, fitted from finished trials on this machine (pure: no measuring, no rendering).

Why: ``loadprof predict`` answers "what will an untried model, dtype or placement cost here?" from what this
machine already showed. Every term is one straight line over one driver (``Line``: seconds = fixed + per-unit x
driver), fitted by least squares on the trials of one *group* (the settings that change the slope: page cache,
dtype conversion, load dtype, device), so each is named, readable and checkable against the phase it comes from:

- ``import``: the modeling code's lazy imports inside the load (``load_import_s``), a constant per process;
- ``setup``: the rest of ``load`` outside ``weights`` (config, instantiate on meta, conversion plan, post_init),
  per checkpoint tensor;
- ``weights``: ``load/weights`` (read, convert, place), per loaded byte; cold: storage bound, warm: page-cache copy;
- ``first_forward``: validation + the first forward (where mmap'd weights are really read), per loaded byte;
- ``memory``: peak RSS, a fixed base (interpreter, torch, transformers) + per byte resident (loaded weights, the
  checkpoint's mapped pages where it was converted, the KV cache);
- ``prefill``: TTFT, fixed + per FLOP (2 x params x batch x prompt tokens): 1 / slope is the effective rate;
- ``decode``: one step, fixed (per-step Python/dispatch overhead) + per byte read (weights + KV cache):
  1 / slope is the effective memory bandwidth.

A trial run beside others (``concurrency > 1``) or not ok is not used: its timings are the neighbours' too; nor
are the timings of a trial the machine probe found busy (loadprof.analysis.busy: another process took CPU), where
its configuration has a quiet one. Each configuration (one driver value) counts once, as the median of its
repeats, so a sweep with more repeats of one size does not pull the line towards it; the line is fitted on
relative residuals (``fit_line``), so the smallest size weighs as much as the largest.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from loadprof.analysis import derive
from loadprof.core import figures
from loadprof.analysis.busy import trial_busy
from loadprof.core.payloads import BandwidthPayload
from loadprof.results.model import TrialResult

#: smallest relative half-width an interval gets (a fit exact on its points is not exact on the next one)
MIN_REL = 0.03
#: a ~95% band: this many root-mean-square relative residuals either side
BAND = 2.0
#: a term fitted on one size only, or taken from the machine constants: its interval is at least this wide
UNFITTED_REL = 0.5


@dataclass(frozen=True)
class Observation:
    """One ok trial reduced to the drivers of the cost terms and the parts it measured (seconds, bytes)."""

    trial_id: str
    strategy_id: str
    model: str
    dtype: str          # load dtype ("auto" resolved) or the quantization when quantized
    device: str         # "cpu" or "cuda": where most weights ended
    cache: str          # "warm", "cold" or "as-is"
    converts: bool      # the checkpoint's stored dtype differs from the loaded one
    params: int
    loaded_bytes: int   # parameter + buffer tensors (+ bnb scales)
    stored_bytes: int   # the checkpoint's tensors as stored
    tensors: int
    kv_bytes_per_token: int
    batch: int
    prompt_tokens: int
    new_tokens: int
    parts: Mapping[str, float]  # load_import_s, setup_s, weights_s, first_forward_s, load_cost_s, peak_rss_bytes,
    #                             ttft_s, decode_step_s (the parts this trial measured)
    busy: bool = False  # the machine probe saw other processes take CPU: its timings are not this config's alone

    @property
    def flops(self) -> float:
        return prefill_flops(self.params, self.batch, self.prompt_tokens)

    @property
    def step_bytes(self) -> float:
        return step_bytes(self.loaded_bytes, self.kv_bytes_per_token, self.batch, self.prompt_tokens, self.new_tokens)

    @property
    def resident_bytes(self) -> float:
        return resident_bytes(self.loaded_bytes, self.stored_bytes, self.converts,
                              self.kv_bytes_per_token * self.batch * (self.prompt_tokens + self.new_tokens))


def prefill_flops(params: int, batch: int, prompt_tokens: int) -> float:
    """The prompt's forward: 2 FLOPs per parameter per token (the matmuls; attention's share is small at short
    prompts and left out)."""
    return 2.0 * params * batch * prompt_tokens


def step_bytes(loaded_bytes: float, kv_per_token: float, batch: int, prompt: int, new_tokens: int) -> float:
    """Bytes one decode step reads: every weight once, plus each sequence's KV cache at the mean context."""
    return loaded_bytes + batch * kv_per_token * (prompt + new_tokens / 2)


def resident_bytes(loaded: float, stored: float, converts: bool, kv: float) -> float:
    """Bytes the memory term scales with: the loaded tensors, the mapped checkpoint pages where the load converted
    them (both are resident at the peak), and the KV cache."""
    return loaded + (stored if converts else 0) + kv


@dataclass(frozen=True)
class Line:
    """One fitted term: ``fixed + per_unit x driver`` (seconds or bytes), from ``n`` points.

    ``rel_rms``: root-mean-square relative residual of the fit on its points, scaled by sqrt(n / (n - 2)) for the
    two fitted numbers; ``spread``: the repeats' own relative SD (``repeat_spread``); ``x_max``, ``x_min``: the largest and smallest driver fitted (beyond them the term is extrapolated)."""

    name: str
    driver: str
    fixed: float
    per_unit: float
    n: int
    rel_rms: float
    spread: float
    x_max: float
    source: str
    x_min: float = 0.0

    def at(self, x: float) -> float:
        return self.fixed + self.per_unit * x

    @property
    def half_width(self) -> float:
        """The relative half-width of this term's ~95% interval for one run: BAND x the fit's residual and the
        repeats' own noise added in quadrature (the fit is on medians, one run adds its noise), at least MIN_REL;
        a term not fitted on two sizes at least UNFITTED_REL."""
        h = max(MIN_REL, BAND * math.hypot(self.rel_rms, self.spread))
        return max(h, UNFITTED_REL) if self.n < 2 or self.source.startswith("machine") else h


def _distinct(xs: Sequence[float]) -> int:
    return len({round(x, 6) for x in xs})


def _solve(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """(a, b) >= 0 minimising the squared *relative* residuals sum(((y - a - b x) / y)^2): a term spans three orders
    of magnitude over the calibrated sizes, and unweighted least squares would fit the largest and leave the
    smallest 100x off (its fixed part, the per-call overhead, is what the small sizes measure)."""
    w = 1.0 / np.maximum(ys, 1e-12 * max(float(ys.max()), 1e-300))
    if _distinct(xs) >= 2:
        (a, b), *_ = np.linalg.lstsq(np.column_stack([w, w * xs]), np.ones_like(ys), rcond=None)
        if a >= 0 and b >= 0:
            return float(a), float(b)
        through_origin = float((w * w * xs) @ ys / ((w * w * xs) @ xs))
        constant = float((w * w) @ ys / (w @ w))
        return (0.0, through_origin) if a < 0 and through_origin > 0 else (constant, 0.0)
    if xs[0] > 0:
        return 0.0, float((w * w * xs) @ ys / ((w * w * xs) @ xs))
    return float((w * w) @ ys / (w @ w)), 0.0


def fit_line(name: str, driver: str, points: Sequence[tuple[float, float]], spread: float = 0.0,
             source: str = "") -> Line | None:
    """Least squares on relative residuals, ``y = a + b x`` with a, b >= 0 (a negative intercept refits through the
    origin, a negative slope is a constant): at least two distinct x values; one gives a line through the origin
    (None: no point)."""
    pts = [(float(x), float(y)) for x, y in points if x is not None and y is not None and math.isfinite(y)]
    if not pts:
        return None
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    a, b = _solve(xs, ys)
    pred = a + b * xs
    rel = (ys - pred) / np.where(pred > 0, pred, 1.0)
    dof = len(pts) - 2
    rms = float(np.sqrt(np.mean(rel ** 2) * (len(pts) / dof))) if dof > 0 else 0.0
    return Line(name, driver, float(a), float(b), _distinct(xs), rms, spread, float(xs.max()),
                source or f"fitted on {len(pts)} configurations", float(xs.min()))


def rel_sd(values: Sequence[float]) -> float:
    """The robust relative standard deviation of repeats: 1.4826 x the median absolute deviation / the median (one
    outlier among three repeats, a page-cache hiccup, does not set it; a bimodal spread does)."""
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - mid) for v in values) / mid if mid else 0.0


def repeat_spread(obs: Iterable[Observation], part: str, driver: str = "") -> float:
    """The noise one run of ``part`` has on its own: the repeats' robust relative SD (``rel_sd``) per strategy
    (per configuration, one ``driver`` value, where given), root-mean-square over them."""
    by: dict[Any, list[float]] = {}
    for o in usable(list(obs), part, driver):
        by.setdefault(_config(o, driver), []).append(o.parts[part])
    sds = [rel_sd(v) for v in by.values() if len(v) > 1]
    return math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else 0.0


def _config(o: Observation, driver: str) -> Any:
    """What makes two observations repeats of one configuration for a term: its driver's value (a warm and a cold
    trial of one model are one configuration for decode), else the strategy."""
    return round(float(getattr(o, driver)), 3) if driver else o.strategy_id


def _dtype(t: TrialResult) -> str:
    q = t.strategy.load.quantization
    if q != "none":
        return q
    est = t.metrics.get("estimate") or {}
    d = est.get("dtype") if isinstance(est, Mapping) else None
    return str(d or t.strategy.load.dtype)


def _precision(m: Mapping[str, Any]) -> tuple[int | None, int | None, bool]:
    """(stored bytes, checkpoint tensors, converts) from the precision metrics (None where not recorded)."""
    p = m.get("precision")
    if not isinstance(p, Mapping):
        return None, None, False
    stored = p.get("checkpoint_bytes_by_dtype")
    pairs = p.get("pairs") or []
    converts = any(isinstance(x, Mapping) and x.get("stored") != x.get("loaded") for x in pairs)
    total = sum(v for v in stored.values() if isinstance(v, int)) if isinstance(stored, Mapping) else None
    tensors = p.get("checkpoint_tensors")
    return total, tensors if isinstance(tensors, int) else None, converts


def checkpoint_dtype(t: TrialResult) -> str | None:
    """The dtype most of the trial's checkpoint bytes are stored in (None: not recorded): a prediction for the same
    checkpoint compares it with its load dtype (``predict.Target.converts``)."""
    p = t.metrics.get("precision")
    by = p.get("checkpoint_bytes_by_dtype") if isinstance(p, Mapping) else None
    return max(by, key=by.__getitem__) if isinstance(by, Mapping) and by else None


def _parts(t: TrialResult) -> dict[str, float]:
    """The measured parts of one trial, each the phase it is named after less the imports inside it."""
    m = t.metrics
    out: dict[str, float | None] = {figures.LOAD_COST_S.key: derive.load_cost_s(t),
                                    "load_import_s": derive.load_import_s(t),
                                    figures.PEAK_RSS_BYTES.key: figures.PEAK_RSS_BYTES.read(m),
                                    "peak_cuda_bytes": figures.PEAK_CUDA_ALLOCATED_BYTES.read(m)}
    weights, load = t.phase("load/weights"), figures.LOAD_S.read(m)
    if weights is not None and load is not None:
        out["weights_s"] = weights.duration_s - derive.phase_import_s(t, "load/weights")
        out["setup_s"] = load - derive.phase_import_s(t, "load") - out["weights_s"]
    ff = derive.first_forward_s(t)
    if ff is not None:
        out["first_forward_s"] = (ff + (m.get("validate_s") or 0.0) - derive.phase_import_s(t, "warmup/forward")
                                  - derive.phase_import_s(t, "validate"))
    ttft, per_seq = figures.TTFT_MS.read(m), figures.DECODE_TOK_S_PER_SEQ.read(m)
    out["ttft_s"] = ttft / 1e3 if ttft else None
    out["decode_step_s"] = 1.0 / per_seq if per_seq else None
    return {k: float(v) for k, v in out.items() if v is not None}


def observe(t: TrialResult) -> Observation | None:
    """One finished trial as an Observation (None: not ok, run beside others, or without its model's sizes)."""
    m = t.metrics
    gen = t.strategy.generate
    params, loaded = m.get("param_count"), m.get("weights_bytes")
    if not t.ok or t.concurrency > 1 or not params or not loaded:
        return None
    est = m.get("estimate") if isinstance(m.get("estimate"), Mapping) else {}
    stored, tensors, converts = _precision(m)
    on = m.get("bytes_by_device") or {}
    device = "cuda" if any(str(d).startswith("cuda") for d in on) else "cpu"
    loaded += m.get("quant_state_bytes") or 0
    return Observation(t.trial_id, t.strategy_id, t.label, _dtype(t), device, t.strategy.load.file_cache, converts,
                       int(params), int(loaded), int(stored or loaded), int(tensors or 0),
                       int(est.get("kv_bytes_per_token") or 0), gen.batch_size if gen else 1,
                       gen.prompt_tokens if gen else 0, int(m.get("new_tokens") or 0), _parts(t),
                       trial_busy(t))


@dataclass(frozen=True)
class MachineConstants:
    """What the probes measured about this machine, for terms no trial fitted: the copy bandwidth (GB/s, read +
    write), the matmul rate per dtype (GFLOP/s), the checkpoint's sequential storage read rate (GB/s, None: never
    measured), host -> device pageable copy (GB/s, CUDA only), and whence each came."""

    membw_gb_s: float | None = None
    matmul_gflops: Mapping[str, float] = field(default_factory=dict)
    disk_read_gb_s: float | None = None
    h2d_gb_s: float | None = None
    source: str = ""


def machine_constants(trials: Iterable[TrialResult]) -> MachineConstants:
    """The machine's bounds as the bandwidth probe and the harness recorded them in ``trials`` (the highest seen:
    each is a best-of-repeats bound, and a busy moment only lowers it)."""
    membw: list[float] = []
    h2d: list[float] = []
    disk: list[float] = []
    matmul: dict[str, float] = {}
    for t in trials:
        bw = t.payload(BandwidthPayload)
        if bw is not None:
            membw.append(bw.membw_gb_s)
            h2d += [bw.h2d_pageable_gb_s] if bw.h2d_pageable_gb_s else []
            for d, r in (bw.matmul_gflops or {}).items():
                matmul[d] = max(matmul.get(d, 0.0), r)
        seq = (t.harness.get("disk_read") or {}).get("gb_s")
        disk += [seq] if seq else []
    return MachineConstants(max(membw, default=None), matmul, max(disk, default=None), max(h2d, default=None),
                            "recorded by the bandwidth probe and the harness in the --from runs")


#: (term, the part it fits, its driver, the Observation fields its group is keyed by)
TERMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("setup", "setup_s", "tensors", ("device",)),
    ("weights", "weights_s", "loaded_bytes", ("device", "cache", "converts")),
    ("first_forward", "first_forward_s", "loaded_bytes", ("device", "cache", "converts")),
    ("memory", figures.PEAK_RSS_BYTES.key, "resident_bytes", ()),
    ("memory_cuda", "peak_cuda_bytes", "loaded_bytes", ()),
    ("prefill", "ttft_s", "flops", ("device", "dtype")),
    ("decode", "decode_step_s", "step_bytes", ("device", "dtype")),
)


@dataclass(frozen=True)
class Calibration:
    """Every fitted term, by (term name, group values), the import constant, the observations they came from,
    the machine's constants and the runs read."""

    lines: Mapping[tuple[str, tuple[Any, ...]], Line]
    observations: tuple[Observation, ...]
    machine: MachineConstants
    runs: tuple[str, ...] = ()

    def groups(self, name: str) -> list[tuple[Any, ...]]:
        return [g for (n, g) in self.lines if n == name]

    def line(self, name: str, group: tuple[Any, ...]) -> Line | None:
        return self.lines.get((name, group))


def group_of(o: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    """The values of ``keys`` on an Observation (or anything with those attributes, a prediction target)."""
    return tuple(getattr(o, k) for k in keys)


def calibrate(trials: Iterable[TrialResult], machine: MachineConstants | None = None,
              runs: Sequence[str] = ()) -> Calibration:
    """Fit every term of TERMS on each group of the usable trials (see ``observe``)."""
    trials = list(trials)
    obs = tuple(o for o in map(observe, trials) if o is not None)
    return fit_observations(obs, machine or machine_constants(trials), runs)


def fit_observations(obs: Sequence[Observation], machine: MachineConstants, runs: Sequence[str] = ()) -> Calibration:
    """The import constant (median) and each term of TERMS, one line per group of ``obs``."""
    lines: dict[tuple[str, tuple[Any, ...]], Line] = {}
    imports = [o.parts["load_import_s"] for o in usable([o for o in obs if "load_import_s" in o.parts], "load_import_s")]
    if imports:  # one number per process: every usable trial is a repeat of it
        lines[("import", ())] = Line("import", "one", statistics.median(imports), 0.0, len(imports), 0.0,
                                     rel_sd(imports), 1.0, f"median of {len(imports)} trials")
    for name, part, driver, keys in TERMS:
        by: dict[tuple[Any, ...], list[Observation]] = {}
        for o in obs:
            if part in o.parts:
                by.setdefault(group_of(o, keys), []).append(o)
        for g, members in by.items():
            fit = fit_line(name, driver, config_points(members, part, driver), repeat_spread(members, part))
            if fit is not None:
                lines[(name, g)] = fit
    return Calibration(lines, tuple(obs), machine, tuple(runs))


def usable(members: Sequence[Observation], part: str, driver: str = "") -> list[Observation]:
    """The members whose ``part`` counts: a time from a busy trial only where no quiet repeat of the same
    configuration (``_config``) measured it (bytes always count: a neighbour does not change them)."""
    if part.endswith("_bytes"):
        return list(members)
    quiet = {_config(o, driver) for o in members if not o.busy and part in o.parts}
    return [o for o in members if not o.busy or _config(o, driver) not in quiet]


def config_points(members: Sequence[Observation], part: str, driver: str) -> list[tuple[float, float]]:
    """(driver, part) per configuration (one driver value), the median of all its usable repeats: each size counts
    once, whatever the page cache or the number of repeats of the strategies that measured it."""
    by: dict[Any, list[Observation]] = {}
    for o in usable(members, part, driver):
        by.setdefault(_config(o, driver), []).append(o)
    return [(statistics.median(getattr(o, driver) for o in v), statistics.median(o.parts[part] for o in v))
            for v in by.values()]

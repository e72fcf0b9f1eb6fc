"""The cost model of ``loadprof predict``: its terms, fitting, intervals and spill logic on typed inputs, and the
command on a real calibration run.

tests/fixtures/predict/calibration.json is the report.json of a real sweep on this project's CPU machine
(tests/fixtures/predict/calibration.yaml: tiny and gpt2 stored in float32, loaded in float32 and bfloat16, warm
and cold, 2 repeats), with the memory and io payloads and the sweep's conclusions left out for size; every figure
is as measured. The tests assert invariants of the fit on it, never its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from loadprof.analysis.calibrate import (BAND, MIN_REL, UNFITTED_REL, Calibration, Line, MachineConstants,
                                         Observation, calibrate, fit_line, fit_observations, repeat_spread, usable)
from loadprof.analysis.estimate import SizeEstimate
from loadprof.analysis.placement import HEADROOM, modules, place
from loadprof.analysis.predict import EXTRAPOLATION, Target, load_cost, lookup, predict, stored_bytes_for
from loadprof.core import figures
from loadprof.results.report_file import load_report

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "predict" / "calibration.json"


def _est(**kw) -> SizeEstimate:
    base = dict(model="m", dtype="bfloat16", quantization="none", batch_size=1, prompt_tokens=8, max_new_tokens=4,
                generated_tokens=4, param_count=1000, weight_bytes=2000, weight_bytes_by_dtype={"bfloat16": 2000},
                quant_state_bytes=0, buffers_bytes=0, largest_layer=("embed", 800), per_layer_bytes=300,
                embedding_bytes=800, tied_embeddings=True, kv_dtype="bfloat16", kv_bytes_per_token=10,
                kv_cache_dynamic_bytes=110, kv_cache_static_bytes=110, cache_implementation="dynamic", formulas={},
                num_layers=4, tensor_count=20)
    base.update(kw)
    return SizeEstimate(**base)


def _obs(sid: str, x: int, parts: dict, busy: bool = False, **kw) -> Observation:
    base = dict(trial_id=sid + "-r", strategy_id=sid, model="m", dtype="bfloat16", device="cpu", cache="warm",
                converts=False, params=x // 2, loaded_bytes=x, stored_bytes=x, tensors=10, kv_bytes_per_token=0,
                batch=1, prompt_tokens=8, new_tokens=4, parts=parts, busy=busy)
    base.update(kw)
    return Observation(**base)


def _line(name: str, fixed: float, per_unit: float, x_max: float = 1e12, n: int = 3, driver: str = "x") -> Line:
    return Line(name, driver, fixed, per_unit, n, 0.0, 0.0, x_max, "test")


def test_fit_line_recovers_an_exact_line_and_its_interval_is_the_floor():
    line = fit_line("t", "x", [(1, 5), (2, 8), (4, 14)])
    assert line.fixed == pytest.approx(2) and line.per_unit == pytest.approx(3)
    assert line.rel_rms == pytest.approx(0, abs=1e-12) and line.n == 3
    assert line.half_width == MIN_REL


def test_fit_line_keeps_fixed_and_per_unit_non_negative_and_one_size_is_proportional():
    through_origin = fit_line("t", "x", [(1, 0.5), (2, 3.0)])  # least squares would give a negative intercept
    assert through_origin.fixed == 0 and through_origin.per_unit > 0
    flat = fit_line("t", "x", [(1, 3.0), (2, 1.0)])  # a negative slope: a constant, least relative error
    assert flat.per_unit == 0 and flat.fixed == pytest.approx((1 / 3 + 1) / (1 / 9 + 1))
    one = fit_line("t", "x", [(4, 8.0), (4, 10.0)])
    least_relative = (1 / 8 + 1 / 10) / (1 / 64 + 1 / 100)  # the value least relatively off both repeats
    assert one.fixed == 0 and one.per_unit == pytest.approx(least_relative / 4) and one.n == 1
    assert one.half_width >= UNFITTED_REL
    assert fit_line("t", "x", []) is None


def test_interval_is_band_times_residuals_or_the_repeat_spread():
    noisy = fit_line("t", "x", [(1, 1.0), (2, 2.4), (3, 2.9), (4, 4.2)])
    assert noisy.half_width == pytest.approx(max(MIN_REL, BAND * noisy.rel_rms))
    spread = fit_line("t", "x", [(1, 1.0), (2, 2.0)], spread=0.2)
    assert spread.half_width == pytest.approx(BAND * 0.2)  # one run's own noise, BAND standard deviations
    both = replace(noisy, spread=0.2)
    assert both.half_width == pytest.approx(BAND * (noisy.rel_rms ** 2 + 0.04) ** 0.5)


def test_fit_line_weighs_relative_residuals_so_the_smallest_size_keeps_its_fixed_part():
    # a per-call overhead of 0.01 and a per-unit cost that the largest size alone would pull through the origin
    pts = [(1, 0.0101), (1000, 0.2), (4000, 1.0)]
    line = fit_line("t", "x", pts)
    assert line.fixed > 0 and line.x_min == 1 and line.x_max == 4000
    assert all(abs(line.at(x) / y - 1) < 0.5 for x, y in pts)  # no size 100x off


def test_repeat_spread_and_busy_repeats():
    a1, a2 = _obs("a", 10, {"t_s": 1.0}), _obs("a", 10, {"t_s": 1.4, figures.PEAK_RSS_BYTES.key: 5}, busy=True)
    b = _obs("b", 20, {"t_s": 2.0}, busy=True)
    assert usable([a1, a2, b], "t_s") == [a1, b]  # a's busy repeat has a quiet twin; b's has none
    assert usable([a1, a2, b], figures.PEAK_RSS_BYTES.key) == [a1, a2, b]  # bytes: a neighbour does not change them
    assert repeat_spread([a1, _obs("a", 10, {"t_s": 1.4})], "t_s") == pytest.approx(1.4826 * 0.2 / 1.2)
    out = [_obs("a", 10, {"t_s": v}) for v in (1.0, 1.02, 3.0)]  # one outlier among three repeats
    assert repeat_spread(out, "t_s") == pytest.approx(1.4826 * 0.02 / 1.02)


def test_a_configuration_is_one_size_whatever_the_page_cache():
    warm = [_obs("w", 100, {"decode_step_s": v}) for v in (1.0, 1.1)]
    cold = [_obs("c", 100, {"decode_step_s": v}, cache="cold") for v in (5.0, 1.2)]  # one hiccup
    c = fit_observations(warm + cold + [_obs("b", 300, {"decode_step_s": 3.0})], MachineConstants())
    line = c.line("decode", ("cpu", "bfloat16"))
    assert line.at(100) == pytest.approx(1.15)  # the median of all four repeats at 100, not two strategy medians


def test_calibrate_fits_each_group_on_strategy_medians():
    obs = [_obs("a", 100, {"decode_step_s": 1.1}), _obs("a", 100, {"decode_step_s": 1.3}),
           _obs("b", 300, {"decode_step_s": 3.2}), _obs("c", 100, {"decode_step_s": 9.0}, dtype="float32")]
    c = fit_observations(obs, MachineConstants())
    bf16 = c.line("decode", ("cpu", "bfloat16"))
    assert bf16.driver == "step_bytes" and bf16.n == 2  # a's two repeats count once, as their median 1.2
    assert bf16.per_unit == pytest.approx((3.2 - 1.2) / 200) and bf16.fixed == pytest.approx(1.2 - 100 * 0.01)
    assert c.line("decode", ("cpu", "float32")).n == 1
    assert c.line("import", ()) is None and c.line("memory", ()) is None  # nothing measured them


def _cal(**lines: Line) -> Calibration:
    table = {("import", ()): _line("import", 1.0, 0.0, x_max=1.0),
             ("setup", ("cpu",)): _line("setup", 0.1, 0.01),
             ("weights", ("cpu", "warm", False)): _line("weights", 0.0, 1e-3),
             ("first_forward", ("cpu", "warm", False)): _line("first_forward", 0.0, 2e-3)}
    for key, line in lines.items():
        name, _, rest = key.partition("__")
        group = tuple({"True": True, "False": False}.get(v, v) for v in rest.split("_")) if rest else ()
        table[(name, group)] = line
    return Calibration(table, (), MachineConstants(membw_gb_s=10.0, disk_read_gb_s=1e-6))


def test_load_cost_is_the_sum_of_its_terms_and_cold_falls_back_to_the_disk_rate():
    t = Target(_est(), "cpu", 2000)
    warm = load_cost(_cal(), t, "warm")
    assert warm.value == pytest.approx(1.0 + (0.1 + 0.01 * 20) + 2000e-3 + 2000 * 2e-3)
    assert [x.name for x in warm.terms] == ["import", "setup", "weights", "first_forward"]
    parts = [1.0, 0.1 + 0.01 * 20, 2000e-3, 2000 * 2e-3]  # each term +-MIN_REL, independent: in quadrature
    w = MIN_REL * sum(v * v for v in parts) ** 0.5 / warm.value
    assert (warm.lo, warm.hi) == pytest.approx((warm.value / (1 + w), warm.value * (1 + w)))
    cold = load_cost(_cal(), t, "cold")
    assert cold.value == pytest.approx(warm.value + 2000 / (1e-6 * 1e9))  # no cold trial: + stored / disk rate
    assert cold.hi - cold.value >= UNFITTED_REL * cold.value * 0.999


def test_extrapolation_widens_the_interval_per_doubling():
    small = _cal(weights__cpu_warm_False=_line("weights", 0.0, 1e-3, x_max=500))
    p = load_cost(small, Target(_est(), "cpu", 2000), "warm")
    spans = [1.0 * MIN_REL, 0.3 * MIN_REL, 2.0 * (MIN_REL + EXTRAPOLATION * 2), 4.0 * MIN_REL]  # 2000 = 500 x 2^2
    assert p.hi / p.value - 1 == pytest.approx(sum(a * a for a in spans) ** 0.5 / p.value)
    below = _cal(weights__cpu_warm_False=replace(_line("weights", 0.0, 1e-3), x_min=8000))
    q = load_cost(below, Target(_est(), "cpu", 2000), "warm")
    assert q.hi == pytest.approx(p.hi)  # 4x below the smallest calibrated size widens as 4x above the largest


def test_intervals_are_ratios_never_zero_and_bytes_are_their_own_floor():
    c = _cal(weights__cpu_warm_False=replace(_line("weights", 0.0, 1e-3), spread=2.0))  # a noisy term: +-400%
    p = load_cost(c, Target(_est(), "cpu", 2000), "warm")
    assert p.lo > 0 and p.hi / p.value == pytest.approx(p.value / p.lo)
    assert any("wide interval" in n and "weights" in n for n in p.notes)
    mem = Line("memory", "resident_bytes", 0.0, 1.0, 3, 0.0, 0.5, 1e12, "test")  # +-100%
    m = predict(Calibration({("memory", ()): mem}, (), MachineConstants()), Target(_est(), "cpu", 2000),
                {"cpu": 10**9}).figures[0]
    assert m.figure is figures.PEAK_RSS_BYTES and m.lo == 2000 + 110  # never below the weights and KV themselves


def test_a_target_converts_by_dtype_not_by_a_few_bytes():
    e = _est(buffers_bytes=512)  # a rotary table: loaded, never stored
    assert not Target(e, "cpu", 2000, checkpoint_dtype="bfloat16").converts
    assert Target(e, "cpu", 2000, checkpoint_dtype="float32").converts
    assert not Target(e, "cpu", 2000).converts  # unknown dtype: 512 B apart is the buffers, not a conversion
    assert Target(e, "cpu", 4000).converts


def test_lookup_borrows_the_nearest_group_and_says_so():
    c = _cal(**{"weights__cpu_warm_True": _line("weights", 0.0, 5e-3)})
    line, note = lookup(c, "weights", ("cpu", "cold", False))
    assert line.per_unit == 1e-3 and "borrowed" in note  # a page cache apart beats page cache and conversion
    line, note = lookup(c, "weights", ("cpu", "warm", True))
    assert line.per_unit == 5e-3 and note == ""
    assert lookup(c, "weights", ("cuda", "warm", False)) == (None, "")


def test_place_fills_gpus_then_host_then_disk_module_by_module():
    e = _est()  # embed 800, 4 layers x 300, rest 0
    assert [b for _, b in modules(e)] == [800, 300, 300, 300, 300, 0]
    assert place(e, "cpu", {"cpu": 10**6}).bytes_by_device == {"cpu": 2000}
    assert "will not fit" in place(e, "cpu", {"cpu": 1000}).note
    fits = place(e, "auto", {"cuda:0": 10**6, "cpu": 10**6})
    assert fits.bytes_by_device == {"cuda:0": 2000} and not fits.spilled
    gpu_room = int(2000 / (1 - HEADROOM))  # 2000 usable, less the largest module (800) kept free: 1200
    spill = place(e, "auto", {"cuda:0": gpu_room, "cpu": int(700 / (1 - HEADROOM)) + 1})
    assert spill.bytes_by_device == {"cuda:0": 1100, "cpu": 600, "disk": 300} and spill.spilled
    assert sum(spill.bytes_by_device.values()) == e.weight_bytes


def test_predict_without_trials_uses_machine_bounds_with_wide_intervals():
    c = Calibration({}, (), MachineConstants(membw_gb_s=10.0, matmul_gflops={"bfloat16": 100.0}))
    p = predict(c, Target(_est(), "cpu", 2000), {"cpu": 10**9}, base_bytes=1000)
    by = {f.figure.key: f for f in p.figures}
    assert figures.LOAD_COST_S.key not in by and any("no load trial" in n for n in p.notes)
    assert by[figures.PEAK_RSS_BYTES.key].value == pytest.approx(1000 + 2000 + 110)
    decode = by[figures.DECODE_TOK_S.key]
    assert decode.value == pytest.approx(1 / ((2000 + 10 * (8 + 2)) / 10e9))
    assert decode.hi / decode.value >= 1 + UNFITTED_REL * 0.99
    assert by[figures.TTFT_MS.key].value == pytest.approx(2 * 1000 * 8 / 100e9 * 1e3)


def test_stored_bytes_for_a_checkpoint_dtype():
    e = _est()
    assert stored_bytes_for(e, None) == 2000 and stored_bytes_for(e, "float32") == 4000
    assert Target(e, "cpu", stored_bytes_for(e, "float32")).converts


def test_calibration_on_a_real_run_predicts_its_own_memory_inside_the_interval():
    sweep = load_report(FIXTURE)
    c = calibrate(sweep.trials)
    assert c.line("import", ()) is not None and c.line("memory", ()) is not None
    for cache in ("warm", "cold"):
        for converts in (False, True):
            assert c.line("weights", ("cpu", cache, converts)) is not None
    assert {g for g in c.groups("decode")} == {("cpu", "float32"), ("cpu", "bfloat16")}
    memory = c.line("memory", ())
    for o in c.observations:
        pred = memory.at(o.resident_bytes)
        assert abs(figures.PEAK_RSS_BYTES.read(o.parts) / pred - 1) <= memory.half_width
    assert c.machine.membw_gb_s and c.machine.disk_read_gb_s  # the probe's and the harness's bounds were read


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadprof.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_cli_predict_from_a_real_run_and_estimate_share_the_bytes():
    r = _cli("predict", "qwen2.5-0.5b", "--dtype", "bf16", "--dtype", "fp32", "--from", str(FIXTURE),
             "--prompt-tokens", "16", "--max-new-tokens", "8", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    est = json.loads(_cli("estimate", "qwen2.5-0.5b", "--dtype", "bf16", "--dtype", "fp32", "--prompt-tokens", "16",
                          "--max-new-tokens", "8", "--json").stdout)
    assert [p["dtype"] for p in out] == ["bfloat16", "float32"]
    for p, e in zip(out, est):
        assert p["loaded_bytes"] == e["weight_bytes"] + e["buffers_bytes"]  # one byte model
        keys = {(f["figure"], f["condition"]) for f in p["figures"]}
        assert {(figures.LOAD_COST_S.key, "warm"), (figures.LOAD_COST_S.key, "cold"),
                (figures.PEAK_RSS_BYTES.key, "cpu"), (figures.TTFT_MS.key, ""), (figures.DECODE_TOK_S.key, "")} <= keys
        for f in p["figures"]:
            assert f["lo"] <= f["value"] <= f["hi"] and f["terms"]


def test_cli_predict_table_names_the_terms_and_the_spill():
    r = _cli("predict", "tiny", "--device-map", "auto", "--from", str(FIXTURE), "--format", "md")
    assert r.returncode == 0, r.stderr
    assert "decode:" in r.stdout and "GB/s" in r.stdout and "| tiny |" in r.stdout


def test_a_borrowed_term_is_wider():
    c = _cal(**{"weights__cpu_warm_True": replace(_line("weights", 0.0, 5e-3), spread=0.0)})
    line, _ = lookup(c, "weights", ("cpu", "cold", True))
    assert line.half_width >= UNFITTED_REL


def test_a_one_size_group_takes_the_shape_of_the_nearest_fitted_one_through_its_point():
    one = Line("decode", "step_bytes", 0.0, 2e-3, 1, 0.0, 0.0, 100.0, "test")  # one point: (100, 0.2)
    c = _cal(decode__cpu_bfloat16=one, decode__cpu_float32=_line("decode", 0.1, 1e-3))
    line, note = lookup(c, "decode", ("cpu", "bfloat16"))
    assert line.at(100) == pytest.approx(0.2) and note == ""
    assert line.fixed / line.per_unit == pytest.approx(0.1 / 1e-3)  # float32's fixed-to-per-byte ratio

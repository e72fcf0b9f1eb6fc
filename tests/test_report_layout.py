"""Answer-first reports: the verdict block on the first screen (checked in headless chromium), the load chart
naming what the time went to, memory timelines that set loadprof's own phases apart, and the small report fixes
(plain ms, loaded dtype, one max_new_tokens line per series, one meaning of "generate s", a killed trial's wall)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loadprof.core.conclusions import Recommendations
from loadprof.reports import charts, console, html, markdown
from loadprof.reports.breakdown import FORWARD, fold_small, load_segments
from loadprof.reports.files import write_all
from loadprof.reports.sections import phase_tables, recommendations, summary
from loadprof.reports.verdict import REPEAT_ADVICE, verdict_block
from loadprof.results.model import Finding, PhaseTiming, SweepResult, TrialResult
from tests.helpers import memory_payload, strategy_of

MiB = 2**20
ENV = {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.24.0", "platform": "Linux-6.1-x86_64",
       "cpu": "AMD EPYC 7B13", "cpu_count": "2", "memory": "7.8 GiB", "device": "cpu", "cuda": "none",
       "safetensors": "0.6.2", "accelerate": "1.10.0", "numpy": "2.3.1", "hostname": "ci"}


def P(name: str, a: float, b: float, *children: PhaseTiming) -> PhaseTiming:
    return PhaseTiming(name, a, b, tuple(children))


def phases(load_s: float, user_s: float = 0.0) -> tuple[PhaseTiming, ...]:
    """import, a load whose steps take 0.3 s (+ ``user_s`` of the user's own code), warmup/forward, generate, then
    loadprof's own trace / membw / estimate / cleanup."""
    t = 3.3
    steps, kids = [("config", 0.002), ("resolve", 0.001), ("instantiate", 0.03), ("conversion_plan", 0.05),
                   ("device_map", 0.0), ("weights", load_s - 0.1), ("post_init", 0.01), ("generation_config", 0.001)], []
    for n, d in steps:
        kids.append(P(n, t, t + d))
        t += d
    load = P("load", 3.3, t + user_s, *kids)
    t = load.end_s
    warm = P("warmup", t, t + 0.4, P("forward", t, t + 0.3))
    t += 0.4
    gen = P("generate", t, t + 1.46 * 3 + 1.0, P("prepare", t, t + 0.01), P("prefill", t + 0.01, t + 4.39),
            P("decode", t + 4.39, t + 5.3), P("finish", t + 5.3, t + 5.38))
    t = gen.end_s
    own = [P("trace", t, t + 0.8), P("membw", t + 0.8, t + 1.05), P("estimate", t + 1.05, t + 1.09),
           P("cleanup", t + 1.09, t + 1.3)]
    return (P("import", 0.0, 3.3), load, warm, gen, *own)


def timeline(ph: tuple[PhaseTiming, ...]) -> list[list[float]]:
    """RSS rising to 850 MiB in the workload, then 1400 MiB in loadprof's membw copy."""
    end = ph[-1].end_s
    membw = next(p for p in ph if p.name == "membw")
    rows, t = [], 3.4
    while t < end:
        anon = 250 * MiB + (1150 * MiB if membw.start_s <= t <= membw.end_s else 0)
        file = int(min(600 * MiB, max(0.0, t - 3.4) * 400 * MiB))  # bytes: whole numbers
        rows.append([round(t, 3), anon, file])
        t += 0.05
    return rows


def realistic_trial(tid: str, label: str, load_s: float, user_s: float = 0.0, repeat: int = 0, **kw: Any) -> TrialResult:
    ph = phases(load_s, user_s)
    sampling: dict[str, Any] = {"ok": True, "areas": {"load": {"python stdlib": 0.02, "native / not sampled": 0.01}}}
    if user_s:
        sampling["areas"]["load"]["your code"] = user_s * 0.98
        sampling["user_functions"] = [{"name": "ModelManager._validate_all_modules", "file": "/srv/app/model_manager.py",
                                       "line": 46, "phase": "load", "samples": 390, "seconds": user_s * 0.98,
                                       "running_s": user_s * 0.98, "own_s": user_s * 0.98, "hottest_line": 53}]
    rows = timeline(ph)
    probes = {"memory": memory_payload({"warmup/forward": {"start_file_bytes": 20 * MiB, "end_file_bytes": 960 * MiB}},
                                       timeline={"columns": ["t_s", "rss_anon_bytes", "rss_file_bytes"], "rows": rows,
                                                 "every_nth_sample": 1}),
              "io": {"storage_read_bytes": 900 * MiB, "read_chars": 900 * MiB,
                     "per_phase": {"warmup/forward": {"storage_read_bytes": 900 * MiB, "read_chars": 900 * MiB}}},
              "sampling": sampling}
    base = dict(trial_id=tid, strategy_id=tid.split("-")[0], label=label, repeat_index=repeat, status="ok",
                strategy=strat(),
                wall_s=ph[-1].end_s, phases=ph,
                metrics={"import_s": 3.3, "load_s": ph[1].duration_s, "warmup_s": 0.4, "peak_rss_bytes": 850 * MiB,
                         "ttft_ms": 1460.0, "decode_tok_s": 9.1, "weights_bytes": 942 * MiB, "generate_call_s": 1.46},
                probes=probes, harness={"startup_s": 0.02, "overhead_s": 0.08}, artifacts={})
    return TrialResult(**{**base, **kw})


def strat(**over: Any) -> Any:
    """The qwen2.5-0.5b synthetic shape (bfloat16 on disk) with the given sections."""
    return strategy_of({"model": {"synthetic": {"shape": "qwen2.5-0.5b", "dtype": "bfloat16"}}, **over})


def _est(median: float, spread: float, n: int) -> dict[str, Any]:
    return {"median": median, "q1": median - spread, "q3": median + spread, "n": n}


RECS = {"peak_metric": "peak_rss_bytes", "picks": [
    {"objective": "load", "figure": {"name": "load_cost_s", "value": 0.7, "unit": "s"}, "label": "builtin",
     "verdict": "pick", "estimate": _est(0.7, 0.02, 3), "rule": ""},
    {"objective": "memory", "figure": {"name": "peak_rss_bytes", "value": 850 * MiB, "unit": "bytes"},
     "label": "builtin", "verdict": "tie", "tied": ["model-manager"], "estimate": _est(850 * MiB, 0, 3),
     "rule": "the lowest real load cost"},
    {"objective": "ttft", "figure": {"name": "ttft_ms", "value": None, "unit": "ms"}, "verdict": "undecided",
     "rule": "too few repeats", "candidates": [{"label": "builtin", "estimate": _est(1460.0, 0, 1)},
                                               {"label": "model-manager", "estimate": _est(1490.0, 0, 1)}]},
    {"objective": "throughput", "figure": {"name": "decode_tok_s", "value": None, "unit": "tok/s"},
     "verdict": "none", "reason": "nothing measured decode"}],
    "max_new_tokens_warnings": [
        {"label": f"builtin mnt={c}", "trial_ids": [f"m{c}-r0"], "generated": 9, "cap": c, "share": 9 / c,
         "advice": f"answers used {900 / c:.0f}% of max_new_tokens={c}"} for c in (32, 256, 1024)]}
TOP = Finding(kind="dominant_user_function", severity="high", mistake=True, label="model-manager",
              title="your function ModelManager._validate_all_modules is 97% of the load",
              detail="ModelManager._validate_all_modules (/srv/app/model_manager.py:46) took 7.8 s of the load",
              fix="this is time in your loader, not in transformers: remove or sample that work", evidence={},
              trial_ids=("mm-r0",), stake_s=7.8, stake_basis="the function's own time in the load")


def realistic_sweep() -> SweepResult:
    trials = [realistic_trial(f"bi-r{i}", "builtin", 0.3 + 0.01 * i, repeat=i) for i in range(3)]
    trials += [realistic_trial(f"mm-r{i}", "model-manager", 0.3, user_s=8.0 + 0.2 * i, repeat=i) for i in range(3)]
    trials += [realistic_trial(f"m{c}-r0", f"builtin mnt={c}", 0.3,
                               strategy=strat(generate={"max_new_tokens": c})) for c in (32, 256, 1024)]
    trials.append(realistic_trial("up-r0", "upcast", 0.9, strategy=strat(load={"dtype": "float32"})))
    trials.append(realistic_trial("to-r0", "slow", 0.3, status="timeout", wall_s=2.1, reason="exceeded timeout_s=60",
                                  harness={"parent_wall_s": 60.4}))
    lazy = Finding(kind="lazy_load", severity="low", mistake=False, label="builtin", title="the load only mapped "
                   "the weights: they were read at the first forward", detail="file-backed memory grew 941 MiB at "
                   "the first forward", fix="compare strategies on load + warmup", evidence={}, trial_ids=("bi-r0",))
    return SweepResult(run_id="r", name="loading_methods", source="loading.yaml", created_at="2026-11-27T10:00:00",
                       trials=tuple(trials), env=ENV, findings=(TOP, lazy),
                       recommendations=Recommendations.from_dict(RECS))


# ------------------------------------------------------------------------------------------ verdict block

def test_verdict_block_answers_first_with_uncertainty_and_next_steps():
    block = verdict_block(realistic_sweep())
    assert block.headline == ("verdict (mistake): your function ModelManager._validate_all_modules is 97% of the "
                              "load; 7.8 s at stake")
    picks = dict(block.picks)
    assert picks["fastest load"] == "builtin — 0.7 s ± 0.02 s (n=3) (pick: ahead beyond the noise)"
    assert picks["least memory"].startswith("builtin — 850.0 MiB") and "tie with model-manager" in picks["least memory"]
    assert "lowest real load cost" in picks["least memory"]
    assert picks["fastest first token"].startswith("undecided") and "builtin 1460.0 ms (n=1)" in picks[
        "fastest first token"]
    assert picks["fastest decode"] == "nothing to pick: nothing measured decode"
    assert block.next_steps[0].startswith("fix the top finding: this is time in your loader")
    assert REPEAT_ADVICE in block.next_steps
    assert any("1 trial did not finish (timeout)" in s for s in block.next_steps)


def test_every_format_puts_the_verdict_before_the_tables_and_the_environment_last():
    sweep = realistic_sweep()
    text = console.RENDERER.render(sweep)
    assert text.startswith("verdict (mistake)")
    assert text.index("use for fastest load") < text.index("Findings") < text.index("loadprof: loading_methods (")
    assert text.index("environment: python 3.11.7, torch 2.13.0+cpu") > text.index("ok, 1 timeout")
    md = markdown.render(sweep)
    assert md.index("**fastest load**: builtin") < md.index("## Findings") < md.index("## Summary")
    assert md.index("## Environment") > md.index("## Phases") and "- **torch**: 2.13.0+cpu" in md.split("## Environment")[1]
    page = html.render(sweep)
    assert page.index('id="verdict"') < page.index("<table") and page.index('id="findings"') < page.index("<table")
    assert page.index('<dl class="info">') > page.index('id="trials"')


# ------------------------------------------------------------------------------------------- small fixes

def test_ttft_is_plain_ms_everywhere():
    sweep = realistic_sweep()
    for text in (console.RENDERER.render(sweep), markdown.render(sweep), html.render(sweep)):
        assert not re.search(r"\d\.\d+e[+-]\d+ ?ms", text)
        assert "1460.0" in text


def test_model_column_shows_the_dtype_the_trial_loaded_as():
    rows = {r[2]: r[1] for r in summary(realistic_sweep()).rows}
    assert rows["upcast r0"] == "qwen2.5-0.5b (bfloat16, loaded as float32)"
    assert rows["builtin r0"] == "qwen2.5-0.5b (bfloat16)"


def test_one_max_new_tokens_line_per_series():
    _, notes = recommendations(realistic_sweep())
    lines = [n for n in notes if n.startswith("max_new_tokens larger than the answers")]
    assert lines == ["max_new_tokens larger than the answers: builtin mnt=32, builtin mnt=256, builtin mnt=1024: "
                     "answers stopped at 9 tokens under caps 32, 256, 1024 (answers used 1-28% of them); set "
                     "max_new_tokens near 9"]


def test_generate_s_has_one_meaning():
    gen = next(t for t in phase_tables(realistic_sweep()) if t.title == "generate phases (s)")
    assert gen.columns[-1] == "generate total s"


def test_a_timeout_trial_shows_the_wall_until_it_was_killed():
    rows = {r[2]: r for r in summary(realistic_sweep()).rows}
    assert rows["slow r0"][10] == "60.40 (killed)"
    assert rows["builtin r0"][10] == f"{realistic_sweep().trials[0].wall_s:.2f}"  # an ok trial: its own clock


# ------------------------------------------------------------------------------------------------- charts

def test_load_chart_names_the_user_function_and_the_forward_and_folds_tiny_phases():
    sweep = realistic_sweep()
    segs = {s.name: s for s in load_segments(sweep.trials[3])}
    assert segs["your code: ModelManager._validate_all_modules"].seconds == pytest.approx(8.0 * 0.98)
    assert segs[FORWARD].seconds == pytest.approx(0.3) and "940.0 MiB" in segs[FORWARD].tip  # the larger of storage bytes and file pages
    rows, order = fold_small([(t.label, load_segments(t)) for t in sweep.trials if t.ok])
    assert "device_map" not in order and "generation_config" not in order
    assert any(n.startswith("other (") and "< 1%" in n for n in order)
    svg = charts.phase_bars(sweep, "load")
    assert svg is not None
    assert "<title>model-manager r0: your code: ModelManager._validate_all_modules" in svg
    assert "forward read 940.0 MiB" in svg
    assert "shares (largest bar is" not in svg  # 8.7 s vs 0.7 s: no bar dwarfs another 20x


def test_load_chart_adds_a_share_panel_when_one_bar_dwarfs_the_rest():
    trials = (realistic_trial("a-r0", "fast", 0.2), realistic_trial("b-r0", "slow", 0.3, user_s=16.0))
    sweep = SweepResult(run_id="r", name="n", source="s", created_at="", trials=trials)
    assert "shares (largest bar is" in charts.phase_bars(sweep, "load")


def test_memory_timelines_share_an_axis_and_shade_loadprofs_own_phases():
    sweep = realistic_sweep()
    end = charts.timeline_end_s(sweep.trials)
    assert end == pytest.approx(max(t.phases[-1].end_s for t in sweep.trials), abs=0.06)
    svg = charts.memory_timeline(sweep.trials[0], x_max=end)
    assert "workload peak 850.0 MiB" in svg
    assert "loadprof's own: trace, membw, estimate, cleanup (clipped) - not the workload" in svg
    assert "seconds since the trial started" in svg
    # load, warmup and generate start close together: one mark, every name whole, one a line (never "load+war…")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert {"load", "warmup", "generate"} <= set(texts) and not any("\u2026" in x or "+" in x for x in texts)


# -------------------------------------------------------------------------------------- headless browser

def _chromium() -> str | None:
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


PROBE = ("<script>addEventListener('load',()=>{const v=document.getElementById('verdict').getBoundingClientRect();"
         "const t=document.querySelector('table').getBoundingClientRect();"
         "document.body.setAttribute('data-verdict-bottom',v.bottom);"
         "document.body.setAttribute('data-first-table-top',t.top);})</script>")


@pytest.mark.e2e
def test_verdict_is_on_the_first_screen_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed: apt-get install -y chromium (Debian) to run the browser check")
    page = write_all(realistic_sweep(), tmp_path)["html"]
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900"]
    shot = tmp_path / "report-first-screen.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], check=True, timeout=120, capture_output=True)
    assert shot.is_file() and shot.stat().st_size > 10_000
    if os.environ.get("LOADPROF_ARTIFACTS"):
        out = Path(os.environ["LOADPROF_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)
        shutil.copy(page, out / "report-realistic.html")
    probed = page.with_name("probed.html")  # the report itself carries no script; a copy gets the measuring one
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    bottom = float(re.search(r'data-verdict-bottom="([\d.]+)"', dom).group(1))
    assert 0 < bottom < 900, f"the verdict block ends at {bottom}px: below the first 1400x900 screen"
    assert dom.index('id="verdict"') < dom.index("<table")

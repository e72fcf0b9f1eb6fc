"""File reports (markdown, csv, html + plots, write_all) over a hand-built sweep, plus a headless-browser check;
and the shape of loadprof.reports: one Renderer protocol, renderers that never import each other or open files."""

from __future__ import annotations

import ast
import csv
import inspect
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from loadprof.results.model import Finding, PhaseTiming, Recommendations, SweepResult, TrialResult
from loadprof.analysis.circumstances import circumstances
from loadprof.analysis.studies import study_of
from loadprof.core.conclusions import studies_from_dict
from loadprof.reports import charts, console, csv_report, html, markdown, plots
from loadprof.reports.base import Artifacts, Renderer
from loadprof.reports.files import ArtifactReader, file_renderers, write_all
from tests.helpers import memory_payload, strategy_of

MiB, GiB = 2**20, 2**30
EVIL = "<script>alert(1)</script> & co"
SUMMARY_HEADER = ("| # | model | strategy | status | import s | load cost s | warmup s | peak RSS | TTFT ms | decode tok/s "
                  "| wall s | reason |")
ARTIFACTS = {"stdout": "stdout.log", "stderr": "stderr.log", "memory_timeline": "memory_timeline.json",
             "speedscope": "profile.speedscope.json", "cuda_snapshot": "cuda_snapshot.pickle"}
STRATEGY = {"model": {"synthetic": {"arch": None, "shape": "tiny", "dtype": "bfloat16"}}}
TIMELINE = {"columns": ["t_s", "rss_anon_bytes", "rss_file_bytes"],
            "rows": [[1.0 + i * 0.1, (100 + 10 * i) * MiB, (50 + 5 * i) * MiB] for i in range(40)], "every_nth_sample": 1}
EXPECTED_PLOTS = {"study-max_new_tokens", "study-batch_size", "study-quantization", "phases-load",
                  "phases-generate", "memory-aaaa-r0", "memory-bbbb-r1"}


def P(name: str, a: float, b: float, *children: PhaseTiming, incomplete: bool = False) -> PhaseTiming:
    return PhaseTiming(name, a, b, tuple(children), incomplete)


def ok_phases() -> tuple[PhaseTiming, ...]:
    return (P("import", 0.0, 1.0),
            P("load", 1.0, 3.0, P("config", 1.0, 1.25), P("resolve", 1.25, 1.5), P("weights", 1.5, 2.5)),
            P("warmup", 3.0, 3.5),
            P("generate", 3.5, 5.5, P("prepare", 3.5, 3.75), P("prefill", 3.75, 4.0), P("decode", 4.0, 5.0),
              P("finish", 5.0, 5.25)))


def trial(tid: str, label: str, repeat: int = 0, **kw: Any) -> TrialResult:
    base = dict(trial_id=tid, strategy_id=tid.split("-")[0], label=label, repeat_index=repeat, status="ok",
                strategy=strategy_of(STRATEGY), wall_s=6.0, phases=ok_phases(),
                metrics={"import_s": 1.0, "load_s": 2.0, "load_cost_s": 2.25, "warmup_s": 0.5, "peak_rss_bytes": 2 * GiB,
                         "ttft_ms": 400.0, "decode_tok_s": 12.5, "per_token_ms_p50": 80.0, "weights_bytes": 3 * MiB,
                         "loader": "transformers.AutoModelForCausalLM.from_pretrained",
                         "bytes_by_dtype": {"bfloat16": 3 * MiB}},
                probes={"memory": memory_payload({}, timeline=TIMELINE)},
                harness={"startup_s": 0.02, "overhead_s": 0.08}, artifacts=ARTIFACTS)
    return TrialResult(**{**base, **kw})


CURVE = {"vary": "generate.max_new_tokens", "description": "tiny, cache_implementation=static",
         "fixed": {"generate.cache_implementation": "static"}, "trial_ids": ("aaaa-r0",),
         "points": [{"cap": c, "trial_ids": ("aaaa-r0",), "generate_call_s": 1.0 + c / 1000, "ttft_ms": 400.0,
                     "per_token_ms_p50": 80.0, "generate_start_alloc_bytes": c * 24 * 1024, "new_tokens": 9}
                    for c in (32, 64, 128)],
         "fits": {"generate_start_alloc_bytes": {"model": "linear", "r2": 1.0, "slope": 24576.0,
                                                 "r2_by_model": {"constant": 0.0, "linear": 1.0}}},
         "alloc_bytes_per_cap_token": 24576.0, "generate_call_ms_per_cap_token": 1.0, "ttft_ms_per_cap_token": 0.0,
         "growth": "linear", "sites": [{"site": "cache_utils.py:438 lazy_initialization", "op": "zeros",
                                        "bytes_per_cap_token": 12288.0, "share": 0.5}],
         "observed_new_tokens": [9], "covering_cap": 16, "largest_cap": 128, "saving_bytes": 2.5 * MiB,
         "saving_ms": 112.0}
BATCH = {"vary": "generate.batch_size", "description": "tiny, batch", "fixed": {}, "baseline_batch_size": 1,
         "best_throughput_batch_size": 4, "best_efficiency_batch_size": 2,
         "rows": [{"batch_size": b, "decode_tok_s": t, "speedup": t / 10, "efficiency_pct": 100 * t / 10 / b,
                   "kv_bytes_per_seq": 1 * MiB, "kv_bytes_total": b * MiB, "ttft_ms": 50.0 * b,
                   "best_efficiency": b == 2, "best_throughput": b == 4} for b, t in ((1, 10.0), (2, 19.0), (4, 30.0))]}
QUANT = {"vary": "load.quantization", "description": "tiny, quant", "fixed": {}, "baseline": "none",
         "peak_source": "rss",
         "rows": [{"quantization": "none", "weights_bytes": 4 * GiB, "memory_saved_pct": None, "peak_bytes": 5 * GiB,
                   "decode_tok_s": 20.0, "decode_speedup": None, "ttft_ms": 100.0, "ttft_change_pct": None,
                   "load_s": 2.0, "load_time_ratio": None},
                  {"quantization": "bnb-4bit-nf4", "weights_bytes": 1 * GiB, "memory_saved_pct": 75.0,
                   "peak_bytes": 2 * GiB, "decode_tok_s": 10.0, "decode_speedup": 0.5, "ttft_ms": 150.0,
                   "ttft_change_pct": 50.0, "load_s": 3.0, "load_time_ratio": 1.5}]}
RECS = {"memory_budget_bytes": 4 * GiB, "peak_metric": "peak_rss_bytes",
        "objectives": {"load": {"objective": "load", "label": None, "trial_ids": [], "runner_up": None,
                                "figure": {"name": "load_warmup_validate_s", "value": None, "unit": "s"},
                                "settings": None, "tradeoffs": [], "reason": "no ok trial to recommend from"},
                       "ttft": {"label": "static max_new_tokens=32", "trial_ids": ("aaaa-r0",),
                                "figure": {"name": "ttft_ms", "value": 400.0, "unit": "ms"},
                                "settings": {"cache_implementation": "static", "offload": None},
                                "runner_up": {"label": "dynamic", "figure": {"name": "ttft_ms", "value": 450.0,
                                                                             "unit": "ms"}},
                                "margin_pct": 11.1111, "tradeoffs": ["uses 2.0 GiB more"], "reason": None},
                       "memory": {"label": "bnb-4bit-nf4", "trial_ids": [], "runner_up": None,
                                  "figure": {"name": "peak_rss_bytes", "value": 2 * GiB, "unit": "bytes"}}},
        "excluded_over_budget": ["none"],
        "max_new_tokens_warnings": [{"label": "static max_new_tokens=32", "generated": 9, "cap": 32, "share": 0.28,
                                     "advice": "answers used 28% of max_new_tokens=32"},
                                    {"label": "other", "generated": 3, "cap": 64, "share": 0.047}]}
FINDINGS = (Finding(**{"kind": "dominant_user_function", "severity": "high", "title": "your function F is 98% of the load",
             "detail": "F took 7.56 s", "fix": "remove or sample that work", "evidence": {}, "trial_ids": ("aaaa-r0",),
             "label": "static max_new_tokens=32", "mistake": True, "stake_s": 7.5}),
            Finding(**{"kind": "ignored_kwarg", "severity": "low", "title": "`low_cpu_mem_usage` is <ignored>",
             "detail": "popped", "fix": "remove it", "evidence": {}, "trial_ids": ("bbbb-r1",), "label": "",
             "mistake": True}))


def make_sweep(recommendations: Any = RECS, **kw: Any) -> SweepResult:
    trials = (trial("aaaa-r0", "static max_new_tokens=32"),
              trial("bbbb-r1", EVIL, repeat=1, probes={}, metrics={"load_s": 2.0, "load_cost_s": 2.0}),
              trial("cccc-r0", "segfault", status="crashed", wall_s=3.0, reason="worker killed by SIGSEGV\nduring "
                    "phase load", metrics={"import_s": 1.0}, probes={}, harness={},
                    phases=(P("import", 0.0, 1.0), P("load", 1.0, 1.0, incomplete=True)),
                    artifacts={"stdout": "stdout.log", "stderr": "stderr.log"}))
    base = dict(run_id="r1", name="demo", source="demo.yaml", created_at="2026-01-01T00:00:00+00:00",
                trials=trials, env={"python": "3.11.7", "torch": "2.13.0+cpu", "device": "cpu"},
                findings=FINDINGS, studies={"max_new_tokens": [CURVE], "batch_size": [BATCH], "quantization": [QUANT]})
    merged = {**base, **kw}
    merged["studies"] = tuple(study_of(s.kind, s.to_dict())  # the JSON shape, with the notes analysis words
                              for s in studies_from_dict(merged["studies"]))
    merged.setdefault("circumstances", circumstances(merged["trials"]))  # as analyse_sweep concludes them
    if recommendations is not None:
        merged["recommendations"] = Recommendations.from_dict(recommendations)
    return SweepResult(**merged)


def with_artifacts(out: Path, sweep: SweepResult, only: tuple[str, ...] = ()) -> None:
    """Create the trial files in out (all, or just the given names) and bbbb-r1's memory_timeline.json."""
    for t in sweep.trials:
        d = out / "trials" / t.trial_id
        d.mkdir(parents=True, exist_ok=True)
        for name in t.artifacts.values():
            if not only or name in only:
                (d / name).write_text("{}")
    (out / "trials" / "bbbb-r1" / "memory_timeline.json").write_text(json.dumps(TIMELINE))


# ------------------------------------------------------------------------------------------------ markdown

def test_markdown_sections_tables_and_rows() -> None:
    md = markdown.render(make_sweep())
    lines = md.splitlines()
    assert lines[0] == "# loadprof: demo"
    assert "- **torch**: 2.13.0+cpu" in lines and "- **device**: cpu" in lines
    assert SUMMARY_HEADER in lines
    assert ("| 1 | tiny (bfloat16) | static max_new_tokens=32 r0 | ok | 1.00 | 2.25 | 0.50 | 2.0 GiB | 400.0 | 12.5 "
            "| 6.00 |  |") in lines
    assert ("| 2 | tiny (bfloat16) | \\<script>alert(1)\\</script> & co r1 | ok | - | 2.00 | - | - | - "
            "| - | 6.00 |  |") in lines
    assert ("| 3 | tiny (bfloat16) | segfault r0 | crashed | 1.00 | - | - | - | - | - | 3.00 | worker killed by "
            "SIGSEGV during phase load |") in lines
    assert "<script>" not in md.replace("\\<script>", "")  # escaped, not entity-encoded
    assert "1. **high** your function F is 98% of the load (static max_new_tokens=32)" in lines
    assert "   - fix: remove or sample that work" in lines
    assert "2. **low** `low_cpu_mem_usage` is \\<ignored> (bbbb-r1)" in lines
    # phases: load children + other, generate children + other, incomplete marked
    assert "| strategy | config | resolve | weights | other | load s |" in lines
    assert "| static max_new_tokens=32 r0 | 0.250 | 0.250 | 1.000 | 0.500 | 2.000 |" in lines
    assert "| strategy | prepare | prefill | decode | finish | other | generate total s |" in lines
    assert "| static max_new_tokens=32 r0 | 0.250 | 0.250 | 1.000 | 0.250 | 0.250 | 2.000 |" in lines
    assert "| segfault r0 | 1.000 | 0.000\u2020 | - | - | 3.000 |" in lines
    # studies
    assert "| cap | n | generate call s | TTFT ms | ms/token p50 | alloc at generate start | new tokens |" in lines
    assert "| 128 | 1 | 1.128 | 400.0 | 80.00 | 3.0 MiB | 9 |" in lines
    assert "- observed new tokens: 9; covering cap 16 saves 2.5 MiB and 112.0 ms vs cap 128" in lines
    assert "| 2 (best eff) | - | - | 19.0 | 1.90x | 95.0% | 1.0 MiB | 2.0 MiB | 100.0 |" in lines
    assert "| bnb-4bit-nf4 | - | 1.0 GiB | 75.0 | 2.0 GiB | 10.0 | 0.50x | +50.0% | 3.00 |" in lines
    # recommendations
    assert ("| ttft | pick | static max_new_tokens=32 | ttft_ms = 400.0 ms | - | dynamic (450.0 ms), margin 11.1% "
            "| cache_implementation=static | uses 2.0 GiB more |") in lines
    assert "| memory | pick | bnb-4bit-nf4 | peak_rss_bytes = 2.0 GiB | - | - | - | - |" in lines
    assert "| load | none | - | - | no ok trial to recommend from | - | - | - |" in lines
    assert "- memory budget 4.0 GiB on peak_rss_bytes" in lines and "- over budget: none" in lines
    assert ("- max_new_tokens larger than the answers: static max_new_tokens=32: answers used 28% of "
            "max_new_tokens=32") in lines
    assert "- max_new_tokens larger than the answers: other: generated 3 of max_new_tokens=64 (5%)" in lines
    # links and harness
    assert ("- static max_new_tokens=32 r0 (`aaaa-r0`): [py-spy profile](trials/aaaa-r0/profile.speedscope.json) "
            "(open at speedscope.app)") in md
    assert "[CUDA memory snapshot](trials/aaaa-r0/cuda_snapshot.pickle) (open at pytorch.org/memory_viz)" in md
    assert "harness overhead per trial (parent wall - trial wall, median of 2): 80.0 ms" in md
    order = [md.index(h) for h in ("## Findings", "## Summary", "## Recommendations", "## Studies", "## Phases",
                                   "## Trial files", "## Harness", "## Environment")]
    assert order == sorted(order)


def test_markdown_text_reads_as_written_and_neutralises_html() -> None:
    """report.md is read as plain text too: comparisons and ampersands stay as typed; only what a viewer would
    take for a tag or a character reference is backslash-escaped, and a leading ``>`` starts no quote."""
    assert markdown._text("repeat >= 2 & 0.5 < 1") == "repeat >= 2 & 0.5 < 1"
    assert markdown._text("<b>x</b> &amp; &#60;") == "\\<b>x\\</b> \\&amp; \\&#60;"
    assert markdown._text("> 1 s") == "\\> 1 s"
    assert markdown._cell("a|b") == "a\\|b"


def test_markdown_skips_absent_sections_and_links_only_existing_files(tmp_path: Path) -> None:
    sweep = make_sweep(recommendations=None, findings=(), studies={})
    with_artifacts(tmp_path, sweep, only=("profile.speedscope.json",))
    md = markdown.render(sweep, ArtifactReader(tmp_path))
    for head in ("## Findings", "## Recommendations", "## Studies"):
        assert head not in md
    assert "trials/aaaa-r0/profile.speedscope.json" in md
    assert "cuda_snapshot.pickle" not in md and "stdout.log" not in md


def test_empty_sweep_renders_everywhere() -> None:
    sweep = SweepResult(run_id="e", name="empty", source="-", created_at="")
    assert markdown.render(sweep).startswith("# loadprof: empty")
    assert csv_report.render(sweep).startswith("trial_id,strategy_id,label")
    assert "<svg" not in html.render(sweep)


# --------------------------------------------------------------------------------------------------- csv

def test_csv_parses_back_with_phase_and_metric_columns() -> None:
    rows = list(csv.DictReader(io.StringIO(csv_report.render(make_sweep()))))
    assert [r["trial_id"] for r in rows] == ["aaaa-r0", "bbbb-r1", "cccc-r0"]
    cols = list(rows[0])
    assert cols[:8] == ["trial_id", "strategy_id", "label", "model", "repeat", "status", "reason", "wall_s"]
    assert cols[8:18] == ["import_s", "load_s", "warmup_s", "generate_s", "load.config_s", "load.resolve_s",
                          "load.weights_s", "load.other_s", "peak_rss_bytes", "ttft_ms"]
    assert cols[-2:] == ["harness.startup_s", "harness.overhead_s"]
    assert "bytes_by_dtype" not in cols and "loader" in cols
    a, b, c = rows
    assert float(a["load_s"]) == 2.0 and float(a["load.other_s"]) == 0.5 and float(a["generate_s"]) == 2.0
    assert int(a["peak_rss_bytes"]) == 2 * GiB and float(a["decode_tok_s"]) == 12.5
    assert b["label"] == EVIL and b["repeat"] == "1" and b["ttft_ms"] == ""
    assert c["status"] == "crashed" and c["reason"].startswith("worker killed") and c["load.config_s"] == ""
    assert float(c["load_s"]) == 0.0 and c["harness.overhead_s"] == ""


# -------------------------------------------------------------------------------------------------- html

class Walker(HTMLParser):
    """Checks nesting (every non-void element closed in order) and collects tags, attributes and text."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def walk(doc: str) -> Walker:
    w = Walker()
    w.feed(doc)
    w.close()
    assert w.stack == [], f"unclosed: {w.stack}"
    return w


def test_html_well_formed_self_contained_escaped_with_plots(tmp_path: Path) -> None:
    sweep = make_sweep()
    with_artifacts(tmp_path, sweep)
    doc = html.render(sweep, ArtifactReader(tmp_path))
    w = walk(doc)
    names = [t for t, _ in w.tags]
    assert names.count("svg") == len(EXPECTED_PLOTS)
    assert {a["data-plot"] for t, a in w.tags if t == "figure"} == EXPECTED_PLOTS
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    for _, attrs in w.tags:
        for key in ("src", "href", "xlink:href"):
            v = attrs.get(key) or ""
            assert not v.startswith(("http:", "https:", "//")), v
    assert "@import" not in doc and "url(http" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in doc and "<script" not in doc
    text = "".join(w.text)
    for s in ("Findings", "Recommendations", "Studies", "your function F is 98% of the load",
              "`low_cpu_mem_usage` is <ignored>", "open at speedscope.app", "open at pytorch.org/memory_viz",
              "max_new_tokens curve", "batch scaling", "quantization", "load phases (s)",
              "memory budget 4.0 GiB on peak_rss_bytes"):
        assert s in text, s
    hrefs = [a["href"] for t, a in w.tags if t == "a" and not a["href"].startswith("#")]
    assert "trials/aaaa-r0/profile.speedscope.json" in hrefs and "trials/aaaa-r0/cuda_snapshot.pickle" in hrefs
    assert [a["class"] for t, a in w.tags if t == "div" and "finding" in a.get("class", "")] == \
        ["finding sev-high", "finding sev-low"]
    ids = [a["id"] for _, a in w.tags if a.get("id")]
    assert len(ids) == len(set(ids)), "duplicate ids across inline SVGs"


def test_html_timeline_from_trial_file_and_existing_links_only(tmp_path: Path) -> None:
    sweep = make_sweep()
    doc = html.render(sweep)
    assert 'data-plot="memory-aaaa-r0"' in doc and 'data-plot="memory-bbbb-r1"' not in doc
    with_artifacts(tmp_path, sweep, only=("stdout.log",))
    doc = html.render(sweep, ArtifactReader(tmp_path))
    assert 'data-plot="memory-bbbb-r1"' in doc  # read from trials/bbbb-r1/memory_timeline.json
    assert 'href="trials/aaaa-r0/stdout.log"' in doc and "profile.speedscope.json" not in doc


class FakeArtifacts:
    """Artifacts without a disk: records what renderers ask for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def has(self, trial: TrialResult, key: str) -> bool:
        self.asked.append((trial.trial_id, key))
        return key == "stdout"

    def memory_timeline(self, trial: TrialResult) -> Any:
        self.asked.append((trial.trial_id, "memory_timeline()"))
        return TIMELINE["rows"]  # a bare list of rows is accepted as well as {"rows": ...}


def test_renderers_get_trial_files_only_through_the_artifacts_they_are_given() -> None:
    sweep, fake = make_sweep(), FakeArtifacts()
    assert isinstance(fake, Artifacts)
    doc = html.render(sweep, fake)
    assert 'data-plot="memory-bbbb-r1"' in doc and 'href="trials/aaaa-r0/stdout.log"' in doc
    assert "profile.speedscope.json" not in doc
    # the timeline in report.json wins: only bbbb-r1 (none there) is asked for its file
    assert [a for a in fake.asked if a[1] == "memory_timeline()"] == [("bbbb-r1", "memory_timeline()")]
    md = markdown.render(sweep, fake)
    assert "(trials/aaaa-r0/stdout.log)" in md and "speedscope" not in md


def test_plots_only_what_the_sweep_has() -> None:
    sweep = make_sweep(studies={"max_new_tokens": [], "batch_size": [BATCH]})
    assert list(plots.study_plots(sweep.studies)) == ["batch_size"]
    assert charts.memory_timeline(sweep.trials[2]) is None
    svg = charts.phase_bars(sweep, "generate")
    assert svg is not None and svg.startswith("<svg") and "<text" in svg  # text kept as text (svg.fonttype none)
    no_gen = SweepResult(run_id="x", name="x", source="-", created_at="", trials=(sweep.trials[2],))
    assert charts.phase_bars(no_gen, "generate") is None


def test_write_all_writes_three_files(tmp_path: Path) -> None:
    paths = write_all(make_sweep(), tmp_path / "out")
    assert list(paths) == ["md", "html", "csv", "configurations.csv"]
    assert {p.name for p in paths.values()} == {"report.md", "report.html", "report.csv", "configurations.csv"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert len(list(csv.DictReader(paths["csv"].open()))) == 3


def test_renderers_never_import_torch() -> None:
    code = ("import sys; from loadprof.reports import files, markdown, html, csv_report, plots; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_html_without_matplotlib_keeps_every_table_and_says_how_to_get_figures(tmp_path: Path) -> None:
    """The plain install (no 'plots' extra) must still end with a report.html."""
    code = ("import importlib, sys\n"
            "from tests.test_reports import make_sweep\n"  # (this module imports plots itself)
            "sys.modules['matplotlib'] = None\n"  # from now on 'import matplotlib' raises ImportError
            "sys.modules.pop('loadprof.reports.plots')\n"
            "import loadprof.reports; del loadprof.reports.plots\n"
            "from loadprof.reports import files, html\n"
            "html = importlib.reload(html)\n"
            "assert html.plots is None\n"
            "page = files.write_all(make_sweep(), sys.argv[1])['html']\n"
            "print(open(page).read())")
    doc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert "pip install matplotlib" in doc and 'id="no-figures"' in doc
    assert "<svg" not in doc and 'id="summary"' in doc and 'id="findings"' in doc and 'id="studies"' in doc


# ---------------------------------------------------------------------------------- shape of the package

REPORTS = Path(__file__).resolve().parents[1] / "reports"
#: the format modules: each exposes RENDERER, and none may import another (shared code lives in sections)
RENDERER_MODULES = ("console", "markdown", "html", "csv_report")
#: modules that render but are not renderers (figures, study tables, shared sections): they import no renderer
HELPERS = ("plots", "charts", "breakdown", "verdict", "study_tables", "sections", "base")
#: what opening or probing a file looks like; only files.py may do it
FILE_ACCESS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "is_file", "exists", "load", "stat",
               "iterdir", "glob"}
FILE_MODULES = {"json", "os", "pathlib", "Path", "shutil"}


def reports_imports(path: Path) -> set[str]:
    """Every loadprof.reports module ``path`` imports (top-level and function-level, absolute or relative)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "loadprof.reports" if node.level else (node.module or "")
            if node.level and node.module:
                base += "." + node.module
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.split(".")[2] for n in names if n.startswith("loadprof.reports.")}
    return found


def test_no_renderer_module_imports_another() -> None:
    assert {p.stem for p in REPORTS.glob("*.py")} >= {*RENDERER_MODULES, *HELPERS, "files"}
    bad = [f"{mod} imports {other}" for mod in (*RENDERER_MODULES, *HELPERS)
           for other in reports_imports(REPORTS / f"{mod}.py") & set(RENDERER_MODULES) if other != mod]
    assert bad == []


def test_import_check_catches_a_renderer_importing_another(tmp_path: Path) -> None:
    planted = tmp_path / "markdown.py"
    planted.write_text("def f():\n    from loadprof.reports.console import model_label\n"
                       "from loadprof.reports import html\nfrom .csv_report import render\n")
    assert reports_imports(planted) == {"console", "html", "csv_report"}


def test_renderers_open_no_files() -> None:
    for mod in (*RENDERER_MODULES, "plots", "charts", "breakdown", "verdict", "study_tables", "sections"):
        tree = ast.parse((REPORTS / f"{mod}.py").read_text())
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert not calls & FILE_ACCESS, f"{mod} calls {calls & FILE_ACCESS}"
        assert not imported & FILE_MODULES, f"{mod} imports {imported & FILE_MODULES}"


def test_every_renderer_follows_the_protocol(tmp_path: Path) -> None:
    sweep = make_sweep(recommendations=None)
    renderers = [m.RENDERER for m in (console, markdown, html, csv_report)]
    assert [r.name for r in renderers] == ["console", "markdown", "html", "csv"]
    assert [r.suffix for r in renderers] == ["txt", "md", "html", "csv"]
    proto = {n: inspect.signature(getattr(Renderer, n)) for n in ("render", "write")}
    for r in renderers:
        assert isinstance(r, Renderer), r
        for n, sig in proto.items():
            assert list(inspect.signature(getattr(r, n)).parameters) == list(sig.parameters)[1:], (r.name, n)
        text = r.render(sweep)
        assert isinstance(text, str) and text
        path = r.write(sweep, tmp_path / r.name)
        assert path == tmp_path / r.name / f"report.{r.suffix}" and path.read_text(encoding="utf-8") == text
    assert "loadprof: demo (3 trials)" in console.RENDERER.render(sweep)
    assert [r.suffix for r in file_renderers()] == ["md", "html", "csv", "csv"]
    assert isinstance(csv_report.CONFIGURATIONS, Renderer)
    assert csv_report.CONFIGURATIONS.write(sweep, tmp_path).name == "configurations.csv"


# --------------------------------------------------------------------------------------- headless browser

def _chromium() -> str | None:
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


@pytest.mark.e2e
def test_html_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed: apt-get install -y chromium (Debian) to run the browser check")
    from PIL import Image, ImageStat

    sweep = make_sweep()
    with_artifacts(tmp_path, sweep)
    page = write_all(sweep, tmp_path)["html"]
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri()],
                   check=True, timeout=120, capture_output=True)
    assert shot.is_file() and shot.stat().st_size > 30_000
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        gray = im.convert("L")
        assert ImageStat.Stat(gray).stddev[0] > 20  # not a blank page
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 200  # plots drew colour
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, timeout=120, capture_output=True,
                         text=True).stdout
    for name in EXPECTED_PLOTS:
        start = dom.index(f'data-plot="{name}"')
        assert dom.index("<svg", start) < dom.index("</figure>", start), f"{name}: svg lost in the DOM"
    assert dom.count("<svg") == len(EXPECTED_PLOTS)
    assert "&lt;script&gt;alert(1)" in dom and "<script>alert" not in dom


def test_the_console_says_when_report_html_has_no_figures(monkeypatch) -> None:
    from loadprof.reports.sections import figures_available

    assert figures_available() is True  # the test extra installs matplotlib
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert figures_available() is False
    text = console.RENDERER.render(make_sweep(recommendations=None))
    assert "report.html" not in text  # the results line needs an output folder; render() has none
    buf = io.StringIO()
    from rich.console import Console

    console.render(make_sweep(recommendations=None), Console(file=buf, width=200), out_dir="OUT")
    assert "OUT/report.html (tables only: matplotlib is missing, pip install matplotlib for figures)" in buf.getvalue()


def test_every_file_report_survives_a_lone_surrogate(tmp_path: Path) -> None:
    """A label, reason or note with a lone surrogate (a file name, an old report.json) never fails a renderer."""
    bad = "bad \udcff \ud800 name"
    sweep = make_sweep(trials=(trial("aaaa-r0", bad, status="failed", reason=bad, notes=(bad,), stderr_tail=bad),
                               trial("bbbb-r1", "x" + bad, repeat=1)))
    with_artifacts(tmp_path, sweep)
    paths = write_all(sweep, tmp_path)
    assert set(paths) == {"md", "html", "csv", "configurations.csv"}
    assert "bad \\udcff \\ud800 name" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert not list(tmp_path.glob("*.tmp"))

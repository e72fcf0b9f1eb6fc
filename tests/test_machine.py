"""How busy the machine was per trial: exact figures from a fake /proc, the busy rule, and the reports' line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from loadprof.analysis.busy import BUSY_LOAD_PER_CORE, BUSY_OTHERS_CORES, BUSY_STEAL_SHARE, busy_machine, is_busy
from loadprof.analysis.circumstances import circumstances
from loadprof.reports.sections import busy_line
from loadprof.core.payloads import MachinePayload
from loadprof.probes.machine import MachineProbe, parse_stat, read_stat
from loadprof.results.model import SweepResult, TrialResult
from tests.helpers import strategy_of

KEYS = ("loadavg_1m_start", "loadavg_1m_end", "others_cpu_s", "others_cpu_cores", "steal_s", "steal_share",
        "cpu_count")


def stat(user: int, system: int, idle: int, steal: int, cpus: int = 2) -> str:
    """/proc/stat text: cpu user nice system idle iowait irq softirq steal guest guest_nice (clock ticks)."""
    lines = [f"cpu  {user} 5 {system} {idle} 7 3 2 {steal} 50 0"]
    lines += [f"cpu{i} 1 0 1 1 0 0 0 0 0 0" for i in range(cpus)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 99", "btime 1700000000"]) + "\n"


class FakeProc:
    """A /proc folder whose stat file the test rewrites between readings, and the other readers' values."""

    def __init__(self, root: Path) -> None:
        self.root, self.t_ns, self.load, self.own = root, 0, 0.25, (0.0, 0.0)
        (root / "stat").write_text(stat(1000, 500, 9000, 0))

    def probe(self) -> MachineProbe:
        return MachineProbe(str(self.root), now_ns=lambda: self.t_ns, loadavg=lambda: self.load,
                            own_cpu=lambda: self.own, clk_tck=100)

    def advance(self, s: float, text: str, load: float, own: tuple[float, float]) -> None:
        self.t_ns += int(s * 1e9)
        (self.root / "stat").write_text(text)
        self.load, self.own = load, own


def stopped(probe: MachineProbe) -> dict:
    """What the probe files, as the events pipe carries it."""
    return probe.stop().payload.to_dict()


def test_parse_stat_sums_busy_columns_and_counts_cpus():
    ticks = parse_stat(stat(1000, 500, 9000, 40, cpus=4))
    assert (ticks.busy, ticks.steal, ticks.cpus) == (1000 + 5 + 500 + 3 + 2, 40, 4)  # guest (50) is inside user
    assert parse_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\n").steal == 0  # an old kernel without the steal column
    assert parse_stat("intr 1\n") is None


def test_others_cpu_is_system_busy_minus_worker_and_parent(tmp_path):
    fake = FakeProc(tmp_path)
    probe = fake.probe()
    probe.start()
    # 4 s: the system's busy ticks grow by 600 (6.0 CPU s), steal by 20 ticks (0.2 s); the worker tree used 3.2 s,
    # loadprof's parent 0.4 s: others took 6.0 - 3.2 - 0.4 = 2.4 s = 0.6 cores on average
    fake.advance(4.0, stat(1000 + 450, 500 + 150, 9200, 20), load=1.75, own=(0.4, 3.2))
    m = stopped(probe)
    assert {k: m[k] for k in KEYS} == {"loadavg_1m_start": 0.25, "loadavg_1m_end": 1.75, "others_cpu_s": 2.4,
                                       "others_cpu_cores": 0.6, "steal_s": 0.2, "steal_share": 0.025,
                                       "cpu_count": 2}
    assert (m["wall_s"], m["busy_cpu_s"], m["worker_cpu_s"], m["harness_cpu_s"]) == (4.0, 6.0, 3.2, 0.4)


def test_others_cpu_never_goes_negative_from_tick_rounding(tmp_path):
    fake = FakeProc(tmp_path)
    probe = fake.probe()
    probe.start()
    fake.advance(2.0, stat(1000 + 100, 500, 9300, 0), load=0.5, own=(0.05, 0.98))  # 1.00 s of ticks, 1.03 s used
    m = stopped(probe)
    assert (m["others_cpu_s"], m["others_cpu_cores"], m["steal_s"], m["steal_share"]) == (0.0, 0.0, 0.0, 0.0)


def test_without_proc_stat_only_the_load_average_is_recorded(tmp_path):
    probe = MachineProbe(str(tmp_path / "none"), now_ns=iter([0, 10**9]).__next__, loadavg=lambda: 3.0,
                         own_cpu=lambda: (0.0, 0.0), clk_tck=100)
    probe.start()
    m = stopped(probe)
    assert m["loadavg_1m_start"] == m["loadavg_1m_end"] == 3.0 and m["cpu_count"] >= 1
    assert m["others_cpu_s"] is None and m["steal_share"] is None
    assert read_stat(str(tmp_path / "none")) is None


def test_real_proc_gives_sane_figures():
    if read_stat() is None:
        pytest.skip("no /proc/stat here")
    probe = MachineProbe()
    probe.start()
    sum(i * i for i in range(200_000))
    m = stopped(probe)
    assert all(k in m for k in KEYS)
    assert m["others_cpu_s"] >= 0 and m["steal_s"] >= 0 and m["cpu_count"] >= 1 and m["wall_s"] > 0


# ------------------------------------------------------------------------------------------- payload and rule

def machine(**kw: float) -> dict[str, float]:
    base = {"loadavg_1m_start": 0.1, "loadavg_1m_end": 0.2, "others_cpu_s": 0.0, "others_cpu_cores": 0.0,
            "steal_s": 0.0, "steal_share": 0.0, "cpu_count": 2, "wall_s": 10.0, "worker_cpu_s": 8.0,
            "harness_cpu_s": 0.5}
    return {**base, **kw}


def trial(label: str, r: int = 0, **kw: float) -> TrialResult:
    s = strategy_of({"label": label})
    absent = kw.pop("_absent", 0)
    probes = {} if absent else {"machine": machine(**kw)}
    return TrialResult(trial_id=f"{s.id}-r{r}", strategy_id=s.id, label=label, repeat_index=r, status="ok",
                       strategy=s, wall_s=9.0, harness={"parent_wall_s": 10.0}, probes=probes)


def test_payload_reads_the_record_and_results_without_it_have_none():
    v = MachinePayload.from_dict({**machine(others_cpu_cores=0.7), "future": 1})
    assert v.others_cpu_cores == 0.7 and v.cpu_count == 2 and v.extra == {"future": 1}
    assert trial("old", _absent=1).payload(MachinePayload) is None
    assert trial("new", steal_share=0.01).payload(MachinePayload).steal_share == 0.01


@pytest.mark.parametrize("kw, busy", [
    ({}, False),
    ({"others_cpu_cores": BUSY_OTHERS_CORES - 0.01}, False),
    ({"others_cpu_cores": BUSY_OTHERS_CORES}, True),
    ({"steal_share": BUSY_STEAL_SHARE - 0.001}, False),
    ({"steal_share": BUSY_STEAL_SHARE}, True),
    ({"loadavg_1m_start": 9.0}, False),                         # others measured: the load average is not used
    ({"loadavg_1m_start": 2 * BUSY_LOAD_PER_CORE, "others_cpu_cores": None}, False),  # exactly the 2 cores
    ({"loadavg_1m_start": 2 * BUSY_LOAD_PER_CORE + 0.01, "others_cpu_cores": None}, True),
    ({"loadavg_1m_end": 9.0}, False),                           # the end load is not part of the rule
    ({"others_cpu_cores": None, "steal_share": None}, False),   # not measurable here: not busy
])
def test_busy_rule_thresholds(kw, busy):
    assert is_busy(MachinePayload.from_dict(machine(**kw))) is busy
    assert not is_busy(None)


def _line(trials) -> str | None:
    return busy_line(SweepResult(run_id="r", name="n", source="t", created_at="", trials=tuple(trials),
                                 circumstances=circumstances(trials)))


def test_busy_line_counts_busy_trials_and_names_the_worst():
    trials = [trial("a", others_cpu_cores=0.6), trial("b", others_cpu_cores=1.4, steal_share=0.01),
              trial("a", 1, others_cpu_cores=0.1), trial("b", 1, steal_share=0.06, others_cpu_cores=0.7),
              trial("c", _absent=1)]
    b = busy_machine(trials)
    assert (b.measured, len(b.busy), b.worst.label) == (4, 3, "b r0") and abs(b.mean_others_cores - 0.9) < 1e-9
    assert _line(trials) == (
        "busy machine: other processes used 0.9 cores on average during 3 of 4 trials "
        "(worst: b r0 1.4 cores, steal 1%); timings may be inflated — rerun on an idle machine")
    assert busy_machine([trial("a", others_cpu_cores=0.2), trial("old", _absent=1)]) is None
    line = _line([trial("a", loadavg_1m_start=3.5, others_cpu_cores=None)])
    assert line is not None and "load average 3.5 on 2 cores" in line


def test_a_shared_import_beside_other_work_makes_its_trial_busy():
    import dataclasses

    from loadprof.analysis.busy import trial_busy

    quiet = trial("a", others_cpu_cores=0.1)
    assert not trial_busy(quiet)
    # the lazy import its round shared ran before the trial's machine record began: its own neighbours count
    shared = dataclasses.replace(quiet, metrics={**quiet.metrics, "shared_import": {"seconds": 1.4,
                                                                                      "others_cpu_cores": 0.9}})
    assert trial_busy(shared)
    b = busy_machine([shared])
    assert b is not None and b.worst.others_cpu_cores == 0.9
    odd = dataclasses.replace(quiet, metrics={**quiet.metrics, "shared_import": {"others_cpu_cores": "x"}})
    assert not trial_busy(odd)  # a tampered record is not a measurement


def test_every_report_puts_the_busy_line_at_the_top_and_csv_has_others_cores():
    from loadprof.reports import console, csv_report, html, markdown

    trials = (trial("a", others_cpu_cores=1.25), trial("b", _absent=1))
    sweep = SweepResult(run_id="r", name="busy", source="t", created_at="now", trials=trials,
                        circumstances=circumstances(trials))
    expected = busy_line(sweep)
    assert expected
    text = console.render_text(sweep)
    assert text.index("busy machine:") < text.index("loadprof: busy (2 trials)")
    md = markdown.render(sweep)
    assert md.splitlines()[:3] == ["# loadprof: busy", "", f"> **{expected}**"]
    page = html.render(sweep)
    assert page.index('id="busy-machine"') < page.index('id="summary"')
    rows = list(csv.DictReader(io.StringIO(csv_report.render(sweep))))
    assert [r["harness.machine.others_cpu_cores"] for r in rows] == ["1.25", ""]
    quiet = SweepResult(run_id="r", name="quiet", source="t", created_at="now", trials=(trial("a"),))
    assert "busy machine" not in console.render_text(quiet) + markdown.render(quiet) + html.render(quiet)

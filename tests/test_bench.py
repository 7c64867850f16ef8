"""The benchmark harness: its smoke run (tiny sizes, one run) works end to end, a run of some parts puts them into
the report written before; the wall overhead per browser step; the scale figure's drain, its reading of the run
events, and its section put into a report written before."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.claims import JobChange, RunEvent, analyse, percentile
from bench.per_step import Pair, browser_steps, overhead, steady
from bench.report import Report, splice
from tests.conftest import ROOT


def test_the_harness_runs_every_flow_and_writes_its_report(tmp_path: Path):
    out = tmp_path / "benchmarks.md"
    # the scale figure's drain has a test of its own (below): one drain in the suite is enough
    parts = "todo,scrape,batch,micro,log,long,server,telemetry"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", parts, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    assert "This is a smoke run" in text and "- machine: " in text and "python -m bench --smoke" in text
    assert "### scale" not in text and "- parts run since: " not in text  # no report there before: written whole
    headings = (
        "### todo-4",
        "### todo-6",
        "### todo-8",
        "### scrape",
        "### one-step SOP: log",
        "### batch: todo-3 over 4 rows",
        "### engine figures",
        "### server path: todo-4 and todo-6, watched",
        "### telemetry: todo-6 through the server, with metrics, spans or a trace",
    )
    for heading in headings:
        assert f"\n{heading}\n" in text, heading
    assert text.index("### todo-6") < text.index("### todo-8") < text.index("### scrape")
    targets = text.split("## Targets", 1)[1].split("## Results", 1)[0]
    for target in (
        "todo-4 wall time next to plain Playwright",
        "todo-6 wall time next to plain Playwright",
        "wall overhead per browser step (slope todo-4 → todo-6)",
        "wall overhead per browser step steady as a run grows (slope todo-6 → todo-8 next to todo-4 → todo-6)",
        "scrape wall time next to plain Playwright",
        "a one-step SOP (log) next to plain Playwright opening a page",
        "batch throughput at concurrency 2 next to the asyncio script",
        "in-process engine overhead per no-op step (no browser, SQLite store)",
        "server path: wall overhead per browser step, watched (slope todo-4 → todo-6)",
        "metrics and spans recorded, todo-6 through the server, next to them off",
    ):
        row = next((line for line in targets.splitlines() if line.startswith(f"| {target} | ")), None)
        assert row is not None and row.endswith(("| met |", "| **missed** |")), (target, targets)
    for peer in ("selenium-side-runner", "@puppeteer/replay"):  # not installed by a smoke run
        assert f"| faster than {peer} on todo-4 | " in targets
    assert "| SOP engine | " in text and "| plain Playwright | " in text
    assert "| SOP engine (one log step) | " in text and "| plain Playwright (open a page, read its title) | " in text
    assert "store commits a second" in text
    todo = text.split("### todo-6\n", 1)[1].split("\n### ", 1)[0]
    assert "| wall overhead per browser step (slope todo-4 → todo-6: extra time " in todo
    assert "| fixed overhead per run (todo-4's extra time less 12 steps × the slope) | " in todo
    long = text.split("### todo-8\n", 1)[1].split("\n### ", 1)[0]
    assert "| wall overhead per browser step (slope todo-6 → todo-8: extra time " in long and "0.1 ms" in long
    server = text.split("### server path: todo-4 and todo-6, watched\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in server.splitlines() if line.startswith(("| todo-4 | ", "| todo-6 | "))]
    assert [row.split(" | ")[1] for row in rows] == ["12", "17"], server  # browser steps
    frames = [int(row.strip("| ").split(" | ")[-1].split(" / ")[0]) for row in rows]
    assert all(1 <= n <= steps for n, steps in zip(frames, (12, 17), strict=True)), rows  # watched, throttled
    assert "| server path: wall overhead per browser step (slope todo-4 → todo-6: " in server
    assert "| server path: fixed overhead per run (" in server
    telemetry = text.split("### telemetry: todo-6 through the server, with metrics, spans or a trace\n", 1)[1]
    for server in ("off", "metrics and spans", "trace"):
        assert f"\n| {server} | " in telemetry, telemetry
    exported = int(telemetry.split("The OTLP receiver got ", 1)[1].split(" ", 1)[0])
    samples = int(telemetry.split("`/metrics` had ", 1)[1].split(" ", 1)[0])
    assert exported >= 1 and samples > 0, telemetry  # spans went out, metrics were there to scrape


def test_a_partial_run_puts_its_parts_into_the_report_there(tmp_path: Path):
    out = tmp_path / "benchmarks.md"
    out.write_text((ROOT / "docs" / "benchmarks.md").read_text())
    command = [sys.executable, "-m", "bench", "--smoke", "--only", "micro", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    header = text.split("## Targets", 1)[0]
    assert "- command: `python -m bench`\n" in header  # the full run's header is kept
    assert "- parts run since: `python -m bench --smoke --only micro --out " in header and "(micro)" in header
    assert text.count("### engine figures") == 1 and "(a no-op step × 50," in text
    assert "| in-process engine overhead per no-op step (no browser, SQLite store) | ≤ 2 ms median | " in text
    assert "### todo-50" in text and "### batch: todo-20 over 100 rows" in text and "### scale: " in text


def test_the_wall_overhead_per_browser_step_is_the_slope_between_two_sizes():
    assert [browser_steps(n) for n in (50, 200, 1000, 3)] == [127, 502, 2502, 10]  # ceil(3 / 2) checks
    found = overhead(Pair(50, 3.0, 2.5), Pair(200, 7.0, 6.2))  # extra time 500 ms, then 800 ms
    assert round(found.slope_ms, 6) == round(300 / 375, 6)
    assert round(found.fixed_ms, 6) == round(500 - 127 * 300 / 375, 6)
    near = overhead(Pair(200, 7.0, 6.2), Pair(1000, 23.0, 20.56))  # 0.82 ms a step: 0.02 more, under 0.1 ms
    far = overhead(Pair(200, 7.0, 6.2), Pair(1000, 23.0, 20.2))  # 1 ms a step: 0.2 more
    assert steady(found, near) and not steady(found, far)
    big = overhead(Pair(50, 3.0, 2.5), Pair(200, 7.0 + 3.75, 6.2))  # 10.8 ms a step: 10 % is more than 0.1 ms
    assert steady(big, overhead(Pair(50, 3.0, 2.5), Pair(200, 7.0 + 3.75 + 0.3, 6.2)))
    assert not steady(big, overhead(Pair(50, 3.0, 2.5), Pair(200, 7.0 + 3.75 + 0.5, 6.2)))


# the scale figure ------------------------------------------------------------------------------


def test_the_scale_figure_drains_the_queue_and_puts_its_section_into_a_report(tmp_path: Path):
    """A tiny drain (4 runs, by 1 then 2 workers) end to end; its shape, never its timing."""
    out = tmp_path / "benchmarks.md"
    out.write_text((ROOT / "docs" / "benchmarks.md").read_text())
    command = [sys.executable, "-m", "bench.scale", "--runs", "4", "--workers", "1,2", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    section = text.split("### scale: 4 queued runs drained by 1, 2 worker processes\n", 1)[1]
    assert "- command: `python -m bench.scale --runs 4 --workers 1,2 --out " in section and "2 cores" in section
    rows = [line for line in section.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 6, section  # a row per worker count in each table
    assert rows[0].startswith("| 1 |") and " 1.00 × |" in rows[0] and rows[0].endswith("| yes |")
    assert rows[1].startswith("| 2 |") and rows[1].endswith("| yes |")  # every run completed, each step once
    assert rows[2].startswith("| 1 | 4 | 0.00 s | ") and rows[3].startswith("| 2 | ")
    assert rows[4].count(" ms / ") == 3  # each claim latency cut in three
    assert "| scale: 4 workers' throughput next to 1 worker's | ≥ 3.5 × | not measured | not measured |" in text
    assert "| scale: claim latency p99 | ≤ 50 ms | " in text
    assert "| scale: every run completed, each claimed and each step started once | all | all | met |" in text
    assert "### todo-50" in text and "### engine figures" in text  # the rest of the report is kept


def _event(run: str, type_: str, second: float, **data: str) -> RunEvent:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second)
    return RunEvent(run, type_, data.get("status"), data.get("worker"), data.get("key"), at)


def test_claim_latency_is_the_gap_between_a_workers_completion_and_its_next_claim():
    events = [
        _event("a", "run.updated", 0.0, status="running", worker="w1"),
        _event("b", "run.updated", 0.5, status="running", worker="w2"),
        _event("a", "step.updated", 0.1, status="running", key="s0"),
        _event("a", "run.updated", 1.0, status="completed"),
        _event("c", "run.updated", 1.01, status="running", worker="w1"),
        _event("b", "run.updated", 1.5, status="completed"),
        _event("d", "run.updated", 1.6, status="running", worker="w2"),
        _event("c", "run.updated", 2.0, status="completed"),
        _event("d", "run.updated", 2.5, status="completed"),
    ]
    drain = analyse(events, runs=4, workers=2)
    assert drain.completed == 4 and drain.sound
    assert drain.seconds == 2.5 and drain.throughput == 4 / 2.5
    assert [round(ms) for ms in drain.latencies_ms] == [10, 100]
    assert drain.latency(50) == drain.latencies_ms[0] and round(drain.latency(99)) == 100
    assert drain.runs_per_worker == [2, 2] and drain.start_spread == 0.5


def test_with_the_jobs_changes_each_claim_latency_is_cut_where_the_jobs_ended_and_were_fetched():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        _event("a", "run.updated", 0.0, status="running", worker="w1"),
        _event("a", "run.updated", 1.0, status="completed"),
        _event("b", "run.updated", 1.02, status="running", worker="w1"),
        _event("b", "run.updated", 2.0, status="completed"),
    ]
    jobs = [
        JobChange(1, "a", "doing", at),
        JobChange(2, "b", "doing", at + timedelta(seconds=0.5)),  # another worker's, dropped
        JobChange(2, "b", "deleted", at + timedelta(seconds=0.6)),
        JobChange(1, "a", "deleted", at + timedelta(seconds=1.005)),
        JobChange(3, "b", "doing", at + timedelta(seconds=1.015)),  # the one that delivered b
        JobChange(3, "b", "deleted", at + timedelta(seconds=2.01)),
    ]
    drain = analyse(events, runs=2, workers=1, jobs=jobs)
    assert {part: [round(ms) for ms in values] for part, values in drain.parts.items()} == {
        "job finished": [5],
        "next job fetched": [10],
        "run claimed": [5],
    }
    assert analyse(events, runs=2, workers=1).parts == {}


def test_a_run_claimed_twice_or_a_step_started_twice_is_counted():
    events = [
        _event("a", "run.updated", 0.0, status="running", worker="w1"),
        _event("a", "step.updated", 0.1, status="running", key="s0"),
        _event("a", "run.updated", 0.2, status="running", worker="w2"),
        _event("a", "step.updated", 0.3, status="running", key="s0"),
        _event("a", "run.updated", 1.0, status="completed"),
    ]
    drain = analyse(events, runs=2, workers=2)
    assert (drain.completed, drain.claimed_twice, drain.steps_twice) == (1, 1, 1) and not drain.sound


def test_percentiles_are_by_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_a_section_put_into_a_report_replaces_the_one_there_and_its_targets():
    report = "# Benchmarks\n\n## Targets\n\n| target | goal | measured | |\n| --- | --- | --- | --- |\n"
    report += "| other | ≥ 1 × | 2 × | met |\n\n## Results\n\n### todo-4\n\nrows\n\n### engine figures\n\nfigures\n"
    for measured in ("1 ms", "2 ms"):
        part = Report()
        part.sections.append(f"### scale: {measured}\n\ntable\n")
        part.target("scale: claim latency p99", "≤ 50 ms", measured, True)
        report = splice(report, part)
    assert report.count("### scale:") == 1 and "### scale: 2 ms\n\ntable\n" in report
    assert report.count("| scale: claim latency p99 |") == 1
    assert "| other | ≥ 1 × | 2 × | met |\n| scale: claim latency p99 | ≤ 50 ms | 2 ms | met |\n\n## Results" in report
    assert report.index("### todo-4") < report.index("### engine figures") < report.index("### scale:")

"""`python -m bench` (`make bench`): times the SOP engine next to a plain Playwright script and next to peer
runners, as whole processes, interleaved; drains 1000 queued runs by 1, 2 and 4 worker processes on PostgreSQL
(bench/scale.py, about half an hour); and rewrites docs/benchmarks.md. `--smoke`: tiny sizes, one run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sop_engine.browser import find_chromium
from sop_engine.static_site import serve_folder

from . import flows, micro, peers, scale
from .measure import Failed, Timing, interleaved
from .report import Report, fmt

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sizes:
    todo_small: int
    todo_large: int
    batch_rows: int
    batch_items: int
    concurrencies: tuple[int, ...]
    runs: int
    warmup: int
    overhead_steps: int
    overhead_repeats: int
    batch_runs: int  # a batch of 100 rows is long: fewer rounds, and the flows before it warmed the machine up
    scale_runs: int = 1000  # queued runs drained by each count of worker processes
    scale_workers: tuple[int, ...] = scale.WORKERS


FULL = Sizes(50, 200, 100, 20, (1, 4, 8), runs=3, warmup=1, overhead_steps=1000, overhead_repeats=5, batch_runs=2)
SMOKE = Sizes(4, 6, 4, 3, (2,), 1, 0, 50, 1, batch_runs=1, scale_runs=4, scale_workers=(1, 2))


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory = next(
        (
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    chromium = find_chromium() or "Playwright's Chromium"
    try:
        version = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        version = chromium
    from importlib.metadata import version as package_version

    return (
        f"{cpu}, {os.cpu_count()} cores, {memory} GiB; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {version}; Playwright {package_version('playwright')}"
    )


def todo_flows(report: Report, work: Path, base: str, sizes: Sizes, install_peers: bool) -> None:
    url = base + "todo.html"
    chromium = find_chromium()
    small = [flows.sop_todo(work, url, sizes.todo_small), flows.plain_todo(url, sizes.todo_small)]
    folder, why = peers.install(install_peers)
    driver, driver_why = peers.chromedriver(install_peers)
    if folder is None or chromium is None:
        report.note(f"Peers skipped: {why if folder is None else 'no system Chromium for them to drive'}.")
    else:
        if driver is None:
            report.note(f"selenium-side-runner skipped: {driver_why}.")
        else:
            small.append(flows.side_todo(work, folder, base.rstrip("/"), sizes.todo_small, chromium))
        small.append(flows.replay_todo(work, folder, url, sizes.todo_small, chromium))
    timings = run_variants(report, small, sizes)
    if timings:
        report.table(
            f"todo-{sizes.todo_small}",
            timings,
            "plain Playwright",
            f"Open the todo page, add {sizes.todo_small} items (a fill and an Enter each), tick every other "
            "one, read the count left and check it. Whole process, browser launch included.",
        )
        engine = timings["SOP engine"].median
        for peer, goal in (("selenium-side-runner", 2.0), ("@puppeteer/replay", 4.0)):
            if peer in timings:
                speedup = timings[peer].median / engine
                report.target(
                    f"faster than {peer} on todo-{sizes.todo_small}",
                    f"≥ {goal:.0f} ×",
                    f"{speedup:.2f} ×",
                    speedup >= goal,
                )
            else:
                report.target(f"faster than {peer} on todo-{sizes.todo_small}", f"≥ {goal:.0f} ×", "not measured", None)
    large = run_variants(
        report, [flows.sop_todo(work, url, sizes.todo_large), flows.plain_todo(url, sizes.todo_large)], sizes
    )
    if large:
        report.table(f"todo-{sizes.todo_large}", large, "plain Playwright", "The same flow with more items.")
        ratio = large["SOP engine"].median / large["plain Playwright"].median
        report.target(
            f"todo-{sizes.todo_large} wall time next to plain Playwright", "≤ 1.10 ×", f"{ratio:.2f} ×", ratio <= 1.10
        )


def run_variants(
    report: Report, variants: list[flows.Variant], sizes: Sizes, runs: int | None = None, warmup: int | None = None
) -> dict[str, Timing] | None:
    try:
        return interleaved(variants, ROOT, runs or sizes.runs, sizes.warmup if warmup is None else warmup)
    except Failed as exc:  # one variant failing (a peer that will not start) must not lose the rest
        if len(variants) > 2:
            report.note(f"{exc}; measured without it.")
            failing = str(exc).split(" exited")[0].split(" did not")[0]
            return run_variants(report, [v for v in variants if v.name != failing], sizes, runs, warmup)
        report.note(f"Not measured: {exc}")
        return None


def scrape_flow(report: Report, work: Path, base: str, sizes: Sizes) -> None:
    url = base + "quotes/page-1.html"
    timings = run_variants(report, [flows.sop_scrape(work, url), flows.plain_scrape(url)], sizes)
    if timings:
        report.table(
            "scrape",
            timings,
            "plain Playwright",
            "Three pages of quotes, every quote read, following the pager to the last page.",
        )


def batch_flows(report: Report, work: Path, base: str, sizes: Sizes) -> None:
    rows = flows.batch_rows(work, base + "todo.html", sizes.batch_rows, sizes.batch_items)
    lines = [
        f"### batch: todo-{sizes.batch_items} over {sizes.batch_rows} rows",
        "",
        "One browser, a context per row, N rows at a time. Throughput in rows a second (whole process).",
        "",
        "| concurrency | SOP engine batch | asyncio Playwright script | ratio | peak memory |",
        "| --- | --- | --- | --- | --- |",
    ]
    last_ratio = None
    peaks: dict[int, float] = {}
    for concurrency in sizes.concurrencies:
        timings = run_variants(
            report,
            [flows.sop_batch(work, rows, concurrency), flows.plain_batch(rows, concurrency)],
            sizes,
            runs=sizes.batch_runs,
            warmup=0,
        )
        if not timings:
            continue
        engine, plain = timings["SOP engine batch"], timings["asyncio Playwright"]
        ratio = plain.median / engine.median
        peaks[concurrency] = statistics.median(engine.peak_rss) / 2**20
        lowest = min(peaks)
        if concurrency > lowest:  # what one more run at once adds: browser context, its pages, its state
            per_run = (peaks[concurrency] - peaks[lowest]) / (concurrency - lowest)
            memory = f"{per_run:.0f} MiB more per run"
        else:
            memory = f"{peaks[concurrency]:.0f} MiB in all"
        lines.append(
            f"| {concurrency} | {sizes.batch_rows / engine.median:.2f} rows/s ({fmt(engine)}) | "
            f"{sizes.batch_rows / plain.median:.2f} rows/s ({fmt(plain)}) | {ratio:.2f} × | "
            f"{memory} |"
        )
        last_ratio = (concurrency, ratio)
    report.sections.append(
        "\n".join(lines) + "\n\nMemory: the peak resident memory of the SOP engine's batch process tree (Python, "
        "Playwright's driver, Chromium and its renderers); at the lowest concurrency in all, above it what each "
        "further concurrent run adds.\n"
    )
    if last_ratio:
        report.target(
            f"batch throughput at concurrency {last_ratio[0]} next to the asyncio script",
            "≥ 0.90 ×",
            f"{last_ratio[1]:.2f} ×",
            last_ratio[1] >= 0.90,
        )


def micro_figures(report: Report, sizes: Sizes) -> None:
    per_step = micro.step_overhead_ms(sizes.overhead_steps, sizes.overhead_repeats)
    rate = micro.commits_per_second(200 if sizes is SMOKE else 2000)
    median = micro.median(per_step)
    report.sections.append(
        "### engine figures\n\n| figure | value |\n| --- | --- |\n"
        f"| engine overhead per step (a no-op step × {sizes.overhead_steps}, state committed to SQLite with "
        f"synchronous=FULL, events emitted) | median {median:.3f} ms (min {min(per_step):.3f}, "
        f"max {max(per_step):.3f}, {len(per_step)} runs) |\n"
        f"| store commits a second (a step update with its event, one transaction each) | {rate:,.0f} |\n"
    )
    report.target("engine overhead per step (SQLite store)", "≤ 2 ms median", f"{median:.3f} ms", median <= 2.0)


def scale_figure(report: Report, sizes: Sizes, command: str) -> None:
    try:
        drains = scale.measure(sizes.scale_runs, sizes.scale_workers)
    except (RuntimeError, OSError) as exc:  # no PostgreSQL on this machine, or a process that would not start
        report.note(f"### scale\n\nNot measured: {str(exc).splitlines()[0]}")
        drains = []
    if drains:
        scale.figures(report, drains, command)
    else:
        scale.targets(report, [], None)


def write(report: Report, out: Path, command: str, started: datetime, smoke: bool) -> None:
    targets = ["| target | goal | measured | |", "| --- | --- | --- | --- |", *report.target_rows()]
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by the harness (`bench/`), not by hand: do not edit; run it again."
            + (" **This is a smoke run (tiny sizes, one run): its figures mean nothing.**" if smoke else ""),
            "",
            f"- command: `{command}`",
            f"- machine: {machine()}",
            f"- when: {started:%Y-%m-%d %H:%M} UTC, took {(datetime.now(UTC) - started).total_seconds() / 60:.1f} min",
            "- method: each variant is timed as a whole process (interpreter, browser launch and all), the rounds "
            "interleaved with a rotating order after a warm-up round; medians and the min–max. Ratios are of medians "
            "from the same invocation: absolute seconds vary between runs on these machines, ratios side by side hold.",
            "",
            "## Targets",
            "",
            *targets,
            "",
            "## Results",
            "",
            *report.sections,
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run, no peer install")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    every = "todo,scrape,batch,micro,scale"
    parser.add_argument("--only", default=every, help=f"comma-separated: {every}")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    chosen = set(args.only.split(","))
    started = datetime.now(UTC)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = Report()
    with tempfile.TemporaryDirectory() as folder, serve_folder(ROOT / "fixtures" / "sites") as base:
        work = Path(folder)
        if "todo" in chosen:
            todo_flows(report, work, base, sizes, install_peers=not args.smoke)
        if "scrape" in chosen:
            scrape_flow(report, work, base, sizes)
        if "batch" in chosen:
            batch_flows(report, work, base, sizes)
        if "micro" in chosen:
            micro_figures(report, sizes)
        if "scale" in chosen:
            scale_figure(report, sizes, command.strip())
    write(report, args.out, command.strip(), started, args.smoke)
    print(f"wrote {args.out}")
    print(
        json.dumps(
            [{"target": t[0], "goal": t[1], "measured": t[2], "met": t[3]} for t in report.targets],
            ensure_ascii=False,
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

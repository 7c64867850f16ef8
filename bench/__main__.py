"""`python -m bench` (`make bench`): times the SOP engine next to a plain Playwright script and next to peer
runners, as whole processes, interleaved; the engine's wall overhead per browser step, in a process of its own and
in a server whose runs are watched (bench/server_path.py); drains 1000 queued runs by 1, 2 and 4 worker processes
on PostgreSQL (bench/scale.py, about half an hour); and rewrites docs/benchmarks.md. `--only PARTS`: those parts,
put into the report there (when there is one) in place of theirs. `--smoke`: tiny sizes, one run."""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sop_engine.browser import find_chromium
from sop_engine.static_site import serve_folder

from . import flows, micro, peers, scale, server_path, telemetry
from .measure import Failed, Timing, interleaved
from .per_step import STEADY_RULE, Pair, figure_rows, overhead, steady
from .report import Report, fmt, write, write_parts

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
    todo_long: int  # the flow whose per-step cost is checked against the smaller ones': batch_runs rounds, no warm-up
    telemetry_rounds: int = 20  # paired rounds of todo_large with metrics and spans on and off, and with a trace
    scale_runs: int = 1000  # queued runs drained by each count of worker processes
    scale_workers: tuple[int, ...] = scale.WORKERS


FULL = Sizes(
    50, 200, 100, 20, (1, 4, 8), runs=3, warmup=1, overhead_steps=1000, overhead_repeats=5, batch_runs=2, todo_long=1000
)
SMOKE = Sizes(
    4, 6, 4, 3, (2,), 1, 0, 50, 1, batch_runs=1, todo_long=8, telemetry_rounds=1, scale_runs=4, scale_workers=(1, 2)
)
PARTS = ("todo", "scrape", "batch", "micro", "log", "long", "server", "telemetry", "scale")
Pairs = dict[int, Pair]  # todo-N's engine and plain medians, by N, from this invocation


def todo_flows(report: Report, work: Path, base: str, sizes: Sizes, install_peers: bool) -> Pairs:
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
    pairs: Pairs = {}
    timings = run_variants(report, small, sizes)
    if timings:
        report.table(
            f"todo-{sizes.todo_small}",
            timings,
            "plain Playwright",
            f"Open the todo page, add {sizes.todo_small} items (a fill and an Enter each), tick every other "
            "one, read the count left and check it. Whole process, browser launch included.",
        )
        pairs[sizes.todo_small] = pair_of(sizes.todo_small, timings)
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
    wall_target(report, f"todo-{sizes.todo_small}", timings, 1.08)
    large = run_variants(
        report, [flows.sop_todo(work, url, sizes.todo_large), flows.plain_todo(url, sizes.todo_large)], sizes
    )
    if large:
        report.table(f"todo-{sizes.todo_large}", large, "plain Playwright", "The same flow with more items.")
        pairs[sizes.todo_large] = pair_of(sizes.todo_large, large)
    wall_target(report, f"todo-{sizes.todo_large}", large, 1.05)
    what = f"wall overhead per browser step (slope todo-{sizes.todo_small} → todo-{sizes.todo_large})"
    if sizes.todo_small in pairs and sizes.todo_large in pairs:
        found = overhead(pairs[sizes.todo_small], pairs[sizes.todo_large])
        report.sections[-1] += (
            "\nWhat the engine adds to the wall time, from the medians of the two sizes: per browser step, the "
            "slope of its extra time (its median less plain Playwright's) between them; once per run, what is "
            "left of the smaller size's extra time at zero steps (bench/per_step.py). The in-process cost of a "
            "no-op step, with no browser, is under engine figures.\n\n| figure | value |\n| --- | --- |\n"
            + "\n".join(figure_rows(found))
            + "\n"
        )
        report.target(what, "≤ 0.8 ms median", f"{found.slope_ms:.3f} ms", found.slope_ms <= 0.8)
    else:
        report.target(what, "≤ 0.8 ms median", "not measured", None)
    return pairs


def pair_of(n: int, timings: dict[str, Timing]) -> Pair:
    return Pair(n, timings["SOP engine"].median, timings["plain Playwright"].median)


def wall_target(report: Report, flow: str, timings: dict[str, Timing] | None, goal: float) -> None:
    """The SOP engine's median wall time over plain Playwright's on a flow, at most `goal`."""
    what = f"{flow} wall time next to plain Playwright"
    if not timings:
        report.target(what, f"≤ {goal:.2f} ×", "not measured", None)
        return
    ratio = timings["SOP engine"].median / timings["plain Playwright"].median
    report.target(what, f"≤ {goal:.2f} ×", f"{ratio:.2f} ×", ratio <= goal)


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
    wall_target(report, "scrape", timings, 1.15)


def log_flow(report: Report, work: Path, base: str, sizes: Sizes) -> None:
    engine, plain = flows.sop_log(work), flows.plain_title(base + "todo.html")
    timings = run_variants(report, [engine, plain], sizes)
    what = "a one-step SOP (log) next to plain Playwright opening a page"
    if not timings:
        report.target(what, "≤ 0.50 ×", "not measured", None)
        return
    report.table(
        "one-step SOP: log",
        timings,
        plain.name,
        "An SOP whose only step logs a line (bench/log.yaml; no browser step, so no browser launched), run by "
        "the engine's CLI, next to a plain Playwright script that launches Chromium, opens the todo page and reads "
        "its title. Whole processes.",
    )
    ratio = timings[engine.name].median / timings[plain.name].median
    said = f"{ratio:.2f} × ({timings[engine.name].median:.2f} s, {timings[plain.name].median:.2f} s)"
    report.target(what, "≤ 0.50 ×", said, ratio <= 0.5)


def long_flow(report: Report, work: Path, base: str, sizes: Sizes, pairs: Pairs) -> None:
    """todo-N at a large N: the engine's wall overhead per browser step stays what it is at smaller sizes."""
    url = base + "todo.html"
    note = ""
    for n in (sizes.todo_small, sizes.todo_large):
        if n not in pairs:  # the todo part was not run: its sizes are timed here, without peers or a table
            timings = run_variants(report, [flows.sop_todo(work, url, n), flows.plain_todo(url, n)], sizes)
            if timings:
                pairs[n] = pair_of(n, timings)
                note = f" todo-{sizes.todo_small} and todo-{sizes.todo_large} were timed for this part alone."
    n = sizes.todo_long
    timings = run_variants(
        report,
        [flows.sop_todo(work, url, n), flows.plain_todo(url, n)],
        sizes,
        runs=sizes.batch_runs,
        warmup=0,
    )
    what = (
        f"wall overhead per browser step steady as a run grows (slope todo-{sizes.todo_large} → todo-{n} next to "
        f"todo-{sizes.todo_small} → todo-{sizes.todo_large})"
    )
    if not timings or sizes.todo_small not in pairs or sizes.todo_large not in pairs:
        report.target(what, "within 10 % or 0.1 ms", "not measured", None)
        return
    before = overhead(pairs[sizes.todo_small], pairs[sizes.todo_large])
    after = overhead(pairs[sizes.todo_large], pair_of(n, timings))
    report.table(
        f"todo-{n}",
        timings,
        "plain Playwright",
        f"The same flow with {n} items: {sizes.batch_runs} round{'s' if sizes.batch_runs > 1 else ''}, no warm-up "
        "round (it is long, and the flows before it warmed the machine up). The engine's wall overhead per browser "
        f"step from todo-{sizes.todo_large} to todo-{n} should "
        f"be the one from todo-{sizes.todo_small} to todo-{sizes.todo_large}: {STEADY_RULE}.{note}",
    )
    report.sections[-1] += "\n| figure | value |\n| --- | --- |\n" + "\n".join(figure_rows(after)) + "\n"
    said = f"{after.slope_ms:.3f} ms next to {before.slope_ms:.3f} ms"
    report.target(what, "within 10 % or 0.1 ms", said, steady(before, after))


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
    ratios: dict[int, float] = {}
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
        ratios[concurrency] = ratio
    report.sections.append(
        "\n".join(lines) + "\n\nMemory: the peak resident memory of the SOP engine's batch process tree (Python, "
        "Playwright's driver, Chromium and its renderers); at the lowest concurrency in all, above it what each "
        "further concurrent run adds.\n"
    )
    for concurrency in sizes.concurrencies:
        what = f"batch throughput at concurrency {concurrency} next to the asyncio script"
        if concurrency in ratios:
            report.target(what, "≥ 0.95 ×", f"{ratios[concurrency]:.2f} ×", ratios[concurrency] >= 0.95)
        else:
            report.target(what, "≥ 0.95 ×", "not measured", None)


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
    what = "in-process engine overhead per no-op step (no browser, SQLite store)"
    report.target(what, "≤ 2 ms median", f"{median:.3f} ms", median <= 2.0)


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run, no peer install")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    every = ",".join(PARTS)
    parser.add_argument(
        "--only", default=every, help=f"comma-separated: {every}; put into the report at --out when there is one"
    )
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    chosen = [part for part in PARTS if part in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(PARTS)
    if unknown or not chosen:
        parser.error(f"--only takes parts among {every}, not {','.join(sorted(unknown)) or 'none'}")
    started = datetime.now(UTC)
    command = ("python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip()
    report = Report()
    with tempfile.TemporaryDirectory() as folder, serve_folder(ROOT / "fixtures" / "sites") as base:
        work = Path(folder)
        pairs: Pairs = {}
        if "todo" in chosen:
            pairs = todo_flows(report, work, base, sizes, install_peers=not args.smoke)
        if "long" in chosen:
            long_flow(report, work, base, sizes, pairs)
        if "scrape" in chosen:
            scrape_flow(report, work, base, sizes)
        if "log" in chosen:
            log_flow(report, work, base, sizes)
        if "batch" in chosen:
            batch_flows(report, work, base, sizes)
        if "micro" in chosen:
            micro_figures(report, sizes)
        if "server" in chosen:
            flow_sizes = (sizes.todo_small, sizes.todo_large)
            server_path.server_figure(report, work, base + "todo.html", flow_sizes, sizes.runs, sizes.warmup)
        if "telemetry" in chosen:
            telemetry.telemetry_figure(
                report, work, base + "todo.html", sizes.todo_large, sizes.telemetry_rounds, sizes.warmup
            )
        if "scale" in chosen:
            scale_figure(report, sizes, command)
    if len(chosen) < len(PARTS) and args.out.exists():
        write_parts(report, args.out, command, started, chosen, args.smoke)
    else:
        write(report, args.out, command, started, args.smoke)
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

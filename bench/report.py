"""The report's parts: sections of results and rows of targets; the report's file, written whole or with some
parts put into the one written before."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sop_engine.browser import find_chromium

from .measure import Timing

MARK = {True: "met", False: "**missed**", None: "not measured"}


def fmt(timing: Timing) -> str:
    return f"{timing.median:.2f} s ({min(timing.seconds):.2f}–{max(timing.seconds):.2f})"


class Report:
    def __init__(self) -> None:
        self.sections: list[str] = []
        self.targets: list[tuple[str, str, str, bool | None]] = []

    def table(self, title: str, timings: dict[str, Timing], floor: str, note: str = "") -> None:
        lines = [
            f"### {title}",
            "",
            note,
            "",
            "| variant | median (min–max) | ratio to " + floor + " |",
            "| --- | --- | --- |",
        ]
        base = timings[floor].median
        for name, timing in timings.items():
            lines.append(f"| {name} | {fmt(timing)} | {timing.median / base:.2f} × |")
        self.sections.append("\n".join(line for line in lines if line is not None) + "\n")

    def target(self, what: str, goal: str, measured: str, met: bool | None) -> None:
        self.targets.append((what, goal, measured, met))

    def target_rows(self) -> list[str]:
        return [f"| {what} | {goal} | {measured} | {MARK[met]} |" for what, goal, measured, met in self.targets]

    def note(self, text: str) -> None:
        self.sections.append(text + "\n")


def splice(text: str, part: Report) -> str:
    """`text` (a report written before) with `part`'s sections in place of its sections of the same kind (the
    heading up to its colon), or at the end; and `part`'s targets in place of those of the same names, or at
    the end of the table of targets."""
    lines = text.rstrip("\n").split("\n")
    names = tuple(f"| {what} |" for what, *_ in part.targets)
    lines = [line for line in lines if not line.startswith(names)]
    at = lines.index("## Targets") + 1
    while at < len(lines) and not lines[at].startswith("|"):
        at += 1
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    lines[at:at] = part.target_rows()
    text = "\n".join(lines) + "\n"
    for section in part.sections:
        kind = section.split("\n", 1)[0].split(":", 1)[0]
        found = re.search(rf"^{re.escape(kind)}\b.*?(?=^### |\Z)", text, flags=re.M | re.S)
        if found:
            text = text[: found.start()] + section + ("\n" if found.end() < len(text) else "") + text[found.end() :]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    return text


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


PARTIAL = "- parts run since: "


def write(report: Report, out: Path, command: str, started: datetime, smoke: bool) -> None:
    """The whole report, in place of the file."""
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
            "- parts: `python -m bench --only PARTS` puts the sections and targets of the parts it runs in place of "
            "theirs and keeps the rest, and this header, as the command above wrote them; the line below (when there "
            "is one) names the last such run.",
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


def write_parts(report: Report, out: Path, command: str, started: datetime, parts: list[str], smoke: bool) -> None:
    """`report`'s parts put into the report in `out` (splice), with a header line naming this run."""
    said = f"{PARTIAL}`{command}` ({', '.join(parts)}), {started:%Y-%m-%d %H:%M} UTC"
    said += " **(a smoke run: the figures of its parts mean nothing)**" if smoke else ""
    lines = splice(out.read_text(), report).split("\n")
    lines = [line for line in lines if not line.startswith(PARTIAL)]
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("- parts: ")), None)
    if at is None:  # a report written before this line was: under the header's list
        at = next(i for i, line in enumerate(lines) if line == "## Targets") - 1
    lines.insert(at, said)
    out.write_text("\n".join(lines))

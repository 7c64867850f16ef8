"""The report's parts: sections of results and rows of targets; and putting one part into a report written before."""

from __future__ import annotations

import re

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

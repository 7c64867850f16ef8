"""Timing a whole process, with the peak memory of its process tree."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .flows import Variant

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def descendants(*pids: int) -> list[int]:
    """The processes and all their descendants."""
    tree, found, todo = _children(), [], list(pids)
    while todo:
        current = todo.pop()
        found.append(current)
        todo += tree.get(current, [])
    return found


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for current in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):  # the process may have just ended
            total += int((Path("/proc") / str(current) / "statm").read_text().split()[1]) * PAGE
    return total


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """Seconds the processes' threads have run on a core, and have been ready to run but waited for one (the
    kernel's schedstat), summed."""
    ran = waited = 0
    for pid in pids:
        for task in (Path("/proc") / str(pid) / "task").glob("*/schedstat"):
            with contextlib.suppress(OSError, IndexError, ValueError):  # the thread may have just ended
                on_cpu, queued, _ = task.read_text().split()
                ran, waited = ran + int(on_cpu), waited + int(queued)
    return ran / 1e9, waited / 1e9


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class Failed(RuntimeError):
    pass


def run_once(variant: Variant, cwd: Path, timeout: float = 900) -> tuple[float, int]:
    env = {**os.environ, **variant.env}
    env.pop("SOP_DATABASE_URL", None)
    peak = 0
    started = time.perf_counter()
    process = subprocess.Popen(variant.command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.1):
            peak = max(peak, tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise Failed(f"{variant.name} did not finish within {timeout}s") from None
    finally:
        done.set()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        tail = (err or out).decode(errors="replace").strip().splitlines()[-5:]
        raise Failed(f"{variant.name} exited {process.returncode}: {' | '.join(tail)}")
    return seconds, peak


def interleaved(variants: list[Variant], cwd: Path, runs: int, warmup: int) -> dict[str, Timing]:
    """Each round runs every variant once, in a rotating order, so that a noisy moment of the machine
    weighs on all of them alike; the warm-up rounds are not counted."""
    timings = {v.name: Timing() for v in variants}
    for round_ in range(warmup + runs):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            seconds, peak = run_once(variant, cwd)
            if round_ >= warmup:
                timings[variant.name].seconds.append(seconds)
                timings[variant.name].peak_rss.append(peak)
    return timings

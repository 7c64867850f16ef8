"""Where a todo-N run's Python time goes, by component: `python -m bench.profile {cli,server} [--size N]
[--mode gil|idle] [--out DIR]` runs the todo flow once under `py-spy record` (the `run` command; or a warm
`serve --concurrency 1` process, watched by a Socket.IO client as in bench/server_path.py, py-spy attached to
its pid for one run), then puts each sample under the innermost frame that names a component and prints
milliseconds a browser step and shares. `--gil`: only while Python holds the GIL (its CPU); `--idle`: every
sample, waits included (the wall). The command line's profile holds its start-up (imports, the browser's
launch): read a large N. On a loaded machine a thread that holds the GIL but waits for a core counts too: read
the shares. py-spy is stopped before this ends. Used for docs/speed.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from . import flows
from .per_step import browser_steps

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
RATE = 250  # samples a second
# (component, what names it in a frame): the first that matches the innermost naming frame wins
COMPONENTS = [
    ("event loop and threads", ("asyncio/", "selectors.py", "threading.py", "concurrent/futures", "uvicorn/_compat")),
    ("live frames", ("runner/frames.py", "b64encode")),
    ("Socket.IO / Engine.IO", ("socketio/", "engineio/")),
    ("feed, audience, broker", ("web/live.py", "web/feed.py", "web/audience.py", "web/broker.py", "web/relay.py")),
    ("store", ("sop_engine/store/", "sqlite3", "sqlalchemy/")),
    ("events, journal", ("sop_engine/events.py",)),
    ("progress", ("sop_engine/progress.py",)),
    ("metrics, telemetry", ("sop_engine/metrics.py", "sop_engine/telemetry.py", "sop_engine/spans.py", "prometheus")),
    ("network guard", ("sop_engine/policy/",)),
    ("Playwright's client", ("playwright/", "pyee/", "greenlet")),
    ("settings", ("sop_engine/settings.py",)),
    ("engine (runner, attempts, actions, templates)", ("sop_engine/",)),
    ("web, other", ("web/",)),
    ("uvicorn, websocket framing", ("uvicorn/", "starlette/", "h11/", "websockets/", "wsproto/")),
]


def component(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, marks in COMPONENTS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def table(raw: Path, steps: int) -> list[tuple[str, float, float]]:
    """(component, ms a step, share) from py-spy's raw output, largest first."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[component(stack)] += int(n)
    total = sum(counts.values()) or 1
    return [(name, 1000 * n / RATE / steps, n / total) for name, n in counts.most_common()]


def spy(mode: str, out: Path, target: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    command = [PY_SPY, "record", "-r", str(RATE), "-f", "raw", "-o", str(out), f"--{mode}", *target]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_cli(url: str, n: int, mode: str, work: Path) -> Path:
    variant = flows.sop_todo(work, url, n)
    env = {**os.environ, **variant.env}
    env.pop("SOP_DATABASE_URL", None)
    subprocess.run(variant.command, env=env, capture_output=True, check=True)  # the database made first
    raw = work / f"cli-{mode}.raw"
    process = spy(mode, raw, ["--", *variant.command], env)  # the run's own data folder, as above
    process.wait()
    return raw


async def _profile_server(url: str, n: int, mode: str, work: Path) -> Path:
    import httpx

    from .server_path import serving, watched_run

    token = secrets.token_urlsafe(24)
    raw = work / f"server-{mode}.raw"
    started: list[subprocess.Popen[bytes]] = []
    with serving(work / "server-data", token, started=started) as server:
        async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"}) as api:
            await api.post("/api/sops", content=(flows.BENCH / "todo.yaml").read_bytes())
            await watched_run(api, server, token, {"url": url, "items": flows.todo_items(20)})  # browser launched
            process = spy(mode, raw, ["--pid", str(started[0].pid)])
            try:
                await asyncio.sleep(1)  # py-spy attached
                await watched_run(api, server, token, {"url": url, "items": flows.todo_items(n)})
            finally:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=60)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("path", choices=("cli", "server"))
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--mode", choices=("gil", "idle"), default="gil")
    parser.add_argument("--out", type=Path, default=None, help="keep py-spy's raw output here")
    args = parser.parse_args()
    from sop_engine.static_site import serve_folder

    with tempfile.TemporaryDirectory() as folder, serve_folder(flows.BENCH.parent / "fixtures" / "sites") as base:
        work = args.out or Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        url = base + "todo.html"
        if args.path == "cli":
            raw = profile_cli(url, args.size, args.mode, work)
        else:
            raw = asyncio.run(_profile_server(url, args.size, args.mode, work))
        steps = browser_steps(args.size)
        rows = table(raw, steps)
        print(json.dumps({"path": args.path, "size": args.size, "mode": args.mode, "browser_steps": steps}))
        for name, ms, share in rows:
            print(f"{share:6.1%}  {ms:6.2f} ms a step  {name}")


if __name__ == "__main__":
    main()

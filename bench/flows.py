"""The benchmark flows, and each variant as a whole-process command: the SOP engine, a plain Playwright
script, Selenium IDE's side runner and Chrome DevTools Recorder's @puppeteer/replay."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent


@dataclass
class Variant:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def todo_items(n: int) -> list[str]:
    return [f"item {i}" for i in range(n)]


def sop_todo(work: Path, url: str, n: int) -> Variant:
    inputs = work / f"todo-{n}.json"
    inputs.write_text(json.dumps({"url": url, "items": todo_items(n)}))
    return Variant(
        "SOP engine",
        [sys.executable, "-m", "web", "run", str(BENCH / "todo.yaml"), "--inputs-json", str(inputs), "--json"],
        {"SOP_DATA_DIR": str(work / "data")},
    )


def plain_todo(url: str, n: int) -> Variant:
    return Variant("plain Playwright", [sys.executable, str(BENCH / "plain_todo.py"), url, str(n)])


def side_project(work: Path, base: str, n: int) -> Path:
    """A Selenium IDE project doing the todo flow, as the IDE would save it."""

    def command(name: str, target: str, value: str = "") -> dict[str, object]:
        return {"id": uuid.uuid4().hex, "comment": "", "command": name, "target": target, "targets": [], "value": value}

    commands = [command("open", "/todo.html")]
    for item in todo_items(n):
        commands.append(command("type", "css=input.new-todo", item))
        commands.append(command("sendKeys", "css=input.new-todo", "${KEY_ENTER}"))
    for i in range(0, n, 2):
        commands.append(command("click", f"css=ul.todo-list li:nth-child({i + 1}) input.toggle"))
    commands.append(command("assertText", "css=.todo-count strong", str(n // 2)))
    test = {"id": uuid.uuid4().hex, "name": f"todo-{n}", "commands": commands}
    project = {
        "id": uuid.uuid4().hex,
        "version": "2.0",
        "name": f"todo-{n}",
        "url": base,
        "tests": [test],
        "suites": [
            {
                "id": uuid.uuid4().hex,
                "name": "bench",
                "persistSession": False,
                "parallel": False,
                "timeout": 600,
                "tests": [test["id"]],
            }
        ],
        "urls": [base],
        "plugins": [],
    }
    path = work / f"todo-{n}.side"
    path.write_text(json.dumps(project))
    return path


def side_todo(work: Path, peers: Path, base: str, n: int, chromium: str) -> Variant:
    args = [
        "headless=new",
        "disable-gpu",
        "disable-background-networking",
        "disable-component-update",
        "disable-sync",
        "no-first-run",
        "no-sandbox",
    ]
    capabilities = f"browserName=chrome goog:chromeOptions.binary={chromium} goog:chromeOptions.args=[{','.join(args)}]"
    return Variant(
        "selenium-side-runner",
        [
            str(peers / "node_modules" / ".bin" / "selenium-side-runner"),
            "-c",
            capabilities,
            "--base-url",
            base,
            "-w",
            "1",
            str(side_project(work, base, n)),
        ],
    )


def recording(work: Path, url: str, n: int) -> Path:
    """A Chrome DevTools Recorder recording of the todo flow, as the Recorder exports it."""
    steps: list[dict[str, object]] = [
        {
            "type": "setViewport",
            "width": 1280,
            "height": 720,
            "deviceScaleFactor": 1,
            "isMobile": False,
            "hasTouch": False,
            "isLandscape": False,
        },
        {"type": "navigate", "url": url, "assertedEvents": [{"type": "navigation", "url": url, "title": "Todo"}]},
    ]
    for item in todo_items(n):
        steps.append({"type": "change", "value": item, "selectors": [["input.new-todo"]]})
        steps.append({"type": "keyDown", "key": "Enter"})
        steps.append({"type": "keyUp", "key": "Enter"})
    for i in range(0, n, 2):
        steps.append(
            {
                "type": "click",
                "selectors": [[f"ul.todo-list li:nth-child({i + 1}) input.toggle"]],
                "offsetX": 5,
                "offsetY": 5,
            }
        )
    steps.append(
        {
            "type": "waitForExpression",
            "expression": f"document.querySelector('.todo-count strong').textContent === '{n // 2}'",
        }
    )
    path = work / f"todo-{n}.recording.json"
    path.write_text(json.dumps({"title": f"todo-{n}", "steps": steps}))
    return path


def replay_todo(work: Path, peers: Path, url: str, n: int, chromium: str) -> Variant:
    # an ES module finds its packages from where it lies: it runs from the peers' folder
    runner = peers / "replay_runner.mjs"
    runner.write_text((BENCH / "replay_runner.mjs").read_text())
    return Variant("@puppeteer/replay", ["node", str(runner), str(recording(work, url, n)), chromium])


def sop_scrape(work: Path, url: str) -> Variant:
    return Variant(
        "SOP engine",
        [sys.executable, "-m", "web", "run", str(BENCH / "scrape.yaml"), "--input", f"url={url}", "--json"],
        {"SOP_DATA_DIR": str(work / "data")},
    )


def plain_scrape(url: str) -> Variant:
    return Variant("plain Playwright", [sys.executable, str(BENCH / "plain_scrape.py"), url])


def batch_rows(work: Path, url: str, rows: int, items: int) -> Path:
    path = work / f"rows-{rows}x{items}.jsonl"
    path.write_text("".join(json.dumps({"url": url, "items": todo_items(items)}) + "\n" for _ in range(rows)))
    return path


def sop_batch(work: Path, rows_file: Path, concurrency: int) -> Variant:
    return Variant(
        "SOP engine batch",
        [
            sys.executable,
            "-m",
            "web",
            "batch",
            str(BENCH / "todo.yaml"),
            "--data",
            str(rows_file),
            "--concurrency",
            str(concurrency),
            "--json",
        ],
        {"SOP_DATA_DIR": str(work / "data")},
    )


def plain_batch(rows_file: Path, concurrency: int) -> Variant:
    return Variant(
        "asyncio Playwright", [sys.executable, str(BENCH / "plain_batch.py"), str(rows_file), str(concurrency)]
    )


def sop_log(work: Path) -> Variant:
    return Variant(
        "SOP engine (one log step)",
        [sys.executable, "-m", "web", "run", str(BENCH / "log.yaml"), "--json"],
        {"SOP_DATA_DIR": str(work / "data")},
    )


def plain_title(url: str) -> Variant:
    return Variant(
        "plain Playwright (open a page, read its title)", [sys.executable, str(BENCH / "plain_title.py"), url]
    )

"""A run's Playwright trace: kept by `trace: on | on-failure` (the document, --trace, SOP_TRACE), with no secret in
any entry of its zip in any form, served by the API and opened in Playwright's own trace viewer."""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from playwright.async_api import expect

from sop_engine.document import load_sop, resolve_inputs
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from tests.conftest import post_sop, sign_in, start_run, wait_run
from tests.loopback import LoopbackServer, Reply, Request, html_reply, json_reply

SECRET = "Hunter2 Sécret/ok"  # a space, a slash and a non-ASCII letter: its encoded forms differ from it
LEARNT = SECRET[::-1]  # a secret the run learns as it goes: a value computed from the secret input
API_KEY = "Key-7f3a9Zq-credential"  # a credential the browser sends in a header with every request
SHOWN = "Plainly-Visible-Word"  # not a secret: a trace keeps it, and the search below finds it

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>traced</title></head>
<body>
<input id="field" type="text" aria-label="word">
<div id="box"></div><div id="encoded"></div><div id="shown">SHOWN</div>
<button id="send" type="button">Send</button>
<script>
  const box = document.getElementById("box");
  if (location.hash.length > 1) box.textContent = decodeURIComponent(location.hash.slice(1));
  document.getElementById("send").addEventListener("click", async () => {
    const value = document.getElementById("field").value;
    box.textContent = value;
    const bytes = new TextEncoder().encode(value);
    document.getElementById("encoded").textContent = btoa(String.fromCharCode(...bytes));
    await fetch("echo?pw=" + encodeURIComponent(value));
    await fetch("echo", {method: "POST", body: JSON.stringify({pw: value})});
    const done = document.createElement("p");
    done.id = "done";
    done.textContent = "done";
    document.body.append(done);
  });
</script>
</body></html>
""".replace("SHOWN", SHOWN)


def answer(request: Request) -> Reply:
    """The page, and an echo of what it sends: the secret comes back in network bodies, JSON- and HTML-escaped."""
    if request.path.startswith("/page"):
        return html_reply(PAGE)
    if request.method == "POST":
        return html_reply(f"<p>{html.escape(request.body.decode())}</p>")
    query = request.path.partition("?pw=")[2]
    return json_reply({"echo": unquote(query)})


@pytest.fixture
def echo() -> Iterator[str]:
    server = LoopbackServer(answer)
    yield server.url
    server.close()


def document(url: str, trace: str | None = "on-failure", fail: bool = True) -> str:
    text = f"""
sop: 1
id: traced
inputs:
  password: {{type: string, secret: true}}
  api_key: {{type: string, secret: true}}
browser:
  extra_http_headers: {{X-Api-Key: "Bearer {{{{ api_key }}}}"}}
steps:
  - {{id: derive, action: set, inputs: [password], values: {{backwards: "{{{{ password|reverse }}}}"}}}}
  - {{id: open, action: navigate, url: "{url}/page#{{{{ backwards }}}}", inputs: [backwards]}}
  - {{id: type, action: fill, selector: "#field", value: "{{{{ password }}}}", inputs: [password]}}
  - {{id: send, action: click, selector: "#send"}}
  - {{id: sent, action: wait, selector: "#done"}}
"""
    if fail:
        text += '  - {id: check, action: assert, selector: "#box", text: "something else", timeout: 200ms}\n'
    return text + (f"trace: {trace}\n" if trace else "")


async def run_document(store, browser_host, text: str, trace: str | None = None):
    loaded = load_sop(text)
    inputs = resolve_inputs(loaded.sop, {"password": SECRET, "api_key": API_KEY})
    runner = Runner(store, browser_host, trace=trace)
    row = await runner.create_run(loaded, inputs)
    return await runner.execute(row.id, loaded, inputs)


def trace_file(data_dir: Path, run_id: str) -> Path:
    return data_dir / "artifacts" / run_id / "trace.zip"


# searching a zip for a secret, in every form --------------------------------------------------

_BASE64 = re.compile(rb"[A-Za-z0-9+/_-]{8,}={0,2}")


def forms(secret: str) -> set[str]:
    """How a secret may be written in text, lower-cased: plain, URL-, JSON-, HTML-escaped."""
    written = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
    }
    return {form.lower() for form in written}


def _decoded_base64(data: bytes) -> Iterator[bytes]:
    for match in _BASE64.finditer(data):
        chunk = match.group().rstrip(b"=")
        for start in range(4):  # the secret may sit inside a longer base64 text, at any alignment
            piece = chunk[start:]
            piece = piece[: len(piece) // 4 * 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    decoded = decode(piece)
                except (binascii.Error, ValueError):
                    continue
                yield decoded


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            with contextlib.suppress(ValueError):
                stack.append(json.loads(item))  # JSON inside a string (a request body)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _views(data: bytes, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Every way the bytes may be read as text: as they are, URL-decoded, JSON-unescaped, base64-decoded, and
    inside any compression."""
    if depth > 3:
        return
    text = data.decode("utf-8", "replace")
    yield "raw", text
    yield "latin-1", data.decode("latin-1")
    yield "url-decoded", unquote(text)
    yield "form-decoded", unquote_plus(text)
    for line in text.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        for string in _strings(parsed):
            yield "json", string
            yield "json, url-decoded", unquote(string)
    for decoded in _decoded_base64(data):
        yield "base64", decoded.decode("utf-8", "replace")
    for unpack in (gzip.decompress, zlib.decompress):
        try:
            inner = unpack(data)
        except (OSError, zlib.error, EOFError):
            continue
        for how, view in _views(inner, depth + 1):
            yield f"compressed, {how}", view
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as nested:
            for name in nested.namelist():
                for how, view in _views(nested.read(name), depth + 1):
                    yield f"zip {name}, {how}", view


def found_in(zip_path: Path, secrets: list[str]) -> list[str]:
    """Where any of the secrets shows in the zip, in any form: entry names and every entry's bytes."""
    wanted = {form for secret in secrets for form in forms(secret)}
    hits = []
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            hits += [f"the name {info.filename}" for form in wanted if form in info.filename.lower()]
            for how, view in _views(archive.read(info)):
                lowered = view.lower()
                hits += [f"{info.filename} ({how}): {form!r}" for form in wanted if form in lowered]
    return hits


def actions(zip_path: Path) -> list[dict[str, Any]]:
    """The calls the trace recorded (its `before` events), in order."""
    with zipfile.ZipFile(zip_path) as archive:
        lines = archive.read("trace.trace").decode().splitlines()
    return [event for event in map(json.loads, lines) if event.get("type") == "before"]


# the tests ----------------------------------------------------------------------------------


async def test_a_failed_run_keeps_a_trace_without_any_secret_in_any_form(store, browser_host, echo, data_dir):
    outcome = await run_document(store, browser_host, document(echo))
    assert outcome.status == RunStatus.FAILED, outcome.error
    kept = store.run(outcome.run_id).trace
    assert kept["status"] == "saved", kept
    assert kept["scrubbed"] is True and kept["dropped_images"] > 0  # the screencast frames: the run had secrets
    path = trace_file(data_dir, outcome.run_id)
    assert path.stat().st_size == kept["bytes"]
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
    assert {"trace.trace", "trace.network"} <= set(names)
    assert any(name.startswith("resources/") for name in names)  # network bodies: the page, the echoes
    assert not any(name.startswith("screencast/") or name.endswith((".jpeg", ".png")) for name in names)
    methods = [event["method"] for event in actions(path)]
    assert {"goto", "fill", "click"} <= set(methods), methods
    fill = next(event for event in actions(path) if event["method"] == "fill")
    assert fill["params"]["value"] == "***"
    with zipfile.ZipFile(path) as archive:  # every frame left points at an entry that is there
        events = [json.loads(line) for line in archive.read("trace.trace").decode().splitlines()]
        network = [json.loads(line) for line in archive.read("trace.network").decode().splitlines()]
    assert not [event for event in events if event.get("type") == "screencast-frame"]
    bodies = [entry["snapshot"]["response"]["content"].get("_file") for entry in network]
    assert all(body in names for body in bodies if body), bodies
    with zipfile.ZipFile(path) as archive:  # a masked body is named by what it holds now
        for name in names:
            if name.startswith("resources/"):
                assert hashlib.sha1(archive.read(name)).hexdigest() in name
    assert found_in(path, [SECRET, LEARNT, API_KEY]) == []


async def test_the_search_finds_what_a_trace_holds(store, browser_host, echo, data_dir):
    """The search above can fail: in a trace kept whole (a run without secrets) it finds the page's words, and
    the secret's forms the page wrote."""
    text = document(echo, trace="on").replace("secret: true", "secret: false")
    outcome = await run_document(store, browser_host, text)
    assert outcome.status == RunStatus.FAILED, outcome.error
    kept = store.run(outcome.run_id).trace
    assert kept["status"] == "saved" and kept["scrubbed"] is False and kept["dropped_images"] == 0
    path = trace_file(data_dir, outcome.run_id)
    with zipfile.ZipFile(path) as archive:
        assert any(name.startswith("screencast/") for name in archive.namelist())  # no secret: pictures kept
    hits = found_in(path, [SHOWN, SECRET, LEARNT, API_KEY])
    assert any(repr(SHOWN.lower()) in hit for hit in hits)
    assert any(repr(quote(SECRET, safe="").lower()) in hit for hit in hits)  # the URL the page fetched
    assert any("base64" in hit and repr(SECRET.lower()) in hit for hit in hits)  # what the page encoded
    assert any(repr(LEARNT.lower()) in hit for hit in hits)
    assert any(hit.startswith("trace.network") and repr(API_KEY.lower()) in hit for hit in hits)  # the header


async def test_a_run_that_completes_keeps_no_trace_on_failure_only(store, browser_host, echo, data_dir):
    outcome = await run_document(store, browser_host, document(echo, fail=False))
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert store.run(outcome.run_id).trace is None
    assert not trace_file(data_dir, outcome.run_id).exists()


async def test_trace_on_keeps_the_trace_of_a_run_that_completes(store, browser_host, echo, data_dir):
    outcome = await run_document(store, browser_host, document(echo, trace="on", fail=False))
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert store.run(outcome.run_id).trace["status"] == "saved"
    path = trace_file(data_dir, outcome.run_id)
    assert {"goto", "fill", "click"} <= {event["method"] for event in actions(path)}
    assert found_in(path, [SECRET, LEARNT, API_KEY]) == []


async def test_the_command_line_wins_over_the_document_and_the_document_over_the_server(
    store, browser_host, echo, data_dir, monkeypatch
):
    monkeypatch.setenv("SOP_TRACE", "on")  # the server's default: a document that says nothing keeps its trace
    said_nothing = await run_document(store, browser_host, document(echo, trace=None, fail=False))
    assert store.run(said_nothing.run_id).trace["status"] == "saved"
    said_off = await run_document(store, browser_host, document(echo, trace="off", fail=False))
    assert store.run(said_off.run_id).trace is None  # the document's `off` wins over SOP_TRACE
    overridden = await run_document(store, browser_host, document(echo, trace="off", fail=False), trace="on")
    assert store.run(overridden.run_id).trace["status"] == "saved"  # as --trace on does
    assert trace_file(data_dir, overridden.run_id).exists()


# in the server: the API, and Playwright's trace viewer in real Chromium --------------------------

HUMAN = """
sop: 1
id: SOP_ID
trace: on-failure
steps:
  - {id: open, action: navigate, url: "/demo/secret-box.html"}
  - id: ask
    action: input
    message: The code from the letter
    fields:
      code: {type: string, secret: true}
  - {id: type, action: fill, selector: "#field", value: "{{ code }}", inputs: [code]}
  - {id: show, action: click, selector: "#show"}
  - {id: check, action: assert, selector: "#box", text: "something else", timeout: 200ms}
"""
CODE = "Letter-Code 7/é"  # learnt as the run goes: a person types it into the input step's secret field


async def test_the_server_serves_the_trace_and_the_viewer_shows_its_actions(api, server, browser_host, tmp_path):
    run_id = start_run(api, post_sop(api, HUMAN))
    wait_run(api, run_id, "paused")
    assert api.get(f"/api/runs/{run_id}/trace").status_code == 404  # none yet
    reply = api.post(f"/api/runs/{run_id}/steps/ask/submit", json={"values": {"code": CODE}})
    assert reply.status_code == 200, reply.text
    run = wait_run(api, run_id, "failed")
    trace = run["trace"]
    assert trace["status"] == "saved" and trace["download"] == f"/api/runs/{run_id}/trace", trace
    assert trace["viewer"] == f"/trace-viewer/index.html?trace=%2Fapi%2Fruns%2F{run_id}%2Ftrace"
    download = api.get(trace["download"])
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    assert int(download.headers["content-length"]) == trace["bytes"]
    path = tmp_path / "trace.zip"
    path.write_bytes(download.content)
    assert found_in(path, [CODE]) == []
    assert {"goto", "fill", "click"} <= {event["method"] for event in actions(path)}
    assert api.get("/api/runs/nope/trace").status_code == 404

    context = await browser_host.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        await sign_in(page, server.url)
        await page.goto(server.url + trace["viewer"])
        listed = page.locator(".action-title")
        await expect(listed.first).to_be_visible(timeout=20000)
        titles = [title.split("\n")[0] for title in await listed.all_inner_texts()]
        assert {"Navigate", 'Fill "***"', "Click"} <= set(titles), titles
        await listed.filter(has_text="Click").first.click()
        snapshot = page.frame_locator("iframe.snapshot-visible")  # time travel: the page's DOM at the click
        await expect(snapshot.locator("#field")).to_have_value("***")
        await expect(snapshot.locator("#show")).to_have_text("Show")
        assert CODE not in await page.content()
    finally:
        await context.close()


def test_the_command_line_trace_option(tmp_path: Path, site: str):
    sop = tmp_path / "plain.yaml"
    sop.write_text(
        f"""
sop: 1
id: plain
trace: off
steps:
  - {{id: open, action: navigate, url: "{site}secret-box.html"}}
  - {{id: type, action: fill, selector: "#field", value: "{SHOWN}"}}
"""
    )
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    env.pop("SOP_DATABASE_URL", None)
    command = [sys.executable, "-m", "sop_engine", "run", str(sop), "--json"]
    done = subprocess.run([*command, "--trace", "on"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    path = trace_file(tmp_path / "data", run_id)
    with zipfile.ZipFile(path) as archive:  # what `playwright show-trace` opens: actions, network, resources
        names = archive.namelist()
    assert {"trace.trace", "trace.network"} <= set(names)
    assert any(name.startswith("resources/") for name in names) and any(
        name.startswith("screencast/") for name in names
    )
    assert {"goto", "fill"} <= {event["method"] for event in actions(path)}
    refused = subprocess.run([*command, "--trace", "always"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--trace" in refused.stderr


# the scrubbing of a zip, entry by entry ---------------------------------------------------------


def handmade(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


def test_scrubbing_drops_what_it_cannot_mask_and_the_references_to_it(tmp_path: Path):
    from sop_engine.artifacts import Artifacts
    from sop_engine.masking import Masker
    from sop_engine.trace_files import keep_trace

    frame = {"type": "screencast-frame", "pageId": "p", "file": "screencast/p-1.jpeg", "width": 10, "height": 10}
    body = {"type": "resource-snapshot", "snapshot": {"request": {"url": "http://x/"}, "response": {"content": {}}}}
    bodies = {
        "image": "resources/aaaa.png",
        "packed": "resources/bbbb.bin",
        "wide": "resources/cccc.bin",
        "plain": "resources/dddd.bin",
    }
    network = []
    for name in bodies.values():
        entry = json.loads(json.dumps(body))
        entry["snapshot"]["response"]["content"]["_file"] = name
        network.append(entry)
    raw = tmp_path / "raw" / "raw.zip"
    raw.parent.mkdir()
    handmade(
        raw,
        {
            "trace.trace": lines({"type": "before", "method": "fill", "params": {"value": SECRET}}, frame),
            "trace.network": lines(*network),
            "screencast/p-1.jpeg": b"\xff\xd8\xff\xe0 a picture",
            bodies["image"]: b"\x89PNG\r\n\x1a\n a picture",
            bodies["packed"]: gzip.compress(SECRET.encode()),
            bodies["wide"]: b"\xff\xfe" + SECRET.encode("utf-16-le"),
            bodies["plain"]: b"\xff\x00\x01 no secret here",
        },
    )
    store = Artifacts(str(tmp_path / "artifacts"))
    kept = keep_trace(store, "run1", raw, Masker([SECRET]))
    assert kept == {
        "status": "saved",
        "bytes": kept["bytes"],
        "scrubbed": True,
        "dropped_images": 2,
        "dropped_files": 2,
    }
    assert not raw.parent.exists()  # Playwright's file is gone once scrubbed
    path = tmp_path / "artifacts" / "run1" / "trace.zip"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [bodies["plain"], "trace.network", "trace.trace"]
        events = [json.loads(line) for line in archive.read("trace.trace").decode().splitlines()]
        network = [json.loads(line) for line in archive.read("trace.network").decode().splitlines()]
    assert events == [{"type": "before", "method": "fill", "params": {"value": "***"}}]  # the frame's event went
    files = [entry["snapshot"]["response"]["content"].get("_file") for entry in network]
    assert files == [None, None, None, bodies["plain"]]  # a dropped body is no longer pointed at
    assert found_in(path, [SECRET]) == []


def test_a_trace_that_cannot_be_kept_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sop_engine import trace_files
    from sop_engine.artifacts import Artifacts
    from sop_engine.masking import Masker

    store = Artifacts(str(tmp_path / "artifacts"))
    mask = Masker([SECRET])

    def kept(entries: dict[str, bytes] | None) -> dict[str, Any]:
        raw = tmp_path / f"raw-{len(list(tmp_path.iterdir()))}" / "raw.zip"
        raw.parent.mkdir()
        if entries is None:
            raw.write_bytes(b"not a zip")
        else:
            handmade(raw, entries)
        return trace_files.keep_trace(store, "run1", raw, mask)

    assert kept(None) == {"status": "dropped", "reason": "the trace Playwright wrote could not be read: BadZipFile"}
    assert kept({"trace.network": b""}) == {
        "status": "dropped",
        "reason": "the trace Playwright wrote holds no actions",
    }
    monkeypatch.setattr(trace_files, "LINE_MAX", 100)
    long_line = lines({"type": "before", "params": {"value": "x" * 200}})
    assert kept({"trace.trace": long_line}) == {
        "status": "dropped",
        "reason": "a line of the trace is too long to mask",
    }
    assert not (tmp_path / "artifacts" / "run1").exists()

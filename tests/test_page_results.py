"""What a page hands back to a step is JSON text bounded in the page: a window or a huge string fails the step
at once, never reaching the engine (a window's value graph once ate the server's memory); an http answer is
read up to its limit."""

from __future__ import annotations

import pytest

from sop_engine.actions import http, reading
from sop_engine.states import RunStatus
from tests.loopback import LoopbackServer, Reply


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("() => window.open('about:blank', 'x')", "evaluate: the result is not JSON data (Converting circular"),
        ("() => 'x'.repeat(12 * 1024 * 1024)", "evaluate: the result is 12582914 characters of JSON, over the limit"),
        ("() => () => 1", "evaluate: the result is not JSON data (a function or a symbol)"),
    ],
)
async def test_an_evaluate_result_that_is_no_bounded_json_fails_its_step(run_sop, store, script: str, said: str):
    outcome = await run_sop(f"""
sop: 1
id: evil-result
defaults: {{timeout: 5s}}
steps:
  - {{id: open, action: navigate, url: "$SITE/roles.html"}}
  - {{id: grab, action: evaluate, script: "{script}"}}
""")
    assert outcome.status == RunStatus.FAILED
    error = next(row for row in store.steps(outcome.run_id) if row.key == "grab").error
    assert error["message"].startswith(said), error["message"]


async def test_evaluate_gives_json_data(run_sop):
    outcome = await run_sop("""
sop: 1
id: json-result
outputs: [value]
steps:
  - {id: open, action: navigate, url: "$SITE/roles.html"}
  - id: grab
    action: evaluate
    script: "async (n) => ({n, missing: undefined, list: [1, 'two', null], when: new Date(0), title: document.title})"
    arg: 3
    outputs: {value: value}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {
        "value": {"n": 3, "list": [1, "two", None], "when": "1970-01-01T00:00:00.000Z", "title": "Shop back office"}
    }


async def test_extract_of_more_text_than_the_limit_fails(run_sop, store, monkeypatch):
    monkeypatch.setattr(reading, "RESULT_MAX_CHARS", 200)
    outcome = await run_sop("""
sop: 1
id: much-text
steps:
  - {id: open, action: navigate, url: "$SITE/roles.html"}
  - {id: all, action: extract, selector: "body", outputs: {html: html}}
""")
    assert outcome.status == RunStatus.FAILED
    error = next(row for row in store.steps(outcome.run_id) if row.key == "all").error
    assert "characters of JSON, over the limit of 200" in error["message"]


async def test_an_http_answer_over_the_limit_fails_its_step(run_sop, store, monkeypatch):
    monkeypatch.setattr(http, "RESPONSE_MAX_BYTES", 1000)
    with LoopbackServer(lambda request: Reply(200, b"x" * 5000 if request.path == "/big" else b'{"ok": 1}')) as site:
        outcome = await run_sop(f"""
sop: 1
id: big-answer
outputs: [small]
defaults: {{on_error: continue}}
steps:
  - {{id: big, action: http, url: "{site.url}/big"}}
  - {{id: small, action: http, url: "{site.url}/small", outputs: {{small: json}}}}
""")
    error = next(row for row in store.steps(outcome.run_id) if row.key == "big").error
    assert error["message"] == f"GET {site.url}/big: the answer is over 1000 bytes"
    assert outcome.outputs == {"small": {"ok": 1}}

"""Each browser action against the fixture pages in real Chromium."""

from __future__ import annotations

import socket

from sop_engine.states import RunStatus


async def test_extract_results(run_sop):
    outcome = await run_sop("""
sop: 1
id: extract
outputs: [first, all, n, href, topics, html, value, none]
steps:
  - {id: open, action: navigate, url: "$SITE/table.html"}
  - {id: cells, action: extract, selector: "#orders tbody tr td:first-child",
     outputs: {first: text, all: texts, n: count}}
  - {id: link, action: extract, selector: "#help", attribute: href, outputs: {href: attr}}
  - {id: links, action: extract, selector: "a", attribute: data-topic, outputs: {topics: attrs}}
  - {id: head, action: extract, selector: "#orders thead tr", outputs: {html: "{{ result.html | length > 10 }}"}}
  - {id: form, action: navigate, url: "$SITE/form.html"}
  - {id: plan, action: extract, selector: "#plan", outputs: {value: value}}
  - id: nothing
    action: extract
    selector: .absent
    optional: true
    outputs: {none: "{{ [result.text, result.count] }}"}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {
        "first": "A-100",
        "all": ["A-100", "A-101", "A-102", "A-103"],
        "n": 4,
        "href": "form.html",
        "topics": ["forms"],
        "html": True,
        "value": "free",
        "none": [None, 0],
    }


async def test_form_controls_and_waits(run_sop):
    outcome = await run_sop("""
sop: 1
id: controls
outputs: [result, scrolled, title, shot]
steps:
  - {id: open, action: navigate, url: "$SITE/form.html"}
  - {id: loaded, action: wait, load_state: domcontentloaded}
  - {id: plan, action: select, selector: "#plan", label: Team}
  - {id: name, action: type, selector: "#name", value: Bob, delay: 5ms}
  - {id: more, action: press, key: "!"}
  - {id: hover, action: hover, selector: "#submit"}
  - {id: send, action: dblclick, selector: "#submit"}
  - {id: shown, action: assert, selector: "#result", visible: true}
  - {id: has_team, action: assert, selector: "#result", contains: '"plan":"team"'}
  - {id: name_value, action: assert, selector: "#name", value: "Bob!"}
  - {id: nap, action: wait, duration: 50ms}
  - {id: bottom, action: scroll, to: bottom}
  - {id: up, action: scroll, by: -100, outputs: {scrolled: "{{ result.scroll_y > 0 }}"}}
  - {id: title, action: evaluate, script: "() => document.title", outputs: {title: value}}
  - id: shot
    action: screenshot
    selector: "#plan"
    file: plan.png
    outputs: {shot: "{{ result.path.endswith('plan.png') }}"}
  - {id: read, action: extract, selector: "#result", outputs: {result: "{{ result.text | fromjson }}"}}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs["result"]["plan"] == "team"
    assert outcome.outputs["result"]["name"] == "Bob!"
    assert outcome.outputs["scrolled"] is True
    assert outcome.outputs["shot"] is True
    assert outcome.outputs["title"]


async def test_navigation_waits_and_url_assertions(run_sop):
    outcome = await run_sop("""
sop: 1
id: links
steps:
  - {id: open, action: navigate, url: "$SITE/table.html"}
  - {id: follow, action: click, selector: "#help"}
  - {id: arrived, action: wait, url: "**/form.html"}
  - {id: exact, action: assert, url: "re:.*/form\\\\.html$"}
  - {id: rows, action: assert, selector: "select#plan option", count: 3}
  - {id: gone, action: assert, selector: ".never-there", visible: false}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error


async def test_navigation_error_is_classified(run_sop, store):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await run_sop(f"""
sop: 1
id: unreachable
steps:
  - {{id: open, action: navigate, url: "http://127.0.0.1:{port}/", timeout: 2s}}
""")
    row = store.steps(outcome.run_id)[0]
    assert row.error["kind"] == "navigation"
    assert "ERR_CONNECTION_REFUSED" in row.error["message"]


async def test_tabs_are_separate_pages(run_sop):
    outcome = await run_sop("""
sop: 1
id: tabs
outputs: [todo_title, table_rows]
steps:
  - {id: one, action: navigate, url: "$SITE/todo.html"}
  - {id: two, action: navigate, url: "$SITE/table.html", tab: second}
  - {id: title, action: evaluate, script: "document.title", outputs: {todo_title: value}}
  - {id: rows, action: extract, selector: "#orders tbody tr", tab: second, outputs: {table_rows: count}}
""")
    assert outcome.outputs == {"todo_title": "Todo", "table_rows": 4}


async def test_upload_of_a_missing_file_is_final(run_sop, store, tmp_path):
    outcome = await run_sop(
        """
sop: 1
id: upload
steps:
  - {id: open, action: navigate, url: "$SITE/form.html"}
  - {id: up, action: upload, selector: "#avatar", files: nope.txt, retry: {attempts: 3, delay: 10ms}}
""",
        base_dir=tmp_path,
    )
    row = store.steps(outcome.run_id)[1]
    assert (row.status, row.attempts, row.error["kind"]) == ("failed", 1, "action")
    assert "no such file" in row.error["message"]

"""The runner end to end: real Chromium against the fixture sites, a real SQLite file."""

from __future__ import annotations

import json

from sop_engine.states import RunStatus
from tests.conftest import SITES, SOPS, fixture_sop


def keys(store, run_id):
    return [row.key for row in store.steps(run_id)]


def step_row(store, run_id, key):
    return next(row for row in store.steps(run_id) if row.key == key)


async def test_example_adds_todos_and_records_every_instance(run_sop, store, site):
    outcome = await run_sop(fixture_sop("todo-add.yaml", site))
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"left": 3, "labels": ["milk", "eggs", "bread"]}
    rows = {row.key: row for row in store.steps(outcome.run_id)}
    expected = ["open", "add", "read"] + [f"add[{i}].{s}" for i in range(3) for s in ("type", "enter")]
    assert sorted(rows) == sorted(expected)
    assert all(row.status == "completed" and row.attempts == 1 for row in rows.values())
    assert rows["add[1].type"].inputs == {"item": "eggs"}
    assert rows["add[1].type"].parent_key == "add"
    assert rows["read"].outputs == {"left": 3, "labels": ["milk", "eggs", "bread"]}
    assert rows["add"].outputs == {"iterations": 3}


async def test_event_log_is_gap_free_and_tells_the_story(run_sop, store, site):
    outcome = await run_sop(fixture_sop("todo-add.yaml", site))
    events = store.events(outcome.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "run.created"
    assert events[-1].type == "run.updated" and events[-1].data["status"] == "completed"
    finished = [e.data["key"] for e in events if e.type == "step.updated" and e.data["status"] == "completed"]
    assert finished[:3] == ["open", "add[0].type", "add[0].enter"]
    assert finished[-2:] == ["add", "read"]
    assert store.events(outcome.run_id, since=len(events) - 1)[0].seq == len(events)


async def test_paginated_scrape_reads_every_page_including_the_last(run_sop, site):
    outcome = await run_sop(fixture_sop("quotes-scrape.yaml", site))
    expected = json.loads((SITES / "quotes" / "expected.json").read_text())
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs["pages"] == [1, 2, 3]
    assert outcome.outputs["texts"] == expected["texts"]
    assert [len(page) for page in outcome.outputs["quotes"]] == [4, 3, 2]
    assert outcome.outputs["quotes"][2][1] == {"text": expected["texts"][8], "author": expected["authors"][8]}


async def test_nested_loop_keys_are_readable(run_sop, store, site):
    outcome = await run_sop(fixture_sop("quotes-scrape.yaml", site))
    all_keys = keys(store, outcome.run_id)
    assert "pages[2].each_quote[1].text" in all_keys
    assert "pages[0].each_quote[3].author" in all_keys
    assert "pages[0].each_quote[4].text" not in all_keys
    assert step_row(store, outcome.run_id, "pages[2].next").status == "skipped"
    assert step_row(store, outcome.run_id, "pages[1].next").status == "completed"


async def test_late_button_is_retried_until_it_appears(run_sop, store, recorder, site):
    # the button comes 2 s after the page: long after a first 400 ms attempt, even on a busy machine
    late = {"password": "s3cret", "login_url": f"{site}login.html?delay=2000"}
    outcome = await run_sop(fixture_sop("login.yaml", site), late)
    assert outcome.status == RunStatus.COMPLETED, [e.data for e in recorder.events if e.data.get("key") == "submit"]
    assert outcome.outputs == {"greeting": "Welcome, demo!"}
    submit = step_row(store, outcome.run_id, "submit")
    assert submit.attempts >= 2
    retried = recorder.of("step.retried", key="submit")
    assert len(retried) == submit.attempts - 1
    assert retried[0].data["error"]["kind"] == "element_not_found"
    assert "#login" in retried[0].data["error"]["message"]


async def test_secret_never_stored_or_emitted_in_clear(run_sop, store, recorder, site, data_dir):
    text = (
        fixture_sop("login.yaml", site)
        + """
  - id: echo
    action: assert
    selector: "#username"
    value: "{{ password }}"
    timeout: 200ms
    inputs: [password]
"""
    )
    outcome = await run_sop(text, {"password": "s3cret"})
    assert outcome.status == RunStatus.FAILED
    assert "***" in outcome.error and "s3cret" not in outcome.error
    echo = step_row(store, outcome.run_id, "echo")
    assert echo.inputs == {"password": "***"}
    assert "s3cret" not in json.dumps(echo.error)
    assert step_row(store, outcome.run_id, "pass").inputs == {"password": "***"}
    assert store.run(outcome.run_id).inputs["password"] == "***"
    assert all("s3cret" not in json.dumps(e.data) for e in recorder.events)
    store.close()  # checkpoint the WAL, then read every byte the database left on disk
    for path in data_dir.glob("sop.db*"):
        assert b"s3cret" not in path.read_bytes(), path


async def test_failed_assertion_is_final_and_explains_itself(run_sop, store, site, data_dir):
    outcome = await run_sop("""
sop: 1
id: wrong-title
steps:
  - {id: open, action: navigate, url: "$SITE/todo.html"}
  - id: count
    action: assert
    selector: .todo-count strong
    text: "5"
    timeout: 300ms
    retry: {attempts: 3, delay: 10ms}
  - {id: after, action: log, message: never}
""")
    assert outcome.status == RunStatus.FAILED
    row = step_row(store, outcome.run_id, "count")
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error["kind"] == "assertion" and row.error["retryable"] is False
    assert row.error["expected"] == "5" and row.error["found"] == "0"
    assert row.error["url"].endswith("/todo.html")
    assert "step count failed" in outcome.error
    assert step_row(store, outcome.run_id, "after").status == "pending"
    [shot] = row.artifacts
    assert (data_dir / "artifacts" / shot).read_bytes()[:4] == b"\x89PNG"


async def test_missing_element_times_out_with_selector_and_url(run_sop, store, site):
    outcome = await run_sop("""
sop: 1
id: missing
defaults: {timeout: 300ms, retry: {attempts: 2, delay: 10ms}}
steps:
  - {id: open, action: navigate, url: "$SITE/todo.html"}
  - {id: press, action: click, selector: "#no-such-button"}
""")
    row = step_row(store, outcome.run_id, "press")
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.error["kind"] == "element_not_found"
    assert "'#no-such-button'" in row.error["message"] and "300ms" in row.error["message"]
    assert row.error["url"].endswith("/todo.html")


async def test_continue_blocks_dependants_and_runs_the_rest(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: partial
outputs: [fine]
defaults: {on_error: continue}
steps:
  - {id: bad, action: set, values: {broken: "{{ 1 / 0 }}"}}
  - {id: uses_bad, action: log, message: "{{ broken }}", inputs: [broken]}
  - {id: after_that, action: log, message: x, depends_on: [uses_bad]}
  - {id: fine, action: set, values: {fine: 42}}
""")
    assert outcome.status == RunStatus.COMPLETED
    assert outcome.outputs == {"fine": 42}
    status = {row.key: row.status for row in store.steps(outcome.run_id)}
    assert status == {"bad": "failed", "uses_bad": "blocked", "after_that": "blocked", "fine": "completed"}
    assert step_row(store, outcome.run_id, "bad").error["kind"] == "template"
    assert step_row(store, outcome.run_id, "after_that").reason == "needs uses_bad, which did not complete"


async def test_pause_policy_fails_headless_run_and_says_so(run_sop):
    outcome = await run_sop("""
sop: 1
id: pausing
steps:
  - {id: bad, action: set, values: {x: "{{ 1 / 0 }}"}, on_error: pause}
""")
    assert outcome.status == RunStatus.FAILED
    assert "headless run fails instead" in outcome.error


async def test_when_and_if_choose_what_runs(run_sop, store):
    outcome = await run_sop(
        """
sop: 1
id: branches
inputs: {n: {type: integer}}
outputs: [size]
steps:
  - {id: small_only, action: log, message: small, when: "n < 5", inputs: [n]}
  - id: choose
    action: if
    condition: "{{ n >= 5 }}"
    inputs: [n]
    then:
      - {id: big, action: log, message: big}
    else:
      - {id: small, action: log, message: small}
  - {id: size, action: set, values: {size: "{{ 'big' if n >= 5 else 'small' }}"}, inputs: [n]}
""",
        {"n": 7},
    )
    status = {row.key: row.status for row in store.steps(outcome.run_id)}
    assert status == {"small_only": "skipped", "choose": "completed", "big": "completed", "size": "completed"}
    assert step_row(store, outcome.run_id, "small_only").reason == "'when' was false: n < 5"
    assert step_row(store, outcome.run_id, "choose").outputs == {"branch": "then"}
    assert outcome.outputs == {"size": "big"}


async def test_skipped_producer_gives_none(run_sop):
    outcome = await run_sop("""
sop: 1
id: skipped-producer
outputs: [shown]
steps:
  - {id: maybe, action: set, values: {value: 1}, when: "{{ false }}"}
  - {id: show, action: set, values: {shown: "{{ value is none }}"}, inputs: [value]}
""")
    assert outcome.outputs == {"shown": True}


async def test_repeat_while_until_and_collect(run_sop, store):
    outcome = await run_sop(
        """
sop: 1
id: loops
outputs: [squares, counted, tries]
steps:
  - id: squares_loop
    action: repeat_placeholder
""".replace(
            """  - id: squares_loop
    action: repeat_placeholder
""",
            """  - id: squares_loop
    action: loop
    repeat: 4
    collect: {squares: sq}
    steps:
      - {id: sq, action: set, values: {sq: "{{ index * index }}"}, inputs: [index]}
  - id: counting
    action: loop
    while: "index < 3"
    collect: {counted: c}
    steps:
      - {id: c, action: set, values: {c: "{{ index }}"}, inputs: [index]}
  - id: trying
    action: loop
    until: "{{ t >= 2 }}"
    collect: {tries: t}
    steps:
      - {id: t, action: set, values: {t: "{{ index }}"}, inputs: [index]}
""",
        )
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"squares": [0, 1, 4, 9], "counted": [0, 1, 2], "tries": [0, 1, 2]}
    assert "squares_loop[3].sq" in keys(store, outcome.run_id)


async def test_runaway_loop_stops_at_max_iterations(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: runaway
steps:
  - id: forever
    action: loop
    while: "true"
    max_iterations: 5
    steps:
      - {id: tick, action: log, message: tick}
""")
    assert outcome.status == RunStatus.FAILED
    row = step_row(store, outcome.run_id, "forever")
    assert row.status == "failed" and "ran 5 iterations" in row.error["message"]
    assert "forever[4].tick" in keys(store, outcome.run_id)
    assert "forever[5].tick" not in keys(store, outcome.run_id)


async def test_probe_conditions_read_the_page(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: probes
outputs: [added]
steps:
  - {id: open, action: navigate, url: "$SITE/todo.html"}
  - id: fill_up
    action: loop
    until: {exists: "ul.todo-list li:nth-child(3)"}
    collect: {added: n}
    steps:
      - {id: type, action: fill, selector: input.new-todo, value: "item {{ index }}", inputs: [index]}
      - {id: enter, action: press, selector: input.new-todo, key: Enter}
      - {id: n, action: set, values: {n: "{{ index }}"}, inputs: [index]}
  - {id: never, action: log, message: x, when: {missing: "ul.todo-list li"}}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"added": [0, 1, 2]}
    assert step_row(store, outcome.run_id, "never").status == "skipped"


async def test_run_timeout_fails_the_run(run_sop):
    outcome = await run_sop("""
sop: 1
id: slow
timeout: 300ms
steps:
  - {id: nap, action: sleep, duration: 5s, timeout: 10s}
""")
    assert outcome.status == RunStatus.FAILED
    assert outcome.error == "the run did not finish within 300ms"


async def test_step_timeout_bounds_any_action(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: slow-step
steps:
  - {id: nap, action: sleep, duration: 5s, timeout: 200ms}
""")
    row = step_row(store, outcome.run_id, "nap")
    assert row.error["kind"] == "timeout" and "200ms" in row.error["message"]


async def test_independent_steps_run_concurrently_with_max_parallel(run_sop, recorder):
    await run_sop("""
sop: 1
id: parallel
max_parallel: 2
steps:
  - {id: a, action: sleep, duration: 300ms}
  - {id: b, action: sleep, duration: 300ms}
  - {id: c, action: log, message: after, depends_on: [a, b]}
""")
    order = [(e.data["key"], e.data["status"]) for e in recorder.of("step.updated")]
    assert order.index(("b", "running")) < order.index(("a", "completed"))
    assert order.index(("c", "running")) > max(order.index(("a", "completed")), order.index(("b", "completed")))


async def test_sequential_by_default(run_sop, recorder):
    await run_sop("""
sop: 1
id: sequential
steps:
  - {id: a, action: sleep, duration: 50ms}
  - {id: b, action: sleep, duration: 50ms}
""")
    order = [(e.data["key"], e.data["status"]) for e in recorder.of("step.updated")]
    assert order == [("a", "running"), ("a", "completed"), ("b", "running"), ("b", "completed")]


async def test_http_step_reads_json(run_sop, site):
    outcome = await run_sop("""
sop: 1
id: http
outputs: [status, first]
steps:
  - id: get
    action: http
    url: "$SITE/quotes/expected.json"
    expect_status: 200
    outputs: {status: status, first: "{{ result.json.authors[0] }}"}
""")
    assert outcome.outputs == {"status": 200, "first": "Ada Lovelace"}


async def test_for_each_that_is_not_a_list_fails_clearly(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: not-a-list
inputs: {items: {type: string, default: abc}}
steps:
  - id: each
    action: loop
    for_each: "{{ items }}"
    inputs: [items]
    steps:
      - {id: x, action: log, message: x}
""")
    row = step_row(store, outcome.run_id, "each")
    assert row.error["kind"] == "template" and "not a list" in row.error["message"]


async def test_upload_resolves_paths_next_to_the_document(run_sop):
    text = fixture_sop("signup-form.yaml", "$SITE/").replace("$SITE/", "$SITE/")
    outcome = await run_sop(text, base_dir=SOPS)
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs["submitted"] == {
        "name": "Ada",
        "plan": "pro",
        "newsletter": True,
        "terms": False,
        "avatar": "avatar.txt",
        "notes": "typed key by key",
    }


SECRET = "s3cret-Pw9"
DERIVED = {
    "rev": SECRET[::-1],
    "up": SECRET.upper(),
    "joined": SECRET + "-x",
    "quoted": SECRET.replace("-", "%2D"),
    "hexed": SECRET.encode().hex(),
    "spaced": ".".join(SECRET),
}


async def test_a_value_computed_from_a_secret_is_secret_as_a_whole(run_sop, store, recorder):
    outcome = await run_sop(
        """
sop: 1
id: derived
inputs:
  password: {type: string, secret: true}
outputs: [rev, up, joined, hexed, spaced, plain, token]
defaults: {on_error: continue}
steps:
  - id: derive
    action: set
    inputs: [password]
    values:
      rev: "{{ password|reverse }}"
      up: "{{ password|upper }}"
      joined: "{{ [password, 'x']|join('-') }}"
      quoted: "{{ password|replace('-', '%2D') }}"
      hexed: "{{ password.encode('utf-8').hex() }}"
      spaced: "{{ password|list|join('.') }}"
      plain: visible
  - id: tell
    action: log
    inputs: [rev, up, joined, quoted, hexed, spaced, plain]
    message: "{{ rev }} {{ up|lower }} {{ joined }} {{ quoted }} {{ hexed }} {{ spaced }}"
  - id: plainly
    action: log
    inputs: [plain]
    message: "plain is {{ plain }}"
  - id: exchange
    action: set
    inputs: [rev]
    values: {token: "tok-{{ rev|length }}-{{ rev|first }}"}
  - id: compare
    action: assert
    that: "{{ up == 'nope' }}"
    inputs: [up]
  - id: wrong
    action: set
    inputs: [up]
    values: {broken: "{{ up ~ (1 / 0) }}"}
  - id: echo
    action: log
    inputs: [up]
    message: "{{ up|reverse }}"
""",
        {"password": SECRET},
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {
        "rev": "***",
        "up": "***",
        "joined": "***",
        "hexed": "***",
        "spaced": "***",
        "plain": "visible",
        "token": "***",
    }
    everything = json.dumps([e.data for e in recorder.events]) + json.dumps(
        [[r.inputs, r.outputs, r.error] for r in store.steps(outcome.run_id)]
    )
    for value in [SECRET, *DERIVED.values(), SECRET.upper()[::-1], f"tok-{len(SECRET)}-9"]:
        assert value not in everything, value
    rows = {r.key: r for r in store.steps(outcome.run_id)}
    assert rows["derive"].outputs["plain"] == "visible" and rows["derive"].outputs["rev"] == "***"
    assert rows["tell"].inputs["plain"] == "visible" and rows["tell"].inputs["up"] == "***"
    assert [e.data["message"] for e in recorder.of("log")] == ["***", "plain is visible", "***"]
    assert rows["wrong"].status == "failed" and rows["wrong"].error["kind"] == "template"
    assert rows["derive"].sealed_outputs  # the real values, for a resume


async def test_a_template_giving_no_json_value_fails_its_step(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: not-json
defaults: {on_error: continue}
steps:
  - {id: function, action: set, values: {x: "{{ lipsum }}"}}
  - {id: generator, action: set, values: {y: "{{ [1, 2]|map('string') }}"}}
  - {id: loop, action: loop, for_each: "{{ [cycler(1)] }}", steps: [{id: inner, action: log, message: x}]}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    for key, kind in (("function", "function"), ("generator", "generator"), ("loop", "Cycler")):
        row = step_row(store, outcome.run_id, key)
        assert (row.status, row.error["kind"]) == ("failed", "template"), row.error
        assert kind in row.error["message"] and "not a JSON value" in row.error["message"]


async def test_text_from_the_page_is_made_valid_before_it_is_stored(run_sop, store, recorder):
    outcome = await run_sop("""
sop: 1
id: surrogates
outputs: [odd]
defaults: {on_error: continue}
steps:
  - {id: open, action: navigate, url: "$SITE/todo.html"}
  - id: read
    action: evaluate
    script: "() => ({half: String.fromCharCode(0xD800) + ' ok', [String.fromCharCode(0xDC00)]: 1})"
    outputs: {odd: "{{ result.value }}"}
  - id: throw
    action: evaluate
    script: "() => { throw new Error('bad ' + String.fromCharCode(0xDBFF)) }"
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"odd": {"half": "\ufffd ok", "\ufffd": 1}}
    throw = step_row(store, outcome.run_id, "throw")
    assert throw.status == "failed" and "bad \ufffd" in throw.error["message"]
    stored = store.events(outcome.run_id)
    assert [e.data for e in stored] == [e.data for e in recorder.events]
    json.dumps([e.data for e in stored], ensure_ascii=False).encode()  # no lone surrogate anywhere


def test_tainted_names_follow_what_each_template_reads():
    from sop_engine.document import load_sop
    from sop_engine.taint import tainted_names

    loaded = load_sop("""
sop: 1
id: taint
inputs:
  password: {type: string, secret: true}
  user: {type: string, default: u}
steps:
  - id: values
    action: set
    inputs: [password, user]
    values: {hidden: "{{ password|upper }}", shown: "{{ user }}"}
    outputs: {hidden: hidden, shown: shown, both: "{{ result.shown }}"}
  - id: login
    action: evaluate
    inputs: [password]
    script: "p => p.length"
    arg: "{{ password }}"
    outputs: {length: value}
  - id: greet
    action: evaluate
    inputs: [user, hidden]
    script: "u => u"
    arg: "{{ user }}"
    outputs: {hello: value, mixed: "{{ result.value ~ hidden }}"}
  - id: form
    action: input
    fields: {pin: {secret: true}, note: {}}
  - id: each
    action: loop
    for_each: "{{ [hidden] }}"
    as: one
    inputs: [hidden]
    collect: {all: copy, plain: other}
    steps:
      - {id: copy, action: set, inputs: [one], values: {copy: "{{ one }}", other: "x"}}
""")
    assert tainted_names(loaded.sop.steps, {"password"}) == {
        "password",
        "hidden",
        "both",  # reads the result of a step that read a secret
        "length",
        "mixed",
        "pin",
        "one",
        "copy",
        "all",
    }

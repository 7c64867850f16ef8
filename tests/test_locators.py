"""Locators the Playwright way, frames, templates in every field, and what loops hand to their bodies (tab, frame),
in real Chromium against the fixture pages."""

from __future__ import annotations

import pytest

from sop_engine.document import DocumentError, load_sop
from sop_engine.states import RunStatus

ROLES = """
sop: 1
id: roles
outputs: [saved, cart, logo, prices]
steps:
  - {id: open, action: navigate, url: "$SITE/roles.html"}
  - {id: name, action: fill, locator: {label: Full name}, value: Ada Lovelace}
  - {id: email, action: fill, locator: {label: Email, exact: false}, value: ada@example.com}
  - {id: phone, action: fill, locator: {placeholder: Phone number}, value: "555"}
  - {id: vip, action: check, locator: {role: checkbox, name: VIP customer}}
  - {id: tier, action: select, locator: {label: Tier, exact: true}, value: gold}
  - {id: save, action: click, locator: {role: button, name: Save customer}}
  - {id: said, action: extract, locator: {role: status}, outputs: {saved: text}}
  - {id: second, action: click, locator: {role: button, name: Add to cart, nth: 1}}
  - {id: stapler, action: click, locator: {role: button, within: {test_id: product, has_text: Stapler}}}
  - {id: cart, action: extract, locator: {test_id: cart}, outputs: {cart: text}}
  - {id: logo, action: extract, locator: {alt: Company logo}, attribute: width, outputs: {logo: attr}}
  - {id: cancel, action: assert, locator: {title: Discard the form}, visible: true}
  - {id: text, action: assert, locator: {text: pencil, exact: false}, count: 1}
  - id: each
    action: loop
    for_each_element: {test_id: product}
    collect: {prices: price}
    steps:
      - {id: read, action: extract, selector: "{{ item }} >> .price", inputs: [item], outputs: {price: text}}
"""


async def test_every_kind_of_locator_finds_its_element(run_sop):
    outcome = await run_sop(ROLES)
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {
        "saved": "Saved Ada Lovelace <ada@example.com> 555 VIP gold",
        "cart": "Notebook, Stapler",
        "logo": "16",
        "prices": ["1.50", "3.20", "7.90"],
    }


async def test_a_locator_that_finds_nothing_is_named_as_written(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: missing
defaults: {timeout: 1s}
steps:
  - {id: open, action: navigate, url: "$SITE/roles.html"}
  - {id: press, action: click, locator: {role: button, name: Delete customer}}
""")
    assert outcome.status == RunStatus.FAILED
    error = next(r for r in store.steps(outcome.run_id) if r.key == "press").error
    assert error["kind"] == "element_not_found"
    assert 'no element matched {role: "button", name: "Delete customer"}' in error["message"]
    assert error["selector"] == '{role: "button", name: "Delete customer"}'


async def test_a_loop_item_from_a_locator_works_in_a_later_locator(run_sop):
    outcome = await run_sop("""
sop: 1
id: item-within
outputs: [cart]
steps:
  - {id: open, action: navigate, url: "$SITE/roles.html"}
  - id: each
    action: loop
    for_each_element: {role: listitem, has_text: "l"}
    steps:
      - {id: buy, action: click, locator: {role: button, within: "{{ item }}"}, inputs: [item]}
  - {id: cart, action: extract, locator: {test_id: cart}, outputs: {cart: text}}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"cart": "Pencil, Stapler"}  # "Notebook 3.20 Add to cart" has no "l"


async def test_frames_nested_and_inherited_by_a_loop(run_sop):
    outcome = await run_sop("""
sop: 1
id: frames
outputs: [sent, tags, title]
steps:
  - {id: open, action: navigate, url: "$SITE/frames.html"}
  - {id: subject, action: fill, frame: ["#app", "#editor"], locator: {label: Subject}, value: Refund}
  - {id: body, action: type, frame: ["#app", {title: Rich text editor}], locator: {role: textbox, name: Message},
     value: Please refund order A-2}
  - {id: send, action: click, frame: ["#app", "#editor"], locator: {role: button, name: Send}}
  - {id: out, action: extract, frame: ["#app", "#editor"], selector: "#out", outputs: {sent: text}}
  - id: tags
    action: loop
    frame: "#app"
    for_each_element: ul.tags li
    collect: {tags: tag}
    steps:
      - {id: read, action: extract, selector: "{{ item }}", inputs: [item], outputs: {tag: text}}
  - {id: title, action: evaluate, frame: {title: Ticket app}, script: "() => document.title", outputs: {title: value}}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {
        "sent": "Refund: Please refund order A-2",
        "tags": ["billing", "urgent"],
        "title": "Ticket app",
    }


async def test_a_loop_body_acts_on_the_loops_tab(run_sop, store):
    """Reproduction: a loop on tab `a` counted the right elements, then its body ran on `main` (about:blank)."""
    outcome = await run_sop("""
sop: 1
id: loop-tab
outputs: [totals]
steps:
  - {id: open, action: navigate, tab: a, url: "$SITE/table.html"}
  - id: rows
    action: loop
    tab: a
    for_each_element: "#orders tbody tr"
    collect: {totals: total}
    steps:
      - {id: total, action: extract, selector: "{{ item }} >> td:nth-child(3)", inputs: [item], outputs: {total: text}}
  - id: which
    action: if
    tab: a
    condition: {exists: "#orders"}
    then:
      - {id: here, action: extract, selector: "#orders tbody tr", outputs: {rows: count}}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert len(outcome.outputs["totals"]) == 4
    assert next(r for r in store.steps(outcome.run_id) if r.key == "here").outputs == {"rows": 4}


def test_a_step_naming_its_own_tab_keeps_it():
    sop = load_sop("""
sop: 1
id: own-tab
steps:
  - id: l
    action: loop
    tab: a
    frame: "#f"
    repeat: 1
    steps:
      - {id: x, action: click, selector: b}
      - {id: y, action: click, selector: b, tab: main}
      - {id: z, action: log, message: m}
      - {id: w, action: click, selector: b, tab: a}
      - {id: v, action: click, selector: b, frame: null}
""").sop
    x, y, z, w, v = sop.steps[0].steps
    assert (x.tab, x.frame, y.tab, y.frame, z.tab) == ("a", "#f", "main", None, "a")
    assert (w.tab, w.frame, v.tab, v.frame) == ("a", None, "a", None)  # named: the page itself


async def test_templates_in_typed_fields(run_sop):
    """Reproduction: `count: "{{ n }}"` was refused at validation ("Input should be a valid integer")."""
    outcome = await run_sop("""
sop: 1
id: typed
inputs:
  n: {type: integer, default: 4}
  hidden: {type: boolean, default: false}
  wait: {type: string, default: 10ms}
  nth: {type: integer, default: 2}
  limit: {type: string, default: 5s}
outputs: [third]
steps:
  - {id: open, action: navigate, url: "$SITE/table.html"}
  - id: rows
    action: assert
    selector: "#orders tbody tr"
    count: "{{ n }}"
    timeout: "{{ limit }}"
    inputs: [n, limit]
  - {id: shown, action: assert, selector: "#orders", visible: "{{ not hidden }}", inputs: [hidden]}
  - {id: pause, action: wait, duration: "{{ wait }}", inputs: [wait]}
  - id: third
    action: extract
    locator: {role: row, nth: "{{ nth + 1 }}"}
    inputs: [nth]
    outputs: {third: "{{ result.text.split()[0] }}"}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"third": "A-102"}  # row 0 is the header


async def test_a_template_giving_the_wrong_type_fails_its_step_by_name(run_sop, store):
    outcome = await run_sop(
        """
sop: 1
id: typed-wrong
inputs: {n: {type: string}}
steps:
  - {id: open, action: navigate, url: "$SITE/table.html"}
  - {id: rows, action: assert, selector: "#orders tbody tr", count: "{{ n }}", inputs: [n]}
""",
        {"n": "four"},
    )
    assert outcome.status == RunStatus.FAILED
    error = next(r for r in store.steps(outcome.run_id) if r.key == "rows").error
    assert error["kind"] == "template"
    assert error["message"] == (
        "assert: field 'count' (the template '{{ n }}' gave 'four'): "
        "Input should be a valid integer, unable to parse string as an integer"
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{id: a, action: click, selector: b, locator: {text: c}}", "give 'selector' or 'locator', not both"),
        ("{id: a, action: click}", "click needs 'selector' or 'locator'"),
        ("{id: a, action: click, locator: {text: c, label: d}}", "exactly one of role, label"),
        ("{id: a, action: click, locator: {label: c, name: d}}", "'name' goes with 'role'"),
        ("{id: a, action: click, locator: {test_id: c, exact: true}}", "'exact' does not apply to test_id"),
        ("{id: a, action: assert, selector: b, count: many}", "Input should be a valid integer"),
        ("{id: a, action: navigate, url: x, frame: '#f'}", "is not a field of 'navigate'"),
        ("{id: a, action: log, message: m, opens_tab: t}", "'opens_tab' goes on an action in a page; log opens none"),
        ("{id: a, action: click, selector: b, opens_tab: main}", "'opens_tab' names a new tab, not the step's own"),
    ],
)
def test_locator_problems_are_located(step, message):
    with pytest.raises(DocumentError) as caught:
        load_sop(f"sop: 1\nid: bad\nsteps:\n  - {step}\n")
    assert message in str(caught.value)


async def test_for_each_element_waits_for_a_late_list(run_sop, recorder):
    outcome = await run_sop("""
sop: 1
id: late
outputs: [ids]
steps:
  - {id: open, action: navigate, url: "$SITE/delayed.html"}
  - {id: load, action: click, locator: {role: button, name: Load orders}}
  - id: orders
    action: loop
    for_each_element: li.order
    collect: {ids: id}
    steps:
      - {id: read, action: extract, selector: "{{ item }} >> b", inputs: [item], outputs: {id: text}}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"ids": ["A-1", "A-2", "A-3"]}


async def test_for_each_element_with_no_match_fails_unless_optional(run_sop, store, recorder):
    """Reproduction: no match waited the whole timeout, then ran zero times with no word in the record."""
    text = """
sop: 1
id: none
outputs: [n]
steps:
  - {id: open, action: navigate, url: "$SITE/delayed.html"}
  - id: orders
    action: loop
    timeout: 500ms
    OPTIONAL
    for_each_element: li.order
    steps:
      - {id: read, action: extract, selector: "{{ item }}", inputs: [item]}
  - {id: n, action: set, values: {n: 1}}
"""
    failed = await run_sop(text.replace("OPTIONAL", ""))
    assert failed.status == RunStatus.FAILED
    error = next(r for r in store.steps(failed.run_id) if r.key == "orders").error
    assert error["kind"] == "element_not_found"
    assert error["message"].startswith("for_each_element: no element matched 'li.order' within 500ms")

    empty = await run_sop(text.replace("OPTIONAL", "optional: true"))
    assert empty.status == RunStatus.COMPLETED, empty.error
    loop = next(r for r in store.steps(empty.run_id) if r.key == "orders")
    assert loop.outputs == {"iterations": 0}
    said = [e.data["message"] for e in recorder.of("log") if e.run_id == empty.run_id]
    assert said == ["loop orders: no element matched 'li.order': 0 iterations"]


async def test_a_failed_run_keeps_the_outputs_of_completed_steps(run_sop):
    outcome = await run_sop("""
sop: 1
id: partial
outputs: [first, second]
steps:
  - {id: one, action: set, values: {first: kept}}
  - {id: two, action: assert, that: "false", depends_on: [one], outputs: {second: ok}}
""")
    assert outcome.status == RunStatus.FAILED
    assert outcome.outputs == {"first": "kept", "second": None}


async def test_a_number_or_a_boolean_given_for_text_is_its_text(run_sop, recorder):
    outcome = await run_sop("""
sop: 1
id: as-text
inputs: {n: {type: integer, default: 4}, ok: {type: boolean, default: true}}
steps:
  - {id: number, action: log, message: "{{ n }}", inputs: [n]}
  - {id: truth, action: log, message: "{{ ok }}", inputs: [ok]}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert [e.data["message"] for e in recorder.of("log") if e.run_id == outcome.run_id] == ["4", "True"]


@pytest.mark.parametrize(
    ("step", "where", "message"),
    [
        ("{id: a, action: click, locator: {role: x, nosuch: 1}}", "locator.nosuch", "is not a field of 'locator'"),
        ("{id: a, action: click, selector: s, frame: [f, 3]}", "frame.1", "is a selector (text) or a locator"),
        (
            "{id: a, action: click, selector: s, frame: [" + ", ".join(["f"] * 11) + "]}",
            "frame",
            "List should have at most 10 items",
        ),
    ],
)
def test_a_bad_locator_or_frame_is_one_problem_at_its_place(step: str, where: str, message: str):
    with pytest.raises(DocumentError) as caught:
        load_sop(f"sop: 1\nid: bad\nsteps:\n  - {step}\n")
    [problem] = caught.value.problems
    assert problem.where == f"step 'a' (steps[0]), field '{where}'" and problem.message.startswith(message)


async def test_a_bad_template_in_a_locator_is_quoted_alone(run_sop, store):
    outcome = await run_sop("""
sop: 1
id: bad-nth
steps:
  - {id: open, action: navigate, url: "$SITE/roles.html"}
  - {id: pick, action: click, locator: {test_id: product, nth: "{{ 'x' }}"}}
""")
    error = next(r for r in store.steps(outcome.run_id) if r.key == "pick").error
    assert error["message"] == (
        "click: field 'locator.nth' (the template \"{{ 'x' }}\" gave 'x'): "
        "Input should be a valid integer, unable to parse string as an integer"
    )

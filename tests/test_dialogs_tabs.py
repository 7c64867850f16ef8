"""Dialogs answered by the document's or the step's policy and recorded in the step's result and the run's
log; pages an action opens captured as named tabs, acted on, and closed."""

from __future__ import annotations

from cryptography.fernet import Fernet

from sop_engine.browser_session import BrowserSession
from sop_engine.policy import NetworkPolicy
from sop_engine.policy.guard import guard_of
from sop_engine.states import RunStatus
from sop_engine.steps import Click
from sop_engine.vault import Vault


async def test_confirm_accepted_and_its_message_recorded(run_sop, store, recorder):
    outcome = await run_sop(
        """
sop: 1
id: confirm
outputs: [asked, answer]
defaults: {timeout: 5s}
steps:
  - {id: open, action: navigate, url: "$SITE/dialogs.html"}
  - id: delete
    action: click
    selector: "#confirm"
    dialogs: accept
    outputs: {asked: "{{ result.dialogs[0].message }}"}
  - {id: read, action: extract, selector: "#confirm-answer", outputs: {answer: text}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"asked": "Delete order 42?", "answer": "deleted"}
    lines = [e.data["message"] for e in recorder.of("log")]
    assert lines == ["confirm dialog on tab main accepted: Delete order 42?"]
    assert recorder.of("log")[0].data["key"] == "delete"


async def test_prompt_answered_with_a_template(run_sop):
    outcome = await run_sop(
        """
sop: 1
id: prompt
inputs: {name: {default: Ada}}
outputs: [answer, kinds]
defaults: {timeout: 5s}
steps:
  - {id: open, action: navigate, url: "$SITE/dialogs.html"}
  - id: hello
    action: click
    selector: "#prompt"
    inputs: [name]
    dialogs: {accept: true, prompt: "{{ name }} L."}
    outputs: {kinds: "{{ result.dialogs | map(attribute='type') | list }}"}
  - {id: read, action: extract, selector: "#prompt-answer", outputs: {answer: text}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"answer": "Hello, Ada L.!", "kinds": ["prompt"]}


async def test_dialogs_are_dismissed_by_default_and_by_the_documents_default(run_sop):
    text = """
sop: 1
id: dismissed
outputs: [answer, prompted]
defaults: {timeout: 5s%s}
steps:
  - {id: open, action: navigate, url: "$SITE/dialogs.html"}
  - {id: delete, action: click, selector: "#confirm"}
  - {id: hello, action: click, selector: "#prompt"}
  - {id: read, action: extract, selector: "#confirm-answer:not(:empty)", outputs: {answer: text}}
  - {id: greet, action: extract, selector: "#prompt-answer:not(:empty)", outputs: {prompted: text}}
"""
    outcome = await run_sop(text % "")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"answer": "kept", "prompted": "no answer"}
    outcome = await run_sop(text % ", dialogs: {accept: true, prompt: Grace}")
    assert outcome.outputs == {"answer": "deleted", "prompted": "Hello, Grace!"}


async def test_a_dialog_between_steps_goes_to_the_next_step_on_its_tab(run_sop, recorder):
    """Another tab makes the main tab open an alert: no step is in flight on main, so the next one gets it."""
    outcome = await run_sop(
        """
sop: 1
id: between
outputs: [other_saw, main_saw]
defaults: {timeout: 5s}
steps:
  - {id: open, action: navigate, url: "$SITE/dialogs.html"}
  - {id: other, action: navigate, tab: other, url: "$SITE/dialogs.html"}
  - id: ping
    action: click
    tab: other
    selector: "#ping"
    outputs: {other_saw: "{{ result.dialogs | length }}"}
  - id: pinged
    action: wait
    selector: "#pinged:has-text('pinged')"
    outputs: {main_saw: "{{ result.dialogs }}"}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {
        "other_saw": 0,
        "main_saw": [{"type": "alert", "message": "Pinged by another tab"}],
    }
    lines = [e.data["message"] for e in recorder.of("log")]
    assert lines == ["alert dialog on tab main dismissed: Pinged by another tab"]


async def test_a_dialog_showing_a_secret_is_masked(run_sop, store, recorder):
    outcome = await run_sop(
        """
sop: 1
id: secret-dialog
inputs: {pin: {secret: true, default: "Zq-8812-secret"}}
outputs: [said]
defaults: {timeout: 5s}
steps:
  - {id: open, action: navigate, url: "$SITE/dialogs.html"}
  - id: show
    action: evaluate
    inputs: [pin]
    script: "pin => { alert('your pin is ' + pin); return 1 }"
    arg: "{{ pin }}"
  - id: read
    action: evaluate
    script: "() => 1"
  - {id: say, action: set, values: {said: done}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    lines = [e.data["message"] for e in recorder.of("log")]
    assert lines == ["alert dialog on tab main dismissed: your pin is ***"]
    assert not any("Zq-8812" in str(e.data) for e in recorder.events)


async def test_opens_tab_captures_a_popup_acts_on_it_and_closes_it(run_sop, store):
    outcome = await run_sop(
        """
sop: 1
id: popup
outputs: [by_button, by_link, state, main_title]
defaults: {timeout: 5s}
steps:
  - {id: open, action: navigate, url: "$SITE/popup.html"}
  - {id: window, action: click, selector: "#open", opens_tab: details}
  - {id: from, action: extract, tab: details, selector: "#from", outputs: {by_button: text}}
  - {id: mark, action: click, tab: details, selector: "#done"}
  - {id: state, action: extract, tab: details, selector: "#state", outputs: {state: text}}
  - {id: close, action: close_tab, tab: details}
  - {id: link, action: click, selector: "#link", opens_tab: linked}
  - {id: linked_from, action: extract, tab: linked, selector: "#from", outputs: {by_link: text}}
  - {id: close_link, action: close_tab, tab: linked}
  - {id: main, action: evaluate, script: "() => document.title", outputs: {main_title: value}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"by_button": "button", "by_link": "link", "state": "read", "main_title": "Popups"}
    checkpoint = store.checkpoint(outcome.run_id)
    assert checkpoint is not None


async def test_a_closed_tab_stays_closed_until_a_navigate_opens_it(run_sop, store):
    """Reproduction: a step on a tab that close_tab closed quietly opened a blank page and failed there."""
    outcome = await run_sop(
        """
sop: 1
id: closed-tab
outputs: [again]
defaults: {timeout: 5s}
steps:
  - {id: open, action: navigate, url: "$SITE/popup.html"}
  - {id: window, action: click, selector: "#open", opens_tab: details}
  - {id: close, action: close_tab, tab: details}
  - {id: stale, action: extract, tab: details, selector: "#from", on_error: continue}
  - {id: back, action: navigate, tab: details, url: "$SITE/popup.html"}
  - {id: again, action: evaluate, tab: details, script: "() => document.title", outputs: {again: value}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    stale = next(r for r in store.steps(outcome.run_id) if r.key == "stale")
    assert stale.error["message"] == "tab 'details' was closed by close_tab; a navigate on it opens it again"
    assert outcome.outputs == {"again": "Popups"}


async def test_an_action_naming_opens_tab_that_opens_none_fails_clearly(run_sop, store):
    outcome = await run_sop(
        """
sop: 1
id: no-popup
steps:
  - {id: open, action: navigate, url: "$SITE/popup.html"}
  - {id: nothing, action: click, selector: "#nothing", opens_tab: details, timeout: 1s}
"""
    )
    assert outcome.status == RunStatus.FAILED
    row = next(r for r in store.steps(outcome.run_id) if r.key == "nothing")
    assert row.error["message"].startswith("click on '#nothing' opened no tab within 1s (opens_tab: details)")


async def test_a_captured_tab_survives_a_restore_from_its_checkpoint(browser_host, site):
    vault = Vault(Fernet.generate_key())
    first = BrowserSession(browser_host, vault)
    try:
        page = await first.page("main")
        await page.goto(site + "popup.html")
        async with page.context.expect_page() as opened:
            await page.click("#open")
        await first.adopt("details", await opened.value)
        await (await first.page("details")).wait_for_load_state()
        step = Click.model_validate({"id": "open", "action": "click", "selector": "#open"})
        sealed = await first.checkpoint(step, "open")
    finally:
        await first.close()
    assert sealed is not None
    again = BrowserSession(browser_host, vault, {"key": "open", **sealed})
    try:
        details = await again.page("details")
        assert details.url == site + "popup-child.html?from=button"
        assert await details.text_content("#from") == "button"
        assert again.restorations and again.restorations[0][0] == "open"
    finally:
        await again.close()


async def test_a_popup_the_run_never_named_is_guarded_too(browser_host, site):
    """A page the run did not capture is still watched: where it lands is checked like any page of the run."""
    policy = NetworkPolicy.for_cli(strict=True)
    session = BrowserSession(browser_host, Vault(Fernet.generate_key()), policy=policy)
    try:
        page = await session.page("main")
        await page.goto(site + "popup.html")
        async with page.context.expect_page() as opened:
            await page.click("#open")
        popup = await opened.value
        assert guard_of(popup) is session.guard
    finally:
        await session.close()


async def test_a_dialogs_message_is_kept_bounded(run_sop):
    outcome = await run_sop("""
sop: 1
id: long-alert
outputs: [said]
steps:
  - {id: open, action: navigate, url: "$SITE/dialogs.html"}
  - id: shout
    action: evaluate
    script: "() => { alert('x'.repeat(50000)); return 1 }"
    outputs: {said: "{{ result.dialogs[0].message }}"}
""")
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    said = outcome.outputs["said"]  # Chromium itself hands over at most 10240 characters of it
    assert said.startswith("x" * 2000 + "… (") and said.endswith(" characters)") and len(said) < 2100

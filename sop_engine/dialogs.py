"""Dialogs on a run's pages (alert, confirm, prompt, beforeunload): each is answered by the `dialogs` policy of
the step in flight on its tab (else the document's default; else dismissed), told to the run's log, and kept
for the result of that step, or of the next step on the tab when none is in flight."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from .steps import DialogAnswer

if TYPE_CHECKING:
    from playwright.async_api import Dialog, Page

DISMISS = DialogAnswer(accept=False)
MAX_MESSAGE = 2000  # characters of a dialog's message kept
MAX_KEPT = 50  # dialogs kept per tab for its next step; a page that opens them in a loop is not kept whole


class DialogDesk:
    def __init__(
        self,
        default: DialogAnswer | None,
        mask: Callable[[Any], Any],
        log: Callable[[str, str], Awaitable[None]],
    ) -> None:
        """`default`: the document's answer, its prompt rendered; `mask`: hides secrets in a message;
        `log(key, line)`: writes a line to the run's log."""
        self.default = default or DISMISS
        self.mask = mask
        self.log = log
        self.tab_of: Callable[[Page], str | None] = lambda page: None  # set by the browser session
        self._answers: dict[str, tuple[str, DialogAnswer]] = {}  # tab -> (step key, answer) while a step runs
        self._seen: dict[str, list[dict[str, str]]] = {}
        self._watched: WeakSet[Page] = WeakSet()

    def watch(self, page: Page) -> None:
        if page in self._watched:
            return
        self._watched.add(page)
        page.on("dialog", lambda dialog: self._answer(page, dialog))

    @contextlib.contextmanager
    def answering(self, tab: str, key: str, answer: DialogAnswer | None) -> Iterator[None]:
        """While the step `key` runs on `tab`: its dialogs are answered with `answer` (else the default)."""
        self._answers[tab] = (key, answer or self.default)
        try:
            yield
        finally:
            self._answers.pop(tab, None)

    def take(self, tab: str) -> list[dict[str, str]]:
        """The dialogs of the tab since the last take, oldest first."""
        return self._seen.pop(tab, [])

    async def _answer(self, page: Page, dialog: Dialog) -> None:
        tab = self.tab_of(page)
        key, answer = self._answers.get(tab or "", (f"tab:{tab or 'unnamed'}", self.default))
        text = self.mask(dialog.message)  # masked whole first: a cut must not leave half a secret showing
        if len(text) > MAX_MESSAGE:  # the page writes it: kept bounded in results and the log
            text = text[:MAX_MESSAGE] + f"… ({len(dialog.message)} characters)"
        record = {"type": dialog.type, "message": text}
        if tab is not None:  # before any await: the step in flight reads it when its action returns
            kept = self._seen.setdefault(tab, [])
            kept.append(record)
            del kept[:-MAX_KEPT]
        # leaving a page is what a step that navigates means to do: beforeunload is always accepted
        accept = answer.accept or dialog.type == "beforeunload"
        with contextlib.suppress(Exception):  # the page may be gone meanwhile: nothing left to answer
            if not accept:
                await dialog.dismiss()
            elif dialog.type == "prompt":
                await dialog.accept(answer.prompt if answer.prompt is not None else dialog.default_value)
            else:
                await dialog.accept()
        said = "accepted" if accept else "dismissed"
        with contextlib.suppress(Exception):  # a line of log is never worth an unhandled error in the browser's task
            await self.log(key, f"{dialog.type} dialog on tab {tab or 'unnamed'} {said}: {record['message']}")

"""Time: one watchdog thread for every render (or other work) that must end by a deadline."""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import ExpressionError

T = TypeVar("T")


class _TookTooLong(BaseException):
    """Raised inside a rendering thread by the watchdog (a BaseException, so no `except Exception` in Jinja
    swallows it); never leaves `within_deadline`."""


def _set_async(thread_id: int, exc: type[BaseException] | None) -> None:
    # None is passed as NULL: it clears a pending exception
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


REFIRE_SECONDS = 0.2  # an exception that landed where Python ignores it (a GC callback) is raised again
MOST_FIRES = 10


class _Watchdog:
    """Holds {thread id: deadline}; when a deadline passes while its render is still registered, raises
    _TookTooLong in that thread, and again every REFIRE_SECONDS (at most MOST_FIRES times) while it stays
    registered: an exception delivered inside a weakref or GC callback is only printed, not raised.
    Deciding and raising happen under the lock that unregistering takes, so no exception is set after a
    render has left; one set just before is cleared on the way out.

    A rendering thread touches only primitives written in C (a Lock, a SimpleQueue): an exception raised
    inside Python-level code such as Condition.__enter__ could leave a lock held for ever."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._deadlines: dict[int, float] = {}
        self._fired: set[int] = set()
        self._fires: dict[int, int] = {}
        self._wake_at: float | None = None  # None while the thread waits for work
        self._thread: threading.Thread | None = None

    def register(self, thread_id: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="template-watchdog", daemon=True)
                self._thread.start()
            self._deadlines[thread_id] = deadline
            if self._wake_at is None or deadline < self._wake_at:
                self._wake.put(None)

    def watching(self, thread_id: int) -> bool:
        return thread_id in self._deadlines or thread_id in self._fired

    def release(self, thread_id: int) -> None:
        """Unregister; raises _TookTooLong if the deadline fired, even while releasing."""
        fired = False
        while True:
            try:
                with self._lock:
                    self._deadlines.pop(thread_id, None)
                    self._fires.pop(thread_id, None)
                    fired = fired or thread_id in self._fired
                    self._fired.discard(thread_id)
                _set_async(thread_id, None)
                break
            except _TookTooLong:  # delivered here rather than in the render; it fires once
                fired = True
        if fired:
            raise _TookTooLong

    def _watch(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for thread_id, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        fires = self._fires[thread_id] = self._fires.get(thread_id, 0) + 1
                        if fires < MOST_FIRES:
                            self._deadlines[thread_id] = now + REFIRE_SECONDS
                        else:
                            del self._deadlines[thread_id]
                        self._fired.add(thread_id)
                        _set_async(thread_id, _TookTooLong)
                self._wake_at = min(self._deadlines.values(), default=None)
                wait = None if self._wake_at is None else self._wake_at - now
            with contextlib.suppress(queue.Empty):
                self._wake.get(timeout=wait)


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog.__init__)


class OutOfTime(ExpressionError):
    """Work run by within_deadline that passed its deadline."""


def within_deadline(run: Callable[[], T], seconds: float, what: str = "it") -> T:
    """`run()` in this thread, stopped with OutOfTime ("<what> took longer than <seconds> s") once its
    deadline passes, wherever it is in Python code; no thread hop, about 10 µs. Inside another deadline of
    the same thread, the outer one governs."""
    thread_id = threading.get_ident()
    if _watchdog.watching(thread_id):
        return run()
    try:
        try:
            _watchdog.register(thread_id, seconds)
            return run()
        finally:
            _watchdog.release(thread_id)
    except _TookTooLong:
        # it may have landed between run() and release(): make sure nothing is left registered to fire again
        with contextlib.suppress(_TookTooLong):
            _watchdog.release(thread_id)
        raise OutOfTime(f"{what} took longer than {seconds:g} s") from None

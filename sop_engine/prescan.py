"""A first look at a document file, before the modules that read it fully are loaded (they take a few hundred
milliseconds): does it look like it needs a browser? Then Chromium starts at once, beside the rest of the
start-up, instead of after it.

Only a hint: the document is still read and checked in full, and its steps decide (`Sop.needs_browser`). A
wrong "no" costs the head start; a wrong "yes" (an `assert` that only checks values) a browser started for
nothing. The text is read with the same bounds as the full read (limits.load_yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# the actions that never drive or read a page: tests/test_document.py checks it against the step models
NO_BROWSER_ACTIONS = frozenset({"approval", "http", "if", "input", "log", "loop", "read_file", "set", "sleep"})
# what makes a condition or a loop read the page: a probe, or a loop over the page's elements
PAGE_KEYS = frozenset({"exists", "missing", "for_each_element"})


def looks_like_browser(file: Path) -> bool:
    from .limits import load_yaml

    try:
        return _needs(load_yaml(file.read_text(encoding="utf-8")), 0)
    except Exception:  # whatever is wrong with the file, the full read says it
        return False


def _needs(value: Any, depth: int) -> bool:
    if depth > 64:
        return False
    if isinstance(value, dict):
        action = value.get("action")
        if isinstance(action, str) and action not in NO_BROWSER_ACTIONS:
            return True
        return any(k in PAGE_KEYS or _needs(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_needs(v, depth + 1) for v in value)
    return False

"""Whether text is a template, read without Jinja2: a document or a run without templates never loads it (20 ms
of start-up); the modules that parse and render (compiler, names, rendering) load it with the first template."""

from __future__ import annotations

CACHED_SOURCE = 2_000  # longer templates are compiled each time: a cache of large ones would hold much memory


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text

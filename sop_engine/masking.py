"""Secret values never leave the engine in clear: every outgoing text passes through a Masker."""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

from .text import map_scalars

MASK = "***"
FOLD_CASE_FROM = 4  # a secret this long is also masked in other letter case
BASE64_FROM = 6  # a base64 form shorter than this would mask unrelated text
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")


def _html_forms(secret: str) -> set[str]:
    forms = {html.escape(secret, quote=False), html.escape(secret, quote=True)}
    quoted = html.escape(secret, quote=True)
    numeric = quoted.replace("&quot;", "&#34;").replace("&#x27;", "&#39;")
    return forms | {numeric, numeric.replace("&#39;", "&apos;"), quoted.replace("&#x27;", "&#39;")}


def _url_forms(secret: str) -> set[str]:
    every = "".join(f"%{byte:02X}" for byte in secret.encode("utf-8", "surrogatepass"))
    forms = {quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret), quote_plus(secret, safe="/"), every}
    return forms | {_PERCENT_HEX.sub(lambda m: m.group().lower(), form) for form in forms}


def _json_forms(secret: str) -> set[str]:
    return {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


def _base64_forms(secret: str) -> set[str]:
    """The secret encoded on its own, and the part of its encoding that does not depend on the bytes around it
    when it sits inside a longer encoded text (`user:secret` in HTTP basic auth), at each of the three byte
    alignments; in standard and URL-safe alphabets, padded and not."""
    data = secret.encode("utf-8", "surrogatepass")
    whole = base64.b64encode(data).decode()
    forms = {whole, whole.rstrip("=")}
    for skip in range(3):
        middle = data[skip:]
        middle = middle[: len(middle) // 3 * 3]
        forms.add(base64.b64encode(middle).decode())
    forms |= {form.translate(str.maketrans("+/", "-_")) for form in forms}
    return {form for form in forms if len(form) >= BASE64_FROM}


class Masker:
    """Replaces every occurrence of a secret value, in any nested str/list/dict, with `***`.

    Masked: the secret as it is; HTML-escaped (with and without quotes, numeric entities for quotes);
    URL-encoded (quote with safe "" and "/", quote_plus, lower-case hex, every byte encoded); JSON-escaped;
    base64 (standard and URL-safe, padded or not, and inside a longer base64 text), for base64 forms of at
    least BASE64_FROM characters only. All but the base64 forms are matched in any letter case for secrets of
    FOLD_CASE_FROM characters or more; a shorter secret is matched as written."""

    def __init__(self, secrets: list[Any] | None = None) -> None:
        self._exact: set[str] = set()  # every form; a number equal to one is masked
        self._folded: set[str] = set()  # the forms matched in any case
        self._pattern: re.Pattern[str] | None = None
        self._needles: list[str] = []  # every form in lower case: a quick test that a long text holds none
        for secret in secrets or []:
            self.add(secret)

    def add(self, secret: Any) -> None:
        """A secret; also learnt during a run (a person typed it into a form). Every value inside a secret
        list or dict is a secret too."""
        for leaf in _leaves(secret):
            if not leaf:
                continue
            plain = {leaf} | _html_forms(leaf) | _url_forms(leaf) | _json_forms(leaf)
            self._exact |= plain | _base64_forms(leaf)
            if len(leaf) >= FOLD_CASE_FROM:
                self._folded |= plain
        self._exact.discard("")
        self._pattern = self._compile() if self._exact else None
        self._needles = sorted({form.lower() for form in self._exact})

    def _compile(self) -> re.Pattern[str]:
        # longest first, so a secret that contains another is masked whole
        forms = sorted(self._exact | self._folded, key=lambda form: (-len(form), form))
        parts = [f"(?i:{re.escape(f)})" if f in self._folded else re.escape(f) for f in forms]
        return re.compile("|".join(parts))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def _may_hold(self, value: str) -> bool:
        # a scan per form is far quicker than the regex on long text that holds none (the usual case)
        if len(value) < 512:
            return True
        lowered = value.lower()
        return any(needle in lowered for needle in self._needles)

    def text(self, value: str) -> str:
        if self._pattern is None or not self._may_hold(value):
            return value
        return self._pattern.sub(MASK, value)

    def __call__(self, value: Any) -> Any:
        """The value with every secret masked; lists and dicts are copied (tuples become lists), without
        recursion, since a page can nest values deeply."""
        return value if self._pattern is None else map_scalars(value, self._scalar)

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in self._exact:
            return MASK
        return value


def _leaves(value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)] + [str(value)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)] + [str(value)]
    return [str(value)]

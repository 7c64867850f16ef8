"""A loopback fixture site that is broken until a test fixes it: its page lacks the button a step clicks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

from tests.loopback import LoopbackServer, Reply, Request, html_reply

BROKEN = "<!doctype html><title>shop</title><h1>Down for maintenance</h1>"
FIXED = (
    "<!doctype html><title>shop</title><h1>Shop</h1>"
    "<button id='go' onclick=\"document.getElementById('done').textContent='ordered'\">Order</button>"
    "<p id='done'></p>"
)

HOSTILE = '<!doctype html><h1>&lt;img src=x onerror="window.pwned=true"&gt;</h1>'
# fails on an assertion whose message quotes the page's heading, markup as text
HOSTILE_SOP = """
sop: 1
id: SOP_ID
steps:
  - {id: open, action: navigate, url: "SITE_URL/hostile"}
  - {id: check, action: assert, selector: h1, text: "Welcome", timeout: 1s}
"""

# opens the page (its key, a secret, in the URL), clicks the button the broken page lacks, reads the result
SOP = """
sop: 1
id: SOP_ID
inputs:
  key: {type: string, secret: true, default: "opal-key-5150"}
outputs: [said]
steps:
  - {id: open, action: navigate, url: "SITE_URL/shop?key={{ key }}", inputs: [key]}
  - {id: order, action: click, selector: "#go", timeout: 5s}
  - {id: read, action: extract, selector: "#done", outputs: {said: text}}
"""


class DeadSite:
    def __init__(self) -> None:
        self.fixed = False
        self.keys: list[str] = []  # the `key` of every page request: the secret reached the site
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.keys += parse_qs(urlsplit(request.path).query).get("key", [])
        if request.path.startswith("/hostile"):  # page text that is markup once it is in an error message
            return html_reply(HOSTILE)
        return html_reply(FIXED if self.fixed else BROKEN)

    def sop(self, text: str = SOP) -> str:
        return text.replace("SITE_URL", self.url)


def serve_dead_site() -> Iterator[DeadSite]:
    """For a test module's fixture: the site, until the test ends."""
    site = DeadSite()
    with site.server:
        yield site

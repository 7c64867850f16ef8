"""URLs relative to the server that runs the SOP (`/demo/todo.html`): resolved against its own address, so a
document works on any port; on the command line, with no server, a step error that says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from sop_engine.document import load_sop, resolve_inputs
from sop_engine.policy import NetworkPolicy, NoServer, PolicyError, server_relative
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from tests.conftest import ROOT
from tests.demo_site import serve_demo

SERVER = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with the fixture pages under /demo/, as `sop-engine serve` has them; its base URL."""
    with serve_demo(tmp_path_factory.mktemp("demo-root")) as base:
        yield base


@pytest.mark.parametrize(
    ("url", "relative"),
    [
        ("/demo/todo.html", True),
        ("  /demo/todo.html?x=1#y", True),
        ("/", True),
        ("//example.com/x", False),
        ("/\\example.com/x", False),
        ("demo/todo.html", False),
        ("http://127.0.0.1:8000/demo/todo.html", False),
        ("about:blank", False),
    ],
)
def test_only_a_single_slash_path_is_relative_to_the_server(url: str, relative: bool):
    assert server_relative(url) is relative


def test_a_relative_url_goes_to_the_base_of_the_policy():
    policy = NetworkPolicy.for_server([SERVER], base_url=SERVER + "/")
    assert policy.absolute("/demo/todo.html?delay=1") == f"{SERVER}/demo/todo.html?delay=1"
    assert policy.absolute("https://example.com/a") == "https://example.com/a"
    narrowed = policy.narrowed(load_sop(SOP.format(url="/demo/todo.html")).sop)
    assert narrowed.absolute("/demo/x.html") == f"{SERVER}/demo/x.html"  # an SOP's own egress rules keep it
    assert NetworkPolicy.for_cli(base_url="http://127.0.0.1:9/").absolute("/a") == "http://127.0.0.1:9/a"


def test_with_no_base_a_relative_url_is_an_error_that_says_it_needs_the_server():
    for policy in (NetworkPolicy.for_cli(), NetworkPolicy.for_cli(strict=True)):
        with pytest.raises(NoServer) as caught:
            policy.absolute("/demo/todo.html", "navigate")
        assert caught.value.message.startswith("navigate: '/demo/todo.html' is a relative URL, which needs the server")
        assert not caught.value.retryable
    assert NetworkPolicy.for_cli().absolute("file:///tmp/x") == "file:///tmp/x"


def test_the_server_s_demo_pages_are_open_whatever_the_allow_list(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_ALLOW", "example.com")
    policy = NetworkPolicy.for_server([SERVER, "http://0.0.0.0:8001"], base_url=SERVER)
    policy.check_host("127.0.0.1", [ip_address("127.0.0.1")], 8000, "/demo/todo.html")
    policy.check_host("localhost", [], 8001, "/demo/form.html")  # bound to every address: loopback names reach it
    with pytest.raises(PolicyError, match="own origin"):
        policy.check_host("127.0.0.1", [], 8000, "/api/runs")  # its API stays closed
    with pytest.raises(PolicyError, match="SOP_EGRESS_ALLOW"):
        policy.check_host("127.0.0.1", [ip_address("127.0.0.1")], 8002, "/demo/todo.html")  # not the server
    monkeypatch.setenv("SOP_EGRESS_DENY", "127.0.0.0/8")
    with pytest.raises(PolicyError, match="SOP_EGRESS_DENY"):  # a deny list holds for the server too
        NetworkPolicy.for_server([SERVER]).check_host("127.0.0.1", [ip_address("127.0.0.1")], 8000, "/demo/todo.html")


SOP = """
sop: 1
id: relative
outputs: [opened, inputs, fetched]
steps:
  - {{id: open, action: navigate, url: "{url}", outputs: {{opened: url}}}}
  - {{id: landed, action: wait, url: "/demo/todo.html"}}
  - {{id: again, action: assert, url: "/demo/todo.html"}}
  - {{id: fetch, action: http, url: "/demo/quotes/expected.json", outputs: {{fetched: "{{{{ result.status }}}}"}}}}
  - {{id: read, action: extract, selector: input.new-todo, outputs: {{inputs: count}}}}
"""


async def run(text: str, policy: NetworkPolicy, store, browser_host):
    loaded = load_sop(text)
    resolved = resolve_inputs(loaded.sop, {})
    runner = Runner(store, browser_host, [], policy=policy)
    row = await runner.create_run(loaded, resolved)
    return await runner.execute(row.id, loaded, resolved)


@pytest.mark.parametrize("strict", [False, True], ids=["cli", "server"])
async def test_a_run_resolves_relative_urls_against_its_base(strict: bool, demo_base: str, store, browser_host):
    policy = NetworkPolicy.for_server([demo_base], demo_base) if strict else NetworkPolicy.for_cli(base_url=demo_base)
    outcome = await run(SOP.format(url="/demo/todo.html"), policy, store, browser_host)
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"opened": f"{demo_base}/demo/todo.html", "inputs": 1, "fetched": 200}


async def test_a_relative_url_without_a_server_fails_its_step(store, browser_host):
    outcome = await run(SOP.format(url="/demo/todo.html"), NetworkPolicy.for_cli(), store, browser_host)
    assert outcome.status == RunStatus.FAILED
    assert outcome.error.startswith("step open failed: navigate: '/demo/todo.html' is a relative URL")
    [opened] = [row for row in store.steps(outcome.run_id) if row.key == "open"]
    assert (opened.status, opened.attempts, opened.error["kind"]) == ("failed", 1, "action")


def test_the_command_line_names_the_step_and_says_a_relative_url_needs_the_server(tmp_path: Path):
    (tmp_path / "relative.yaml").write_text(SOP.format(url="/demo/todo.html"))
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    env.pop("SOP_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sop_engine", "run", "relative.yaml", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["error"].startswith("step open failed: navigate: '/demo/todo.html' is a relative URL")
    assert "needs the server" in report["steps"][0]["error"] and report["steps"][0]["key"] == "open"

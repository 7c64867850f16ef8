"""Every example SOP (fixtures/sops and the README's) validates and runs to completion."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from sop_engine.document import load_sop, resolve_inputs
from sop_engine.policy import NetworkPolicy
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from tests.conftest import ROOT, SOPS
from tests.demo_site import serve_demo

README_SOPS = [
    block
    for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    if block.startswith("sop: 1")
]
FIXTURE_SOPS = sorted(p.name for p in SOPS.glob("*.yaml"))
INPUTS = {"login.yaml": {"password": "s3cret"}, "signup-batch.yaml": {"name": "Ada"}}


def test_readme_has_examples():
    assert len(README_SOPS) >= 10


@pytest.mark.parametrize("text", README_SOPS, ids=[re.search(r"^id: (.+)$", t, re.M).group(1) for t in README_SOPS])
async def test_readme_example_runs(text: str, run_sop, store):
    load_sop(text)  # valid as printed, with the relative demo URL
    outcome = await run_sop(text.replace('"/demo/', '"$SITE/'))
    if "action: input" in text:  # a person answers it in the server; headless it says so
        assert outcome.status == RunStatus.FAILED
        assert "this step needs a person; run it in the server" in outcome.error
        return
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    if "id: errors" in text:
        status = {row.key: row.status for row in store.steps(outcome.run_id)}
        assert status == {
            "open": "completed",
            "late_button": "completed",
            "wrong": "failed",
            "read": "blocked",
            "still_runs": "completed",
        }
    if "id: egress-narrowed" in text:
        refused = next(row for row in store.steps(outcome.run_id) if row.key == "other")
        assert (refused.status, refused.error["kind"]) == ("failed", "policy")
        assert "127.0.0.2" in refused.error["message"]
    if "id: scrape" in text:
        assert len(outcome.outputs["texts"]) == 9


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_demo(tmp_path_factory.mktemp("demo-root")) as base:
        yield base


@pytest.mark.parametrize("name", FIXTURE_SOPS)
async def test_fixture_sop_runs(name: str, demo_base: str, store, browser_host, recorder):
    """As the server runs them: their demo URLs are relative (`/demo/todo.html`), resolved against its address."""
    text = (SOPS / name).read_text()
    assert "://" not in text  # no address, no port: stored once whatever port the server is on
    loaded = load_sop(text, base_dir=SOPS)
    resolved = resolve_inputs(loaded.sop, INPUTS.get(name, {}))
    runner = Runner(store, browser_host, [recorder], policy=NetworkPolicy.for_cli(base_url=demo_base))
    outcome = await runner.execute((await runner.create_run(loaded, resolved)).id, loaded, resolved)
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert all(value is not None for value in outcome.outputs.values())

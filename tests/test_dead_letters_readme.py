"""The README's dead-letter example , as printed: its SOP, its requests in order against a
real server with real Chromium, and the answers it shows (their shape, the group's message exactly)."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.conftest import readme_section, start_run, wait_run
from tests.dead_site import serve_dead_site

DOC = readme_section("### Dead letters: failed runs, in bulk")
YAML = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
SHELL = re.findall(r"```sh\n(.*?)```", DOC, re.S)
ANSWERS = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC, re.S)]


@pytest.fixture
def dead_site():
    yield from serve_dead_site()


def curl(block: str) -> tuple[str, dict | None]:
    """The path (below the server's address) and the JSON body of a curl command as printed."""
    words = shlex.split(block.replace("\\\n", " "))
    url = next(w for w in words if w.startswith("http"))
    body = words[words.index("-d") + 1] if "-d" in words else None
    return url.split("8000", 1)[1], json.loads(body) if body else None


def test_the_readme_example_groups_three_failures_and_retries_them_once_the_shop_is_back(api, dead_site):
    [sop] = YAML
    sop_id = "order-shop-readme"
    assert api.post("/api/sops", content=sop.replace("id: order-shop", f"id: {sop_id}")).status_code in (200, 201)
    shop = f"{dead_site.url}/shop"
    runs = [start_run(api, sop_id, {"shop": shop}) for _ in range(3)]
    for run_id in runs:
        wait_run(api, run_id, "failed", timeout=60)

    path, _ = curl(SHELL[0])
    found = api.get(path.replace("order-shop", sop_id)).json()
    [group], [shown] = found["groups"], ANSWERS[0]["groups"]
    assert set(group) == set(shown) and set(found) == set(ANSWERS[0])
    assert group["message"] == shown["message"]  # the README shows the real message
    assert (group["count"], group["kinds"], group["sops"]) == (3, shown["kinds"], [sop_id])
    assert group["example"].startswith(shown["example"].split("http://…")[0])

    dead_site.fixed = True
    path, body = curl(SHELL[1])
    assert body is not None
    body = {**body, "group": group["key"], "filters": {"sop_id": sop_id}}
    answer = api.post(path, json=body).json()
    expected = ANSWERS[1]
    assert set(answer) == set(expected) and (answer["done"], answer["refused"], answer["left"]) == (3, 0, 0)
    assert [r["outcome"] for r in answer["results"]] == [r["outcome"] for r in expected["results"]]
    for run_id in runs:
        assert wait_run(api, run_id, "completed", timeout=60)["outputs"] == {"said": "ordered"}

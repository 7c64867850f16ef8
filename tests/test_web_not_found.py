"""What the server answers for what is not there, or does not fit: the page of a missing run, SOP or batch is a
404 that says what was not found; a batch whose columns leave a required input without a value is refused
before any run is made."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TOKEN, fixture_sop, post_sop


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/runs/no-such-run", "run no-such-run"),
        ("/sops/no-such-sop", "SOP no-such-sop"),
        ("/batches/nope", "batch nope"),
    ],
)
def test_the_page_of_something_missing_is_a_404_naming_it(server, path: str, said: str):
    with httpx.Client(base_url=server.url, timeout=15) as browser_like:
        browser_like.post("/login", data={"token": TOKEN})
        page = browser_like.get(path)
    assert page.status_code == 404
    assert f"There is no {said}." in page.text and "<title>Not found" in page.text


def batch_sop(api, server) -> str:
    return post_sop(
        api, fixture_sop("signup-batch.yaml", f"{server.url}/demo/").replace("id: signup-batch", "id: SOP_ID")
    )


def batches_of(api, sop_id: str) -> list[dict]:
    return [b for b in api.get("/api/batches").json()["batches"] if b["sop_id"] == sop_id]


def upload(api, sop_id: str, text: str, **fields: str) -> httpx.Response:
    return api.post("/api/batches", data={"sop_id": sop_id, **fields}, files={"file": ("d.csv", text, "text/csv")})


def test_columns_that_leave_a_required_input_empty_refuse_the_batch(api, server):
    sop_id = batch_sop(api, server)
    reply = upload(api, sop_id, "fullname,plan\nAda,pro\n")
    assert reply.status_code == 422, reply.text
    assert reply.json()["problems"] == [
        {
            "where": "d.csv",
            "message": "input 'name' is required but no column supplies it; columns that match no input: fullname",
        }
    ]
    as_json = api.post("/api/batches", json={"sop_id": sop_id, "rows": [{"fullname": "Ada"}]})
    assert as_json.status_code == 422 and "fullname" in as_json.json()["problems"][0]["message"]
    mapped = api.post(
        "/api/batches", json={"sop_id": sop_id, "rows": [{"fullname": "Ada"}], "mapping": {"fullname": "name"}}
    )
    assert mapped.status_code == 201 and mapped.json()["warnings"] == []
    assert len(batches_of(api, sop_id)) == 1  # only the mapped one was made


def test_unknown_columns_warn_or_with_strict_columns_refuse(api, server):
    sop_id = batch_sop(api, server)
    text = "name,plan,colour\nAda,pro,red\n"
    refused = upload(api, sop_id, text, strict_columns="true")
    assert refused.status_code == 422
    assert refused.json()["problems"] == [{"where": "d.csv", "message": "columns that match no input: colour"}]
    assert batches_of(api, sop_id) == []
    warned = upload(api, sop_id, text)
    assert warned.status_code == 201 and warned.json()["warnings"] == ["columns that match no input: colour"]


def test_a_ragged_row_is_invalid_and_an_unclosed_quote_refuses_the_file(api, server):
    sop_id = batch_sop(api, server)
    reply = upload(api, sop_id, 'name,plan\n"Ada\nLovelace",pro\nBob,pro,extra\n')
    assert reply.status_code == 201, reply.text
    rows = api.get(f"/api/batches/{reply.json()['id']}", params={"status": "invalid"}).json()["rows_page"]
    assert [(r["row"], r["error"]) for r in rows] == [(2, "line 4: 3 cells, but the header has 2 columns")]
    unclosed = upload(api, sop_id, 'name,plan\nAda,pro\nBob,"pro\n')
    assert unclosed.status_code == 422
    assert unclosed.json()["problems"] == [
        {"where": "d.csv line 3", "message": "a quote opens here and is never closed"}
    ]

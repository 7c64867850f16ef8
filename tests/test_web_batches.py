"""Batches through the server: the API (upload, progress, rows, retry, cancel, results) and the batch page."""

from __future__ import annotations

import csv
import io
import json

from playwright.async_api import expect

from tests.conftest import both_databases, fixture_sop, post_sop, sign_in, wait_for

pytestmark = both_databases


def batch_sop(api, server) -> str:
    return post_sop(
        api, fixture_sop("signup-batch.yaml", f"{server.url}/demo/").replace("id: signup-batch", "id: SOP_ID")
    )


def rows_csv(count: int, failing: set[int] = frozenset(), invalid: set[int] = frozenset()) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "plan", "newsletter"])
    for n in range(1, count + 1):
        writer.writerow([f"P{n}", "gold" if n in failing else "pro", "perhaps" if n in invalid else "no"])
    return buffer.getvalue()


def wait_batch(api, batch_id: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (b := api.get(f"/api/batches/{batch_id}").json())["status"] != "running" and b, timeout)


def test_batch_from_an_uploaded_file(api, server):
    sop_id = batch_sop(api, server)
    reply = api.post(
        "/api/batches",
        data={"sop_id": sop_id, "concurrency": "3"},
        files={"file": ("rows.csv", rows_csv(8, failing={3}, invalid={5}), "text/csv")},
    )
    assert reply.status_code == 201, reply.text
    batch = wait_batch(api, reply.json()["id"])
    assert batch["status"] == "completed" and batch["rows"] == 8
    assert batch["counts"] | {} == {
        "completed": 6,
        "failed": 1,
        "invalid": 1,
        "running": 0,
        "queued": 0,
        "paused": 0,
        "cancelled": 0,
    }
    assert [r["status"] for r in batch["rows_page"]] == ["completed"] * 2 + ["failed", "completed", "invalid"] + [
        "completed"
    ] * 3
    failed_only = api.get(f"/api/batches/{batch['id']}", params={"status": "failed"}).json()
    assert [r["row"] for r in failed_only["rows_page"]] == [3]
    page = api.get(f"/api/batches/{batch['id']}", params={"limit": 2, "offset": 2}).json()
    assert [r["row"] for r in page["rows_page"]] == [3, 4] and page["total"] == 8
    lines = [json.loads(line) for line in api.get(f"/api/batches/{batch['id']}/results?format=jsonl").text.splitlines()]
    assert [line["row"] for line in lines] == list(range(1, 9))
    assert lines[0]["outputs"] == {"submitted_name": "P1", "submitted_plan": "pro"}
    table = list(csv.DictReader(io.StringIO(api.get(f"/api/batches/{batch['id']}/results?format=csv").text)))
    assert table[4]["status"] == "invalid" and "newsletter" in table[4]["error"]
    assert api.get(f"/api/batches/{batch['id']}/results?format=xml").status_code == 400

    retried = api.post(f"/api/batches/{batch['id']}/retry-failed")
    assert retried.status_code == 200 and retried.json()["retried"] == [3]
    again = wait_batch(api, batch["id"])
    assert again["counts"]["failed"] == 1 and again["rows_page"][2]["run_id"] != batch["rows_page"][2]["run_id"]


def test_batch_from_json_rows_and_bad_requests(api, server):
    sop_id = batch_sop(api, server)
    reply = api.post(
        "/api/batches",
        json={
            "sop_id": sop_id,
            "rows": [{"who": "Q1"}, {"who": "Q2"}],
            "mapping": {"who": "name"},
            "inputs": {"plan": "team"},
        },
    )
    batch = wait_batch(api, reply.json()["id"])
    assert [r["outputs"] for r in batch["rows_page"]] == [
        {"submitted_name": "Q1", "submitted_plan": "team"},
        {"submitted_name": "Q2", "submitted_plan": "team"},
    ]
    assert api.post("/api/batches", json={"sop_id": "nope", "rows": [{}]}).status_code == 404
    assert api.post("/api/batches", json={"sop_id": sop_id, "rows": []}).status_code == 422
    assert api.post("/api/batches", json={"sop_id": sop_id, "rows": [{}], "mapping": {"a": "zzz"}}).status_code == 422
    bad_file = api.post("/api/batches", data={"sop_id": sop_id}, files={"file": ("rows.json", "[1", "text/plain")})
    assert bad_file.status_code == 422
    assert api.get("/api/batches/nope").status_code == 404
    assert api.post(f"/api/batches/{batch['id']}/retry-failed").status_code == 409
    assert api.post(f"/api/batches/{batch['id']}/cancel").status_code == 409


def test_cancel_a_batch(api, server):
    sop_id = batch_sop(api, server)
    reply = api.post(
        "/api/batches",
        data={"sop_id": sop_id, "concurrency": "1"},
        files={"file": ("rows.csv", rows_csv(30), "text/csv")},
    )
    batch_id = reply.json()["id"]
    wait_for(lambda: api.get(f"/api/batches/{batch_id}").json()["counts"]["completed"] >= 1)
    assert api.post(f"/api/batches/{batch_id}/cancel").status_code == 200
    batch = wait_for(lambda: (b := api.get(f"/api/batches/{batch_id}").json())["counts"]["running"] == 0 and b)
    assert batch["status"] == "cancelled" and batch["counts"]["cancelled"] >= 20


async def test_batch_page_shows_rows_and_progress(browser_host, server, api):
    sop_id = batch_sop(api, server)
    context = await browser_host.new_context()
    page = await context.new_page()
    page.set_default_timeout(20000)
    try:
        await sign_in(page, server.url)
        await page.goto(f"{server.url}/sops/{sop_id}")
        await page.set_input_files(
            '#batch-form input[name="file"]',
            files=[{"name": "rows.csv", "mimeType": "text/csv", "buffer": rows_csv(6, failing={2}).encode()}],
        )
        await page.click("#batch-button")
        await page.wait_for_url("**/batches/*")
        await expect(page.locator("#batch-status")).to_have_text("completed", timeout=60_000)  # six runs
        await expect(page.locator("#counts")).to_contain_text("6 of 6 rows: 5 completed, 1 failed")
        await expect(page.locator("#rows tbody tr")).to_have_count(6)
        await expect(page.locator('#rows tr[data-row="2"] .badge')).to_have_text("failed")
        await page.select_option("#status-filter", "failed")
        await expect(page.locator("#rows tbody tr")).to_have_count(1)
        await page.click('#rows tr[data-row="2"] a')
        await page.wait_for_url("**/runs/*")
        await expect(page.locator("#run-status")).to_have_text("failed")
    finally:
        await context.close()


def test_a_data_file_that_cannot_be_read_or_does_not_fit_is_a_422_naming_the_problem(api, server):
    sop_id = batch_sop(api, server)
    before = len(api.get("/api/batches").json()["batches"])

    def upload(name: str, content: bytes | str, **form: str):
        return api.post("/api/batches", data={"sop_id": sop_id, **form}, files={"file": (name, content, "text/csv")})

    unmapped = upload("d.csv", "fullname,plan\nAda,pro\n", mapping="fullname")
    assert unmapped.status_code == 422, unmapped.text
    assert {"where": "mapping 'fullname'", "message": "write COLUMN=INPUT"} in unmapped.json()["problems"]
    latin = upload("kunden.csv", "name,plan\nJos\u00e9,pro\n".encode("latin-1"))
    assert latin.status_code == 422, latin.text
    [problem] = latin.json()["problems"]
    assert problem["where"] == "kunden.csv" and latin.json()["error"].startswith("kunden.csv: is not utf-8 text")
    assert problem["message"].startswith("is not utf-8 text: the byte 0xe9 at offset 13 does not decode")
    unknown = upload("kunden.csv", "name\nA\n", encoding="klingon")
    assert unknown.status_code == 422
    assert unknown.json()["problems"] == [{"where": "encoding", "message": "unknown encoding 'klingon'"}]
    as_json = api.post("/api/batches", json={"sop_id": sop_id, "rows": [{"name": "A"}], "encoding": "klingon"})
    assert as_json.status_code == 422 and "klingon" in as_json.text
    twice = upload("d.csv", "fullname,name\nA,B\n", mapping="fullname=name")
    assert twice.status_code == 422
    conflict = "input 'name' would come from two columns: fullname (mapped), name"
    assert twice.json()["problems"] == [{"where": "d.csv", "message": conflict}]
    lines = upload("j.jsonl", '{"name": "A"}\nnot json\n')
    assert lines.status_code == 422
    said = "not valid JSON: Expecting value at column 1"
    assert lines.json()["problems"] == [{"where": "j.jsonl line 2", "message": said}]
    assert len(api.get("/api/batches").json()["batches"]) == before  # nothing was made


def test_an_upload_in_the_encoding_it_names_keeps_its_file_name_as_the_source(api, server):
    sop_id = batch_sop(api, server)
    reply = api.post(
        "/api/batches",
        data={"sop_id": sop_id, "encoding": "cp1252", "mapping": " fullname=name , "},
        files={"file": ("../../etc/Kunden \u202e\u00fc.csv", "fullname,plan\nJos\u00e9,pro\n".encode("cp1252"))},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["source"] == "Kunden \u00fc.csv" and reply.json()["warnings"] == []
    batch = wait_batch(api, reply.json()["id"])
    assert batch["rows_page"][0]["outputs"] == {"submitted_name": "Jos\u00e9", "submitted_plan": "pro"}
    bom = api.post(
        "/api/batches",
        data={"sop_id": sop_id, "encoding": "utf-8"},
        files={"file": ("C:\\data\\" + "x" * 300 + ".csv", "\ufeffname,plan\nAda,pro\n".encode(), "text/csv")},
    )
    assert bom.status_code == 201, bom.text
    assert bom.json()["warnings"] == [] and bom.json()["source"].startswith("xxx") and len(bom.json()["source"]) <= 200
    assert api.get(f"/api/batches/{bom.json()['id']}", params={"status": "bogus"}).status_code == 400
    said = api.get(f"/api/batches/{bom.json()['id']}", params={"status": "bogus"}).json()["error"]
    assert "completed, failed, running, queued, paused, cancelled, invalid" in said


def test_the_openapi_document_lists_a_new_batch_s_warnings():
    from web.api.openapi import document

    schemas = document()["components"]["schemas"]
    created = document()["paths"]["/api/batches"]["post"]["responses"]["201"]["content"]["application/json"]
    name = created["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[name]["properties"]["warnings"]["items"] == {"type": "string"}
    assert "warnings" in schemas[name]["required"]

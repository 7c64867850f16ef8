"""Downloads saved into the run's artifacts (by a click, by a URL), bounded in size; files read back from
there and nowhere else; a downloaded file uploaded again."""

from __future__ import annotations

import json
from pathlib import Path

from sop_engine.document import load_sop, resolve_inputs
from sop_engine.policy import NetworkPolicy
from sop_engine.runner import Runner
from sop_engine.states import RunStatus

ORDERS = (Path(__file__).parent.parent / "fixtures" / "sites" / "files" / "orders.csv").read_bytes()


def failed(store, outcome, key: str) -> str:
    assert outcome.status == RunStatus.FAILED
    row = next(r for r in store.steps(outcome.run_id) if r.key == key)
    assert row.status == "failed"
    return row.error["message"]


async def test_download_by_click_and_by_url_then_read_back(run_sop, data_dir):
    outcome = await run_sop(
        """
sop: 1
id: downloads
outputs: [csv, report, notes, data, rows, value, text]
defaults: {timeout: 10s}
steps:
  - {id: open, action: navigate, url: "$SITE/download.html"}
  - {id: csv, action: download, selector: "#csv", outputs: {csv: "{{ [result.name, result.size] }}"}}
  - {id: report, action: download, selector: "#report", file: made.json, outputs: {report: path}}
  - {id: notes, action: download, url: "$SITE/files/notes.txt", outputs: {notes: path}}
  - {id: data, action: download, url: "$SITE/files/data.json", outputs: {data: name}}
  - {id: rows, action: read_file, path: csv-orders.csv, format: csv, outputs: {rows: rows}}
  - {id: value, action: read_file, path: "{{ report }}", inputs: [report], format: json, outputs: [value]}
  - {id: text, action: read_file, path: notes-notes.txt, outputs: [text]}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    out = outcome.outputs
    assert out["csv"] == ["orders.csv", len(ORDERS)]
    assert out["data"] == "data.json"
    folder = data_dir / "artifacts" / outcome.run_id
    assert (folder / "csv-orders.csv").read_bytes() == ORDERS
    assert Path(out["report"]) == folder / "report-made.json"
    assert json.loads(Path(out["report"]).read_text()) == {"orders": 4, "paid": 2, "total": 142.5}
    assert Path(out["notes"]) == folder / "notes-notes.txt"
    assert out["rows"][0] == {"Order": "1001", "Customer": "Ada Lovelace", "Total": "42.50", "Status": "paid"}
    assert len(out["rows"]) == 4
    assert out["value"] == {"orders": 4, "paid": 2, "total": 142.5}
    assert out["text"] == "Shipping notes\nLeave at the door.\n"


async def test_a_download_over_max_size_fails_and_keeps_no_file(run_sop, store, data_dir):
    for source in ('selector: "#csv"', 'url: "$SITE/files/orders.csv"'):
        outcome = await run_sop(
            f"""
sop: 1
id: too-big
defaults: {{timeout: 10s}}
steps:
  - {{id: open, action: navigate, url: "$SITE/download.html"}}
  - {{id: get, action: download, {source}, max_size: 20}}
"""
        )
        assert "larger than max_size (20 bytes" in failed(store, outcome, "get")
        folder = data_dir / "artifacts" / outcome.run_id
        assert not list(folder.glob("get-orders*"))  # the failure screenshot only


async def test_the_machine_caps_what_a_download_may_save(run_sop, store, monkeypatch):
    """A document may not raise its max_size over SOP_DOWNLOAD_MAX_BYTES (a server's disk is not the SOP's)."""
    monkeypatch.setenv("SOP_DOWNLOAD_MAX_BYTES", "30")
    outcome = await run_sop("""
sop: 1
id: capped
steps:
  - {id: open, action: navigate, url: "$SITE/download.html"}
  - {id: get, action: download, url: "$SITE/files/orders.csv", max_size: 1000000000}
""")
    assert "larger than max_size (30 bytes" in failed(store, outcome, "get")


async def test_download_needs_exactly_one_source():
    for fields in ("", ', selector: "#csv", url: "/x"'):
        try:
            load_sop(f"sop: 1\nid: x\nsteps:\n  - {{id: get, action: download{fields}}}\n")
        except ValueError as exc:
            assert "download takes exactly one of 'selector' (or 'locator') or 'url'" in str(exc)
        else:
            raise AssertionError("accepted")


async def test_read_file_refuses_what_is_outside_the_runs_artifacts(run_sop, store, tmp_path, data_dir):
    outside = tmp_path / "private.txt"
    outside.write_text("not yours")
    for path, said in (
        ("../../etc/passwd", "is not in the run's artifacts folder"),
        ("/etc/passwd", "is not in the run's artifacts folder"),
        (str(outside), "is not in the run's artifacts folder"),
        ("link.txt", "is not in the run's artifacts folder"),
        ("missing.txt", "no such file in the run's artifacts"),
    ):
        text = f"""
sop: 1
id: escape
steps:
  - {{id: shot, action: set, values: {{x: 1}}}}
  - {{id: read, action: read_file, path: "{path}"}}
"""
        loaded = load_sop(text)
        runner = Runner(store, None)  # no browser: read_file does not use one
        row = await runner.create_run(loaded, {})
        folder = data_dir / "artifacts" / row.id
        folder.mkdir(parents=True)
        (folder / "link.txt").symlink_to(outside)
        outcome = await runner.execute(row.id, loaded, {})
        assert said in failed(store, outcome, "read")
        assert "not yours" not in str(store.steps(outcome.run_id)[-1].error)


async def test_read_file_is_bounded(run_sop, store):
    outcome = await run_sop(
        """
sop: 1
id: bounded
defaults: {timeout: 10s}
steps:
  - {id: notes, action: download, url: "$SITE/files/notes.txt"}
  - {id: read, action: read_file, path: notes-notes.txt, max_size: 5}
"""
    )
    assert "over max_size (5)" in failed(store, outcome, "read")


async def test_a_downloaded_file_can_be_uploaded_from_the_server(store, browser_host, recorder, site, tmp_path):
    """In the server uploads come from the SOP's folder, or from the run's own artifacts."""
    text = """
sop: 1
id: reupload
outputs: [chosen]
defaults: {timeout: 10s}
steps:
  - {id: open, action: navigate, url: "$SITE/download.html"}
  - {id: get, action: download, selector: "#csv", outputs: {file: path}}
  - {id: send, action: upload, selector: "#file", files: "{{ file }}", inputs: [file]}
  - {id: shown, action: extract, selector: "#chosen:not(:empty)", outputs: {chosen: text}}
""".replace("$SITE/", site)
    loaded = load_sop(text, tmp_path)
    resolved = resolve_inputs(loaded.sop, {})
    runner = Runner(store, browser_host, [recorder], policy=NetworkPolicy.for_cli(strict=True))
    outcome = await runner.execute((await runner.create_run(loaded, resolved)).id, loaded, resolved)
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"chosen": "get-orders.csv Order,Customer,Total,Status"}

"""`validate` says everything wrong with a document in one report, also when some of its steps do not parse;
a document that is not UTF-8 is a problem naming the byte, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from sop_engine.document import DocumentError, load_sop, load_sop_file


def report(text: str) -> list[str]:
    with pytest.raises(DocumentError) as caught:
        load_sop(text)
    return [str(p) for p in caught.value.problems]


def test_a_duplicate_id_is_reported_with_a_step_that_does_not_parse():
    said = report("""
sop: 1
id: both
steps:
  - {id: a, action: log, message: one}
  - {id: a, action: log, message: two}
  - {id: b, action: clik, selector: "#x"}
""")
    assert "step 'b' (steps[2]): unknown action 'clik' (did you mean 'click'?)" in said
    assert "step 'a': the id 'a' is used by 2 steps; ids must be unique" in said


def test_ids_of_broken_steps_count_and_references_are_checked_against_them():
    said = report("""
sop: 1
id: nested
steps:
  - id: group
    action: loop
    repeat: 2
    steps:
      - {id: b, action: clik}
      - {id: c, action: log, message: x, depends_on: [zzz]}
  - {id: b, action: log, message: y, resume_from: nowhere}
""")
    assert "step 'b': the id 'b' is used by 2 steps; ids must be unique" in said
    assert "step 'c', field 'depends_on': 'zzz' is not another step's id" in said
    assert "step 'b', field 'resume_from': 'nowhere' is not a step id" in said


def test_the_steps_are_checked_when_the_top_level_is_wrong_too():
    said = report("""
sop: 2
id: top
inputs:
  "bad name": {type: string}
steps:
  - {id: a, action: nope}
""")
    assert any(line.startswith("sop: ") for line in said)
    assert any("unknown action 'nope'" in line for line in said)


def test_a_document_that_is_not_utf8_names_the_file_and_the_byte(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_bytes("sop: 1\nid: x\nname: Caf\u00e9\nsteps: []\n".encode("latin-1"))
    with pytest.raises(DocumentError) as caught:
        load_sop_file(path)
    assert str(caught.value).startswith(f"{path}: is not utf-8 text: the byte 0xe9 at offset 22 does not decode")


def test_a_byte_order_mark_before_a_document_is_read_as_utf8(tmp_path: Path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffsop: 1\nid: bom\nsteps:\n  - {id: a, action: log, message: hi}\n".encode())
    assert load_sop_file(path).sop.id == "bom"

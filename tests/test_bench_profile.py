"""bench/profile.py's reading of py-spy's samples: each goes to the innermost frame that names a component."""

from __future__ import annotations

from pathlib import Path

from bench.profile import RATE, component, table


def test_a_sample_goes_to_the_innermost_frame_that_names_a_component():
    engine = "run (sop_engine/runner/leaf.py:10)"
    loop = "_run_once (asyncio/base_events.py:1906)"
    encode = "encode (socketio/packet.py:64)"
    json = "dumps (json/__init__.py:231)"
    assert component(f"{loop};{engine};{encode};{json}") == "Socket.IO / Engine.IO"  # json is no component
    assert component(f"{engine};{loop}") == "event loop and threads"
    assert component(f"{loop};{engine}") == "engine (runner, attempts, actions, templates)"
    assert component("main (x.py:1)") == "other"


def test_the_table_gives_milliseconds_a_step_and_shares(tmp_path: Path):
    raw = tmp_path / "spy.raw"
    raw.write_text(
        f"main (x.py:1);commit (sop_engine/store/journal.py:5) {RATE}\n"
        f"main (x.py:1);emit (socketio/async_server.py:180) {3 * RATE}\n"
    )
    rows = table(raw, steps=1000)
    assert rows == [("Socket.IO / Engine.IO", 3.0, 0.75), ("store", 1.0, 0.25)]

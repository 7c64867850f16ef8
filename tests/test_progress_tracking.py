"""The feed's progress, kept up to date event by event (progress.RunProgress), says what the run's rows say
(progress.progress, read from the store) after every event of a run with nested loops, skipped branches and an
unsized loop; and what it costs per event does not grow with the steps done."""

from __future__ import annotations

from typing import Any

from sop_engine.document import load_sop
from sop_engine.events import Event
from sop_engine.progress import RunProgress, progress, sized_loops
from sop_engine.runner import Runner
from sop_engine.states import RunStatus

NESTED = """
sop: 1
id: nested-progress
steps:
  - id: outer
    action: loop
    repeat: 4
    steps:
      - {id: note, action: log, message: "{{ index }}", inputs: [index]}
      - id: inner
        action: loop
        for_each: "{{ [1, 2, 3] }}"
        as: item
        steps:
          - {id: add, action: set, values: {n: "{{ item }}"}, inputs: [item]}
          - id: branch
            action: if
            condition: "{{ item == 2 }}"
            inputs: [item]
            then:
              - {id: two, action: log, message: two}
            else:
              - {id: other, action: log, message: other}
              - {id: more, action: log, message: more}
  - id: until
    action: loop
    until: "{{ index == 3 }}"
    steps:
      - {id: tick, action: log, message: tick}
  - {id: last, action: log, message: done}
"""


class Compare:
    """After every commit: the tracked figures against those read from the store. (A commit may hold several
    events: the store shows all of them, the tracker has followed them all at its last one.)"""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.tracked: RunProgress | None = None
        self.checked = 0
        self.differ: list[Any] = []

    def read(self, run_id: str) -> dict[str, Any]:
        rows = [(key, status) for key, _, status in self.store.step_states(run_id)]
        return progress(rows, sized_loops(self.store.events_of(run_id, "loop.sized")))

    async def emit(self, event: Event) -> None:
        if self.tracked is None:
            sized = sized_loops(self.store.events_of(event.run_id, "loop.sized"))
            self.tracked = RunProgress(self.store.step_states(event.run_id), sized, {})
        elif self.tracked.follows(event.type):
            self.tracked.apply(event.type, event.data)
        else:  # the run moved: the feed reads it again, so does this
            self.tracked = None
            return
        if self.store.last_seq(event.run_id) == event.seq:
            figures, stored = self.tracked.figures(), self.read(event.run_id)
            if figures != stored:
                self.differ.append((event.type, event.data, figures, stored))
            self.checked += 1


async def test_the_tracked_progress_is_the_stored_one_after_every_event(store, browser_host):
    loaded = load_sop(NESTED)
    compare = Compare(store)
    runner = Runner(store, browser_host, [compare])
    row = await runner.create_run(loaded, {})
    outcome = await runner.execute(row.id, loaded, {})
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert compare.differ == [] and compare.checked > 50
    assert compare.read(row.id)["percent"] == 100.0


def test_the_eta_is_the_typical_seconds_of_what_is_left():
    tracked = RunProgress([("a", "a", "completed"), ("b", "b", "running")], {}, {"a": 1.0, "b": 2.0, "c": 4.0})
    assert tracked.eta_s() == 2.0
    tracked.apply("steps.added", {"parent": None, "keys": ["c"]})
    assert tracked.eta_s() == 6.0
    tracked.apply("step.updated", {"key": "b", "status": "completed"})
    assert tracked.eta_s() == 4.0 and tracked.figures() == {"completed": 2, "total": 3, "percent": 66.7}
    assert RunProgress([], {}, {}).eta_s() is None  # no earlier run: no ETA

"""Dead letters on the server: failed runs grouped by their error, and bulk actions on them (retry from the
failed step, rerun from the start as a new run, delete), each written to the server-level audit log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sop_engine.artifacts import Artifacts
from sop_engine.dead_letters import GROUP_RUNS_SHOWN, GROUP_SCAN_MAX, RunFilter, error_kind, group_key, normalised
from sop_engine.states import RUN_TERMINAL, RunStatus, TransitionError

from .access import may_control
from .auth import User
from .db import off_loop
from .errors import ApiError
from .state import ServerState

log = logging.getLogger("sop_engine.web")


def _when(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


async def failed_groups(state: ServerState, wanted: RunFilter) -> dict[str, Any]:
    """Failed runs that fit the filter (the latest GROUP_SCAN_MAX to end), grouped by their normalised error
    message, the largest group first (then the one that failed last): {groups, scanned, truncated}. Each group
    keeps every run id it found in `all_runs` (for a bulk action), and shows the newest GROUP_RUNS_SHOWN."""
    wanted = RunFilter(**{**wanted.__dict__, "status": RunStatus.FAILED.value})
    rows = await state.db.run_summaries(wanted, GROUP_SCAN_MAX + 1)
    truncated = len(rows) > GROUP_SCAN_MAX
    rows = rows[:GROUP_SCAN_MAX]
    steps = await state.db.failed_steps([r[0] for r in rows])
    groups: dict[str, dict[str, Any]] = {}
    for run_id, sop_id, error, finished_at, _ in rows:  # the latest ended first
        key_error = steps.get(run_id, (None, None))
        message = error or (key_error[1] or {}).get("message")
        key = group_key(message)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "key": key,
                "message": normalised(message),
                "example": (message or "")[:2000],
                "kinds": [],
                "sops": [],
                "count": 0,
                "first_seen": None,
                "last_seen": _when(finished_at),
                "all_runs": [],
            }
        group["count"] += 1
        group["first_seen"] = _when(finished_at)
        group["all_runs"].append(run_id)
        for field, value in (("kinds", error_kind(key_error[1])), ("sops", sop_id)):
            if value not in group[field]:
                group[field].append(value)
    ordered = sorted(groups.values(), key=lambda g: (g["count"], g["last_seen"] or ""), reverse=True)
    return {"groups": ordered, "scanned": len(rows), "truncated": truncated}


def shown_groups(found: dict[str, Any]) -> dict[str, Any]:
    """The groups as the API shows them: at most GROUP_RUNS_SHOWN run ids each."""
    groups = []
    for group in found["groups"]:
        shown = {k: v for k, v in group.items() if k != "all_runs"}
        shown["runs"] = group["all_runs"][:GROUP_RUNS_SHOWN]
        shown["sops"], shown["kinds"] = sorted(group["sops"]), sorted(group["kinds"])
        groups.append(shown)
    return {**found, "groups": groups}


@dataclass
class Outcome:
    run_id: str
    done: bool
    reason: str | None = None
    new_run: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"run_id": self.run_id, "outcome": "done" if self.done else "refused"}
        if self.reason:
            shown["reason"] = self.reason
        if self.new_run:
            shown["new_run"] = self.new_run
        return shown


class BulkAction:
    """One bulk action by one person over runs, run by run: each ends done or refused with the reason, and
    each is in the server-level audit log (a control's line is written by the gate, in its transaction)."""

    def __init__(self, state: ServerState, user: User, action: str) -> None:
        self.state, self.user, self.action = state, user, action

    async def apply(self, run_ids: list[str]) -> list[Outcome]:
        runs = {r.id: r for r in await self.state.db.runs_by_id(run_ids)}
        steps = await self.state.db.failed_steps([i for i in run_ids if i in runs]) if self.action == "retry" else {}
        outcomes = []
        for run_id in run_ids:
            run = runs.get(run_id)
            try:
                outcome = await self._one(run_id, run, steps.get(run_id))
            except (ApiError, TransitionError) as exc:  # a control refused (409), or the gate did
                outcome = Outcome(run_id, False, getattr(exc, "message", None) or str(exc))
            if not outcome.done:
                line = {"who": self.user.name, "action": self.action, "run_id": run_id, "outcome": "refused"}
                line.update(sop_id=run.sop_id if run else None, detail={"bulk": True, "reason": outcome.reason})
                await self.state.db.write_audit([line])
            outcomes.append(outcome)
        if any(o.done for o in outcomes) and self.action != "delete":
            self.state.pool.wake()
        return outcomes

    async def _one(self, run_id: str, run: Any, failed: tuple[str, Any] | None) -> Outcome:
        if run is None:
            return Outcome(run_id, False, "no such run")
        if not may_control(self.user, run.created_by):
            owner = f"{run.created_by}'s" if run.created_by else "nobody's"
            return Outcome(run_id, False, f"the run is {owner}: only its creator or an admin may act on it")
        if self.action == "retry":
            return await self._retry(run, failed)
        if run.status not in RUN_TERMINAL:
            return Outcome(run_id, False, f"the run is {run.status}: only a run that ended may be {self.action}d")
        if self.action == "rerun":
            return await self._rerun(run)
        return await self._delete(run)

    async def _retry(self, run: Any, failed: tuple[str, Any] | None) -> Outcome:
        """The retry control on the step that failed the run: the run is queued again from there."""
        if run.status != RunStatus.FAILED:
            return Outcome(run.id, False, f"the run is {run.status}: only a failed run is retried")
        if failed is None:
            return Outcome(run.id, False, "the run has no failed step to retry from: rerun it")
        loaded = await off_loop(self.state.pool.document, run.document_id)
        await self.state.controls.retry(run.id, failed[0], self.user.name, loaded)
        return Outcome(run.id, True)

    async def _rerun(self, run: Any) -> Outcome:
        """A new run of the same SOP version with the same inputs (its secrets from the sealed inputs); the old
        run's event log and audit name the new one."""
        try:
            inputs = self.state.runner.inputs_of(run)
        except Exception:  # sealed with a key this server no longer has: its message is not quoted
            return Outcome(run.id, False, "its sealed inputs cannot be opened with this server's key")
        loaded = await off_loop(self.state.pool.document, run.document_id)
        new = await self.state.runner.create_run(loaded, inputs, run.priority, created_by=self.user.name)
        data = {"control": "rerun", "who": self.user.name, "target": None, "new_run": new.id, "bulk": True}
        audit = {"who": self.user.name, "action": "rerun", "target": None, "detail": data}
        await self.state.pool.record(run.id, "control", data, audit=audit)
        return Outcome(run.id, True, new_run=new.id)

    async def _delete(self, run: Any) -> Outcome:
        """The run and its rows, then its files; the audit line (with what the run was) stays."""
        detail = {"bulk": True, "status": run.status, "error": (run.error or "")[:2000], "batch_id": run.batch_id}
        audit = {"who": self.user.name, "action": "delete", "detail": detail}
        refused = await self.state.db.delete_ended_run(run.id, audit)
        if refused is not None:
            return Outcome(run.id, False, refused)
        try:
            await off_loop(Artifacts.configured().delete_run, run.id)
        except Exception as exc:  # the store's message is not quoted: it may say too much
            log.warning("run %s deleted, its files not: %s", run.id, type(exc).__name__)
            return Outcome(run.id, True, "deleted; its files could not be removed from the artifact store")
        return Outcome(run.id, True)

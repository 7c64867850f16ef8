"""One step of a run: started, attempted under its retry policy, completed or failed (then its on_error), with its
secrets kept out of every text and picture."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import ChainMap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..actions.targets import build, target_of
from ..attempts import (
    MASK_COLOR,
    StepContext,
    attempt_step,
    checked_fields,
    clean_error,
    map_outputs,
    off_the_loop,
    render_fields,
)
from ..control import Waiting
from ..controls import skipped_by_person
from ..errors import StepError
from ..events import utcnow
from ..graph import step_outputs
from ..logs import WHERE
from ..loops import (
    instance_key,
)
from ..masking import MASK
from ..retries import RetryPolicy
from ..rollback import ESCALATED
from ..states import StepStatus
from ..steps import Condition, DialogAnswer, If, Loop, Probe, Step, as_written, uses_browser
from ..taint import secret_parts, secret_texts
from .outcome import LOST, RollingBack, RunFailed, RunPaused

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page


class Leaf:
    """One step: its gate, start, attempts under its retry policy, result, pictures and secrets."""

    def _variables(self, step: Step, env: Mapping[str, Any]) -> dict[str, Any]:
        return {name: env.get(name) for name in step.inputs}

    def _shown(self, values: dict[str, Any]) -> dict[str, Any]:
        """Variables as they may be shown: a tainted one as ***, whatever its value."""
        return {n: MASK if n in self.tainted else v for n, v in values.items()}

    def _shown_inputs(self, variables: dict[str, Any]) -> dict[str, Any]:
        return self._shown(variables)

    def _shown_fields(self, template: Any, fields: Any) -> Any:
        """Rendered fields as they may be shown: a part whose template reads a tainted name as ***, whatever its
        value (one too short to be masked by value too). Most steps read none: their fields as they are."""
        if not self.tainted or not any(True for _ in secret_parts(template, fields, self.tainted)):
            return fields
        return _hidden_parts(template, fields, self.tainted)

    # secrets: derived ones, and where they show on a page ------------------------------------

    def hide(self, value: Any) -> None:
        """A value computed from a secret: masked from now on in every text, and covered in pictures."""
        for text in secret_texts(value):
            self.mask.add(text)
            if text not in self._clear:
                self._clear[text] = None
                self.live.cover += 1

    def _learn_secrets(self, step: Step, template: Any, fields: Any) -> None:
        """Before the step acts (before its fields are checked, so that an error quoting them is masked): the
        rendered templates that read a tainted name become secrets."""
        for value in secret_parts(template, fields, self.tainted):
            self.hide(value)

    def _remember_filled(self, step: Step, fields: dict[str, Any]) -> None:
        """A field filled with a secret (its checked target) is covered in every picture of its tab."""
        if step.action in ("fill", "type", "select"):
            values = [fields.get("value"), fields.get("label")]
            if self.mask(values) != values:
                where = json.dumps(as_written([target_of(fields), fields.get("frame")]), sort_keys=True)
                filled = self._filled.setdefault(step.tab, set())
                if where not in filled:
                    filled.add(where)
                    self.live.cover += 1

    def secret_locators(self, tab: str, page: Page) -> list[Locator]:
        """The fields of the tab filled with a secret, and the elements whose text shows one."""
        filled = [build(page, *json.loads(where)) for where in sorted(self._filled.get(tab, ()))]
        return filled + [page.get_by_text(text) for text in self._clear]

    async def run_step(self, step: Step, env: ChainMap[str, Any], prefix: str) -> StepStatus:
        key = instance_key(prefix, step.id)
        try:
            status = await self._run_step(step, env, key, prefix)
        except (RunFailed, RunPaused):
            if self.browser.restorations:
                await self._restored(key)
            raise
        if self.browser.restorations:
            await self._restored(key)
        return status

    async def _restored(self, key: str) -> None:
        """The browser was rebuilt from a checkpoint during this step: said in the run's events, with what a
        checkpoint cannot bring back."""
        found, self.browser.restorations = self.browser.restorations, []
        for after, at in found:
            data = {"before": key, "checkpoint_after": after, "at": at.isoformat(), "lost": list(LOST)}
            await self.emit("run.restored", data)

    async def _run_step(self, step: Step, env: ChainMap[str, Any], key: str, prefix: str) -> StepStatus:
        if not await self._gate(step, key):
            await self._skip(step, env, key, "skipped by a person")
            return StepStatus.SKIPPED
        variables = self._variables(step, env)
        try:
            if step.when is not None and not await self.condition(step.when, variables, step):
                await self._skip(step, env, key, f"'when' was false: {self._describe(step.when)}")
                return StepStatus.SKIPPED
        except StepError as exc:
            return await self._fail(step, key, exc, [])
        if isinstance(step, Loop):
            return await self.run_loop(step, env, key, variables)
        if isinstance(step, If):
            return await self.run_if(step, env, prefix, variables)
        return await self.run_leaf(step, env, key, variables)

    def _describe(self, condition: Condition) -> str:
        if isinstance(condition, Probe):
            return f"exists {condition.exists!r}" if condition.exists is not None else f"missing {condition.missing!r}"
        return str(condition)

    async def _skip(self, step: Step, env: ChainMap[str, Any], key: str, reason: str) -> None:
        env.maps[0].update(dict.fromkeys(step_outputs(step)))  # a skipped step's outputs read as none
        if skipped_by_person(StepStatus.SKIPPED, reason):
            self.person_skipped.add(key)
        now = utcnow()
        await self.emit(
            "step.updated",
            {"key": key, "status": "skipped", "reason": reason},
            step=(key, {"status": "skipped", "reason": reason, "started_at": now, "finished_at": now}),
        )
        self._stepped()

    async def _start(
        self,
        key: str,
        variables: dict[str, Any],
        attempt: int | None = None,
        durable: bool = False,
        *,
        action: str,
    ) -> None:
        """`durable`: committed before the step acts (a non-idempotent step must be known to have started).
        `action` is told in the event, for those who watch (metrics, spans, logs)."""
        attempt = attempt or self.attempts.setdefault(key, 1)
        self.recorded_inputs[key] = variables  # what its compensations see (runner/undo.py)
        self.cost.step_started(key, sampled=action not in ("loop", "if"))
        shown = self._shown_inputs(variables)
        values = {
            "status": "running",
            "attempts": attempt,
            "started_at": utcnow(),
            "finished_at": None,
            "inputs": shown,
            "error": None,
            "reason": None,
        }
        await self.emit(
            "step.updated",
            {"key": key, "status": "running", "action": action, "attempt": attempt, "inputs": shown},
            step=(key, values),
            wait=durable,
        )

    async def _complete(
        self,
        key: str,
        outputs: dict[str, Any],
        started: float,
        artifacts: list[str],
        checkpoint: dict[str, Any] | None = None,
        fields: Any = None,
    ) -> None:
        """`fields`: the step's rendered fields as they may be shown (_shown_fields), told in the event."""
        duration_ms = round((asyncio.get_running_loop().time() - started) * 1000, 1)
        real, outputs = outputs, self._shown(outputs)
        self.stored_outputs[key] = real  # what its compensations see, in completion order (runner/undo.py)
        self.completion[key] = next(self.completed_count)
        values: dict[str, Any] = {"status": "completed", "finished_at": utcnow(), "outputs": outputs}
        if self.mask(outputs) != real:  # a secret shows in them: keep the real ones sealed, for a resume
            values["sealed_outputs"] = self.runner.vault.seal(real)
        if artifacts:
            values["artifacts"] = artifacts
        values["cost"] = self.cost.step_ended(key)
        # the run's figures so far, and the steps' CPU and heap read since they ended: at most every second
        costs = {"run": {"cost": self.cost.run_cost()}, "costs": self.cost.late()} if self.cost.due() else {}
        await self.commit_behind(
            "step.updated",
            {
                "key": key,
                "status": "completed",
                "outputs": outputs,
                "duration_ms": duration_ms,
                "artifacts": artifacts,
                "fields": fields,
            },
            (key, values),
            checkpoint=checkpoint,
            **costs,
        )

    async def _fail(self, step: Step, key: str, exc: StepError, artifacts: list[str], fields: Any = None) -> StepStatus:
        """Records the failure, then applies on_error: fail ends the run, continue goes on, rollback ends the
        steps and undoes those that completed (runner/undo.py), pause (escalate) asks a person (who retries or
        skips the step: RETRY comes back as PENDING; or rolls back)."""
        exc = clean_error(exc)
        error = exc.as_dict()
        values = {"status": "failed", "finished_at": utcnow(), "error": error, "artifacts": artifacts}
        values["cost"] = self.cost.step_ended(key)
        self.cost.sample(key, self.browser.current(step.tab) if uses_browser(step) else None)
        await self.emit(
            "step.updated",
            {"key": key, "status": "failed", "error": error, "artifacts": artifacts, "fields": fields},
            step=(key, values),
        )
        policy = step.on_error or self.sop.defaults.on_error
        if policy == "continue":
            self._stepped()
            return StepStatus.FAILED
        message = f"step {key} failed: {exc.describe()}"
        if policy == "rollback":
            raise RollingBack(key, self.mask(message))
        if policy in ("pause", "escalate") and self.control is not None:
            said = message + (ESCALATED if policy == "escalate" else "")
            answer = await self.pause(Waiting(self.mask(said), key, "failed"))
            if answer["action"] == "rollback":
                raise RollingBack(key, self.mask(message))
            if answer["action"] == "skip":
                self.person_skipped.add(key)
                await self.step_event(key, "skipped", reason="skipped by a person after it failed")
                return StepStatus.SKIPPED
            await self.step_event(key, "pending", reason="retried by a person")
            return StepStatus.PENDING
        if policy in ("pause", "escalate"):
            message += f" (on_error: {policy} waits for a person in the server; a headless run fails instead)"
        raise RunFailed(self.mask(message))

    async def run_leaf(self, step: Step, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        where = WHERE.set((self.run_id, key))  # what is logged meanwhile says the step too (JSON logs)
        try:
            while True:
                status = await self._leaf_once(step, env, key, variables)
                if status != StepStatus.PENDING:  # PENDING: a person asked for it to run again
                    return status
        finally:
            WHERE.reset(where)

    async def _leaf_once(self, step: Step, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        await self._start(key, variables, self.attempts[key], durable=not step.idempotent, action=step.action)
        started = asyncio.get_running_loop().time()
        written = step.timeout if not isinstance(step.timeout, str) else None  # a template: known once rendered
        ctx = StepContext(
            self, key, step.tab, written or self.sop.defaults.timeout, variables, self.base_dir, self.policy
        )
        policy = RetryPolicy.from_spec(step.retry or self.sop.defaults.retry)

        async def on_retry(number: int, exc: StepError | None, wait_s: float) -> None:
            error = clean_error(exc).as_dict() if exc else None
            self.attempts[key] += 1
            await self.emit(
                "step.retried",
                {"key": key, "attempt": self.attempts[key] - 1, "error": error, "wait_s": round(wait_s, 3)},
                step=(key, {"attempts": self.attempts[key]}),
            )

        shown = None  # the rendered fields, as the step's events tell them
        try:
            template = step.templated()
            fields = await off_the_loop(template, lambda: render_fields(template, variables))
            self._learn_secrets(step, template, fields)
            shown = self._shown_fields(template, fields)
            acting, fields = checked_fields(step, template, fields)
            self._remember_filled(step, fields)
            ctx.timeout = acting.timeout or self.sop.defaults.timeout
            answer = await self._dialog_answer(step, variables)
            await self.live.before_acting()  # a picture being taken covers what it must
            await self.settled()  # the step before this one is durable before this one acts
            try:
                with self.browser.dialogs.answering(step.tab, key, answer):
                    result = await attempt_step(acting, fields, ctx, policy, self.limit, on_retry)
            finally:
                seen = self.browser.dialogs.take(step.tab) if uses_browser(step) else []
            if uses_browser(step):
                result = {**result, "dialogs": seen}
            outputs = await off_the_loop(step.outputs, lambda: map_outputs(step, result, variables))
            for name in self.tainted.intersection(outputs):
                self.hide(outputs[name])
        except StepError as exc:
            if uses_browser(step) and self.sop.screenshots != "off":
                await self._screenshot(ctx, "failure.png")
            return await self._fail(step, key, exc, ctx.artifacts, shown)
        env.maps[0].update(outputs)
        if uses_browser(step) and self.sop.screenshots == "every-step":
            await self._screenshot(ctx, "after.png")  # awaited: the next step cannot show a secret meanwhile
        checkpoint = await self.browser.checkpoint(step, key)
        await self._complete(key, outputs, started, ctx.artifacts, checkpoint, fields=shown)
        self.cost.sample(key, self.browser.current(step.tab) if uses_browser(step) else None)
        if uses_browser(step):
            self._want_frame(step, key)
        self._stepped()
        return StepStatus.COMPLETED

    async def _dialog_answer(self, step: Step, variables: dict[str, Any]) -> DialogAnswer | None:
        """The step's own answer to dialogs, its prompt rendered (a prompt computed from a secret is one)."""
        answer = step.dialogs
        if answer is None or answer.prompt is None:
            return answer
        prompt = await off_the_loop(answer.prompt, lambda: render_fields(answer.prompt, variables))
        for value in secret_parts(answer.prompt, prompt, self.tainted):
            self.hide(value)
        return DialogAnswer(accept=answer.accept, prompt=str(prompt))

    async def _screenshot(self, ctx: StepContext, name: str) -> None:
        """A picture of the step's tab as it left it (after it failed; after each step with `screenshots:
        every-step`), its secrets covered, kept as one of the step's files."""
        page = self.browser.current(ctx.tab)
        if page is None:
            return
        with contextlib.suppress(Exception):  # a screenshot is a courtesy; the step's own error is what matters
            mask = await ctx.secret_locators(page)
            picture = await page.screenshot(timeout=5000, mask=mask, mask_color=MASK_COLOR)
            await ctx.save_artifact(name, picture)

    def _want_frame(self, step: Step, key: str) -> None:
        """A live frame after a browser step, taken beside the next steps (runner.frames)."""
        page = self.browser.current(step.tab)
        if page is not None:
            self.live.want(key, page, lambda: self.secret_locators(step.tab, page))


def _hidden_parts(template: Any, rendered: Any, tainted: frozenset[str]) -> Any:
    """`rendered` with each part whose template reads a tainted name (taint.secret_parts) replaced by ***."""
    if isinstance(template, str):
        return MASK if any(True for _ in secret_parts(template, rendered, tainted)) else rendered
    if isinstance(template, dict) and isinstance(rendered, dict):
        return {k: _hidden_parts(template.get(k), v, tainted) for k, v in rendered.items()}
    if isinstance(template, list) and isinstance(rendered, list):
        hidden = [_hidden_parts(t, v, tainted) for t, v in zip(template, rendered, strict=False)]
        return hidden + rendered[len(template) :]
    return rendered

"""The SOP document: its model, loading from YAML or JSON, and every check made before a run starts."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import rollback
from .browser_options import BrowserOptions
from .checks import check_document, check_parsed_steps
from .decoding import Undecodable, decode
from .durations import Duration
from .expressions import ExpressionError, OutOfTime, names_in, within_deadline
from .limits import LimitError, ParseError, check_value, load_json, load_yaml
from .locators import located
from .policy.rules import parse_rule
from .problems import Problem
from .steps import NAME_PATTERN, STEP_MODELS, DialogPolicy, ErrorPolicy, RetrySpec, Step, as_written, uses_browser
from .text import clean, has_unencodable

InputType = Literal["string", "integer", "number", "boolean", "list", "dict"]
_NO_DEFAULT = object()
DOCUMENT_MAX_SECONDS = 5.0  # checking a document (its steps, templates and graph) is stopped after this long


class DocumentError(ValueError):
    """A document, or the inputs given to it, that cannot run. Holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: InputType = "string"
    default: Any = _NO_DEFAULT
    secret: bool = False
    description: str | None = None

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT


class BreakerSpec(BaseModel):
    """This SOP's circuit breakers per target host (sop_engine.breakers): stricter than the server's settings
    only; a looser value is raised (or lowered) to the server's."""

    model_config = ConfigDict(extra="forbid")

    failures: int | None = Field(None, ge=1, le=1000)  # fewer is stricter
    window: Duration | None = None  # longer is stricter
    cooldown: Duration | None = None  # longer is stricter


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: Duration = 30.0
    retry: RetrySpec = RetrySpec()
    on_error: ErrorPolicy = "fail"
    dialogs: DialogPolicy | None = None  # none: every dialog is dismissed
    breaker: BreakerSpec | None = None  # none: the server's circuit breakers as they are


class Egress(BaseModel):
    """Where this SOP's steps may go, within what the server allows: its lists only add rules (narrowing)."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field([], max_length=200)
    deny: list[str] = Field([], max_length=200)

    @field_validator("allow", "deny")
    @classmethod
    def _rules(cls, rules: list[str]) -> list[str]:
        for rule in rules:
            parse_rule(rule)  # a ValueError names what is wrong with it
        return rules


class Sop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop: Literal[1] = Field(description="format version")
    id: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    name: str | None = None
    description: str | None = None
    inputs: dict[str, InputSpec] = {}
    outputs: list[str] = []
    defaults: Defaults = Defaults()
    timeout: Duration | None = None  # the whole run
    max_parallel: int = Field(1, ge=1, le=64)
    egress: Egress = Egress()
    browser: BrowserOptions | None = None  # how the run's browser context is made
    screenshots: Literal["on-failure", "every-step", "off"] = "on-failure"  # pictures a browser step saves, masked
    # a Playwright trace of the run's browser context; unset: the server's SOP_TRACE (the CLI's --trace wins over both)
    trace: Literal["off", "on", "on-failure"] | None = None
    steps: list[Any] = Field(min_length=1)

    @field_validator("screenshots", mode="before")
    @classmethod
    def _screenshots(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("trace", mode="before")
    @classmethod
    def _trace_words(cls, value: Any) -> Any:
        """`trace: on` and `trace: off` in YAML read as booleans: they mean the words."""
        return {True: "on", False: "off"}[value] if isinstance(value, bool) else value

    @property
    def secret_inputs(self) -> set[str]:
        return {name for name, spec in self.inputs.items() if spec.secret}

    @property
    def needs_browser(self) -> bool:
        """Some step drives or reads a page: Chromium is started before the first step, beside the rest."""
        steps = self.walk()
        return any(uses_browser(step) for step in steps) or any(uses_browser(c) for s in steps for c in s.compensate)

    def walk(self) -> list[Step]:
        """Every step of the document, depth first, in document order."""
        found: list[Step] = []

        def visit(steps: list[Step]) -> None:
            for step in steps:
                found.append(step)
                for child in step.children():
                    visit(child)

        visit(self.steps)
        return found


@dataclass(frozen=True)
class LoadedSop:
    sop: Sop
    source: str
    content_hash: str
    base_dir: Path | None = None


# loading -------------------------------------------------------------------------------------


def _where_step(raw: Any, path: str) -> str:
    sid = raw.get("id") if isinstance(raw, dict) else None
    return f"step '{sid}' ({path})" if sid else f"step at {path}"


def _parse_step(raw: Any, path: str, problems: list[Problem]) -> Step | None:
    if not isinstance(raw, dict):
        problems.append(Problem(f"step at {path}", "a step is a mapping with at least 'id' and 'action'"))
        return None
    where = _where_step(raw, path)
    action = raw.get("action")
    model = STEP_MODELS.get(action) if isinstance(action, str) else None
    if model is None:
        hint = difflib.get_close_matches(str(action), STEP_MODELS, n=1)
        said = f"unknown action {action!r}" if action is not None else "field 'action' is required"
        problems.append(Problem(where, said + (f" (did you mean '{hint[0]}'?)" if hint else "")))
        return None
    try:
        step = model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            field = located(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                message = "is required"
            elif err["type"] == "extra_forbidden":
                owner = next((p for p in reversed(field.split(".")[:-1]) if not p.isdigit()), action)
                message = f"is not a field of '{owner}'"
            problems.append(Problem(f"{where}, field '{field}'" if field else where, message))
        return None
    for name, children in (("steps", "steps"), ("then", "then"), ("else_", "else")):
        raw_children = getattr(step, name, None)
        if isinstance(raw_children, list):
            raw_children = [_inherit(step, c) for c in raw_children]
            parsed = [_parse_step(c, f"{path}.{children}[{i}]", problems) for i, c in enumerate(raw_children)]
            setattr(step, name, [p for p in parsed if p is not None])
    if step.compensate:
        step.compensate = _parse_compensations(step, path, problems)
    return step


def _parse_compensations(step: Step, path: str, problems: list[Problem]) -> list[Step]:
    """A step's `compensate`: plain steps run one after the other in a rollback (sop_engine.rollback); they act
    on the step's tab unless they name theirs. No loop, branch, compensation or error policy of their own:
    a compensation that fails is recorded and the rollback goes on."""
    where = f"{_where_step({'id': step.id}, path)}, field 'compensate'"
    found: list[Step] = []
    seen: set[str] = set()
    for i, raw in enumerate(step.compensate):
        at = f"{path}.compensate[{i}]"
        if isinstance(raw, dict):
            for name, said in rollback.MISPLACED.items():
                if name in raw:
                    problems.append(Problem(f"{_where_step(raw, at)}, field '{name}'", said))
                    raw = None
                    break
        if raw is None:
            continue
        parsed = _parse_step(_inherit(step, raw), at, problems)
        if parsed is None:
            continue
        if parsed.children():
            problems.append(Problem(_where_step(raw, at), f"a compensation is a plain step, not a {parsed.action}"))
        elif parsed.id in seen:
            problems.append(Problem(where, f"id '{parsed.id}' is used twice in this step's compensations"))
        else:
            seen.add(parsed.id)
            found.append(parsed)
    return found


def _inherit(container: Step, raw: Any) -> Any:
    """A step in a loop or a branch acts on its container's tab, and inside its container's frame, unless it
    names its own tab (then no frame but its own) or its own frame (`frame: null`: the page itself)."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)  # an alias may put one mapping under two containers
    if "tab" in raw:
        return raw
    raw["tab"] = container.tab
    frame = getattr(container, "frame", None)
    model = STEP_MODELS.get(raw.get("action")) if isinstance(raw.get("action"), str) else None
    if frame is not None and model is not None and "frame" in model.model_fields and "frame" not in raw:
        raw["frame"] = as_written(frame)
    return raw


def parse_text(text: str) -> Any:
    """YAML or JSON text, bounded in depth and in values after aliases are expanded (see limits.load_yaml)."""
    try:
        return load_yaml(text)
    except ParseError as exc:
        raise DocumentError([Problem(exc.where, str(exc))]) from None
    except LimitError as exc:
        raise DocumentError([Problem("document", str(exc))]) from None


def load_sop(text: str, base_dir: Path | None = None) -> LoadedSop:
    """Parse and check a document; raises DocumentError listing every problem found. Parsing is bounded in
    depth and values (limits.load_yaml); the checks after it, in time (DOCUMENT_MAX_SECONDS)."""
    raw = parse_text(text)
    try:
        return within_deadline(lambda: _checked(raw, text, base_dir), DOCUMENT_MAX_SECONDS, "checking the document")
    except OutOfTime as exc:
        raise DocumentError([Problem("document", str(exc))]) from None


def _checked(raw: Any, text: str, base_dir: Path | None) -> LoadedSop:
    if not isinstance(raw, dict):
        raise DocumentError([Problem("document", "an SOP is a mapping with 'sop', 'id' and 'steps'")])
    problems: list[Problem] = _start_templates(raw)
    try:
        sop: Sop | None = Sop.model_validate(raw)
    except ValidationError as exc:
        sop = None
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = "is required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            problems.append(Problem(field, message))
    raw_steps = raw.get("steps") if isinstance(raw.get("steps"), list) else []
    before = len(problems)
    parsed = [_parse_step(s, f"steps[{i}]", problems) for i, s in enumerate(raw_steps)]
    steps = [p for p in parsed if p is not None]
    all_parsed = len(problems) == before
    if sop is not None:
        sop.steps = steps
        for name, spec in sop.inputs.items():
            if not _is_name(name):
                problems.append(Problem(f"inputs.{name}", "is not a variable name (letters, digits, _)"))
            if not spec.required and spec.default is not None and not fits_type(spec.default, spec.type):
                problems.append(Problem(f"inputs.{name}", f"default must be {spec.type}, got {spec.default!r}"))
            elif not spec.required and (said := _value_problem(spec.default, "the default")):
                problems.append(Problem(f"inputs.{name}", said))
    if sop is None or not all_parsed:  # what the steps that parsed say, with every id written
        raise DocumentError(problems + check_parsed_steps(steps, raw_steps))
    problems.extend(check_document(sop))
    if problems:
        raise DocumentError(problems)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return LoadedSop(sop=sop, source=text, content_hash=digest, base_dir=base_dir)


def _start_templates(raw: dict[str, Any]) -> list[Problem]:
    """`browser` and `defaults.dialogs` are rendered once, as the run starts: their templates read inputs only.
    Checked on the document as written, so each is reported whatever else is wrong, at its place."""
    inputs = set(raw["inputs"]) if isinstance(raw.get("inputs"), dict) else set()
    defaults = raw.get("defaults") if isinstance(raw.get("defaults"), dict) else {}
    problems: list[Problem] = []

    def visit(where: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(f"{where}.{key}", inner)
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                visit(f"{where}[{index}]", inner)
        elif isinstance(value, str):
            try:
                unknown = sorted(names_in(value) - inputs)
            except ExpressionError as exc:
                problems.append(Problem(where, str(exc)))
                return
            if unknown:
                said = ", ".join(map(repr, unknown))
                problems.append(
                    Problem(where, f"reads {said}, which is not an input of the SOP (it is set as the run starts)")
                )

    visit("browser", raw.get("browser"))
    visit("defaults.dialogs", defaults.get("dialogs"))
    return problems


def load_sop_file(path: str | Path) -> LoadedSop:
    """A document file: UTF-8 (a byte-order mark is dropped); a byte that is not is named by its offset."""
    path = Path(path)
    try:
        text = decode(path.read_bytes())
    except OSError as exc:
        raise DocumentError([Problem(str(path), f"cannot read: {exc.strerror or exc}")]) from None
    except Undecodable as exc:
        raise DocumentError([Problem(str(path), str(exc))]) from None
    return load_sop(text, base_dir=path.resolve().parent)


def _is_name(name: str) -> bool:
    import re

    return re.match(NAME_PATTERN, name) is not None


# inputs --------------------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def _value_problem(value: Any, what: str) -> str | None:
    """Why a value may not be an input: too deep, too many values or too much text, or text with no UTF-8 form."""
    try:
        check_value(value, what)
    except LimitError as exc:
        return str(exc)
    return has_unencodable(value, what)


def fits_type(value: Any, type_name: str) -> bool:
    """True when a value is of a declared input type (a bool is no integer)."""
    if isinstance(value, bool) and type_name != "boolean":
        return False
    return isinstance(value, _TYPES[type_name])


def resolve_inputs(sop: Sop, given: dict[str, Any]) -> dict[str, Any]:
    """The run's inputs: given values checked against their declared types, defaults filled in."""
    problems: list[Problem] = []
    resolved: dict[str, Any] = {}
    for name in given:
        if name not in sop.inputs:
            known = ", ".join(sop.inputs) or "none"
            shown = clean(name) if isinstance(name, str) else name  # a problem is sent back as UTF-8
            problems.append(Problem(f"input '{shown}'", f"is not an input of this SOP (its inputs: {known})"))
    for name, spec in sop.inputs.items():
        if name in given:
            value = given[name]
        elif spec.required:
            problems.append(Problem(f"input '{name}'", f"is required ({spec.type})"))
            continue
        else:
            value = spec.default
        if value is None and not spec.required and name not in given:
            resolved[name] = None
            continue
        if said := _value_problem(value, "the value"):
            problems.append(Problem(f"input '{name}'", said))
            continue
        if not fits_type(value, spec.type):
            shown = "***" if spec.secret else _shown(value)
            problems.append(Problem(f"input '{name}'", f"must be {spec.type}, got {shown}"))
            continue
        resolved[name] = value
    if problems:
        raise DocumentError(problems)
    return resolved


def parse_cli_value(text: str, type_name: str | None = None) -> Any:
    """`--input NAME=VALUE`: the text itself for a string input, else JSON when it parses, else the text."""
    if type_name == "string":
        return text
    try:
        return load_json(text)
    except ValueError:  # not JSON, or too deep: the text itself
        return text


def _shown(value: Any) -> str:
    shown = json.dumps(value, default=str)
    return shown if len(shown) <= 200 else shown[:200] + "…"

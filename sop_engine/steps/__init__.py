"""The step models of an SOP document, one per action: each validates its own fields."""

from __future__ import annotations

from .base import (
    NAME_PATTERN,
    STEP_ID_PATTERN,
    Condition,
    DialogAnswer,
    DialogPolicy,
    ErrorPolicy,
    Probe,
    RetrySpec,
    Step,
    Strict,
    as_written,
)
from .browser import (
    Assert,
    BrowserStep,
    Check,
    Click,
    CloseTab,
    Download,
    Evaluate,
    Extract,
    Fill,
    FrameStep,
    Navigate,
    OptionalTarget,
    Press,
    Screenshot,
    Scroll,
    Select,
    TargetStep,
    TypeText,
    Upload,
    Wait,
)
from .containers import If, Loop
from .other import HUMAN_ACTIONS, Approval, FormField, Http, Input, Log, ReadFile, Set, Sleep

STEP_MODELS: dict[str, type[Step]] = {
    "navigate": Navigate,
    "click": Click,
    "dblclick": Click,
    "hover": Click,
    "fill": Fill,
    "type": TypeText,
    "press": Press,
    "select": Select,
    "check": Check,
    "uncheck": Check,
    "upload": Upload,
    "wait": Wait,
    "extract": Extract,
    "assert": Assert,
    "screenshot": Screenshot,
    "scroll": Scroll,
    "evaluate": Evaluate,
    "close_tab": CloseTab,
    "download": Download,
    "read_file": ReadFile,
    "set": Set,
    "http": Http,
    "log": Log,
    "sleep": Sleep,
    "loop": Loop,
    "if": If,
    "input": Input,
    "approval": Approval,
}


def uses_browser(step: Step) -> bool:
    """True when the step itself reads or drives a page (its `when` probe counts)."""
    if isinstance(step.when, Probe):
        return True
    if isinstance(step, Assert):
        return not step.browser_free
    if isinstance(step, Loop):
        return step.uses_page
    if isinstance(step, If):
        return isinstance(step.condition, Probe)
    return step.browser


__all__ = [
    "HUMAN_ACTIONS",
    "NAME_PATTERN",
    "STEP_ID_PATTERN",
    "STEP_MODELS",
    "Approval",
    "Assert",
    "BrowserStep",
    "Check",
    "Click",
    "CloseTab",
    "Condition",
    "DialogAnswer",
    "DialogPolicy",
    "Download",
    "ErrorPolicy",
    "Evaluate",
    "Extract",
    "Fill",
    "FormField",
    "FrameStep",
    "Http",
    "If",
    "Input",
    "Log",
    "Loop",
    "Navigate",
    "OptionalTarget",
    "Press",
    "Probe",
    "ReadFile",
    "RetrySpec",
    "Screenshot",
    "Scroll",
    "Select",
    "Set",
    "Sleep",
    "Step",
    "Strict",
    "TargetStep",
    "TypeText",
    "Upload",
    "Wait",
    "as_written",
    "uses_browser",
]

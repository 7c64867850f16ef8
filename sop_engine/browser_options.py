"""A document's `browser:` section: how the run's browser context is made (viewport, locale, credentials,
a proxy...). Its texts may be templates over the run's inputs, rendered once when the run starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .expressions import ExpressionError, render
from .steps import DialogAnswer

if TYPE_CHECKING:
    from .document import Sop


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Viewport(_Strict):
    width: int = Field(ge=1, le=10_000)
    height: int = Field(ge=1, le=10_000)


class Proxy(_Strict):
    server: str
    username: str | None = None
    password: str | None = None
    bypass: str | None = None


class Credentials(_Strict):
    username: str
    password: str


class Geolocation(_Strict):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class BrowserOptions(_Strict):
    viewport: Viewport | None = None
    locale: str | None = None
    timezone: str | None = None
    user_agent: str | None = None
    proxy: Proxy | None = None
    http_credentials: Credentials | None = None
    extra_http_headers: dict[str, str] | None = None
    ignore_https_errors: bool | None = None
    geolocation: Geolocation | None = None
    permissions: list[str] | None = None
    color_scheme: Literal["light", "dark", "no-preference"] | None = None

    def context_options(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Playwright's `new_context` keyword arguments, the templates rendered with the run's inputs."""
        given = render(self.model_dump(exclude_none=True), inputs)
        if "timezone" in given:
            given["timezone_id"] = given.pop("timezone")
        for texts in ("extra_http_headers", "http_credentials", "proxy"):  # a lone `{{ pin }}` may give a number
            if texts in given:
                given[texts] = {k: str(v) for k, v in given[texts].items()}
        return given


@dataclass
class RunBrowser:
    """What a run's browser is made with, rendered once as the run starts."""

    options: dict[str, Any] = field(default_factory=dict)  # new_context's keyword arguments
    dialogs: DialogAnswer | None = None  # the document's default answer, its prompt rendered
    secrets: list[Any] = field(default_factory=list)  # rendered values that read a secret: masked from now on
    error: str | None = None  # why the run cannot start


def run_browser(sop: Sop, inputs: dict[str, Any], tainted: frozenset[str]) -> RunBrowser:
    from .taint import secret_parts  # the one rule of which rendered values carry a secret

    made = RunBrowser()
    answer = sop.defaults.dialogs
    try:
        if sop.browser is not None:
            template = sop.browser.model_dump(exclude_none=True)
            made.options = sop.browser.context_options(inputs)
            made.secrets += secret_parts(template, render(template, inputs), tainted)
        if answer is not None and answer.prompt is not None:
            prompt = render(answer.prompt, inputs)
            made.secrets += secret_parts(answer.prompt, prompt, tainted)
            answer = DialogAnswer(accept=answer.accept, prompt=str(prompt))
    except ExpressionError as exc:
        made.error = f"browser settings: {exc}"
    made.dialogs = answer
    return made

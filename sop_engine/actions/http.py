"""The http action, through httpx."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ErrorKind, StepError
from ..steps import Http
from .context import ActionContext


async def request(step: Http, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    url = str(fields["url"])
    try:
        response = await ctx.http_client().request(
            step.method,
            url,
            headers=fields["headers"] or None,
            params=fields["params"] or None,
            json=fields["json_body"],
            content=fields["body"],
            timeout=ctx.timeout,
        )
    except httpx.TimeoutException:
        raise StepError(ErrorKind.TIMEOUT, f"{step.method} {url} got no answer in time", url=url) from None
    except httpx.HTTPError as exc:
        raise StepError(ErrorKind.HTTP, f"{step.method} {url} failed: {exc}", url=url) from None
    expected = step.expect_status
    if expected is not None:
        allowed = expected if isinstance(expected, list) else [expected]
        if response.status_code not in allowed:
            kind = ErrorKind.HTTP if response.status_code >= 500 else ErrorKind.ASSERTION
            raise StepError(
                kind,
                f"{step.method} {url} answered {response.status_code}",
                url=url,
                expected=expected,
                found=response.status_code,
            )
    try:
        body_json = response.json()
    except ValueError:
        body_json = None
    return {"status": response.status_code, "json": body_json, "text": response.text, "headers": dict(response.headers)}


EXECUTORS = {"http": request}

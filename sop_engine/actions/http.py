"""The http action, through httpx. Redirects are followed here, one hop at a time, so that the policy checks
every URL the request goes to, not only the first."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ErrorKind, StepError
from ..policy import NetworkPolicy, PolicyError
from ..steps import Http
from .context import ActionContext

RESPONSE_MAX_BYTES = 10 * 1024 * 1024  # of an answer's body kept for the step's result


async def request(step: Http, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    policy = ctx.policy
    url = policy.absolute(str(fields["url"]), step.method)
    try:
        streamed = await _send(step, url, fields, ctx, policy)
        try:
            body = await _bounded_body(streamed, f"{step.method} {url}")
        finally:
            await streamed.aclose()
        response = httpx.Response(streamed.status_code, headers=streamed.headers, content=body)
    except httpx.TimeoutException:
        raise StepError(ErrorKind.TIMEOUT, f"{step.method} {url} got no answer in time", url=url) from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
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


async def _bounded_body(response: httpx.Response, what: str) -> bytes:
    """The body, read as it comes, up to RESPONSE_MAX_BYTES: a server answering gigabytes fails the step."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > RESPONSE_MAX_BYTES:
            raise StepError(
                ErrorKind.HTTP, f"{what}: the answer is over {RESPONSE_MAX_BYTES} bytes", url=str(response.url)
            )
    return bytes(body)


async def _send(
    step: Http, url: str, fields: dict[str, Any], ctx: ActionContext, policy: NetworkPolicy
) -> httpx.Response:
    client = ctx.http_client()
    request = client.build_request(
        step.method,
        url,
        headers=fields["headers"] or None,
        params=fields["params"] or None,
        json=fields["json_body"],
        content=fields["body"],
        timeout=ctx.timeout,
    )
    hops = [str(request.url)]
    for _ in range(client.max_redirects + 1):
        try:
            await policy.check_request(str(request.url))
            response = await client.send(request, follow_redirects=False, stream=True)
        except PolicyError as exc:
            via = f" (redirected to {request.url})" if len(hops) > 1 else ""
            raise PolicyError(f"{step.method} {url}{via}: {exc.message}", url=str(request.url)) from None
        if response.next_request is None:
            return response
        await response.aclose()
        request = response.next_request
        hops.append(str(request.url))
    raise StepError(ErrorKind.HTTP, f"{step.method} {url}: more than {client.max_redirects} redirects")


EXECUTORS = {"http": request}

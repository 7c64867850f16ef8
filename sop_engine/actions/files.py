"""Files of a run: a download saved into its artifacts, bounded in size; a file of its artifacts read back."""

from __future__ import annotations

import csv
import io
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from playwright.async_api import Download as PlaywrightDownload

from .. import settings
from ..errors import ErrorKind, StepError
from ..limits import LimitError, ParseError, load_json
from ..policy import PolicyError
from ..steps import Download, ReadFile
from .browser import translated
from .context import ActionContext
from .targets import locate, shown, target_of

CHUNK = 64 * 1024


def _limit(step: Download) -> int:
    """The step's max_size, within the most this machine lets a download save (SOP_DOWNLOAD_MAX_BYTES)."""
    return min(step.max_size, settings.current().download_max_bytes)


def _too_big(what: str, size: int, limit: int) -> StepError:
    return StepError(ErrorKind.ACTION, f"{what}: the file is larger than max_size ({limit} bytes; {size} so far)")


async def download(step: Download, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """A click that starts a download (the browser's, with its session), or a URL fetched with the tab's
    cookies through the run's checked HTTP client: each hop is checked by the egress policy before it
    connects, and the body stops at max_size."""
    if target_of(f) is not None:
        return await _by_click(step, f, ctx)
    return await _by_url(step, f, ctx)


async def _by_click(step: Download, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx)
    what = f"download by clicking {shown(f)}"
    ms = max(ctx.timeout, 0.001) * 1000
    async with translated(page, what, locator, ctx.timeout, shown(f)):
        async with page.expect_download(timeout=ms) as started:
            await locator.click(timeout=ms)
        got: PlaywrightDownload = await started.value
        failure = await got.failure()
        if failure:
            raise StepError(ErrorKind.ACTION, f"{what}: the download failed ({failure})", selector=shown(f))
        temporary = await got.path()
    size = temporary.stat().st_size
    if size > _limit(step):
        await got.delete()  # the browser's own copy
        raise _too_big(what, size, _limit(step))
    name = got.suggested_filename or "download"
    path = ctx.artifact(f["file"] or name)
    await got.save_as(path)
    await got.delete()
    return {"path": str(path), "name": name, "size": size}


async def _by_url(step: Download, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    policy = ctx.policy
    url = policy.absolute(str(f["url"]), "download")
    what = f"download {url}"
    page = await ctx.page()
    client = ctx.http_client()
    for _ in range(client.max_redirects + 1):
        try:
            await policy.check_request(url)
        except PolicyError as exc:
            raise PolicyError(f"{what}: {exc.message}", url=url) from None
        except OSError as exc:
            raise StepError(ErrorKind.NAVIGATION, f"{what}: the host name did not resolve ({exc})", url=url) from None
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in await page.context.cookies(url))
        headers = {"cookie": cookies} if cookies else None
        request = client.build_request("GET", url, headers=headers, timeout=ctx.timeout)
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise StepError(ErrorKind.HTTP, f"{what} failed: {exc}", url=url) from None
        if response.next_request is None:
            break
        await response.aclose()
        url = str(response.next_request.url)
    else:
        raise StepError(ErrorKind.HTTP, f"{what}: more than {client.max_redirects} redirects")
    try:
        if response.status_code >= 400:
            raise StepError(ErrorKind.HTTP, f"{what} answered {response.status_code}", url=url)
        name = _suggested(response)
        path = ctx.artifact(f["file"] or name)
        size = await _save(response, path, _limit(step), what)
    finally:
        await response.aclose()
    return {"path": str(path), "name": name, "size": size}


async def _save(response: httpx.Response, path: Path, limit: int, what: str) -> int:
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in response.aiter_bytes(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_big(what, size, limit)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)  # a partial file is not kept
        raise
    return size


def _suggested(response: httpx.Response) -> str:
    """The name the server gives (Content-Disposition), else the last segment of the URL's path."""
    header = response.headers.get("content-disposition")
    if header:
        message = Message()
        message["content-disposition"] = header
        name = message.get_filename()
        if name:
            return Path(name).name
    return Path(unquote(urlsplit(str(response.url)).path)).name or "download"


# read_file ---------------------------------------------------------------------------------


async def read_file(step: ReadFile, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    root = ctx.artifacts_dir.resolve()
    given = Path(str(f["path"]))
    path = (given if given.is_absolute() else root / given).resolve()  # symlinks followed, then checked
    if not path.is_relative_to(root):
        raise StepError(ErrorKind.ACTION, f"read_file: {str(given)!r} is not in the run's artifacts folder")
    if not path.is_file():
        raise StepError(ErrorKind.ACTION, f"read_file: no such file in the run's artifacts: {given.name!r}")
    size = path.stat().st_size
    if size > step.max_size:
        raise StepError(ErrorKind.ACTION, f"read_file: {given.name!r} is {size} bytes, over max_size ({step.max_size})")
    text = path.read_bytes()[: step.max_size].decode("utf-8", errors="replace").removeprefix("\ufeff")
    if step.format == "text":
        return {"text": text, "size": size}
    if step.format == "json":
        try:
            return {"value": load_json(text, f"the file {given.name!r}"), "size": size}
        except (LimitError, ParseError) as exc:
            raise StepError(ErrorKind.ACTION, f"read_file: {exc}") from None
    rows = list(csv.DictReader(io.StringIO(text, newline=""), restkey="_extra"))
    return {"rows": rows, "count": len(rows), "size": size}


EXECUTORS = {"download": download, "read_file": read_file}

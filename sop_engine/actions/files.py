"""Files of a run: a download saved into its artifacts, bounded in size; a file of its artifacts read back.

A download lands in a local temporary file first (the browser's own, or one of ours), is measured there, and
only then goes into the artifact store (a folder or S3: artifacts.py)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import tempfile
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from playwright.async_api import Download as PlaywrightDownload

from .. import settings
from ..artifacts import UnsafeName, checked_part
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
    try:  # the browser's own copy goes, whatever happens to it
        size = temporary.stat().st_size
        if size > _limit(step):
            raise _too_big(what, size, _limit(step))
        name = got.suggested_filename or "download"
        path = await ctx.save_artifact(f["file"] or name, temporary)
    finally:
        await got.delete()
    return {"path": path, "name": name, "size": size}


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
        handle, temporary = tempfile.mkstemp(prefix="sop-download-")
        try:
            with os.fdopen(handle, "wb") as out:
                size = await _save(response, out, _limit(step), what)
            path = await ctx.save_artifact(f["file"] or name, Path(temporary))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)  # a partial file is not kept, and a kept one is in the store now
    finally:
        await response.aclose()
    return {"path": path, "name": name, "size": size}


async def _save(response: httpx.Response, out: io.BufferedWriter, limit: int, what: str) -> int:
    size = 0
    async for chunk in response.aiter_bytes(CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_big(what, size, limit)
        out.write(chunk)
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
    """`path`: a file's name in the run's artifacts, or where a step said it put one (its `path` output)."""
    store, given = ctx.artifact_store, str(f["path"])
    shown = PurePosixPath(given).name
    name = _plain(given) or store.artifact_at(ctx.run_id, given)
    try:
        size = None if name is None else await asyncio.to_thread(store.size, ctx.run_id, name)
    except UnsafeName:  # a link that leads out of the run's folder
        name = None
    if name is None:
        raise StepError(ErrorKind.ACTION, f"read_file: {given!r} is not in the run's artifacts folder")
    if size is None:
        raise StepError(ErrorKind.ACTION, f"read_file: no such file in the run's artifacts: {shown!r}")
    if size > step.max_size:
        raise StepError(ErrorKind.ACTION, f"read_file: {shown!r} is {size} bytes, over max_size ({step.max_size})")
    data = await asyncio.to_thread(store.read, ctx.run_id, name, step.max_size)
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    if step.format == "text":
        return {"text": text, "size": size}
    if step.format == "json":
        try:
            return {"value": load_json(text, f"the file {shown!r}"), "size": size}
        except (LimitError, ParseError) as exc:
            raise StepError(ErrorKind.ACTION, f"read_file: {exc}") from None
    rows = list(csv.DictReader(io.StringIO(text, newline=""), restkey="_extra"))
    return {"rows": rows, "count": len(rows), "size": size}


def _plain(given: str) -> str | None:
    """`given` when it is a bare file name, else None."""
    try:
        return checked_part(given)
    except UnsafeName:
        return None


EXECUTORS = {"download": download, "read_file": read_file}

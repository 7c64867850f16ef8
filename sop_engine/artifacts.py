"""Where runs keep their files (screenshots, downloads): a folder, or any fsspec URL (`SOP_ARTIFACTS_URL`), so
that workers on several hosts and the server that shows the files share one place (a shared folder, S3).

A run's file is `<run id>/<name>` under the store's root; a step row records it in that form. Every method
here blocks (a disk, a network): async code calls them through `asyncio.to_thread`."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from . import settings

BLOCK = 1024 * 1024  # what an open file reads ahead from a remote store: a stream holds about this much


class UnsafeName(ValueError):
    """A name that could reach outside a run's folder: refused before the store is asked."""


def checked_part(part: str) -> str:
    """A run id or a file name, as one plain path segment: no separators, no `..`, no NUL or control character."""
    if part in ("", ".", "..") or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in part):
        raise UnsafeName(f"{part!r} is not a plain file name")
    return part


def split_relative(relative: str) -> tuple[str, str]:
    """`<run id>/<name>` (as step rows record a file, and the API names it) as its two checked parts."""
    parts = relative.split("/")
    if len(parts) != 2:
        raise UnsafeName(f"{relative!r} is not <run id>/<name>")
    return checked_part(parts[0]), checked_part(parts[1])


def shown_url(url: str) -> str:
    """The store's URL as it may be shown: without a user name or password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))


class Artifacts:
    """The runs' files in one store: written, read back within a bound, streamed, deleted a run at a time."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url, self.options = url, options or {}
        self.shown = shown_url(url)

    @functools.cached_property
    def _opened(self) -> tuple[Any, str, bool]:
        # fsspec (25 ms of imports) loads when a file is first written or read, not with every run
        from fsspec.core import url_to_fs
        from fsspec.implementations.local import LocalFileSystem

        fs, root = url_to_fs(self.url, **self.options)
        return fs, root.rstrip("/"), isinstance(fs, LocalFileSystem)

    @property
    def fs(self) -> Any:
        return self._opened[0]

    @property
    def root(self) -> str:
        return self._opened[1]

    @property
    def local(self) -> bool:
        return self._opened[2]

    @classmethod
    def configured(cls) -> Artifacts:
        """The store SOP_ARTIFACTS_URL names (SOP_ARTIFACTS_OPTIONS: its fsspec options); fsspec keeps one client
        per URL and options, so this is cheap to call."""
        options = settings.current()
        return cls(options.artifacts_url, options.artifacts_options)

    def __repr__(self) -> str:
        return f"Artifacts({self.shown!r})"  # never the options: they may hold credentials

    # where a file is ------------------------------------------------------------------------

    def _folder(self, run_id: str) -> str:
        return f"{self.root}/{checked_part(run_id)}"

    def _path(self, run_id: str, name: str) -> str:
        path = f"{self._folder(run_id)}/{checked_part(name)}"
        if self.local:  # a symbolic link in a run's folder must not lead out of the store
            real = os.path.realpath(path)
            if not real.startswith(os.path.realpath(self.root) + os.sep):
                raise UnsafeName(f"{name!r} leads outside the run's folder")
        return path

    def _where(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def location(self, run_id: str, name: str) -> str:
        """Where the file is, as a step gives it back (`path`): a local path, or the store's URL of it."""
        return self._where(f"{self._folder(run_id)}/{checked_part(name)}")

    def artifact_at(self, run_id: str, location: str) -> str | None:
        """The name of the run's file at `location` (what `location` gave), or None: it is not one of them."""
        if self.local and os.path.isabs(location):
            location = os.path.normpath(location)
        prefix = self._where(self._folder(run_id)) + "/"
        if not location.startswith(prefix):
            return None
        name = location.removeprefix(prefix)
        try:
            return checked_part(name)
        except UnsafeName:
            return None

    # reading and writing --------------------------------------------------------------------

    def keep(self, run_id: str, name: str, content: bytes | Path) -> str:
        """Stores `content` (bytes, or a local file's) as the run's file `name`; gives back its location."""
        path = self._path(run_id, name)
        if self.local:  # an object store has no folders to make
            self.fs.makedirs(self._folder(run_id), exist_ok=True)
        if isinstance(content, bytes):
            self.fs.pipe_file(path, content)
        else:
            self.fs.put_file(str(content), path)
        return self.location(run_id, name)

    def size(self, run_id: str, name: str) -> int | None:
        """The file's size in bytes, or None when the run has no such file."""
        path = self._path(run_id, name)
        self.fs.invalidate_cache(path)  # another process (a worker) may have written it since we looked
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def read(self, run_id: str, name: str, limit: int) -> bytes:
        """At most `limit` bytes from the file's start (FileNotFoundError when there is none)."""
        return bytes(self.fs.cat_file(self._path(run_id, name), start=0, end=limit))

    def open(self, run_id: str, name: str) -> IO[bytes]:
        """The file to read in chunks (the caller closes it); a remote store reads ahead by BLOCK."""
        return self.fs.open(self._path(run_id, name), "rb", block_size=BLOCK)

    def fetch(self, run_id: str, name: str, into: Path) -> None:
        """Copies the file to a local one (Playwright uploads only local files)."""
        self.fs.get_file(self._path(run_id, name), str(into))

    def has_run(self, run_id: str) -> bool:
        folder = self._folder(run_id)
        self.fs.invalidate_cache(folder)
        return bool(self.fs.exists(folder))

    def delete_run(self, run_id: str) -> bool:
        """Deletes the run's files; False when it had none."""
        try:
            self.fs.rm(self._folder(run_id), recursive=True)
        except FileNotFoundError:
            return False
        return True

"""A run's Playwright trace, made fit to keep: every entry of the zip Playwright wrote passes through the run's
Masker before the zip is saved as the run's file `trace.zip`.

- JSON lines (`*.trace`, `*.network`) and JSON (`*.stacks`) are parsed and every string, key and number is
  masked (masking.Masker: the secret plain, HTML-, URL-, JSON- and base64-encoded); a line that does not parse
  is masked as text.
- Other entries (network bodies, stylesheets) that are UTF-8 text are masked as text.
- In a run that had any secret (given, or learnt as it ran), pictures are dropped: the screencast frames and
  every image body. Nobody can tell whether a picture shows a secret, and the frames are taken by Playwright
  itself, so the fields filled with a secret cannot be covered in them as in the run's own screenshots. The
  events pointing at a dropped entry go too (screencast frames), or lose the reference (a network body), so
  the viewer shows what is left.
- Other binary entries are dropped when they are compressed (nobody can look inside) or when their bytes hold a
  secret in any form (it cannot be cut out of an unknown format); kept otherwise.
- A masked entry named by the SHA-1 of what it held is renamed by what it holds now, and the trace's
  references follow (the old name would let anyone check a guess of a secret that was a whole body).
- An entry too large to mask in memory (ENTRY_MAX, LINE_MAX) is dropped; a zip that cannot be read is not kept.

Every function here blocks (zip, disk, artifact store): async code calls them through `asyncio.to_thread`."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from .artifacts import Artifacts
from .masking import Masker
from .states import RunStatus

TRACE_NAME = "trace.zip"  # the run's file
ENTRY_MAX = 16 * 1024 * 1024  # an entry masked whole in memory; a larger one is dropped
LINE_MAX = 64 * 1024 * 1024  # a line of a JSON lines entry (a DOM snapshot of a large page)
IMAGES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"\x00\x00\x01\x00")  # JPEG, PNG, GIF, ICO; and WebP
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".gif", ".webp", ".avif", ".bmp", ".ico")  # an SVG is text: masked
_SHA1 = re.compile(r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])")  # how Playwright names an entry by its content
PACKED = (b"\x1f\x8b", b"PK\x03\x04", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd", b"\x78\x9c", b"\x78\xda")


class TraceMode(StrEnum):
    OFF = "off"  # no trace
    ON = "on"  # kept whatever the run's end
    ON_FAILURE = "on-failure"  # kept only when the run ends failed


class TraceUnsafe(Exception):
    """The trace cannot be kept without risking a secret in it: it is dropped, and the run says why."""


def kept(mode: str, ended: RunStatus | None) -> bool:
    """Whether a trace recorded in `mode` is kept when the execution ends with the run `ended` (None: the
    execution stopped without recording an end: a cancel, a lost claim, an internal error)."""
    if ended is None or mode == TraceMode.OFF:
        return False
    return mode == TraceMode.ON or ended == RunStatus.FAILED


def viewer_folder() -> Path | None:
    """Playwright's own trace viewer, as the installed `playwright` package ships it; None when it does not."""
    import playwright

    folder = Path(playwright.__file__).parent / "driver" / "package" / "lib" / "vite" / "traceViewer"
    return folder if (folder / "index.html").is_file() and (folder / "sw.bundle.js").is_file() else None


# keeping -------------------------------------------------------------------------------------


def keep_trace(store: Artifacts, run_id: str, raw: Path, mask: Masker) -> dict[str, Any]:
    """Scrubs the trace Playwright wrote at `raw` and stores it as the run's TRACE_NAME: what `runs.trace`
    records, {"status": "saved", ...} or {"status": "dropped", "reason": ...}. `raw`'s folder is removed."""
    folder = Path(tempfile.mkdtemp(prefix="sop-trace-"))
    try:
        target = folder / TRACE_NAME
        try:
            report = scrub(raw, target, mask)
        except TraceUnsafe as exc:
            return dropped(str(exc))
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            return dropped(f"the trace Playwright wrote could not be read: {type(exc).__name__}")
        size = target.stat().st_size
        try:
            store.keep(run_id, TRACE_NAME, target)
        except Exception as exc:  # the store (a shared folder, S3), not the trace; its message may say too much
            return dropped(f"the artifact store did not take the trace: {type(exc).__name__}")
        return {"status": "saved", "bytes": size, **report}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(raw.parent, ignore_errors=True)


def dropped(reason: str) -> dict[str, Any]:
    return {"status": "dropped", "reason": reason}


def scrub(source: Path, target: Path, mask: Masker) -> dict[str, Any]:
    """Writes `source`'s entries to the zip `target`, masked; says what was done. Raises TraceUnsafe when the
    trace cannot be kept."""
    with zipfile.ZipFile(source) as zin:
        entries = [info for info in zin.infolist() if not info.is_dir()]
        if not any(info.filename.endswith(".trace") for info in entries):
            raise TraceUnsafe("the trace Playwright wrote holds no actions")
        if not mask:  # nothing to hide: the trace as Playwright wrote it
            shutil.copyfile(source, target)
            return {"scrubbed": False, "dropped_images": 0, "dropped_files": 0}
        dropped_as: dict[str, str] = {}  # name of an entry dropped -> "image" or "file"
        renamed: dict[str, str] = {}  # SHA-1 a masked entry was named by -> the SHA-1 of what it holds now
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in entries:
                if _is_events(info.filename):
                    continue
                data, kind = _resource(zin, info, mask)
                if data is None:
                    dropped_as[info.filename] = kind
                    continue
                name = _renamed(info.filename, data, renamed)
                if name not in zout.NameToInfo:  # two bodies masked alike are one entry
                    zout.writestr(_copied(info, name), data)
            for info in entries:
                if _is_events(info.filename):
                    with zin.open(info) as reader, zout.open(_copied(info, info.filename), "w") as writer:
                        _events(reader, writer, mask, set(dropped_as), renamed)
    images = sum(kind == "image" for kind in dropped_as.values())
    return {"scrubbed": True, "dropped_images": images, "dropped_files": len(dropped_as) - images}


def _renamed(name: str, data: bytes, renamed: dict[str, str]) -> str:
    """An entry named by the SHA-1 of what it held is named by the SHA-1 of what it holds once masked: the old
    name would let anyone check a guess of a secret that was a whole body."""
    found = _SHA1.search(name)
    if found is None:
        return name
    digest = hashlib.sha1(data).hexdigest()  # a name, as Playwright makes them, not a safeguard
    if digest != found.group():
        renamed[found.group()] = digest
    return name[: found.start()] + digest + name[found.end() :]


def _is_events(name: str) -> bool:
    return name.endswith((".trace", ".network", ".stacks"))


def _copied(info: zipfile.ZipInfo, name: str) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(name, date_time=info.date_time)
    copy.compress_type = zipfile.ZIP_DEFLATED
    return copy


def _resource(zin: zipfile.ZipFile, info: zipfile.ZipInfo, mask: Masker) -> tuple[bytes | None, str]:
    """The entry's bytes as kept in a run with secrets, or None (dropped); and what kind of entry it is."""
    name = info.filename
    if name.startswith("screencast/") or name.lower().endswith(IMAGE_SUFFIXES):
        return None, "image"
    if info.file_size > ENTRY_MAX:
        return None, "file"
    data = zin.read(info)
    if data.startswith(IMAGES) or data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return None, "image"
    try:
        return mask.text(data.decode("utf-8")).encode("utf-8"), "text"
    except UnicodeDecodeError:
        pass
    if data.startswith(PACKED) or holds_secret(data, mask):
        return None, "file"
    return data, "file"


def holds_secret(data: bytes, mask: Masker) -> bool:
    """Whether raw bytes hold a secret in any of the Masker's forms, written in UTF-8, Latin-1 or UTF-16."""
    return any(mask.text(view) != view for view in _readings(data))  # one reading at a time in memory


def _readings(data: bytes) -> Iterator[str]:
    yield data.decode("utf-8", "replace")
    yield data.decode("latin-1")
    for codec in ("utf-16-le", "utf-16-be"):
        for start in (0, 1):
            yield data[start:].decode(codec, "replace")


def _events(reader: IO[bytes], writer: IO[bytes], mask: Masker, gone: set[str], renamed: dict[str, str]) -> None:
    """Masks a JSON lines entry a line at a time, leaving out the events of the dropped entries and pointing at
    the renamed ones by their new names."""
    while line := reader.readline(LINE_MAX):
        if len(line) >= LINE_MAX and not line.endswith(b"\n"):
            raise TraceUnsafe("a line of the trace is too long to mask")
        masked = _event(line.decode("utf-8", "replace"), mask, gone)
        if masked is not None and renamed:
            masked = _SHA1.sub(lambda found: renamed.get(found.group(), found.group()), masked)
        if masked is not None:
            writer.write(masked.encode("utf-8") + b"\n")


def _event(line: str, mask: Masker, gone: set[str]) -> str | None:
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return mask.text(line.rstrip("\n"))
    if isinstance(event, dict) and gone:
        if event.get("type") == "screencast-frame" and _frame_file(event) in gone:
            return None
        if event.get("type") == "resource-snapshot" and isinstance(event.get("snapshot"), dict):
            _unlink(event["snapshot"], gone)
    return json.dumps(mask(event), ensure_ascii=False, separators=(",", ":"))


def _frame_file(event: dict[str, Any]) -> str | None:
    if isinstance(event.get("file"), str):
        return event["file"]
    return f"resources/{event['sha1']}" if isinstance(event.get("sha1"), str) else None


def _unlink(snapshot: dict[str, Any], gone: set[str]) -> None:
    """A network entry whose body was dropped loses its reference to it: the viewer shows it without one."""
    for holder in ((snapshot.get("request") or {}).get("postData"), (snapshot.get("response") or {}).get("content")):
        if not isinstance(holder, dict):
            continue
        for key, prefix in (("_file", ""), ("_sha1", "resources/")):
            if isinstance(holder.get(key), str) and prefix + holder[key] in gone:
                del holder[key]

"""Bytes from a file as text: UTF-8 unless an encoding is named, a UTF-8 byte-order mark dropped, and a byte
that does not decode named by its offset in the file."""

from __future__ import annotations

import codecs


class Undecodable(ValueError):
    """The bytes are not text in the encoding, or the encoding has no such name. Says which, in words."""


def decode(raw: bytes, encoding: str | None = None) -> str:
    name = encoding or "utf-8"
    try:
        codec = codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a name with a NUL in it
        raise Undecodable(f"unknown encoding {name!r}") from None
    if not getattr(codec, "_is_text_encoding", True):  # rot13, base64: not a way to read text
        raise Undecodable(f"unknown encoding {name!r} (it is not a text encoding)")
    try:
        return raw.decode("utf-8-sig" if codec.name == "utf-8" else codec.name)
    except UnicodeDecodeError as exc:
        byte = raw[exc.start : exc.start + 1].hex()
        raise Undecodable(
            f"is not {codec.name} text: the byte 0x{byte} at offset {exc.start} does not decode ({exc.reason})"
        ) from None

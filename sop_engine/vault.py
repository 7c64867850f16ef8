"""Secret inputs of queued runs, kept encrypted at rest until a worker needs them."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import settings

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


def _key_file() -> Path:
    return settings.current().data_dir / "secret.key"


def load_key() -> bytes:
    """SOP_SECRET_KEY if set, else a key file in the data folder, made on first use (mode 0600)."""
    named = settings.current().secret_key
    if named:
        return named.encode()
    path = _key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        from cryptography.fernet import Fernet

        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_bytes().strip()


class Vault:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    @functools.cached_property
    def _fernet(self) -> Fernet:
        # on first use: a run without secrets or checkpoints never loads cryptography (10 ms) nor reads the key
        from cryptography.fernet import Fernet

        return Fernet(self._key or load_key())

    def seal(self, values: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        try:
            return json.loads(self._fernet.decrypt(sealed.encode()))
        except _invalid_token():
            raise ValueError(
                "the run's secret inputs cannot be decrypted with this key (SOP_SECRET_KEY changed?)"
            ) from None

    def seal_message(self, text: str) -> bytes:
        """A message between the processes of a cluster, which only holders of the key can make or read."""
        return self._fernet.encrypt(text.encode())

    def open_message(self, sealed: bytes, ttl: int) -> str:
        """ValueError unless it was sealed with this key less than `ttl` seconds ago (no replays later)."""
        try:
            return self._fernet.decrypt(sealed, ttl=ttl).decode()
        except (_invalid_token(), UnicodeDecodeError):
            raise ValueError("not sealed with this cluster's key, or too old") from None


def _invalid_token() -> type[Exception]:
    from cryptography.fernet import InvalidToken

    return InvalidToken

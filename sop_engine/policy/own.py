"""The server's own origins: an SOP may open the server's demo pages, never its API."""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from .rules import canonical
from .urls import Address, parse_target

_LOOPBACK = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"), IPv4Network("0.0.0.0/32"), IPv6Network("::/128"))


@dataclass(frozen=True)
class OwnOrigin:
    """The server's own address: an SOP may load its open pages (the demo), not its API."""

    host: str
    port: int
    address: Address | None

    @classmethod
    def parse(cls, origin: str) -> OwnOrigin:
        target = parse_target(origin if "://" in origin else f"http://{origin}")
        assert target.host is not None and target.port is not None
        return cls(target.host, target.port, target.address)

    @property
    def local(self) -> bool:
        """Bound to loopback or to every address: any loopback address reaches it."""
        if self.address is not None:
            return self.address.is_loopback or self.address.is_unspecified
        return self.host == "localhost" or self.host.endswith(".localhost")

    @property
    def everywhere(self) -> bool:
        """Bound to every address (0.0.0.0, ::): any address of this machine reaches it."""
        return self.address is not None and self.address.is_unspecified

    def owns(self, host: str, addresses: list[Address], known: list[Address]) -> bool:
        """Whether a request to `host` (at `addresses`) reaches this origin's host; `known`: the addresses its
        name resolved to. The port is the caller's to compare."""
        if host == self.host:
            return True
        if self.local and (host == "localhost" or host.endswith(".localhost")):
            return True
        for address in map(canonical, addresses):
            if self.local and any(address in net for net in _LOOPBACK):
                return True
            if address == self.address or address in known:
                return True
            if self.everywhere and _on_this_machine(address):
                return True
        return False


@functools.lru_cache(maxsize=256)
def _on_this_machine(address: Address) -> bool:
    """Whether one of this machine's interfaces has the address: only then can a socket be bound to it (no
    packet is sent)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True

"""Egress rules: networks (CIDR), single addresses and host names (`*.example.com` for the names under it)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from .urls import Address, to_ascii

Network = IPv4Network | IPv6Network
_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_NAT64 = IPv6Network("64:ff9b::/96")

# what a server never lets an SOP reach: link-local networks and the cloud providers' metadata services
DEFAULT_DENY = (
    "169.254.0.0/16",  # IPv4 link-local, with 169.254.169.254 (AWS, GCP, Azure, OpenStack metadata)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba Cloud metadata
    "168.63.129.16",  # Azure WireServer
    "192.0.0.192",  # Oracle Cloud metadata
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
)


@dataclass(frozen=True)
class Rule:
    text: str  # as written, for messages
    network: Network | None = None
    name: str | None = None  # "example.com", or "*.example.com" for the names under it

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name

    def matches_address(self, address: Address) -> bool:
        return self.network is not None and any(a in self.network for a in related(address))


def parse_rule(text: str) -> Rule:
    """`10.0.0.0/8`, `192.168.1.10`, `::1`, `[fd00::1]`, `intranet.example.com`, `*.example.com`."""
    written = text.strip()
    bare = written.lower().strip("[]")
    try:
        return Rule(written, network=ip_network(bare, strict=False))
    except ValueError:
        pass
    name = to_ascii(bare).rstrip(".")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{written!r} is not a network, an address or a host name")
    return Rule(written, name=name)


def parse_rules(texts: Iterable[str], where: str) -> tuple[Rule, ...]:
    rules = []
    for text in texts:
        try:
            rules.append(parse_rule(str(text)))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(rules)


def canonical(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is the IPv4 address it carries."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def related(address: Address) -> Iterator[Address]:
    """The address and every IPv4 address an IPv6 one carries (mapped, compatible, 6to4, NAT64): a deny
    rule on 169.254.0.0/16 holds for ::ffff:169.254.169.254 too."""
    yield address
    if not isinstance(address, IPv6Address):
        return
    if address.ipv4_mapped is not None:
        yield address.ipv4_mapped
    if address.sixtofour is not None:
        yield address.sixtofour
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d, the old IPv4-compatible form
        yield IPv4Address(packed & 0xFFFFFFFF)
    if address in _NAT64:
        yield IPv4Address(packed & 0xFFFFFFFF)


@dataclass(frozen=True)
class RuleList:
    """Rules with where they came from: `SOP_EGRESS_DENY`, `the SOP's egress.allow`..."""

    source: str
    rules: tuple[Rule, ...]

    def match(self, host: str | None, addresses: Iterable[Address]) -> Rule | None:
        for rule in self.rules:
            if host is not None and rule.matches_name(host):
                return rule
            if any(rule.matches_address(a) for a in addresses):
                return rule
        return None

    def admits(self, host: str | None, addresses: list[Address]) -> bool:
        """An allow list: the host's name is on it, or every address it has is."""
        if host is not None and any(rule.matches_name(host) for rule in self.rules):
            return True
        return bool(addresses) and all(any(r.matches_address(canonical(a)) for r in self.rules) for a in addresses)

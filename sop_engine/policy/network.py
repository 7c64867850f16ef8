"""The network policy: which URLs a step may navigate to, and which hosts and addresses it may reach."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from .. import settings
from ..errors import ErrorKind, StepError
from .own import OwnOrigin
from .rules import DEFAULT_DENY, RuleList, canonical, parse_rules
from .urls import Address, BadUrl, Target, clean, parse_host, parse_target, scheme_of, server_path, server_relative

if TYPE_CHECKING:
    import httpx

NAVIGABLE = ("http", "https")  # and about:blank
FRAME_SCHEMES = ("http", "https", "data", "blob", "chrome-error")  # where a page's frames may land
OPEN_PATHS = ("/demo/", "/static/", "/favicon.ico")  # what an SOP may load from the server it runs in


class PolicyError(StepError):
    """The policy refused a URL or an address: never retried."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(ErrorKind.POLICY, message, url=url)


class NoServer(StepError):
    """A URL relative to the server (`/demo/todo.html`) where no server runs the SOP: never retried."""

    def __init__(self, url: str, doing: str = "") -> None:
        super().__init__(
            ErrorKind.ACTION,
            f"{doing}{': ' if doing else ''}{url!r} is a relative URL, which needs the server: a run in "
            "`sop-engine serve` resolves it against the server's own address; here write the full URL (http://...)",
        )


@dataclass(frozen=True)
class NetworkPolicy:
    """`local_files`: file: URLs and any scheme may be navigated to, uploads come from anywhere (the command
    line on a person's own machine). `deny`: no host or address on any list is reached. `allow`: every list
    must admit the host (the server's SOP_EGRESS_ALLOW, then the SOP's own), but for the server's own origins,
    whose own rule admits only `open_paths`. `own`: the server's origins. `base_url`: where the server that runs
    the SOP is reached; a URL relative to it (`/demo/todo.html`) is resolved there (`absolute`)."""

    local_files: bool = True
    deny: tuple[RuleList, ...] = ()
    allow: tuple[RuleList, ...] = ()
    own: tuple[OwnOrigin, ...] = ()
    open_paths: tuple[str, ...] = OPEN_PATHS
    base_url: str | None = None
    _own_addresses: dict[str, list[Address]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_server(cls, own_origins: Iterable[str | None] = (), base_url: str | None = None) -> NetworkPolicy:
        """http, https and about:blank only; the default deny list, SOP_EGRESS_DENY and SOP_EGRESS_ALLOW; and
        the server's own origins (its base URL, its public origin) closed but for `open_paths`. `base_url`:
        where relative URLs go, one of the own origins."""
        own = tuple(OwnOrigin.parse(o) for o in own_origins if o)
        deny = (_defaults(), *_configured_deny())
        base = base_url.rstrip("/") if base_url else None
        return cls(local_files=False, deny=deny, allow=_configured_allow(), own=own, base_url=base)

    @classmethod
    def for_cli(cls, strict: bool = False, base_url: str | None = None) -> NetworkPolicy:
        """Everything, as on the person's own machine (SOP_EGRESS_DENY and SOP_EGRESS_ALLOW still hold when
        set); `strict`: as the server, without its own origins. `base_url`: where relative URLs go (none: they
        fail their step)."""
        if strict:
            return cls.for_server(base_url=base_url)
        base = base_url.rstrip("/") if base_url else None
        return cls(local_files=True, deny=_configured_deny(), allow=_configured_allow(), base_url=base)

    def narrowed(self, sop: Any) -> NetworkPolicy:
        """With the SOP's own `egress: {allow: [...], deny: [...]}`: it adds rules, so it can only narrow."""
        egress = getattr(sop, "egress", None)
        if egress is None:
            return self
        deny, allow = _field(egress, "deny"), _field(egress, "allow")
        try:
            more_deny = (RuleList("the SOP's egress.deny", parse_rules(deny, "egress.deny")),) if deny else ()
            more_allow = (RuleList("the SOP's egress.allow", parse_rules(allow, "egress.allow")),) if allow else ()
        except ValueError as exc:
            raise PolicyError(f"egress policy: {exc}") from None
        if not (more_deny or more_allow):
            return self
        return replace(self, deny=self.deny + more_deny, allow=self.allow + more_allow, _own_addresses={})

    @property
    def filters_egress(self) -> bool:
        return bool(self.deny or self.allow or self.own)

    @property
    def unrestricted(self) -> bool:
        return self.local_files and not self.filters_egress

    def absolute(self, url: str, doing: str = "") -> str:
        """`url`, or when it is relative to the server (one slash, then a path: `/demo/todo.html`) the same path
        on `base_url`. NoServer when there is no base (the command line); `doing` starts its message."""
        if not server_relative(url):
            return url
        if self.base_url is None:
            raise NoServer(url, doing)
        return self.base_url + clean(url)

    # pure checks -----------------------------------------------------------------------------

    def check_url(self, url: str) -> Target:
        """Refuses what no resolution can make right: a scheme other than http, https or about:blank (unless
        `local_files`), a host name or address literal on a deny list, the server's own API by path."""
        scheme = scheme_of(url)
        if not self.local_files and scheme not in NAVIGABLE and not _is_blank(url):
            shown = f"{scheme}: URLs are" if scheme else "a URL without a scheme is"
            raise PolicyError(f"{shown} not allowed here (only http:, https: and about:blank)", url=url)
        try:
            target = parse_target(url)
        except BadUrl as exc:
            if self.local_files:
                return Target(url, scheme or "")
            raise PolicyError(f"not a valid URL: {exc}", url=url) from None
        if target.host is not None:
            addresses = [target.address] if target.address is not None else []
            self.check_host(target.host, addresses, target.port, target.path, resolved=target.address is not None)
        return target

    def check_host(
        self, host: str, addresses: list[Address], port: int | None, path: str | None, resolved: bool = True
    ) -> None:
        """`path` None: not known (a tunnel), the own-origin rule is left to who sees the path. The allow lists
        are for the world outside: the server's own origin has its own rule (only `open_paths`)."""
        for rules in self.deny:
            rule = rules.match(host, [])
            if rule is not None:
                raise PolicyError(f"egress policy: {host} is denied by {rule.text} ({rules.source})")
            for address in addresses:
                rule = rules.match(None, [address])
                if rule is not None:
                    raise PolicyError(f"egress policy: {host} ({address}) is denied by {rule.text} ({rules.source})")
        own = self._own_origin(host, addresses, port)
        if resolved and own is None:
            for rules in self.allow:
                if not rules.admits(host, addresses):
                    shown = ", ".join(map(str, addresses)) or "no address"
                    raise PolicyError(
                        f"egress policy: {host} ({shown}) is denied by {rules.source}, which does not list it"
                    )
        if path is not None and own is not None:
            routed = server_path(path)
            if not any(routed.startswith(p) or routed == p.rstrip("/") for p in self.open_paths):
                shown = f"{host} ({addresses[0]})" if addresses else host
                raise PolicyError(
                    f"egress policy: {shown} is denied by the server's own origin {own.host}:{own.port}, where SOPs "
                    f"may open only {', '.join(self.open_paths)} (not {routed})"
                )

    def _own_origin(self, host: str, addresses: list[Address], port: int | None) -> OwnOrigin | None:
        for own in self.own:
            if port == own.port and own.owns(host, addresses, self._own_addresses.get(own.host, [])):
                return own
        return None

    def frame_refusal(self, url: str) -> PolicyError | None:
        """Where a frame of the page landed, when the policy does not allow it there (the browser loads some
        URLs without asking the route handler: chrome:, view-source:, devtools:...)."""
        if self.local_files or not url:  # no URL: a frame the browser would not load, with no document
            return None
        scheme = scheme_of(url) or ""
        if (
            scheme in FRAME_SCHEMES
            or scheme == "about"
            and url.split(":", 1)[1].split("?")[0].split("#")[0]
            in (
                "blank",
                "srcdoc",
            )
        ):
            return None
        return PolicyError(f"the page navigated to a {scheme or 'schemeless'}: URL, which this server does not allow")

    # checks that resolve ---------------------------------------------------------------------

    async def check_request(self, url: str) -> list[Address]:
        """check_url, then the host's addresses: every one must pass. Returns them (connect to these).
        An unknown host raises socket.gaierror."""
        target = self.check_url(url)
        if target.host is None or not self.filters_egress:
            return []
        addresses = await self.resolve(target.host, target.port or 0)
        await self._learn_own()
        self.check_host(target.host, addresses, target.port, target.path)
        return addresses

    async def connect_addresses(self, host: str, port: int, path: str | None = None) -> list[Address]:
        """The addresses to connect to for `host`, all checked; for a proxy or a transport about to connect."""
        name, address = parse_host(host if ":" not in host else f"[{host.strip('[]')}]")
        addresses = [address] if address is not None else await self.resolve(name, port)
        await self._learn_own()
        self.check_host(name, addresses, port, path)
        return addresses

    async def resolve(self, host: str, port: int) -> list[Address]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[Address] = []
        for *_, sockaddr in infos:
            address = ip_address(str(sockaddr[0]).split("%")[0])
            if address not in found:
                found.append(address)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return found

    async def _learn_own(self) -> None:
        """The addresses of the server's own names (its public origin), once."""
        for own in self.own:
            if own.address is not None or own.local or own.host in self._own_addresses:
                continue
            try:
                self._own_addresses[own.host] = [canonical(a) for a in await self.resolve(own.host, own.port)]
            except OSError:
                self._own_addresses[own.host] = []

    def http_client(self) -> httpx.AsyncClient:
        """A client for the http action: with rules, it connects only to addresses it checked just before, and
        never through a proxy from the environment (HTTP_PROXY would resolve and connect unchecked)."""
        import httpx

        if not self.filters_egress:
            return httpx.AsyncClient(follow_redirects=True)
        from .transport import CheckedTransport

        return httpx.AsyncClient(transport=CheckedTransport(self), follow_redirects=True, trust_env=False)


def _defaults() -> RuleList:
    return RuleList("the server's default deny list", parse_rules(DEFAULT_DENY, "default"))


def _configured_deny() -> tuple[RuleList, ...]:
    texts = settings.current().egress_deny
    return (RuleList("SOP_EGRESS_DENY", _from_settings(texts, "SOP_EGRESS_DENY")),) if texts else ()


def _configured_allow() -> tuple[RuleList, ...]:
    texts = settings.current().egress_allow
    return (RuleList("SOP_EGRESS_ALLOW", _from_settings(texts, "SOP_EGRESS_ALLOW")),) if texts else ()


def _from_settings(texts: Iterable[str], name: str) -> tuple[Any, ...]:
    """A bad rule is the server's configuration error: ValueError, at start-up (for_server)."""
    return parse_rules(texts, name)


def _field(egress: Any, name: str) -> list[str]:
    value = egress.get(name) if isinstance(egress, dict) else getattr(egress, name, None)
    return list(value or [])


def _is_blank(url: str) -> bool:
    from .urls import clean

    text = clean(url)
    return text[:6].lower() == "about:" and text[6:].split("?")[0].split("#")[0] == "blank"


def _literal(host: str) -> Address | None:
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None

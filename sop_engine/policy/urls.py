"""URLs read the way a browser reads them: the parts of the WHATWG URL standard that decide where a request goes.

A string check sees `fi\tle:///etc/passwd` as harmless; a browser drops the tab and opens the file. So every
URL is cleaned and split here first, and the policy looks at the parts, never at the raw text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from urllib.parse import unquote, unquote_to_bytes

Address = IPv4Address | IPv6Address

C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}  # the special schemes with a host
_DOT = {".", "%2e"}
_DOT_DOT = {"..", ".%2e", "%2e.", "%2e%2e"}


class BadUrl(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    url: str  # trimmed, tabs and newlines removed: what a browser would parse
    scheme: str  # lower case, without the colon
    host: str | None = None  # lower-case ASCII name without a final dot, or an address's canonical text
    address: Address | None = None  # when the host is an address literal (in any of its spellings)
    port: int | None = None
    path: str = ""  # dot segments resolved
    rest: str = ""  # what follows `scheme:`, for schemes without a host

    @property
    def origin(self) -> str:
        shown = f"[{self.host}]" if self.address is not None and self.address.version == 6 else self.host
        return f"{self.scheme}://{shown}:{self.port}"


def clean(raw: str) -> str:
    """What a browser does before it parses: C0 controls and spaces off both ends, tabs and newlines out."""
    return raw.strip(C0_OR_SPACE).translate(_TAB_NEWLINE)


def scheme_of(raw: str) -> str | None:
    match = _SCHEME.match(clean(raw))
    return match.group()[:-1].lower() if match else None


def server_relative(raw: str) -> bool:
    """`/demo/todo.html`: a path on the server that runs the SOP. Not `//host/x` nor `/\\host/x`, which a browser
    reads as another host."""
    url = clean(raw)
    return url.startswith("/") and url[1:2] not in ("/", "\\")


def parse_target(raw: str) -> Target:
    url = clean(raw)
    match = _SCHEME.match(url)
    if not match:
        raise BadUrl(f"{raw!r} is not an absolute URL")
    scheme = match.group()[:-1].lower()
    rest = url[match.end() :]
    if scheme not in DEFAULT_PORTS:
        return Target(url, scheme, rest=rest)
    rest = rest.lstrip("/\\")  # http:example.com, http:\\example.com and http:///example.com all mean the host
    end = next((i for i, c in enumerate(rest) if c in "/\\?#"), len(rest))
    authority, tail = rest[:end], rest[end:]
    hostport = authority.rpartition("@")[2]
    host_text, port = _split_port(hostport, raw)
    host, address = parse_host(host_text)
    path = tail.replace("\\", "/")
    path = path[: next((i for i, c in enumerate(path) if c in "?#"), len(path))]
    port = DEFAULT_PORTS[scheme] if port is None else port
    return Target(url, scheme, host, address, port, resolve_dots(path or "/"))


def _split_port(hostport: str, raw: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        inside, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise BadUrl(f"{raw!r}: a bad IPv6 address")
        host, port = f"[{inside}]", after[1:]
    else:
        host, _, port = hostport.partition(":")
    if not port:
        return host, None
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise BadUrl(f"{raw!r}: a bad port")
    return host, int(port)


def parse_host(text: str) -> tuple[str, Address | None]:
    """A URL's host as a browser reads it: an IPv6 literal in brackets, an IPv4 address in any spelling
    (2130706433, 0x7f.1, 0177.0.0.1), or a name, percent-decoded and mapped to lower-case ASCII."""
    if text.startswith("["):
        inner = text[1:-1]
        if "%" in inner:
            raise BadUrl(f"[{inner}]: zone identifiers are not allowed in URLs")
        try:
            address: Address = IPv6Address(inner)
        except ValueError:
            raise BadUrl(f"[{inner}] is not an IPv6 address") from None
        return str(address), address
    try:
        decoded = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise BadUrl(f"{text!r} is not a host name") from None
    name = to_ascii(decoded)
    if not name:
        raise BadUrl("a URL without a host")
    number = _ipv4(name)
    if number is not None:
        address = IPv4Address(number)
        return str(address), address
    return name.rstrip("."), None


def to_ascii(name: str) -> str:
    try:
        return name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return name.lower()


def _ipv4(name: str) -> int | None:
    """The WHATWG IPv4 parser: None when the host does not end in a number (it is a name); BadUrl when it
    does but is not a valid address (a browser refuses it too)."""
    parts = name.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not parts or not (parts[-1].isascii() and parts[-1].isdigit()) and _number(parts[-1]) is None:
        return None
    numbers = [_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise BadUrl(f"{name!r} is not a valid IPv4 address")
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):  # type: ignore[operator]
        raise BadUrl(f"{name!r} is not a valid IPv4 address")
    value = last
    for i, n in enumerate(head):
        value += n * 256 ** (3 - i)  # type: ignore[operator]
    return value


def _number(part: str) -> int | None:
    if not part or not part.isascii():
        return None
    try:
        if part[:2] in ("0x", "0X"):
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part[0] == "0":
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def resolve_dots(path: str) -> str:
    """`/a/./b/../c` is `/a/c`, with `%2e` counted as a dot, the way a browser sends it."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        lowered = segment.lower()
        if lowered in _DOT_DOT:
            if out:
                out.pop()
            if last:
                out.append("")
        elif lowered in _DOT:
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def server_path(path: str) -> str:
    """The path a server routes on: percent-decoded (Starlette decodes `%2f` too), dots resolved again,
    repeated slashes folded. Used to decide whether a path reaches the server's own API."""
    decoded = unquote(path)
    return re.sub(r"/{2,}", "/", resolve_dots(decoded if decoded.startswith("/") else "/" + decoded))


def literal(host: str) -> Address | None:
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None

"""The network policy on many spellings of URLs and addresses: pure, no connection is made."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sop_engine.errors import ErrorKind
from sop_engine.policy import NetworkPolicy, PolicyError, clean, parse_rule, parse_target


@pytest.fixture(autouse=True)
def no_configured_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOP_EGRESS_DENY", raising=False)
    monkeypatch.delenv("SOP_EGRESS_ALLOW", raising=False)


def server(*own: str) -> NetworkPolicy:
    return NetworkPolicy.for_server(list(own))


def refusal(policy: NetworkPolicy, url: str) -> str | None:
    try:
        policy.check_url(url)
    except PolicyError as exc:
        assert exc.kind == ErrorKind.POLICY and not exc.retryable
        return exc.message
    return None


# schemes -------------------------------------------------------------------------------------

FORBIDDEN_TARGETS = [
    ("file:///etc/passwd", "file"),
    ("fi\tle:///etc/passwd", "file"),
    ("fi\nle:///etc/passwd", "file"),
    ("fi\r\nle:///etc/passwd", "file"),
    ("  FILE:///etc/passwd", "file"),
    ("\x00\x1f file:///etc/passwd\x0b ", "file"),
    ("File://localhost/etc/passwd", "file"),
    ("view-source:file:///etc/passwd", "view-source"),
    ("view-\tsource:http://127.0.0.1/", "view-source"),
    ("chrome://version", "chrome"),
    ("CHROME://settings", "chrome"),
    ("chrome-extension://abc/page.html", "chrome-extension"),
    ("devtools://devtools/bundled/inspector.html", "devtools"),
    ("javascript:alert(document.cookie)", "javascript"),
    ("java\tscript:alert(1)", "javascript"),
    ("JavaScript:alert(1)", "javascript"),
    ("data:text/html,<script>alert(1)</script>", "data"),
    (" DATA:text/html;base64,PGgxPng8L2gxPg==", "data"),
    ("blob:http://127.0.0.1/0f1e", "blob"),
    ("about:srcdoc", "about"),
    ("filesystem:http://127.0.0.1/temporary/x", "filesystem"),
    ("ftp://127.0.0.1/", "ftp"),
]


@pytest.mark.parametrize(("url", "scheme"), FORBIDDEN_TARGETS)
def test_the_server_navigates_only_to_http_https_and_about_blank(url: str, scheme: str):
    assert refusal(server(), url) == f"{scheme}: URLs are not allowed here (only http:, https: and about:blank)"
    assert refusal(NetworkPolicy.for_cli(strict=True), url) is not None


@pytest.mark.parametrize(("url", "scheme"), FORBIDDEN_TARGETS)
def test_the_command_line_allows_them_as_before(url: str, scheme: str):
    assert refusal(NetworkPolicy.for_cli(), url) is None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8765/", "HTTPS://example.com/a", " https://example.com ", "about:blank", "about:blank#x"]
)
def test_allowed_targets(url: str):
    assert refusal(server(), url) is None


def test_a_relative_url_is_no_target():
    assert "a URL without a scheme" in (refusal(server(), "example.com/page") or "")


def test_cleaning_is_what_a_browser_does_first():
    assert clean(" \x01fi\tle:/\n//etc/pa\rsswd\x1f ") == "file:///etc/passwd"
    assert parse_target("HtTp://Example.COM./a/./b/../c").host == "example.com"
    assert parse_target("HtTp://Example.COM./a/./b/../c").path == "/a/c"


# address literals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7F.0.0.1/",
        "http://0177.0.0.1/",
        "http://0177.00.0.01/",
        "http://127.1/",
        "http://127.0.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://\uff11\uff12\uff17.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http:\\\\127.0.0.1\\",
        "http:127.0.0.1/",
        "http://user:pass@evil.example@127.0.0.1/",
    ],
)
def test_every_spelling_of_an_ipv4_address_is_that_address(url: str):
    target = parse_target(url)
    assert target.address is not None
    assert str(target.address) in ("127.0.0.1", "::ffff:7f00:1")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xA9FEA9FE/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://169.254.169.254./",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::169.254.169.254]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://169.254.1.1:8080/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.Google.Internal./",
        "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41\u3002google.internal/",
        "http://metadata%2Egoogle.internal/",
        "http://user@metadata.google.internal:80@169.254.169.254/",
        "http://169.254.169.254\\@127.0.0.1/",
        "http://metadata/",
    ],
)
def test_the_server_denies_link_local_and_metadata_in_any_spelling(url: str):
    message = refusal(server(), url)
    assert message is not None and message.startswith("egress policy: ")
    assert "is denied by" in message and "the server's default deny list" in message


def test_the_denial_names_host_address_and_rule():
    assert refusal(server(), "http://2852039166/") == (
        "egress policy: 169.254.169.254 (169.254.169.254) is denied by 169.254.0.0/16 (the server's default deny list)"
    )


def test_the_command_line_allows_metadata_addresses_unless_strict():
    assert refusal(NetworkPolicy.for_cli(), "http://169.254.169.254/") is None
    assert refusal(NetworkPolicy.for_cli(strict=True), "http://169.254.169.254/") is not None


@pytest.mark.parametrize("url", ["http://1.2.3.4.5/", "http://256.0.0.1/", "http://0x100000000/", "http://[::1%25lo]/"])
def test_invalid_addresses_are_refused(url: str):
    assert "not a valid URL" in (refusal(server(), url) or "")


# configured rules ----------------------------------------------------------------------------


def test_deny_list_from_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_DENY", "10.0.0.0/8, 192.168.1.10, *.corp.example, db.example")
    policy = server()
    assert "10.0.0.0/8 (SOP_EGRESS_DENY)" in (refusal(policy, "http://012.1.2.3/") or "")  # octal 012 is 10
    assert refusal(policy, "http://192.168.1.10/") is not None
    assert refusal(policy, "http://192.168.1.11/") is None
    assert refusal(policy, "http://wiki.corp.example/") is not None
    assert refusal(policy, "http://a.b.CORP.example./") is not None
    assert refusal(policy, "http://corp.example/") is None  # the wildcard is for the names under it
    assert refusal(policy, "http://xcorp.example/") is None
    assert refusal(policy, "http://db.example:5432/") is not None
    assert refusal(policy, "http://api.db.example/") is None


def test_the_command_line_keeps_configured_rules(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_DENY", "10.0.0.0/8")
    assert refusal(NetworkPolicy.for_cli(), "http://10.1.1.1/") is not None


def test_with_an_allow_list_only_what_it_lists_is_reachable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_ALLOW", "203.0.113.0/24, *.example.com")
    policy = server()
    assert refusal(policy, "http://203.0.113.7/") is None
    assert refusal(policy, "http://shop.example.com/") is None
    assert refusal(policy, "http://198.51.100.1/") == (
        "egress policy: 198.51.100.1 (198.51.100.1) is denied by SOP_EGRESS_ALLOW, which does not list it"
    )
    monkeypatch.setenv("SOP_EGRESS_ALLOW", "169.254.169.254")
    assert "default deny list" in (refusal(server(), "http://169.254.169.254/") or "")  # a deny always wins


def test_bad_rules_are_refused():
    for text in ("not a host!", "*.*.example", "a..b", "exa*mple.com"):
        with pytest.raises(ValueError):
            parse_rule(text)
    assert parse_rule("[fd00::1]").network is not None
    assert parse_rule("Intranet.Example.").name == "intranet.example"


# per SOP -------------------------------------------------------------------------------------


def sop(**egress: list[str]) -> SimpleNamespace:
    return SimpleNamespace(id="s", egress=SimpleNamespace(**{"allow": None, "deny": None, **egress}))


def test_an_sop_adds_its_own_deny_and_allow_lists():
    policy = server().narrowed(sop(deny=["198.51.100.0/24"], allow=["198.51.100.0/23", "*.example.org"]))
    assert "the SOP's egress.deny" in (refusal(policy, "http://198.51.100.9/") or "")
    assert refusal(policy, "http://198.51.101.9/") is None
    assert refusal(policy, "http://www.example.org/") is None
    assert "the SOP's egress.allow" in (refusal(policy, "http://192.0.2.1/") or "")


def test_an_sop_cannot_widen_what_the_server_allows(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_ALLOW", "10.0.0.0/8")
    monkeypatch.setenv("SOP_EGRESS_DENY", "10.9.0.0/16")
    policy = server().narrowed(sop(allow=["192.168.0.0/16", "10.9.0.0/16", "169.254.169.254", "10.0.0.0/8"]))
    assert "SOP_EGRESS_ALLOW" in (refusal(policy, "http://192.168.1.1/") or "")
    assert "SOP_EGRESS_DENY" in (refusal(policy, "http://10.9.1.1/") or "")
    assert "default deny list" in (refusal(policy, "http://169.254.169.254/") or "")
    assert refusal(policy, "http://10.1.1.1/") is None


def test_an_sop_without_egress_keeps_the_policy_and_a_bad_rule_fails_readably():
    policy = server()
    assert policy.narrowed(SimpleNamespace(id="s")) is policy
    assert policy.narrowed({"egress": None}) is policy
    with pytest.raises(PolicyError, match="egress.deny: 'no such thing!' is not a network"):
        policy.narrowed(sop(deny=["no such thing!"]))
    narrowed = policy.narrowed(SimpleNamespace(egress={"deny": ["198.51.100.1"]}))  # a dict works too
    assert refusal(narrowed, "http://198.51.100.1/") is not None


# the server's own origin -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/api/runs",
        "http://127.0.0.1:8000/api",
        "http://127.0.0.1:8000/socket.io/?EIO=4",
        "http://127.0.0.1:8000/login",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/%61pi/runs",
        "http://127.0.0.1:8000//api/runs",
        "http://127.0.0.1:8000/demo/../api/runs",
        "http://127.0.0.1:8000/demo/%2e%2e/api/runs",
        "http://127.0.0.1:8000/demo/..%2fapi/runs",
        "http://127.0.0.1:8000/demo\\..\\api",
        "http://localhost:8000/api/runs",
        "http://app.localhost:8000/api/runs",
        "http://127.0.0.2:8000/api/runs",
        "http://2130706433:8000/api/runs",
        "http://[::1]:8000/api/runs",
        "http://[::ffff:127.0.0.1]:8000/api/runs",
        "http://0.0.0.0:8000/api/runs",
    ],
)
def test_the_servers_own_api_is_denied_in_any_spelling(url: str):
    message = refusal(server("http://0.0.0.0:8000"), url)
    assert message is not None and "the server's own origin" in message
    assert refusal(server("http://127.0.0.1:8000"), url) is not None


def test_the_demo_pages_stay_reachable_and_other_ports_are_not_the_server():
    policy = server("http://127.0.0.1:8000", "https://sop.example.com")
    assert refusal(policy, "http://127.0.0.1:8000/demo/todo.html") is None
    assert refusal(policy, "http://localhost:8000/static/app.js") is None
    assert refusal(policy, "http://127.0.0.1:8001/api/runs") is None
    assert "sop.example.com:443" in (refusal(policy, "https://SOP.example.com/api/runs") or "")
    assert refusal(policy, "https://sop.example.com/demo/form.html") is None


# frames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("file:///etc/passwd", "file"),
        ("view-source:http://127.0.0.1/", "view-source"),
        ("chrome://version/", "chrome"),
        ("chrome-extension://abc/x.html", "chrome-extension"),
        ("devtools://devtools/x.html", "devtools"),
        ("javascript:1", "javascript"),
        ("about:version", "about"),
        ("http://127.0.0.1/", None),
        ("https://example.com/", None),
        ("data:text/html,hi", None),
        ("blob:http://127.0.0.1/1", None),
        ("about:blank", None),
        ("about:srcdoc", None),
        ("chrome-error://chromewebdata/", None),
        ("", None),
    ],
)
def test_where_a_frame_may_land(url: str, refused: str | None):
    error = server().frame_refusal(url)
    if refused is None:
        assert error is None
    else:
        assert error is not None
        assert error.message == f"the page navigated to a {refused}: URL, which this server does not allow"
    assert NetworkPolicy.for_cli().frame_refusal(url) is None


# resolution (of loopback names only: no DNS query leaves the machine) -------------------------


async def test_every_resolved_address_must_pass(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_DENY", "127.0.0.0/8")
    policy = server()
    assert refusal(policy, "http://localhost:1/") is None  # a name: its addresses are not known yet
    with pytest.raises(PolicyError, match=r"localhost \(127\.0\.0\.1\) is denied by 127\.0\.0\.0/8"):
        await policy.check_request("http://localhost:1/")
    monkeypatch.setenv("SOP_EGRESS_DENY", "")
    assert await NetworkPolicy.for_cli().check_request("http://localhost:1/") == []  # nothing to check


async def test_an_allow_list_checks_resolved_addresses(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_ALLOW", "127.0.0.0/8, ::1")
    assert await server().check_request("http://localhost:1/")
    monkeypatch.setenv("SOP_EGRESS_ALLOW", "127.0.0.2")
    with pytest.raises(PolicyError, match="SOP_EGRESS_ALLOW, which does not list it"):
        await server().check_request("http://localhost:1/")


def test_a_server_on_every_address_owns_each_address_of_this_machine():
    from ipaddress import ip_address

    from sop_engine.policy.own import _on_this_machine

    assert _on_this_machine(ip_address("127.0.0.1"))
    assert not _on_this_machine(ip_address("198.51.100.7"))  # only a bind is tried: no packet is sent
    assert refusal(server("http://0.0.0.0:8000"), "http://198.51.100.7:8000/api/runs") is None


def test_a_bad_configured_rule_stops_the_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOP_EGRESS_DENY", "10.0.0.0/8, what is this")
    with pytest.raises(ValueError, match="SOP_EGRESS_DENY: 'what is this' is not a network"):
        server()

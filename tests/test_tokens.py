"""API tokens: named, with a role, only their hash stored; from the command line, the environment, or made at
the first start and kept in data/token; a revoked one stops working within seconds."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sop_engine.store import Store, TokenNameTaken
from sop_engine.tables import ROLES
from tests.conftest import both_databases
from web.auth import VERDICT_SECONDS, Role, Tokens, User, can, hash_token, token_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_tokens_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOP_API_TOKEN", raising=False)
    monkeypatch.delenv("SOP_API_TOKENS", raising=False)


def sop_engine(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOP_DATA_DIR": str(data), "NO_COLOR": "1", "COLUMNS": "200"}
    for name in ("SOP_DATABASE_URL", "SOP_API_TOKEN", "SOP_API_TOKENS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "web", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_roles_are_ordered_and_match_the_table():
    assert tuple(Role) == ROLES
    assert can(Role.ADMIN, Role.OPERATOR) and can("operator", "operator") and can("operator", Role.VIEWER)
    assert not can(Role.VIEWER, Role.OPERATOR) and not can("operator", "admin")
    assert not can("root", "viewer")


def test_add_list_and_revoke_from_the_command_line(tmp_path: Path):
    data = tmp_path / "data"
    added = sop_engine("token", "add", "alice", "--role", "operator", data=data)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout == token + "\n" and len(token) >= 40  # the token alone, for scripts
    assert "alice" in added.stderr and token not in added.stderr

    store = Store(f"sqlite:///{data / 'sop.db'}")
    try:
        assert Tokens(store).user(token) == User("alice", Role.OPERATOR)
    finally:
        store.close()

    listed = sop_engine("token", "list", data=data)
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout and "operator" in listed.stdout
    assert token not in listed.stdout and hash_token(token) not in listed.stdout

    again = sop_engine("token", "add", "alice", "--role", "viewer", data=data)
    assert again.returncode == 2 and "alice" in again.stderr and "exists" in again.stderr
    assert again.stdout == ""
    wrong = sop_engine("token", "add", "bob", "--role", "boss", data=data)
    assert wrong.returncode == 2 and "boss" in wrong.stderr and wrong.stdout == ""

    revoked = sop_engine("token", "revoke", "alice", data=data)
    assert revoked.returncode == 0, revoked.stderr
    assert sop_engine("token", "revoke", "alice", data=data).returncode == 1
    store = Store(f"sqlite:///{data / 'sop.db'}")
    try:
        assert Tokens(store).user(token) is None
        [alice] = store.tokens()
        assert alice.revoked_at is not None
    finally:
        store.close()


def test_only_the_hash_is_stored(store: Store, data_dir: Path):
    token = "a-token-that-must-not-be-kept-in-clear"
    store.add_token("alice", "viewer", hash_token(token), created_by="test")
    kept = b"".join(path.read_bytes() for path in data_dir.glob("sop.db*"))
    assert hash_token(token).encode() in kept
    assert token.encode() not in kept
    assert not hasattr(store.tokens()[0], "token_hash")


@both_databases
def test_store_refuses_a_taken_name_and_an_unknown_role(store: Store):
    store.add_token("alice", "viewer", hash_token("one"))
    store.revoke_token("alice")
    with pytest.raises(TokenNameTaken, match="alice"):
        store.add_token("alice", "viewer", hash_token("two"))  # revoked names stay taken
    with pytest.raises(ValueError, match="boss"):
        store.add_token("bob", "boss", hash_token("three"))
    assert store.token_by_hash(hash_token("one")) is None
    assert store.revoke_token("nobody") is False


@both_databases
def test_a_revoked_token_stops_working_within_the_verdict_time(store: Store):
    store.add_token("alice", "admin", hash_token("tok"))
    clock = Clock()
    tokens = Tokens(store, clock=clock)
    assert tokens.user("tok") == User("alice", Role.ADMIN)
    assert tokens.user("tok").name == "alice"
    store.revoke_token("alice")
    assert tokens.user("tok") == User("alice", Role.ADMIN)  # the verdict is kept a few seconds
    clock.now += VERDICT_SECONDS + 0.1
    assert tokens.user("tok") is None
    assert Tokens(store).user("tok") is None


@both_databases
def test_use_is_recorded(store: Store):
    store.add_token("alice", "viewer", hash_token("tok"))
    assert store.tokens()[0].last_used_at is None
    Tokens(store).user("tok")
    assert store.tokens()[0].last_used_at is not None


@both_databases
def test_unknown_empty_and_oversized_tokens_are_nobody(store: Store):
    tokens = Tokens(store)
    assert tokens.user(None) is None and tokens.user("") is None
    assert tokens.user("nope") is None and tokens.user("x" * 10_000) is None


def test_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setenv(
        "SOP_API_TOKENS", "alice:operator:tok1, bob:viewer:tok2,carol:tok3,broken-secret,dave:boss:tok4,:admin:tok5"
    )
    monkeypatch.setenv("SOP_API_TOKEN", "root-tok")
    with caplog.at_level(logging.WARNING, logger="sop_engine.web.auth"):
        tokens = Tokens()
    assert tokens.user("tok1") == User("alice", Role.OPERATOR)
    assert tokens.user("tok2") == User("bob", Role.VIEWER)
    assert tokens.user("tok3") == User("carol", Role.OPERATOR)  # the old name:token means an operator
    assert tokens.user("root-tok") == User("admin", Role.ADMIN)
    assert tokens.user("tok4") is None and tokens.user("tok5") is None
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == [
        "entry 4 is not NAME",
        "entry 5 is not NAME",
        "entry 6 is not NAME",
    ]
    assert not any(secret in caplog.text for secret in ("broken-secret", "tok4", "tok5"))


@both_databases
def test_the_first_start_makes_an_admin_token_kept_in_data_token(store: Store, data_dir: Path):
    made = Tokens().startup(store)
    assert made is not None
    path = token_file()
    assert path == data_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == made
    assert Tokens(store).user(made) == User("admin", Role.ADMIN)

    restarted = Tokens()
    assert restarted.startup(store) is None  # a restart goes on with the same token
    assert path.read_text().strip() == made and restarted.user(made) == User("admin", Role.ADMIN)
    assert [t.name for t in store.tokens()] == ["admin"]


@both_databases
def test_a_new_first_token_when_the_kept_one_was_revoked(store: Store):
    made = Tokens().startup(store)
    store.revoke_token("admin")
    again = Tokens().startup(store)
    assert again is not None and again != made
    assert token_file().read_text().strip() == again
    assert Tokens(store).user(again) == User("admin-2", Role.ADMIN)
    assert Tokens(store).user(made) is None  # type: ignore[arg-type]


@both_databases
def test_no_first_token_when_there_is_one(store: Store, monkeypatch: pytest.MonkeyPatch):
    store.add_token("alice", "admin", hash_token("tok"))
    assert Tokens().startup(store) is None
    store.revoke_token("alice")
    monkeypatch.setenv("SOP_API_TOKEN", "root-tok")
    assert Tokens().startup(store) is None
    assert not token_file().exists()


class Serving:
    """`sop-engine serve` in a process with no token in its environment: what it printed before it served."""

    def __init__(self, data: Path, *args: str) -> None:
        from tests.conftest import free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "SOP_DATA_DIR": str(data), "NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        for name in ("SOP_DATABASE_URL", "SOP_API_TOKEN", "SOP_API_TOKENS"):
            env.pop(name, None)
        port = self.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "web", "serve", "--port", port, *args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        lines: list[str] = []
        while not lines or ("sign in" not in lines[-1] and "More tokens" not in lines[-1]):
            assert self.process.stdout is not None
            lines.append(self.process.stdout.readline())
            assert lines[-1], f"serve ended: {lines}"
        self.banner = "".join(lines)

    def ready(self) -> Serving:
        """Waits until the server answers (its banner comes before it listens)."""
        import httpx

        from tests.conftest import wait_for

        def answers() -> bool:
            try:
                return httpx.get(f"{self.url}/login", timeout=5).status_code == 200
            except httpx.TransportError:
                return self.process.poll() is not None  # ended: the status check below says so

        wait_for(answers, timeout=30)
        assert self.process.poll() is None, "serve ended"
        return self

    def status(self, token: str) -> int:
        import httpx

        return httpx.get(f"{self.url}/api/sops", headers={"Authorization": f"Bearer {token}"}, timeout=15).status_code

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()


def serve_banner(data: Path) -> str:
    """What `sop-engine serve` prints before it serves; the server is stopped once it has."""
    with Serving(data) as server:
        return server.banner


def test_serve_prints_a_token_only_when_it_made_one(tmp_path: Path):
    data = tmp_path / "data"
    first = serve_banner(data)
    made = (data / "token").read_text().strip()
    assert f"/login?token={made}" in first
    second = serve_banner(data)
    assert made not in second and "?token=" not in second
    assert "sign in with a token" in second and str(data / "token") in second


def test_the_first_token_works_after_a_restart(tmp_path: Path):
    data = tmp_path / "data"
    with Serving(data).ready() as first:
        made = (data / "token").read_text().strip()
        assert f"{first.url}/login?token={made}" in first.banner
        assert first.status(made) == 200
    with Serving(data).ready() as second:
        assert "?token=" not in second.banner and made not in second.banner
        assert second.status(made) == 200  # the open page's cookie and the printed link still sign in
    assert (data / "token").read_text().strip() == made
    assert stat.S_IMODE((data / "token").stat().st_mode) == 0o600


def test_new_token_replaces_the_kept_one(tmp_path: Path):
    data = tmp_path / "data"
    with Serving(data).ready():
        old = (data / "token").read_text().strip()
    with Serving(data, "--new-token").ready() as renewed:
        new = (data / "token").read_text().strip()
        assert new != old
        assert f"{renewed.url}/login?token={new}" in renewed.banner and old not in renewed.banner
        assert "a new admin token" in renewed.banner
        assert renewed.status(old) == 401
        assert renewed.status(new) == 200
    assert stat.S_IMODE((data / "token").stat().st_mode) == 0o600
    assert not [p.name for p in data.iterdir() if p.name.startswith(".token")]  # no file left on the way
    with Serving(data).ready() as later:
        assert "?token=" not in later.banner
        assert later.status(new) == 200 and later.status(old) == 401


@both_databases
def test_renew_keeps_other_tokens_and_works_without_a_kept_one(store: Store, data_dir: Path):
    store.add_token("alice", "admin", hash_token("alice-tok"))
    first = Tokens().startup(store, renew=True)  # no file yet: nothing to revoke
    assert first is not None and token_file().read_text().strip() == first
    second = Tokens().startup(store, renew=True)
    assert second is not None and token_file().read_text().strip() == second
    tokens = Tokens(store)
    assert tokens.user(second) == User("admin-2", Role.ADMIN)
    assert tokens.user(first) is None  # type: ignore[arg-type]
    assert tokens.user("alice-tok") == User("alice", Role.ADMIN)  # only the kept one is revoked
    assert stat.S_IMODE(token_file().stat().st_mode) == 0o600

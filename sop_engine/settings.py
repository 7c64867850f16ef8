"""Every environment variable the engine and the server read, in one place.

`current()` reads the environment each time it is called (it is cheap), so tests that set a variable see it;
nothing else in the code base reads `os.environ`."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None


def _at_least(name: str, default: int, low: int) -> int:
    value = _int(name, default)
    if value < low:
        raise SystemExit(f"{name}={value} is less than {low}")
    return value


def _seconds(name: str, default: float, least: float) -> float:
    """A number of seconds: 0 (none), or at least `least`."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value == 0 or least <= value <= 86_400):  # nan, negative, too small or too large
        raise SystemExit(f"{name}={raw!r} is not 0 or a number of seconds from {least:g} to 86400")
    return value


def _json_object(name: str) -> dict[str, Any]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):  # the value is not quoted back: it may hold credentials
        raise SystemExit(f"{name} is not a JSON object")
    return value


def _redis_url(name: str) -> str | None:
    raw = os.environ.get(name, "").strip()
    if raw and raw.partition("://")[0] not in ("redis", "rediss", "unix"):  # the value may hold a password
        raise SystemExit(f"{name} is not a Redis URL: redis://host:6379/0, rediss://… or unix://…")
    return raw or None


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in allowed:
        raise SystemExit(f"{name}={raw!r} is not one of: {', '.join(allowed)}")
    return raw


def _list(name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None  # None: a SQLite file in data_dir
    secret_key: str | None  # the vault's key; None: data_dir/secret.key, made on first use
    browser: str | None  # a Chromium executable or command name
    browser_args: tuple[str, ...]  # SOP_BROWSER_ARGS: more Chromium flags for the server, split like a shell
    api_token: str | None  # SOP_API_TOKEN: one admin token
    api_tokens: tuple[str, ...]  # SOP_API_TOKENS: "name:role:token" or "name:token" (operator)
    public_origin: str | None  # the origin people reach the server at, behind a proxy: https://sop.example.com
    session_hours: int  # how long a login cookie lasts
    egress_deny: tuple[str, ...]  # networks (CIDR), addresses or host names SOPs may not reach, besides defaults
    egress_allow: tuple[str, ...]  # when set, the only networks and hosts SOPs may reach
    max_body_bytes: int  # a request body larger than this gets 413
    yaml_max_depth: int  # nesting of a document, data file or inputs
    yaml_max_nodes: int  # values in a document after its aliases are expanded
    template_max_output: int  # characters a template may produce
    template_max_range: int  # items a template's range() may produce
    batch_max_rows: int  # rows one batch may have in the server (each becomes a run)
    write_retry_seconds: int  # how long a worker retries a failed database write before it lets the run go
    download_max_bytes: int  # the most a download step may save, whatever its max_size says
    drain_seconds: int  # on SIGTERM, how long a process lets its runs finish before it hands them back
    redis_url: str | None  # SOP_REDIS_URL: the live feed and the controls between processes go through it
    artifacts_url: str  # SOP_ARTIFACTS_URL: where runs keep their files, a folder or any fsspec URL (s3://bucket/x)
    # SOP_ARTIFACTS_OPTIONS: that store's fsspec options (JSON), e.g. {"endpoint_url": ...}; never shown: they may
    # hold credentials
    artifacts_options: dict[str, Any] = field(repr=False, compare=False)
    trace: str = "off"  # SOP_TRACE: a run's Playwright trace when its document does not say: off, on, on-failure
    log_format: str = "text"  # SOP_LOG_FORMAT: text (for people) or json (one object per line)
    metrics: bool = True  # SOP_METRICS: off records no metrics in the server and workers (on by default)
    metrics_port: int | None = None  # SOP_METRICS_PORT: /metrics on its own port (no token) instead of beside the API
    # OTEL_EXPORTER_OTLP_ENDPOINT: where spans go over OTLP/HTTP; None: no spans are exported
    otlp_endpoint: str | None = None
    # SOP_SCHEDULE_TICK_SECONDS: how often a server looks for due schedules on SQLite (on PostgreSQL the job
    # queue's periodic task ticks every second); 0: this server never fires them
    schedule_tick_seconds: int = 1
    schedule_grace_seconds: int = 60  # SOP_SCHEDULE_GRACE_SECONDS: a tick older than this was missed (catch-up)
    schedule_keep_days: int = 30  # SOP_SCHEDULE_KEEP_DAYS: how long a schedule's firings are kept
    # webhooks (sop_engine.webhooks): attempts of one delivery, the first wait between them (doubling, with
    # jitter, up to the most), how long one attempt may take, and how often a process looks for due deliveries
    webhook_max_attempts: int = 12
    webhook_backoff_ms: int = 5000
    webhook_backoff_max_ms: int = 3_600_000
    webhook_timeout_seconds: int = 10
    webhook_poll_ms: int = 1000
    # circuit breakers per target host (sop_engine.breakers): SOP_BREAKER_FAILURES failures in a row within
    # SOP_BREAKER_WINDOW seconds open one for SOP_BREAKER_COOLDOWN seconds; 0 failures: none opens
    breaker_failures: int = 5
    breaker_window: int = 60
    breaker_cooldown: int = 30
    # SOP_FRAME_SECONDS: the least time between the starts of two live pictures of a watched run (each holds its
    # page up for tens of milliseconds and takes a core's worth of JPEG encoding); 0: no live pictures
    frame_seconds: float = 1.0

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'sop.db'}"


def template_limits() -> tuple[int, int]:
    """SOP_TEMPLATE_MAX_OUTPUT and SOP_TEMPLATE_MAX_RANGE alone: every render reads them, and current() reads
    every variable (a tenth of a millisecond a render under load, measured with py-spy on a todo-200 run)."""
    return _int("SOP_TEMPLATE_MAX_OUTPUT", 1 * MIB), _int("SOP_TEMPLATE_MAX_RANGE", 100_000)


def current() -> Settings:
    env = os.environ.get
    data_dir = Path(env("SOP_DATA_DIR", "data"))
    template_max_output, template_max_range = template_limits()
    return Settings(
        data_dir=data_dir,
        database_url=env("SOP_DATABASE_URL") or None,
        secret_key=env("SOP_SECRET_KEY") or None,
        browser=env("SOP_BROWSER") or None,
        browser_args=tuple(shlex.split(env("SOP_BROWSER_ARGS", ""))),
        api_token=env("SOP_API_TOKEN") or None,
        api_tokens=_list("SOP_API_TOKENS"),
        public_origin=(env("SOP_PUBLIC_ORIGIN") or "").rstrip("/") or None,
        session_hours=_int("SOP_SESSION_HOURS", 12),
        egress_deny=_list("SOP_EGRESS_DENY"),
        egress_allow=_list("SOP_EGRESS_ALLOW"),
        max_body_bytes=_int("SOP_MAX_BODY_BYTES", 5 * MIB),
        yaml_max_depth=_int("SOP_YAML_MAX_DEPTH", 64),
        yaml_max_nodes=_int("SOP_YAML_MAX_NODES", 10_000),
        template_max_output=template_max_output,
        template_max_range=template_max_range,
        batch_max_rows=_int("SOP_BATCH_MAX_ROWS", 10_000),
        write_retry_seconds=_int("SOP_WRITE_RETRY_SECONDS", 60),
        download_max_bytes=_int("SOP_DOWNLOAD_MAX_BYTES", 100 * MIB),
        drain_seconds=_int("SOP_DRAIN_SECONDS", 20),
        artifacts_url=env("SOP_ARTIFACTS_URL") or str(data_dir / "artifacts"),
        artifacts_options=_json_object("SOP_ARTIFACTS_OPTIONS"),
        redis_url=_redis_url("SOP_REDIS_URL"),
        trace=_choice("SOP_TRACE", "off", ("off", "on", "on-failure")),
        log_format=_choice("SOP_LOG_FORMAT", "text", ("text", "json")),
        metrics=_choice("SOP_METRICS", "on", ("on", "off")) == "on",
        metrics_port=_int("SOP_METRICS_PORT", 0) or None,
        otlp_endpoint=(env("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip() or None,
        schedule_tick_seconds=max(_int("SOP_SCHEDULE_TICK_SECONDS", 1), 0),
        schedule_grace_seconds=min(max(_int("SOP_SCHEDULE_GRACE_SECONDS", 60), 0), 86_400),
        schedule_keep_days=max(_int("SOP_SCHEDULE_KEEP_DAYS", 30), 1),
        webhook_max_attempts=max(1, _int("SOP_WEBHOOK_MAX_ATTEMPTS", 12)),
        webhook_backoff_ms=max(1, _int("SOP_WEBHOOK_BACKOFF_MS", 5000)),
        webhook_backoff_max_ms=max(1, _int("SOP_WEBHOOK_BACKOFF_MAX_MS", 3_600_000)),
        webhook_timeout_seconds=max(1, _int("SOP_WEBHOOK_TIMEOUT_SECONDS", 10)),
        webhook_poll_ms=max(10, _int("SOP_WEBHOOK_POLL_MS", 1000)),
        breaker_failures=_at_least("SOP_BREAKER_FAILURES", 5, 0),
        breaker_window=_at_least("SOP_BREAKER_WINDOW", 60, 1),
        breaker_cooldown=_at_least("SOP_BREAKER_COOLDOWN", 30, 1),
        frame_seconds=_seconds("SOP_FRAME_SECONDS", 1.0, 0.1),
    )

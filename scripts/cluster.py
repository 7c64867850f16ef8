"""`make cluster`: a whole cluster on this machine, to try it: PostgreSQL and Redis (started here, in a temporary
folder, on free loopback ports), two servers that only serve (`serve --concurrency 0`) and two `worker`
processes. Prints the page's sign-in URLs; Ctrl-C stops everything and deletes the folder."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import Postgres, Redis, free_port  # noqa: E402


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sop-cluster-"))
    postgres = Postgres().start()
    redis = Redis(folder / "redis").start()
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "SOP_DATABASE_URL": postgres.new_database("cluster"),
        "SOP_REDIS_URL": redis.url,
        "SOP_SECRET_KEY": Fernet.generate_key().decode(),
        "SOP_API_TOKEN": token,
        "SOP_ARTIFACTS_URL": str(folder / "artifacts"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    try:
        for number, port in enumerate(ports):
            data = {**env, "SOP_DATA_DIR": str(folder / f"server-{number}")}
            command = [sys.executable, "-m", "web", "serve", "--port", str(port), "--concurrency", "0"]
            processes.append(subprocess.Popen(command, cwd=ROOT, env=data))
            _wait_healthy(port)
        for number in range(2):
            data = {**env, "SOP_DATA_DIR": str(folder / f"worker-{number}")}
            command = [sys.executable, "-m", "web", "worker", "--concurrency", "2"]
            command += ["--base-url", f"http://127.0.0.1:{ports[0]}"]
            processes.append(subprocess.Popen(command, cwd=ROOT, env=data))
        print(f"\nPostgreSQL {env['SOP_DATABASE_URL']}, Redis {redis.url}, files in {folder}")
        for port in ports:
            print(f"server: http://127.0.0.1:{port}/login?token={token}")
        print("two workers, two runs at once each. Ctrl-C stops the cluster.\n", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server on port {port} did not start")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()

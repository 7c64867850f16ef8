"""`sop-engine run --resume`: a run whose process was killed goes on where it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sop_engine.store import Store
from sop_engine.vault import Vault
from tests.conftest import wait_for

SLOW = """
sop: 1
id: resumable
inputs:
  secret_word: {type: string, secret: true}
outputs: [said, steps, length]
steps:
  - {id: one, action: set, inputs: [secret_word], values: {said: "{{ secret_word }}!"}}
  - {id: two, action: sleep, duration: 4s, timeout: 10s}
  - {id: three, action: set, inputs: [said], values: {steps: 3, length: "{{ said | length }}"}}
"""


def test_a_killed_run_resumes_without_repeating_completed_steps(tmp_path: Path):
    (tmp_path / "slow.yaml").write_text(SLOW)
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    env.pop("SOP_DATABASE_URL", None)
    command = [sys.executable, "-m", "sop_engine", "run"]
    process = subprocess.Popen(
        [*command, "slow.yaml", "--input", "secret_word=opensesame"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = tmp_path / "data" / "sop.db"
    wait_for(database.exists, timeout=30)
    store = Store(f"sqlite:///{database}")
    try:

        def sleeping() -> str | None:
            runs, _ = store.runs()
            if runs and any(s.key == "two" and s.status == "running" for s in store.steps(runs[0].id)):
                return runs[0].id
            return None

        run_id = wait_for(sleeping, timeout=30)
        first_one = next(s for s in store.steps(run_id) if s.key == "one")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert store.run(run_id).status == "running"  # left behind by the killed process
        result = subprocess.run(
            [*command, "--resume", run_id, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["status"] == "completed"
        # outputs that read the secret are secret whole; `said` came back from the database for step three as
        # the real value (sealed), not the masked one: the length step three computed from it says so
        assert report["outputs"] == {"said": "***", "steps": 3, "length": "***"}
        sealed = Vault((tmp_path / "data" / "secret.key").read_bytes().strip())
        assert sealed.open(store.steps(run_id)[-1].sealed_outputs)["length"] == len("opensesame!")
        steps = {s.key: s for s in store.steps(run_id)}
        assert steps["one"].started_at == first_one.started_at and steps["one"].attempts == 1  # not run again
        assert steps["two"].attempts == 2  # in flight when killed: run again
        seqs = [e.seq for e in store.events(run_id)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert "opensesame" not in result.stdout
        again = subprocess.run(
            [*command, "--resume", run_id], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 2 and "only a running, paused or queued run can be resumed" in again.stderr
    finally:
        store.close()
        if process.poll() is None:
            process.kill()

"""``fabric conform`` against our own server, over real sockets (a ``fabric serve`` process).

Few examples with a fixed seed, so CI stays well under a minute and a departure is
reproducible (``CONFORM_SEED`` / ``CONFORM_EXAMPLES`` override both for a longer local run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from specs.conform.runner import Options, Session, main

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CONFORM_SEED", "20240601"))
EXAMPLES = int(os.environ.get("CONFORM_EXAMPLES", "8"))


def test_fabric_serve_conforms(fabric_serve) -> None:
    options = Options(connection_string=fabric_serve.connection_string, hub="conformci", examples=EXAMPLES,
                      steps=25, seed=SEED, probe_events=True)
    with Session(options) as session:
        assert session.diagnose() is None
        session.run_all()
        text = session.ledger.text(session.header())
    print(text)
    assert not session.ledger.found, text
    assert not session.ledger.errors, text
    exercised = {rid for rid, n in session.ledger.passed.items() if n}
    # the suite really drove the endpoint: the core rules all ran
    for rid in ("connect.first-frame", "ack.success", "ack.forbidden", "deliver.group", "deliver.non-member",
                "deliver.user", "deliver.all", "rest.status", "reliable.sequence", "inbound.malformed",
                "inbound.invalid-with-ack", "auth.reject", "reliable.recovery-refused", "close.client"):
        assert rid in exercised, f"{rid} was never checked:\n{text}"


def test_cli_main_exit_status_and_json_report(fabric_serve, tmp_path, capsys) -> None:
    report = tmp_path / "conform.json"
    rc = main(["--connection-string", fabric_serve.connection_string, "--hub", "conformcli", "--examples", "2",
               "--steps", "8", "--seed", "7", "--report", str(report)])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "rule" in out.out and "checks passed" in out.out
    data = json.loads(report.read_text())
    assert data["departures"] == [] and data["hub"] == "conformcli"
    assert data["passed"]["deliver.payload"] > 0


def test_pytest_plugin_against_fabric_serve(fabric_serve) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "specs.conform", "-q", "-p", "no:cacheprovider",
         "--connection-string", fabric_serve.connection_string, "--hub", "conformpytest", "--examples", "2",
         "--steps", "8", "--seed", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout and "fabric conform" in proc.stdout

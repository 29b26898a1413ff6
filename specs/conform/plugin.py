"""The pytest face of ``fabric conform``: ``pytest --pyargs specs.conform --connection-string ...``.

A pytest plugin (options must exist before the command line is parsed, which a package's own
conftest is too late for under ``--pyargs``). In this repository the root ``conftest.py``
registers it; elsewhere use ``pytest -p specs.conform.plugin --pyargs specs.conform ...`` (or
a ``pytest11`` entry point naming this module).

Options are the CLI's (``--connection-string``, ``--hub``, ``--subprotocol``, ``--examples``,
``--steps``, ``--seed``, ``--report``, ``--timeout``, ``--only-documented``,
``--probe-events``, ``--max-message-bytes``); an option another plugin already owns (for
example ``--timeout`` of pytest-timeout) is offered as ``--conform-<name>`` instead.

Rules this module keeps:
- One ``Session`` per pytest session (fixture ``conform_session``); an endpoint that cannot be
  checked ends the session with the diagnosis (exit status 3), a missing connection string
  with a usage error, never a traceback.
- Each suite is one test; it fails with the departures it found, grouped by rule.
"""

from __future__ import annotations

import pytest

from specs.conform.runner import ENV_CONNECTION_STRING, Options, Session, UsageError, parse_subprotocols

_OPTIONS = (
    ("connection-string", {"default": None, "help": f"Endpoint=...;AccessKey=...;Version=1.0; (default ${ENV_CONNECTION_STRING})"}),
    ("hub", {"default": "conform", "help": "hub to check (default: conform)"}),
    ("subprotocol", {"action": "append", "default": None, "help": "json, json.reliable, protobuf, protobuf.reliable, simple"}),
    ("examples", {"type": int, "default": 25, "help": "Hypothesis examples per suite"}),
    ("steps", {"type": int, "default": 25, "help": "steps per state-machine example"}),
    ("seed", {"type": int, "default": None, "help": "Hypothesis seed"}),
    ("report", {"default": None, "help": "write the conformance report to this file (.json for JSON)"}),
    ("timeout", {"type": float, "default": 3.0, "help": "seconds to wait for an expected frame"}),
    ("only-documented", {"action": "store_true", "default": False, "help": "skip the fabric's decision rules"}),
    ("probe-events", {"action": "store_true", "default": False, "help": "also send user events"}),
    ("max-message-bytes", {"type": int, "default": 1024 * 1024, "help": "size limit for the oversize probe (0: skip)"}),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conform", "fabric conform (Web PubSub conformance)")
    for name, kw in _OPTIONS:
        dest = "conform_" + name.replace("-", "_")
        try:
            group.addoption(f"--{name}", dest=dest, **kw)
        except ValueError:  # owned by another plugin
            group.addoption(f"--conform-{name}", dest=dest, **kw)


def _options(config: pytest.Config) -> Options:
    import os

    get = lambda name: config.getoption("conform_" + name.replace("-", "_"))  # noqa: E731
    return Options(
        connection_string=get("connection-string") or os.environ.get(ENV_CONNECTION_STRING, ""),
        hub=get("hub"), subprotocols=parse_subprotocols(get("subprotocol")), examples=get("examples"),
        steps=get("steps"), seed=get("seed"), report=get("report"), timeout=get("timeout"),
        only_documented=get("only-documented"), probe_events=get("probe-events"),
        max_message_bytes=get("max-message-bytes"),
    )


@pytest.fixture(scope="session")
def conform_session(pytestconfig: pytest.Config):
    try:
        session = Session(_options(pytestconfig))
    except (UsageError, ValueError) as exc:
        raise pytest.UsageError(f"fabric conform: {exc}") from None
    with session:
        problem = session.diagnose()
        if problem is not None:
            pytest.exit(f"fabric conform: {problem}", returncode=3)
        pytestconfig.stash[_SESSION] = session
        yield session
        session.write_report()


_SESSION = pytest.StashKey["Session"]()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None:
        return
    terminalreporter.write_sep("=", "fabric conform")
    terminalreporter.write_line(session.header())
    terminalreporter.write_line(session.ledger.table())
    for suite, outcome in session.ledger.suites:
        terminalreporter.write_line(f"suite {suite}: {outcome}")

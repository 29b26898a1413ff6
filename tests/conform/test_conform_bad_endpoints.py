"""``fabric conform`` against endpoints it cannot check: one line, a non-zero status, never a
traceback (issue 14, "Bad input")."""

from __future__ import annotations

import http.server
import threading

import pytest

from specs.conform.runner import EXIT_UNUSABLE, EXIT_USAGE, main
from tests.conform.serve_support import ACCESS_KEY, free_port, start_fabric, stop


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return rc, out.err.strip()


def cs(endpoint: str, key: str = ACCESS_KEY) -> str:
    return f"Endpoint={endpoint};AccessKey={key};Version=1.0;"


def test_unreachable_endpoint(capsys) -> None:
    rc, err = run(capsys, "--connection-string", cs(f"http://127.0.0.1:{free_port()}"), "--hub", "h")
    assert rc == EXIT_UNUSABLE
    assert err.count("\n") == 0 and "cannot reach" in err, err


def test_wrong_access_key(capsys, fabric_serve) -> None:
    rc, err = run(capsys, "--connection-string", cs(fabric_serve.endpoint, "not-the-key"), "--hub", "h")
    assert rc == EXIT_UNUSABLE
    assert err.count("\n") == 0 and "access key is wrong" in err, err


def test_hub_that_rejects_connections(capsys) -> None:
    # the hub's connect handler is unreachable, so the server refuses every connection to it
    server = start_fabric("--event-handler", f"refusing=http://127.0.0.1:{free_port()}/{{event}}")
    try:
        rc, err = run(capsys, "--connection-string", server.connection_string, "--hub", "refusing")
    finally:
        stop(server)
    assert rc == EXIT_UNUSABLE
    assert err.count("\n") == 0 and "hub 'refusing' rejects connections" in err, err


class _Plain(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def plain_http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_not_a_web_pubsub_server(capsys, plain_http_server) -> None:
    rc, err = run(capsys, "--connection-string", cs(plain_http_server), "--hub", "h")
    assert rc == EXIT_UNUSABLE
    assert err.count("\n") == 0 and "not a Web PubSub endpoint" in err, err


@pytest.mark.parametrize("argv, words", [
    (["--connection-string", "Endpoint=http://127.0.0.1:1;Version=1.0;", "--hub", "h"], "AccessKey"),
    (["--connection-string", "nonsense", "--hub", "h"], "key=value"),
    (["--connection-string", "Endpoint=ftp://x;AccessKey=k;", "--hub", "h"], "http"),
    (["--connection-string", cs("http://127.0.0.1:1"), "--hub", "1bad"], "invalid hub name"),
    (["--connection-string", cs("http://127.0.0.1:1"), "--hub", "h", "--subprotocol", "xml"], "unknown subprotocol"),
    (["--hub", "h"], "no connection string"),
])
def test_bad_arguments(capsys, monkeypatch, argv, words) -> None:
    monkeypatch.delenv("WEBPUBSUB_CONNECTION_STRING", raising=False)
    rc, err = run(capsys, *argv)
    assert rc == EXIT_USAGE
    assert err.count("\n") == 0 and words in err, err

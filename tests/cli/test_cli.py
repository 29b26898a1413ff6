"""The command line as a user runs it: real processes, real sockets, real signals."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import trio

from fabric.core import auth
from fabric.testing import ConnectionClosed, connect_tcp
from specs.errors import CloseCode

FABRIC = [sys.executable, "-m", "fabric"]


def test_help_lists_serve_and_token():
    out = subprocess.run([*FABRIC, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "serve" in out.stdout and "token" in out.stdout


def test_bad_config_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "eighty"\n')
    out = subprocess.run([*FABRIC, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "bad.toml" in out.stderr and "server.port" in out.stderr


def test_token_prints_a_url_the_server_accepts():
    out = subprocess.run([*FABRIC, "token", "--hub", "chat", "--user", "alice", "--role", "webpubsub.joinLeaveGroup",
                          "--group", "g1", "--access-key", "secret-key", "--endpoint", "http://127.0.0.1:9999"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url.startswith("ws://127.0.0.1:9999/client/hubs/chat?access_token=")
    token = url.split("access_token=", 1)[1]
    identity = auth.verify_client_token(token, keys=["secret-key"], hub="chat")
    assert identity.user_id == "alice"
    assert identity.roles == ("webpubsub.joinLeaveGroup",)
    assert identity.groups == ("g1",)


def _start_server(*extra, env=None):
    proc = subprocess.Popen([*FABRIC, "serve", "--port", "0", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("Endpoint="):
            return proc, line.strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stderr.read()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_serve_prints_connection_string_and_shuts_down_gracefully(signum):
    proc, line = _start_server("--access-key", "k1")
    try:
        m = re.fullmatch(r"Endpoint=http://127\.0\.0\.1:(\d+);AccessKey=k1;Version=1\.0;", line)
        assert m, line
        port = int(m.group(1))
        token = auth.mint_client_token(key="k1", endpoint=f"http://127.0.0.1:{port}", hub="h")
        client = await connect_tcp("127.0.0.1", port, f"/client/hubs/h?access_token={token}",
                                   ["json.webpubsub.azure.v1"])
        assert (await client.receive_json())["event"] == "connected"
        proc.send_signal(signum)
        # a graceful close: the client is told why, then gets 1001
        assert await client.receive_json() == {"type": "system", "event": "disconnected",
                                               "message": "The service is shutting down."}
        with pytest.raises(ConnectionClosed) as info:
            await client.receive()
        assert info.value.code == CloseCode.GOING_AWAY
        await trio.to_thread.run_sync(proc.wait, 20)
        assert proc.returncode == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_env_access_key_is_used_and_random_key_otherwise():
    env = {**os.environ, "FABRIC_ACCESS_KEY": "from-env"}
    proc, line = _start_server(env=env)
    proc.send_signal(signal.SIGINT)
    proc.wait(20)
    assert "AccessKey=from-env;" in line
    env.pop("FABRIC_ACCESS_KEY")
    proc, line = _start_server(env=env)
    proc.send_signal(signal.SIGINT)
    proc.wait(20)
    key = re.search(r"AccessKey=([^;]+);", line).group(1)
    assert len(key) >= 32


def test_port_in_use_is_a_clear_error():
    proc, line = _start_server("--access-key", "k")
    try:
        port = line.split(":")[2].split(";")[0]
        out = subprocess.run([*FABRIC, "serve", "--port", port], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
        assert "Address already in use" in out.stderr  # the cause, not trio's exception group
        assert "sub-exception" not in out.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)

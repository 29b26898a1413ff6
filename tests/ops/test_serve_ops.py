"""``fabric serve`` as an operator runs it: JSON logs, SIGHUP and --watch-config reloads (a
bad file rejected with its error, the running configuration kept), /metrics over TCP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import trio

from fabric.core import auth
from fabric.testing import ConnectionRejected, connect_tcp

FABRIC = [sys.executable, "-m", "fabric"]
KEY1 = "first-key-0123456789abcdef"
KEY2 = "second-key-0123456789abcdef"
KEY3 = "third-key-0123456789abcdef"
METRICS_TOKEN = "scrape-token-0123456789"


def write(path, key, port=0, extra=""):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'[server]\nport = {port}\naccess_keys = ["{key}"]\n'
                   f'[metrics]\ntoken = "{METRICS_TOKEN}"\nmin_interval = 0\n{extra}')
    os.replace(tmp, path)  # as editors do: the watcher never sees half a file


class Server:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*FABRIC, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line.startswith("Endpoint="):
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise AssertionError(f"server did not start: {self.text()}")
        self.port = int(re.search(r":(\d+);", line).group(1))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    async def wait_for(self, predicate, timeout: float = 20) -> dict:
        with trio.fail_after(timeout):
            while True:
                for record in self.records():
                    if predicate(record):
                        return record
                await trio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def connect(port: int, key: str):
    token = auth.mint_client_token(key=key, endpoint=f"http://127.0.0.1:{port}", hub="ops",
                                   roles=("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"))
    client = await connect_tcp("127.0.0.1", port, f"/client/hubs/ops?access_token={token}",
                               ["json.webpubsub.azure.v1"])
    assert (await client.receive_json())["event"] == "connected"
    return client


async def ping(client) -> None:
    await client.send_json({"type": "ping"})
    assert (await client.receive_json()) == {"type": "pong"}


async def refused(port: int, key: str) -> bool:
    try:
        client = await connect(port, key)
    except ConnectionRejected as exc:
        return exc.status == 401
    await client.aclose()
    return False


@pytest.mark.slow
async def test_sighup_and_watch_reload_keys_and_reject_a_bad_file(tmp_path):
    path = tmp_path / "fabric.toml"
    write(path, KEY1)
    server = Server("--config", str(path), "--log-format", "json", "--watch-config")
    try:
        port = server.port
        first = await connect(port, KEY1)
        assert all(isinstance(r, dict) for r in server.records())
        await server.wait_for(lambda r: r.get("event") == "connection.open")

        # SIGHUP with a new key (and a port change, which needs a restart)
        write(path, KEY2, port=1)
        server.proc.send_signal(signal.SIGHUP)
        record = await server.wait_for(lambda r: r.get("event") == "config.reload")
        assert "server.access_keys" in record["applied"] and record["needs_restart"] == "server.port"
        await server.wait_for(lambda r: r["level"] == "warning" and "need a restart" in r["msg"])
        assert await refused(port, KEY1)
        second = await connect(port, KEY2)
        await ping(first)

        # a bad file: rejected with its error, the running configuration stays
        path.write_text('[server]\nport = "eighty"\n')
        server.proc.send_signal(signal.SIGHUP)
        record = await server.wait_for(lambda r: r["level"] == "error" and "rejected" in r["msg"])
        assert "server.port" in record["msg"] and str(path) in record["msg"]
        third = await connect(port, KEY2)

        # --watch-config: writing the file is enough
        write(path, KEY3)
        await server.wait_for(lambda r: r.get("event") == "config.reload" and "changed" in r["msg"])
        assert await refused(port, KEY2)
        fourth = await connect(port, KEY3)
        for client in (first, second, third, fourth):
            await ping(client)

        async with httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{port}/metrics"
            assert (await http.get(url)).status_code == 401
            answer = await http.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert answer.status_code == 200
        assert 'fabric_connections{hub="ops",protocol="json"} 4' in answer.text
        assert 'fabric_connections_closed_total' not in answer.text.replace("# HELP fabric_connections_closed_total", "") \
            .replace("# TYPE fabric_connections_closed_total", "")  # nothing disconnected
        for client in (first, second, third, fourth):
            await client.aclose()
    finally:
        server.stop()
    text = server.text()
    for secret in (KEY1, KEY2, KEY3, METRICS_TOKEN):
        assert secret not in text
    for line in server.lines:  # --log-format json: every line is one JSON object
        assert isinstance(json.loads(line), dict), line

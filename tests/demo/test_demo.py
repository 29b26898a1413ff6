"""The demos without a browser: negotiate, static files and their headers, the chat's
presence handler and the whiteboard's stroke rules (the browser tests are tests/browser)."""

from __future__ import annotations

import json

import attrs
import pytest
import trio

import fabric
from fabric.config import DemoConfig
from fabric.core import auth
from fabric.demo import whiteboard
from tests.appserver.rest.rest_support import KEY, connect
from tests.fabric_support import quick_config
from tests.socketio.inprocess import http

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


def demo_config(**demo):
    return attrs.evolve(quick_config(), demo=DemoConfig(enabled=True, **demo))


async def test_off_by_default():
    async with fabric.open_fabric(quick_config(), access_key=KEY) as fab:
        assert (await http(fab, "GET", "/demo/")).status == 404
        assert (await http(fab, "GET", "/demo/api/negotiate?app=chat&user=a")).status == 404


async def test_pages_and_static_files_carry_a_strict_csp():
    async with fabric.open_fabric(demo_config(), access_key=KEY) as fab:
        for path in ("/demo/", "/demo/chat/", "/demo/whiteboard/", "/demo/status", "/demo/static/chat.js",
                     "/demo/static/vendor/web-pubsub-client.min.js", "/demo/static/vendor/socket.io.min.js"):
            answer = await http(fab, "GET", path)
            assert answer.status == 200, path
            headers = dict(answer.headers)
            assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"]
        for path in ("/demo/static/../__init__.py", "/demo/static/%2e%2e/__init__.py", "/demo/static/nope.js",
                     "/demo/static/", "/demo/other"):
            assert (await http(fab, "GET", path)).status == 404, path
        assert (await http(fab, "POST", "/demo/chat/")).status == 405


async def test_negotiate_mints_tokens_without_a_key_in_the_page():
    async with fabric.open_fabric(demo_config(), access_key=KEY) as fab:
        answer = await http(fab, "GET", "/demo/api/negotiate?app=chat&user=alice%20b")
        body = json.loads(answer.body)
        assert KEY not in answer.body.decode()
        token = body["url"].split("access_token=", 1)[1]
        identity = auth.verify_client_token(token, keys=[KEY], hub="demochat")
        assert identity.user_id == "alice b" and set(identity.roles) == set(ROLES)
        board = json.loads((await http(fab, "GET", "/demo/api/negotiate?app=whiteboard&user=bob")).body)
        assert board["path"] == "/clients/socketio/hubs/demoboard/"
        for bad in ("user=", "user=%3Cscript%3E", "user=" + "x" * 33, "app=other&user=a"):
            assert (await http(fab, "GET", f"/demo/api/negotiate?{bad}")).status == 400, bad


async def test_chat_presence_from_connected_and_disconnected():
    async with fabric.open_fabric(demo_config(), access_key=KEY) as fab:
        alice = await connect(fab, "demochat", user_id="alice", roles=ROLES)
        first = await alice.receive_json()
        assert first["data"] == {"kind": "presence", "event": "joined", "user": "alice", "online": ["alice"], "count": 1}
        bob = await connect(fab, "demochat", user_id="bob", roles=ROLES)
        assert (await alice.receive_json())["data"]["online"] == ["alice", "bob"]
        await bob.aclose()
        left = await alice.receive_json()
        assert left["data"]["event"] == "left" and left["data"]["online"] == ["alice"]
        stats = json.loads((await http(fab, "GET", "/demo/api/stats")).body)
        assert stats["demochat"]["connections"] == 1 and stats["demochat"]["publications"] == 3
        await alice.aclose()


@pytest.mark.parametrize("stroke", [
    None, [], {"points": [], "color": "#000000", "width": 2}, {"points": [[0, 0]], "color": "red", "width": 2},
    {"points": [[0, 0]], "color": "#000000", "width": 0}, {"points": [[0, 2]], "color": "#000000", "width": 2},
    {"points": [[0, float("nan")]], "color": "#000000", "width": 2}, {"points": [[0, True]], "color": "#000000", "width": 2},
    {"points": [[0, 0]] * 513, "color": "#000000", "width": 2}, {"points": [["0", 0]], "color": "#000000", "width": 2},
    {"points": [[0, 0]], "color": "#000000\"><script>", "width": 2},
])
def test_bad_strokes_are_dropped(stroke):
    assert whiteboard.clean_stroke(stroke) is None


def test_strokes_are_rebuilt_from_checked_values():
    clean = whiteboard.clean_stroke({"points": [[0.123456, 1]], "color": "#AABBCC", "width": 3, "extra": "<b>"})
    assert clean == {"points": [[0.1235, 1.0]], "color": "#aabbcc", "width": 3.0}


class FakeSio:
    def __init__(self):
        self.handlers, self.emitted, self.rooms = {}, [], {}

    def on(self, event, handler):
        self.handlers[event] = handler

    async def enter_room(self, sid, room):
        self.rooms[sid] = room

    async def leave_room(self, sid, room):
        self.rooms.pop(sid, None)

    async def emit(self, event, data, room=None, skip_sid=None):
        self.emitted.append((event, data, room, skip_sid))


async def test_whiteboard_history_is_bounded_and_late_joiners_get_it(monkeypatch):
    monkeypatch.setattr(whiteboard, "MAX_ROOMS", 2)
    sio = FakeSio()
    board = whiteboard.Whiteboard(sio, history=3)
    assert (await sio.handlers["join"]("a", {"room": "r1"}))["strokes"] == []
    for i in range(5):
        await sio.handlers["stroke"]("a", {"points": [[i / 10, 0]], "color": "#000000", "width": 2})
    assert [e[2:] for e in sio.emitted] == [("board:r1", "a")] * 5
    late = await sio.handlers["join"]("b", {"room": "r1"})
    assert [s["points"][0][0] for s in late["strokes"]] == [0.2, 0.3, 0.4]
    assert (await sio.handlers["join"]("c", {"room": "bad room!"}))["ok"] is False
    for room in ("r2", "r3"):
        await sio.handlers["join"]("c", {"room": room})
        await sio.handlers["stroke"]("c", {"points": [[0, 0]], "color": "#000000", "width": 2})
    assert list(board.rooms) == ["r2", "r3"]

"""Finding 2 of the hostile-input review: deeply nested JSON is a clear 4xx / 1007 on every
surface, never a 5xx, and other connections carry on."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import fabric
from fabric.core.auth import mint_rest_token
from fabric.core.payload import MAX_JSON_DEPTH, json_too_deep
from fabric.testing import ConnectionClosed, connect_tcp

KEY = "nesting-key-0123456789-0123456789-0123"
HUB = "deep"
DEEP = "[" * 1000 + "]" * 1000  # 2 KB; 4 KB of brackets took the server down before
SENDS = (
    "/api/hubs/deep/:send",
    "/api/hubs/deep/groups/g/:send",
    "/api/hubs/deep/users/u/:send",
    "/api/hubs/deep/connections/c/:send",
)


def depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\ ', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k[{"\\', max_size=4), inner,
                                                                   max_size=3),
    max_leaves=40,
)


@settings(max_examples=400)
@given(json_values, st.integers(0, 12))
def test_depth_rule_matches_a_parser(value, limit):
    text = json.dumps(value)
    assert json_too_deep(text, limit) is (depth(value) > limit)
    assert json_too_deep(text.encode(), limit) is (depth(value) > limit)


def test_exact_bound_and_hostile_shapes():
    assert not json_too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert json_too_deep("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep(b"[" * 1_000_000)  # unbalanced: unclosed brackets count
    assert not json_too_deep('["' + "[" * 5000 + '"]')  # brackets inside a string do not count



async def test_rest_sends_answer_400_and_others_carry_on():
    async with fabric.open_fabric(access_key=KEY) as fab, trio.open_nursery() as nursery:
        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        token = fab.hub(HUB).get_client_access_token(roles=("webpubsub.joinLeaveGroup",))["token"]
        bystander = await connect_tcp("127.0.0.1", port, f"/client/hubs/{HUB}?access_token={token}",
                                      ["json.webpubsub.azure.v1"])
        assert (await bystander.receive_json())["event"] == "connected"
        async with httpx.AsyncClient() as http:
            for path in SENDS:
                url = f"{base}{path}?api-version=2024-12-01"
                auth = {"Authorization": f"Bearer {mint_rest_token(key=KEY, url=url)}",
                        "Content-Type": "application/json"}
                answer = await http.post(url, content=DEEP, headers=auth)
                assert answer.status_code == 400, (path, answer.text)
                assert answer.json()["code"] == "InvalidJson" and "deeper than 64" in answer.json()["message"]
            url = f"{base}/api/hubs/{HUB}/:addToGroups?api-version=2024-12-01"
            answer = await http.post(url, content='{"groups":' + DEEP + "}", headers={
                "Authorization": f"Bearer {mint_rest_token(key=KEY, url=url)}", "Content-Type": "application/json"})
            assert answer.status_code == 400 and answer.json()["code"] == "InvalidJson"
            url = f"{base}/api/hubs/{HUB}/:send?api-version=2024-12-01"
            ok = await http.post(url, content='{"fine": [[1]]}', headers={
                "Authorization": f"Bearer {mint_rest_token(key=KEY, url=url)}", "Content-Type": "application/json"})
            assert ok.status_code == 202
        message = await bystander.receive_json()
        assert message["data"] == {"fine": [[1]]}  # the bystander got only the valid send
        nursery.cancel_scope.cancel()


async def test_websocket_frame_closes_1007_after_disconnected():
    async with fabric.open_fabric(access_key=KEY) as fab, trio.open_nursery() as nursery:
        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        token = fab.hub(HUB).get_client_access_token(roles=("webpubsub.sendToGroup",))["token"]
        target = f"/client/hubs/{HUB}?access_token={token}"
        client = await connect_tcp("127.0.0.1", port, target, ["json.webpubsub.azure.v1"])
        await client.receive_json()
        await client.send('{"type":"sendToGroup","group":"g","dataType":"json","data":' + DEEP + "}")
        disconnected = await client.receive_json()
        assert disconnected["event"] == "disconnected" and "deeper than 64" in disconnected["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
        assert closed.value.code == 1007
        nursery.cancel_scope.cancel()

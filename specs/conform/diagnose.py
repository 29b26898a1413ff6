"""Before any check: can this endpoint be checked at all? One line for a person if not.

Rules this module keeps:
- Four questions in order, each answered by the cheapest request that can answer it: is
  anything listening (TCP), does it speak the data-plane REST API with this key (a signed
  ``HEAD`` on a connection that cannot exist: 404 means yes, 401 means the key is wrong), does
  the hub accept a client (a WebSocket with a correctly signed token and the JSON
  subprotocol), and does it answer like Web PubSub (the subprotocol echoed, then
  ``system/connected``).
- Never raises: the answer is ``None`` (usable) or one sentence saying what is wrong, whose
  side it is on, and what to try.
"""

from __future__ import annotations

import secrets

import trio

from specs.conform.driver import HandshakeFailed, Portal, RestClient, WireClient
from specs.conform.endpoint import Endpoint, client_path, mint_client_token, seg
from specs.conform.transcript import Transcript
from specs.webpubsub_json import JSON_V1


def diagnose(portal: Portal, endpoint: Endpoint, hub: str, timeout: float) -> str | None:
    try:
        return portal.run(_diagnose, portal, endpoint, hub, timeout)
    except Exception as exc:  # noqa: BLE001 - the diagnosis itself must never be a traceback
        return f"cannot check {endpoint.endpoint}: {type(exc).__name__}: {exc}"[:300]


async def _diagnose(portal: Portal, endpoint: Endpoint, hub: str, timeout: float) -> str | None:
    where = endpoint.endpoint
    # ---- 1. anything listening?
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        await trio.aclose_forcefully(stream)
    except (OSError, trio.TooSlowError) as exc:
        why = "no answer" if isinstance(exc, trio.TooSlowError) else (exc.strerror or str(exc))
        return f"cannot reach {where}: {why} (is the server running, and is the Endpoint right?)"
    # ---- 2. the REST API, signed with this key
    rest = RestClient(endpoint, timeout)
    try:
        ghost = "conform-" + secrets.token_hex(8)
        r = await rest.call("HEAD", f"/api/hubs/{seg(hub)}/connections/{seg(ghost)}")
        health = await rest.call("HEAD", "/api/health", signed=False)
    finally:
        await rest.aclose()
    if r.status is None:
        return f"{where} does not speak HTTP: {r.error} (not a Web PubSub endpoint?)"
    rest_ok = r.status == 404  # that connection cannot exist
    # ---- 3. and 4. a client connection to the hub
    t = Transcript()
    token = mint_client_token(endpoint, hub, user_id="conform-probe")
    client = WireClient("probe", t, JSON_V1)
    try:
        await client.open(portal.nursery, endpoint, client_path(hub, token), [JSON_V1.name], timeout)
    except HandshakeFailed as exc:
        if exc.status == 401:
            if r.status == 401:
                return (f"the access key is wrong: {where} refused both a signed REST call and a client token "
                        f"with 401 (check AccessKey= in the connection string)")
            return f"hub {hub!r} refuses a correctly signed client token with 401: {_b(exc.body)}"
        if exc.status is None:
            return f"{where} accepted TCP but no WebSocket upgrade: {exc} (not a Web PubSub endpoint?)"
        if 200 <= exc.status < 300:
            return (f"{where} is not a Web PubSub endpoint: it answered a WebSocket upgrade on the client path "
                    f"with HTTP {exc.status} {_b(exc.body)}")
        if not rest_ok and health.status != 200:
            return (f"{where} is not a Web PubSub endpoint: the client path answered HTTP {exc.status}, "
                    f"REST answered {r.status}, /api/health answered {health.status}")
        if r.status == 401:
            return f"the access key is wrong: REST answered 401, the client path HTTP {exc.status} {_b(exc.body)}"
        return f"hub {hub!r} rejects connections: the upgrade was answered with HTTP {exc.status} {_b(exc.body)}"
    try:
        if client.subprotocol != JSON_V1.name:
            return (f"{where} accepted the WebSocket but did not echo the subprotocol {JSON_V1.name} "
                    f"(got {client.subprotocol!r}): not a Web PubSub endpoint?")
        await client.wait_until(lambda: bool(client.frames) or client.closed is not None, timeout)
        first = client.frames[0] if client.frames else None
        if first is None or first.kind != "connected":
            what = first.render if first is not None else (
                f"a close {client.closed.code}" if client.closed else f"nothing within {timeout:g} s")
            return f"{where} accepted the WebSocket but sent {what} instead of system/connected: not a Web PubSub endpoint?"
        if r.status == 401:
            return f"the access key is wrong for the REST API: a signed REST call answered 401 {_b(r.body)}"
        if not rest_ok:
            return f"{where} speaks the client protocol, but its REST API answered HTTP {r.status} to a signed HEAD {_b(r.body)}"
    finally:
        await client.close()
    return None


def _b(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return (text[:160] + "…") if len(text) > 160 else text

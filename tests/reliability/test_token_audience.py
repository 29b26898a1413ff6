"""Finding 6: with ``[server] public_endpoint`` set, a token minted for another service that
shares the access key (same path, other host) is refused on both surfaces; without it, only
the path is compared (the documented default: proxies rewrite hosts)."""

from __future__ import annotations

import httpx
import trio

import fabric
from fabric.config import load_config
from fabric.core.auth import mint_client_token, mint_rest_token
from fabric.testing import ConnectionRejected, connect_tcp

KEY = "audience-key-0123456789-0123456789-01"
PUBLIC = "https://pubsub.example.com"
OTHER = "https://other-service.example.net"


async def _check(public_endpoint: str | None, endpoint_of_token: str, accepted: bool) -> None:
    overrides = {"access_keys": (KEY,)}
    if public_endpoint:
        overrides["public_endpoint"] = public_endpoint
    async with fabric.open_fabric(load_config(None, env={}, overrides=overrides)) as fab, \
            trio.open_nursery() as nursery:
        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        token = mint_client_token(key=KEY, endpoint=endpoint_of_token, hub="chat", user_id="u")
        target = f"/client/hubs/chat?access_token={token}"
        if accepted:
            client = await connect_tcp("127.0.0.1", port, target, ["json.webpubsub.azure.v1"])
            assert (await client.receive_json())["event"] == "connected"
        else:
            try:
                await connect_tcp("127.0.0.1", port, target, ["json.webpubsub.azure.v1"])
            except ConnectionRejected as exc:
                assert exc.status == 401 and b"InvalidAudience" in exc.body and b"public endpoint" in exc.body
            else:
                raise AssertionError("a token for another service was accepted")
        path = "/api/hubs/chat/:send?api-version=2024-12-01"
        rest_token = mint_rest_token(key=KEY, url=endpoint_of_token + path)
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"http://127.0.0.1:{port}{path}", content="hi",
                                     headers={"Authorization": f"Bearer {rest_token}", "Content-Type": "text/plain"})
        assert answer.status_code == (202 if accepted else 401), answer.text
        if not accepted:
            assert answer.json()["code"] == "InvalidAudience"
        nursery.cancel_scope.cancel()


async def test_foreign_audience_refused_when_public_endpoint_is_set():
    await _check(PUBLIC, OTHER, accepted=False)


async def test_own_audience_accepted_with_any_default_port_spelling():
    await _check(PUBLIC, PUBLIC, accepted=True)
    await _check(PUBLIC + ":443", PUBLIC, accepted=True)


async def test_without_public_endpoint_only_the_path_counts():
    await _check(None, OTHER, accepted=True)


async def test_generated_tokens_and_the_connection_string_name_the_public_endpoint():
    # Found by a REST fuzz run: :generateToken built aud from http:// + the request's Host, so
    # with public_endpoint = https://... its tokens were refused (401 InvalidAudience) by the
    # same server, and the printed connection string named the listening address, whose REST
    # tokens are refused too.
    overrides = {"access_keys": (KEY,), "public_endpoint": PUBLIC}
    async with fabric.open_fabric(load_config(None, env={}, overrides=overrides)) as fab, \
            trio.open_nursery() as nursery:
        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        assert fab.connection_string().startswith(f"Endpoint={PUBLIC};")
        path = "/api/hubs/chat/:generateToken?api-version=2024-12-01&userId=u"
        rest_token = mint_rest_token(key=KEY, url=PUBLIC + path)
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {rest_token}"})
        assert answer.status_code == 200, answer.text
        token = answer.json()["token"]
        client = await connect_tcp("127.0.0.1", port, f"/client/hubs/chat?access_token={token}",
                                   ["json.webpubsub.azure.v1"])
        assert (await client.receive_json())["event"] == "connected"
        await client.aclose()
        nursery.cancel_scope.cancel()

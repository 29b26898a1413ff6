"""Test machinery for upstream event handlers.

- ``CloudEventsApp``: a small upstream handler app written against the wire contract (a
  ``transport.http`` Application, so it can be served over TCP with ``serve_tcp`` or called
  in memory). It answers the abuse-protection OPTIONS, checks ``ce-signature`` against its own
  keys, and turns each CloudEvent into a call on an in-process ``EventHandler``: so the *same*
  handler class runs in-process and behind the webhook, and the scenario suite compares them.
  It records every request (method, path, headers as received, body).
- ``AppTransport``: an ``httpx`` transport that hands requests straight to an app (no sockets,
  so ``autojump_clock`` works), keeping the exact header bytes httpx built; can simulate a
  handler that is down.
- ``make_config``: a fabric config with one webhook-backed hub.
- ``PresenceHandlerConfig``: an event handler configuration with the group-presence opt-in
  (``group_presence_events``, ``group_filters``; Azure's ARM ``groupPresenceEvents``) that
  ``fabric.config.EventHandlerConfig`` does not have yet.

The app passes metadata both ways (``x-webpubsub-metadata-*`` in, ``X-WebPubSub-Metadata-*``
out, through ``handle_user_event``) and dispatches ``azure.webpubsub.gp.joined``/``left``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Awaitable, Callable

import attrs
import httpx
import trio

from fabric.config import SYSTEM_EVENTS, EventHandlerConfig, FabricConfig, HubConfig, ServerConfig
from fabric.core.events import (
    UNCHANGED,
    ConnectionContext,
    ConnectRejected,
    ConnectRequest,
    EventHandler,
    UserEventError,
    UserEventRequest,
    UserEventResponse,
)
from fabric.core.payload import DataType, Payload
from specs import metadata as spec_metadata
from specs import upstream as spec
from transport.http import Request, Response, _parse_target

KEYS = ("primary-access-key-for-upstream-tests-0001", "secondary-access-key-for-upstream-tests-02")
HUB = "up"
BASE = "http://upstream.test"
URL_TEMPLATE = BASE + "/hubs/{hub}/events/{event}"

_MEDIA_TO_TYPE = {"text/plain": DataType.TEXT, "application/json": DataType.JSON,
                  "application/octet-stream": DataType.BINARY, "application/x-protobuf": DataType.PROTOBUF}
_TYPE_TO_MEDIA = {DataType.TEXT: "text/plain; charset=utf-8", DataType.JSON: "application/json; charset=utf-8",
                  DataType.BINARY: "application/octet-stream", DataType.PROTOBUF: "application/x-protobuf"}


@attrs.frozen
class PresenceHandlerConfig(EventHandlerConfig):
    """An event handler configuration that opts into group presence events."""

    group_presence_events: tuple[str, ...] = ("joined", "left")
    group_filters: tuple[str, ...] = ()


def make_config(*, timeout: float = 5.0, handlers: tuple[EventHandlerConfig, ...] | None = None,
                keys: tuple[str, ...] = KEYS, hub: str = HUB, **server: Any) -> FabricConfig:
    if handlers is None:
        handlers = (EventHandlerConfig(URL_TEMPLATE, "*", SYSTEM_EVENTS),)
    return FabricConfig(
        server=ServerConfig(access_keys=keys, upstream_timeout=timeout, **server),
        hubs={hub: HubConfig(event_handlers=handlers)},
    )


@attrs.define
class Seen:
    """One request as the handler app received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]  # lower-cased names, as transport.http gives them
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def event(self) -> str | None:
        return self.header("ce-eventName")


class CloudEventsApp:
    """An upstream handler app over an ``EventHandler``; see the module docstring.

    ``keys``: the access keys it verifies ``ce-signature`` with (any entry must match one of
    them; with ``require_every_key`` each key must have its entry). ``allowed_origin``: the
    ``WebHook-Allowed-Origin`` it answers (None: the header is left out).
    ``override``: an async function ``(Seen) -> Response | None`` consulted first (bad answers).
    """

    def __init__(self, handler: EventHandler | None = None, *, keys: tuple[str, ...] = KEYS,
                 require_every_key: bool = True, allowed_origin: str | None = "*",
                 override: Callable[[Seen], Awaitable[Response | None]] | None = None) -> None:
        self.handler = handler or EventHandler()
        self.keys = keys
        self.require_every_key = require_every_key
        self.allowed_origin = allowed_origin
        self.override = override
        self.seen: list[Seen] = []
        self.signature_failures = 0
        self.changed = trio.Event()

    def events(self, name: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and (name is None or s.event == name)]

    async def wait_for(self, name: str, count: int = 1) -> list[Seen]:
        while len(self.events(name)) < count:
            self.changed = trio.Event()
            await self.changed.wait()
        return self.events(name)

    async def handle_websocket(self, request: Request) -> Response:
        return Response.error(400, "BadRequest", "not a WebSocket endpoint")

    async def handle_http(self, request: Request) -> Response:
        seen = Seen(request.method, request.path, list(request.headers), request.body)
        self.seen.append(seen)
        self.changed.set()
        if self.override is not None:
            answer = await self.override(seen)
            if answer is not None:
                return answer
        if request.method == "OPTIONS":
            if request.header("ce-awpsversion") is None or request.header("webhook-request-origin") is None:
                return Response(400, b"not a Web PubSub validation request")
            headers = () if self.allowed_origin is None else (("WebHook-Allowed-Origin", self.allowed_origin),)
            return Response(200, b"", headers)
        if request.method != "POST":
            return Response(405)
        connection_id = request.header("ce-connectionid") or ""
        if not self._signature_ok(request.header("ce-signature") or "", connection_id):
            self.signature_failures += 1
            return Response(401, b"bad signature")
        return await self._dispatch(request)

    def _signature_ok(self, header: str, connection_id: str) -> bool:
        if self.require_every_key:
            return all(spec.verify_signature(header, (k,), connection_id) for k in self.keys)
        return spec.verify_signature(header, self.keys, connection_id)

    def _context(self, request: Request) -> ConnectionContext:
        return ConnectionContext(
            hub=request.header("ce-hub") or "", connection_id=request.header("ce-connectionid") or "",
            user_id=request.header("ce-userid"), subprotocol=request.header("ce-subprotocol"),
            connection_state=request.header("ce-connectionstate"),
        )

    async def _dispatch(self, request: Request) -> Response:
        ce_type = request.header("ce-type") or ""
        handler = self.handler
        if ce_type == "azure.webpubsub.sys.connect":
            body = json.loads(request.body)
            ctx = self._context(request)
            req = ConnectRequest(
                hub=ctx.hub, connection_id=ctx.connection_id, user_id=ctx.user_id,
                claims=body["claims"], query=body["query"], headers=body["headers"],
                subprotocols=tuple(body["subprotocols"]), roles=(), groups=(),
            )
            try:
                answer = await handler.on_connect(req)
            except ConnectRejected as exc:
                return Response(exc.status, exc.message.encode(), (("content-type", "text/plain"),))
            if answer is None:
                return Response(204)
            headers: tuple = (("content-type", "application/json; charset=utf-8"),)
            if answer.connection_state is not None:
                headers += (("ce-connectionState", answer.connection_state),)
            out: dict[str, Any] = {}
            if answer.user_id is not None:
                out["userId"] = answer.user_id
            if answer.groups:
                out["groups"] = list(answer.groups)
            if answer.roles:
                out["roles"] = list(answer.roles)
            if answer.subprotocol is not None:
                out["subprotocol"] = answer.subprotocol
            return Response(200, json.dumps(out).encode(), headers)
        if ce_type == "azure.webpubsub.sys.connected":
            json.loads(request.body)  # express parses it: an empty body would break it
            await handler.on_connected(self._context(request))
            return Response(200)
        if ce_type == "azure.webpubsub.sys.disconnected":
            reason = json.loads(request.body)["reason"]
            await handler.on_disconnected(self._context(request), reason)
            return Response(200)
        if ce_type in ("azure.webpubsub.gp.joined", "azure.webpubsub.gp.left"):
            body = json.loads(request.body)
            method = handler.on_group_joined if ce_type.endswith("joined") else handler.on_group_left
            await method(self._context(request), body["group"])
            return Response(200)
        if ce_type.startswith("azure.webpubsub.user."):
            media = spec.media_type(request.header("content-type"))
            data_type = _MEDIA_TO_TYPE.get(media)
            if data_type is None:
                return Response(415, f"unsupported content type {media}".encode())
            event = ce_type[len("azure.webpubsub.user."):]
            if not handler.handles_user_event(event):
                return Response(404, f"no handler for {event}".encode())
            metadata = spec_metadata.fold_headers(request.headers, spec_metadata.UPSTREAM_HEADER_PREFIX)
            try:
                result = await handler.handle_user_event(UserEventRequest(
                    self._context(request), event, Payload(data_type, request.body), metadata))
            except UserEventError as exc:
                return Response(500, f"{exc.name}: {exc.message}".encode(), (("content-type", "text/plain"),))
            state: Any = UNCHANGED
            reply_metadata = None
            if isinstance(result, UserEventResponse):
                result, state, reply_metadata = result.payload, result.connection_state, result.metadata
            headers: tuple = ()
            if state is not UNCHANGED:
                headers += (("ce-connectionState", state or ""),)
            for key, value in (reply_metadata or {}).items():
                headers += (("X-WebPubSub-Metadata-" + key, value),)
            if result is None:
                return Response(204, b"", headers)
            return Response(200, result.body, (("content-type", _TYPE_TO_MEDIA[result.data_type]), *headers))
        return Response(400, b"not a Web PubSub CloudEvent")


class AppTransport(httpx.AsyncBaseTransport):
    """Hands httpx requests to an app in memory. ``raw`` keeps (method, url, raw header
    list, body) exactly as httpx built them. ``down`` makes every request fail to connect."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.raw: list[tuple[str, str, list[tuple[bytes, bytes]], bytes]] = []
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        body = await request.aread()
        self.raw.append((request.method, str(request.url), list(request.headers.raw), body))
        target = request.url.raw_path.decode("ascii")
        path, raw_path, query = _parse_target(target)
        headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw)
        response = await self.app.handle_http(Request(request.method, target, path, raw_path, query, headers, body))
        if isinstance(response, httpx.Response):  # a test's hand-made answer (streamed as given)
            return response
        # Non-ASCII header values (metadata) go out as their UTF-8 bytes, as Node's http does.
        headers = [(k, v.encode("utf-8") if isinstance(v, str) and not v.isascii() else v)
                   for k, v in response.headers]
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("content-length", str(len(response.body))))
        # A real transport streams the body: the client reads it with aiter_raw().
        return httpx.Response(response.status, headers=headers, stream=httpx.ByteStream(response.body))


def state_of(obj: dict) -> str:
    """base64(JSON), the way Microsoft's SDKs write ce-connectionState."""
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()

"""Upstream event handlers over HTTP: CloudEvents exactly as Azure Web PubSub sends them.

``WebhookEventHandler`` implements ``fabric.handlers.EventHandler`` by POSTing CloudEvents
(HTTP binary mode) to the URLs of a hub's ``event_handlers`` settings, so the core calls an
app server the same way it calls an in-process handler. The wire contract and every failure's
outcome are data in ``specs/upstream.py``; this module only carries them out.

Rules this module keeps:
- One ``httpx.AsyncClient`` per hub (created and closed by ``run``, a supervised task), with
  a keep-alive pool, and beside it one ``http_pool.HttpPool`` (h11) that carries plain
  ``http://`` handlers when no transport is injected (TLS and ``tunnel://`` stay on httpx);
  at most ``max_concurrency`` requests in flight (a ``CapacityLimiter``;
  waiting for it counts against the timeout). Redirects are never followed, proxies from
  the environment never used, compressed answers refused.
- Every request is bounded by ``timeout`` seconds from the moment the event is handed over
  (validation, waiting for a slot, connecting, sending, reading); every answer body by
  ``max_response_bytes`` (checked against Content-Length, then while reading raw bytes).
- ``on_connect`` / ``on_user_event`` raise only ``ConnectRejected`` / ``UserEventError``
  (plus Cancelled); each failure is logged (rate-limited) and counted.
- ``on_connected`` / ``on_disconnected`` / ``on_group_joined`` / ``on_group_left`` never await
  the network: they put the event in one of ``notify_workers`` bounded queues (a connection
  always uses the same one, so its events reach the handler in the order they were queued)
  and return; a full queue drops and counts.
- Group presence (``joined``/``left``) goes only to a handler whose configuration opts in
  (``group_presence_events``, filtered by ``group_filters`` patterns; ``specs.upstream``
  decision ``upstream.group-presence``).
- Metadata (``specs.metadata``): a user event's or invocation's metadata goes out as
  ``x-webpubsub-metadata-<key>`` headers; a 2xx answer's ``X-WebPubSub-Metadata-*`` headers are
  the reply's metadata (an invalid map is a ``BadBody`` failure).
- An invocation (``UserEventRequest.invocation_id``) is the same user event; only its failure
  names differ (``specs.upstream.FailureRule.invoke_error``).
- Abuse-protection validation (OPTIONS) happens before the first event sent to a URL;
  concurrent first events share one validation.
- On shutdown (``run`` cancelled) the queued notifications get a short shielded drain, then
  the client is closed.
"""

from __future__ import annotations

import base64
import binascii
import collections
import itertools
import logging
import time
import urllib.parse
from typing import Any, Callable, Sequence

import attrs
import httpx
import msgspec
import trio

from fabric.appserver import http_pool
from fabric.config import EventHandlerConfig, HubConfig
from fabric.core.counters import WEBHOOK_COUNTERS, Counters
from fabric.core.metrics import counter, histogram
from fabric.core.events import (
    UNCHANGED,
    ConnectionContext,
    ConnectRejected,
    ConnectRequest,
    ConnectResponse,
    EventHandler,
    UserEventError,
    UserEventRequest,
    UserEventResponse,
)
from fabric.core.payload import MAX_JSON_DEPTH, DataType, Payload, json_too_deep
from fabric.core.permissions import compile_group_pattern
from specs import metadata as spec_metadata
from specs import upstream as spec
from specs.errors import AckErrorName
from specs.names import is_valid_group_name
from specs.upstream import Failure

log = logging.getLogger(__name__)

USER_AGENT = "fabric-webpubsub/0.1"
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_NOTIFY_WORKERS = 8
DEFAULT_NOTIFY_QUEUE = 1024
#: Longest the queued notifications are given on shutdown.
DRAIN_SECONDS = 2.0
#: The same (event kind, failure) is logged at most once per this many seconds.
LOG_INTERVAL = 5.0
#: Bytes of a non-2xx answer read for its detail text.
ERROR_BODY_BYTES = 4096
#: Parsed event URLs kept per hub (event names come from clients: the cache is bounded).
URL_CACHE = 1024

_REPLY_TYPES = {k: DataType(v) for k, v in spec.REPLY_DATA_TYPES.items()}
#: Sent on every request, before the CloudEvents headers.
_FIXED_HEADERS = ((b"User-Agent", USER_AGENT.encode()), (b"Accept-Encoding", b"identity"))


class UpstreamFailure(Exception):
    """One failed upstream exchange: a ``specs.upstream.Failure`` and a readable message."""

    def __init__(self, failure: Failure, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.status = status
        self.detail = detail


@attrs.define
class _Answer:
    """One answer: status, headers (lower-cased name → values, latin-1, read once), body."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    @classmethod
    def from_raw(cls, status: int, raw: Sequence[tuple[bytes, bytes]], body: bytes = b"") -> "_Answer":
        headers: dict[str, list[str]] = {}
        for name, value in raw:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        return cls(status, headers, body)

    def get(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def get_list(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


@attrs.define
class _Validation:
    lock: trio.Lock = attrs.Factory(trio.Lock)
    ok: bool = False
    error: UpstreamFailure | None = None
    failed_at: float = 0.0


def _quote(text: str | bytes, limit: int = spec.ERROR_DETAIL_CHARS) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unsendable(data: bytes) -> bool:
    """Control characters (but tab): bytes no HTTP header value may hold (RFC 9110 §5.5)."""
    return any(b < 0x20 and b != 0x09 or b == 0x7F for b in data)


def _header_bytes(name: str, value: str) -> bytes:
    """A header value as bytes (latin-1 when possible: that is how it arrived; else UTF-8);
    raises UNSENDABLE for control characters."""
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        data = value.encode("utf-8")
    if _unsendable(data):
        raise UpstreamFailure(Failure.UNSENDABLE, f"the {name} value {value!r} cannot be sent in an HTTP header")
    return data


class _LogLimiter:
    """At most one log line per key per LOG_INTERVAL; the next one says how many were held."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}
        self._held: collections.Counter[Any] = collections.Counter()

    def log(self, key: Any, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            self._held[key] += 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d similar failures in the last %.0f s not logged)"
            args = (*args, held, LOG_INTERVAL)
        log.log(level, msg, *args)


class WebhookEventHandler(EventHandler):
    """A hub's upstream webhooks, behind the ``EventHandler`` interface.

    ``origin``: the ``WebHook-Request-Origin`` host, or a callable returning
    ``(host, host:port)`` (the Fabric passes one that reads its endpoint at call time).
    ``transport``: an ``httpx.AsyncBaseTransport`` to use instead of TCP (tests, embedding).
    Run ``run`` in a nursery (the Fabric supervises it) before events arrive.
    """

    def __init__(
        self,
        hub: str,
        config: HubConfig,
        *,
        access_keys: Sequence[str],
        origin: str | Callable[[], tuple[str, str]] = "localhost",
        timeout: float = 20.0,
        max_response_bytes: int = 1 << 20,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        notify_workers: int = DEFAULT_NOTIFY_WORKERS,
        notify_queue: int = DEFAULT_NOTIFY_QUEUE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not access_keys:
            raise ValueError("at least one access key is needed to sign upstream requests")
        self.hub = hub
        self.config = config
        self.access_keys = tuple(access_keys)
        self._origin = origin
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_concurrency = max_concurrency
        self.notify_workers = notify_workers
        self.notify_queue = notify_queue
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        #: Plain ``http://`` handlers go through this h11 pool when no transport is injected
        #: (TLS, ``tunnel://`` and injected transports stay on httpx).
        self._pool: http_pool.HttpPool | None = None
        self._limiter = trio.CapacityLimiter(max_concurrency)
        self._senders: list[trio.MemorySendChannel] | None = None
        self._validations: dict[str, _Validation] = {}
        self._urls: dict[tuple[int, str], httpx.URL] = {}  # parsed once (bounded: URL_CACHE)
        self._ids = itertools.count(1)
        self._log = _LogLimiter()
        self._warned_state = False
        self.counters = Counters(WEBHOOK_COUNTERS)
        #: Calls by (hub, event, outcome) and their latency by (hub, event), for /metrics.
        self.calls, self.call_seconds = counter("fabric_upstream_calls_total"), histogram("fabric_upstream_call_seconds")
        #: Seconds spent in upstream exchanges of user events (for overhead accounting).
        self.user_event_seconds = 0.0
        self.running = False

    #: Whether plain ``http://`` handlers use the h11 pool (``benchmarks/upstream_echo.py``
    #: sets it False in a child process to compare with httpx).
    use_pool = True

    def __repr__(self) -> str:
        return f"<WebhookEventHandler hub={self.hub!r} handlers={len(self.config.event_handlers)}>"

    # ---- routing -----------------------------------------------------------------------

    def handles_user_event(self, event: str) -> bool:
        return self.config.handler_for_user_event(event) is not None

    def handles_system_event(self, event: str) -> bool:
        if event in spec.GROUP_PRESENCE_EVENTS:
            return any(event in _presence_events(h) for h in self.config.event_handlers)
        return self.config.handler_for_system_event(event) is not None

    def _presence_handler(self, event: str, group: str) -> EventHandlerConfig | None:
        """The first handler that opted into ``event`` for ``group`` (its ``group_filters``
        patterns; none = every group)."""
        for handler in self.config.event_handlers:
            if event in _presence_events(handler) and _group_filter(handler)(group):
                return handler
        return None

    def origin(self) -> tuple[str, str]:
        if callable(self._origin):
            return self._origin()
        return self._origin, self._origin

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own the HTTP client and the notification workers until cancelled. Checkpoint.

        ``task_status.started()`` once events can be handled.
        """
        client = httpx.AsyncClient(
            transport=self._transport,
            limits=httpx.Limits(max_connections=self.max_concurrency,
                                max_keepalive_connections=self.max_concurrency, keepalive_expiry=30.0),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,
        )
        pool = http_pool.HttpPool(max_per_origin=self.max_concurrency, keepalive_expiry=30.0,
                                  connect_timeout=self.timeout) if self.use_pool else None
        channels = [trio.open_memory_channel(self.notify_queue) for _ in range(self.notify_workers)]
        self._client = client
        self._pool = pool
        self._senders = [send for send, _ in channels]
        self.running = True
        try:
            async with trio.open_nursery() as nursery:
                for _, receive in channels:
                    nursery.start_soon(self._notify_worker, receive)
                task_status.started()
        finally:
            self.running = False
            self._senders = None
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + min(DRAIN_SECONDS, self.timeout)
                await self._drain([receive for _, receive in channels])
            self._client = self._pool = None
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 1.0
                if pool is not None:
                    await pool.aclose()
                await client.aclose()

    async def _drain(self, receivers: list[trio.MemoryReceiveChannel]) -> None:
        left = 0
        for receive in receivers:
            while True:
                try:
                    receive.receive_nowait()
                    left += 1
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
        if left:  # not delivered: counted, never silently lost
            self.counters["notifications_dropped"] += left
            log.warning("hub %r: %d connected/disconnected events still queued at shutdown were dropped",
                        self.hub, left)

    async def _notify_worker(self, receive: trio.MemoryReceiveChannel) -> None:
        async for kind, context, reason in receive:
            await self._notify(kind, context, reason)

    def statistics(self) -> dict:
        return {
            "hub": self.hub,
            "running": self.running,
            "in_flight": self._limiter.borrowed_tokens,
            "waiting": self._limiter.statistics().tasks_waiting,
            "validated": sorted(url for url, v in self._validations.items() if v.ok),
            "queued_notifications": sum(s.statistics().current_buffer_used for s in self._senders or ()),
            "user_event_seconds": self.user_event_seconds,
            "counters": self.counters.as_dict(),
        }

    # ---- the events --------------------------------------------------------------------

    async def on_connect(self, request: ConnectRequest) -> ConnectResponse | None:
        handler = self.config.handler_for_system_event("connect")
        if handler is None:
            return None
        body = msgspec.json.encode({
            "claims": dict(request.claims),
            "query": dict(request.query),
            "headers": dict(request.headers),
            "subprotocols": list(request.subprotocols),
            "clientCertificates": [{"thumbprint": c.thumbprint, "content": c.content}
                                   for c in request.client_certificates],
        })
        try:
            answer = await self._call(
                handler, "connect", system=True, connection_id=request.connection_id,
                user_id=request.user_id, subprotocol=None, state=None,
                content_type=spec.SYSTEM_CONTENT_TYPE, body=body, extra=_extension_headers(request))
            if 400 <= answer.status < 500:
                detail = _quote(answer.body) or f"HTTP {answer.status}"
                self.counters["connect_rejected"] += 1
                log.info("hub %r: the connect handler refused connection %s with %d: %s",
                         self.hub, request.connection_id, answer.status, detail)
                raise ConnectRejected(answer.status, detail)
            self._check_status(answer)
            return self._connect_response(answer, request)
        except UpstreamFailure as exc:
            self._failed("connect", exc)
            raise ConnectRejected(spec.FAILURES[exc.failure].connect_status or 500,
                                  f"the connect event handler failed: {exc.message}") from None

    async def on_user_event(self, context: ConnectionContext, event: str, payload: Payload) -> UserEventResponse | None:
        return await self.handle_user_event(UserEventRequest(context, event, payload))

    async def handle_user_event(self, request: UserEventRequest) -> UserEventResponse | None:
        event = request.event
        context = request.context
        payload = request.payload
        handler = self.config.handler_for_user_event(event)
        if handler is None:
            raise UserEventError(AckErrorName.NOT_FOUND.value, f"no event handler for event '{event}'")
        if request.invocation_id is not None:
            self.counters["invocations"] += 1
        started = time.perf_counter()
        try:
            extra = _metadata_headers(request.metadata) if request.metadata else ()
            extra = (*extra, *_extension_headers(context))
            answer = await self._call(
                handler, event, system=False, connection_id=context.connection_id,
                user_id=context.user_id, subprotocol=context.subprotocol, state=context.connection_state,
                content_type=spec.USER_CONTENT_TYPES[payload.data_type.value], body=payload.body, extra=extra)
            self._check_status(answer)
            return self._user_event_response(answer)
        except UpstreamFailure as exc:
            rule = spec.FAILURES[exc.failure]
            if request.invocation_id is not None:
                self._failed(f"invocation of '{event}'", exc)
                raise UserEventError(rule.invoke_error.value, exc.message) from None
            self._failed(f"user event '{event}'", exc)
            raise UserEventError(rule.ack_error.value, exc.message) from None
        finally:
            self.user_event_seconds += time.perf_counter() - started

    async def on_connected(self, context: ConnectionContext) -> None:
        self._enqueue("connected", context, "")

    async def on_disconnected(self, context: ConnectionContext, reason: str) -> None:
        self._enqueue("disconnected", context, reason)

    async def on_group_joined(self, context: ConnectionContext, group: str) -> None:
        self._enqueue("joined", context, group)

    async def on_group_left(self, context: ConnectionContext, group: str) -> None:
        self._enqueue("left", context, group)

    def _notification_handler(self, kind: str, detail: str) -> EventHandlerConfig | None:
        if kind in spec.GROUP_PRESENCE_EVENTS:
            return self._presence_handler(kind, detail)
        return self.config.handler_for_system_event(kind)

    def _enqueue(self, kind: str, context: ConnectionContext, reason: str) -> None:
        if self._notification_handler(kind, reason) is None:
            return
        senders = self._senders
        if senders is None:
            self.counters["notifications_dropped"] += 1
            self._log.log(("drop", kind), logging.WARNING,
                          "hub %r: %s event for %s dropped: the upstream client is not running",
                          self.hub, kind, context.connection_id)
            return
        send = senders[hash(context.connection_id) % len(senders)]
        try:
            send.send_nowait((kind, context, reason))
        except trio.WouldBlock:
            self.counters["notifications_dropped"] += 1
            self._log.log(("full", kind), logging.WARNING,
                          "hub %r: %s event for %s dropped: %d notifications already queued",
                          self.hub, kind, context.connection_id, self.notify_queue)

    async def _notify(self, kind: str, context: ConnectionContext, reason: str) -> None:
        """Deliver one connected/disconnected/joined/left event (``reason``: the group of a
        presence event); never raises (but Cancelled)."""
        handler = self._notification_handler(kind, reason)
        if handler is None:
            return
        if kind == "connected":
            body = b"{}"
        elif kind in spec.GROUP_PRESENCE_EVENTS:
            body = msgspec.json.encode(spec.presence_body(reason))
        else:
            body = msgspec.json.encode({"reason": reason})
        delays = iter(spec.NOTIFICATION_RETRY_DELAYS)
        while True:
            try:
                answer = await self._call(
                    handler, kind, system=True, connection_id=context.connection_id,
                    user_id=context.user_id, subprotocol=context.subprotocol,
                    state=context.connection_state, content_type=spec.SYSTEM_CONTENT_TYPE, body=body,
                    extra=_extension_headers(context))
                self._check_status(answer)
                self.counters[f"{kind}_delivered"] += 1
                return
            except UpstreamFailure as exc:
                delay = next(delays, None) if exc.failure is Failure.UNREACHABLE else None
                if delay is None:
                    self.counters[f"{kind}_failed"] += 1
                    self._failed(f"{kind} event of {context.connection_id}", exc)
                    return
                self.counters["notification_retries"] += 1
                await trio.sleep(delay)

    # ---- one exchange --------------------------------------------------------------------

    async def _call(self, handler: EventHandlerConfig, event: str, *, system: bool, **kwargs: Any) -> _Answer:
        """``_post_event`` counted and timed for /metrics (a user event's name is not a label:
        clients choose it)."""
        started, outcome = time.perf_counter(), "error"
        try:
            answer = await self._post_event(handler, event, system=system, **kwargs)
            outcome = f"{answer.status // 100}xx"
            return answer
        except UpstreamFailure as exc:
            outcome = exc.failure.value
            raise
        finally:
            label = event if system else "user"
            self.calls.inc((self.hub, label, outcome))
            self.call_seconds.observe((self.hub, label), time.perf_counter() - started)

    async def _post_event(
        self, handler: EventHandlerConfig, event: str, *, system: bool, connection_id: str,
        user_id: str | None, subprotocol: str | None, state: str | None, content_type: str, body: bytes,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> _Answer:
        """Validate (once), then POST one CloudEvent; bounded by ``timeout``. Checkpoint."""
        if self._client is None:
            raise UpstreamFailure(Failure.NOT_RUNNING, "the upstream client is not running")
        host, _ = self.origin()
        ce_type = spec.ce_type(event, system=system)
        headers: list[tuple[bytes, bytes]] = [
            (spec.H_ORIGIN.encode(), _header_bytes("origin", host)),
            (spec.H_CONTENT_TYPE.encode(), content_type.encode()),
            (spec.H_SPECVERSION.encode(), spec.SPEC_VERSION.encode()),
            (spec.H_TYPE.encode(), _header_bytes("event name", ce_type)),
            (spec.H_SOURCE.encode(), _header_bytes("connection id", spec.ce_source(self.hub, connection_id))),
            (spec.H_ID.encode(), str(next(self._ids)).encode()),
            (spec.H_TIME.encode(), spec.ce_time().encode()),
            (spec.H_SIGNATURE.encode(), spec.signature(self.access_keys, connection_id).encode()),
        ]
        if user_id is not None:
            headers.append((spec.H_USER_ID.encode(), _header_bytes("user id", user_id)))
        headers += [
            (spec.H_CONNECTION_ID.encode(), _header_bytes("connection id", connection_id)),
            (spec.H_HUB.encode(), _header_bytes("hub", self.hub)),
            (spec.H_EVENT_NAME.encode(), _header_bytes("event name", event)),
        ]
        if subprotocol:
            headers.append((spec.H_SUBPROTOCOL.encode(), _header_bytes("subprotocol", subprotocol)))
        if state:
            headers.append((spec.H_CONNECTION_STATE.encode(), _header_bytes("connection state", state)))
        headers.append((spec.H_AWPS_VERSION.encode(), spec.AWPS_VERSION.encode()))
        headers += extra
        key = (id(handler), event)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= URL_CACHE:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(handler.url_for(self.hub, event))
        self.counters["requests"] += 1
        validated = False
        with trio.move_on_after(self.timeout):
            await self._ensure_valid(handler)
            validated = True
            return await self._exchange("POST", url, headers, body)
        # Only the deadline gets here: the block itself returns or raises.
        if not validated:  # the abuse-protection OPTIONS is what hung, not the event's POST
            raise UpstreamFailure(Failure.TIMEOUT, f"the abuse-protection validation of "
                                  f"{handler.url_for(self.hub, spec.VALIDATE_EVENT)} did not answer within "
                                  f"{self.timeout:g} s")
        raise UpstreamFailure(Failure.TIMEOUT, f"{url} did not answer within {self.timeout:g} s")

    async def _exchange(self, method: str, url: str | httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes | None,
                        *, limit: int | None = None) -> _Answer:
        client = self._client
        if client is None:
            raise UpstreamFailure(Failure.NOT_RUNNING, "the upstream client is not running")
        limit = self.max_response_bytes if limit is None else limit
        pool = self._pool
        if pool is not None and self._transport is None:
            if not isinstance(url, httpx.URL):
                url = httpx.URL(url)
            if url.scheme == "http":
                return await self._exchange_pooled(pool, method, url, headers, body, limit)
        async with self._limiter:
            try:
                # httpx.Request directly, not client.build_request: no per-request merge with
                # client defaults (a third of httpx's cost here); ``_call`` bounds the time.
                request = httpx.Request(method, url, headers=[*_FIXED_HEADERS, *headers], content=body)
                response = await client.send(request, stream=True)
                try:
                    return await self._read(response.status_code, response.headers.raw,
                                            response.aiter_raw(), url, limit)
                finally:
                    await response.aclose()
            except httpx.TimeoutException:
                raise UpstreamFailure(Failure.TIMEOUT, f"{url} did not answer within {self.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise UpstreamFailure(Failure.UNREACHABLE, f"{url} is unreachable: {type(exc).__name__}: "
                                      f"{_quote(str(exc)) or 'connection failed'}") from None

    async def _exchange_pooled(self, pool: http_pool.HttpPool, method: str, url: httpx.URL,
                               headers: list[tuple[bytes, bytes]], body: bytes | None, limit: int) -> _Answer:
        # The same bytes httpx.Request sends: Host (the netloc), the given headers in order,
        # Content-Length when there is a body.
        async with self._limiter:
            try:
                async with pool.request(method, url.host, url.port or 80, url.netloc, url.raw_path,
                                        [*_FIXED_HEADERS, *headers], body) as response:
                    return await self._read(response.status, response.headers, response.iter_body(), url, limit)
            except http_pool.HttpError as exc:
                raise UpstreamFailure(Failure.UNREACHABLE, f"{url} is unreachable: {type(exc).__name__}: "
                                      f"{_quote(str(exc)) or 'connection failed'}") from None

    async def _read(self, status: int, raw_headers: Sequence[tuple[bytes, bytes]], chunks_in,
                    url: str | httpx.URL, limit: int) -> _Answer:
        answer = _Answer.from_raw(status, raw_headers)
        if not 200 <= status < 300:
            limit = min(limit, ERROR_BODY_BYTES)  # only the detail text is used
        encoding = (answer.get("content-encoding") or "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UpstreamFailure(Failure.CONTENT_ENCODING,
                                  f"{url} answered with Content-Encoding {encoding!r}; only identity is accepted")
        declared = answer.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit and 200 <= status < 300:
            raise UpstreamFailure(Failure.BODY_TOO_LARGE,
                                  f"{url} answered a {int(declared)}-byte body; the limit is {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in chunks_in:
            size += len(chunk)
            if size > limit:
                if not 200 <= status < 300:
                    chunks.append(chunk[: max(0, limit - (size - len(chunk)))])
                    break
                raise UpstreamFailure(Failure.BODY_TOO_LARGE,
                                      f"{url} answered a body over the limit of {limit} bytes")
            chunks.append(chunk)
        answer.body = b"".join(chunks)
        return answer

    # ---- validation ----------------------------------------------------------------------

    async def _ensure_valid(self, handler: EventHandlerConfig) -> None:
        url = handler.url_for(self.hub, spec.VALIDATE_EVENT)
        state = self._validations.get(url)
        if state is None:
            state = self._validations[url] = _Validation()
        if state.ok:
            return
        async with state.lock:
            if state.ok:
                return
            now = trio.current_time()
            if state.error is not None and now - state.failed_at < spec.VALIDATION_RETRY_SECONDS:
                raise state.error
            try:
                await self._validate(url)
            except UpstreamFailure as exc:
                state.error = UpstreamFailure(
                    Failure.VALIDATION_FAILED,
                    f"the event handler {url} failed abuse-protection validation: {exc.message}")
                state.failed_at = now
                self.counters["validations_failed"] += 1
                self._log.log(("validation", url), logging.ERROR,
                              "hub %r: %s (events for it fail until it validates)", self.hub, state.error.message)
                raise state.error from None
            state.ok, state.error = True, None
            self.counters["validations_ok"] += 1
            log.info("hub %r: event handler %s passed abuse-protection validation", self.hub, url)

    async def _validate(self, url: str) -> None:
        host, netloc = self.origin()
        headers = [(spec.H_ORIGIN.encode(), _header_bytes("origin", host)),
                   (spec.H_AWPS_VERSION.encode(), spec.AWPS_VERSION.encode())]
        answer = await self._exchange("OPTIONS", url, headers, None, limit=ERROR_BODY_BYTES)
        if not 200 <= answer.status < 300:
            detail = _quote(answer.body)
            raise UpstreamFailure(Failure.UNEXPECTED_STATUS,
                                  f"OPTIONS answered {answer.status}" + (f": {detail}" if detail else ""))
        allowed = answer.get_list(spec.H_ALLOWED_ORIGIN)
        if not allowed:
            raise UpstreamFailure(Failure.UNEXPECTED_STATUS, f"the answer has no {spec.H_ALLOWED_ORIGIN} header")
        if not spec.origin_allowed(allowed, host, netloc):
            raise UpstreamFailure(Failure.UNEXPECTED_STATUS,
                                  f"{spec.H_ALLOWED_ORIGIN} {', '.join(allowed)!r} does not allow origin {host!r}")

    # ---- answers ------------------------------------------------------------------------

    def _check_status(self, answer: _Answer) -> None:
        status = answer.status
        if 200 <= status < 300:
            return
        detail = _quote(answer.body)
        suffix = f": {detail}" if detail else ""
        if 300 <= status < 400:
            where = answer.get("location")
            raise UpstreamFailure(Failure.REDIRECT, f"the event handler answered {status} (redirect"
                                  + (f" to {_quote(where)}" if where else "") + " not followed)",
                                  status=status, detail=detail)
        if 400 <= status < 500:
            raise UpstreamFailure(Failure.CLIENT_ERROR, f"the event handler answered {status}{suffix}",
                                  status=status, detail=detail)
        if status >= 500:
            raise UpstreamFailure(Failure.SERVER_ERROR, f"the event handler answered {status}{suffix}",
                                  status=status, detail=detail)
        raise UpstreamFailure(Failure.UNEXPECTED_STATUS, f"the event handler answered {status}{suffix}",
                              status=status, detail=detail)

    def _state_from(self, answer: _Answer) -> str | None | object:
        """The answer's ``ce-connectionState``: UNCHANGED, None (cleared) or the value."""
        values = answer.get_list("ce-connectionstate")
        if not values:
            return UNCHANGED
        if len(values) > 1:
            raise UpstreamFailure(Failure.BAD_CONNECTION_STATE,
                                  f"the answer has {len(values)} ce-connectionState headers; one is allowed")
        try:
            raw = values[0].strip().encode("latin-1")
        except UnicodeEncodeError:  # only a tunnelled answer can carry such a value
            raise UpstreamFailure(Failure.BAD_CONNECTION_STATE,
                                  f"the ce-connectionState {_quote(values[0], 60)!r} is not latin-1 header text") from None
        if _unsendable(raw):
            raise UpstreamFailure(Failure.BAD_CONNECTION_STATE,
                                  f"the ce-connectionState {_quote(raw, 60)!r} has control characters, so it could "
                                  f"never be sent back in a header")
        if len(raw) > spec.MAX_CONNECTION_STATE_BYTES:
            raise UpstreamFailure(Failure.BAD_CONNECTION_STATE,
                                  f"the ce-connectionState is {len(raw)} bytes; at most "
                                  f"{spec.MAX_CONNECTION_STATE_BYTES} are kept")
        if not raw:
            return None
        try:
            base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            self.counters["state_not_base64"] += 1
            if not self._warned_state:
                self._warned_state = True
                log.warning("hub %r: the event handler set a ce-connectionState that is not base64 (%s); it is "
                            "kept and echoed as sent, but Microsoft's server SDKs cannot decode it",
                            self.hub, _quote(raw, 60))
        return raw.decode("latin-1")

    def _connect_response(self, answer: _Answer, request: ConnectRequest) -> ConnectResponse | None:
        state = self._state_from(answer)
        state = None if state is UNCHANGED else state
        if not answer.body.strip():
            return ConnectResponse(connection_state=state) if state is not None else None
        media = spec.media_type(answer.get("content-type"))
        if media is not None and media != "application/json" and not media.endswith("+json"):
            raise UpstreamFailure(Failure.BAD_CONTENT_TYPE,
                                  f"the connect answer has Content-Type {media!r}; expected application/json")
        if json_too_deep(answer.body):
            raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer nests JSON deeper than {MAX_JSON_DEPTH} levels")
        try:
            data = msgspec.json.decode(answer.body)
        except msgspec.DecodeError as exc:
            raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UpstreamFailure(Failure.BAD_BODY,
                                  f"the connect answer must be a JSON object, got {type(data).__name__}")
        user_id = data.get("userId")
        if user_id is not None and not isinstance(user_id, str):
            raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer's userId must be a string, got {user_id!r}")
        if user_id is not None and len(user_id) > spec.MAX_USER_ID_CHARS:
            raise UpstreamFailure(Failure.BAD_BODY,
                                  f"the connect answer's userId is longer than {spec.MAX_USER_ID_CHARS} characters")
        if user_id and _unsendable(user_id.encode("utf-8")):  # every later event would fail on it
            raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer's userId {_quote(user_id, 60)!r} has control "
                                  f"characters, which no event could carry in its ce-userId header")
        groups = self._string_list(data, "groups", spec.MAX_CONNECT_GROUPS)
        for group in groups:
            if not is_valid_group_name(group):
                raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer names an invalid group {_quote(group, 60)!r}")
        roles = self._string_list(data, "roles", spec.MAX_CONNECT_ROLES)
        subprotocol = data.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise UpstreamFailure(Failure.BAD_BODY,
                                  f"the connect answer's subprotocol must be a string, got {subprotocol!r}")
        if subprotocol and subprotocol not in request.subprotocols:
            raise UpstreamFailure(Failure.SUBPROTOCOL_NOT_OFFERED,
                                  f"the connect answer chose subprotocol {subprotocol!r}, which the client did "
                                  f"not offer ({', '.join(request.subprotocols) or 'none'})")
        return ConnectResponse(user_id=user_id or None, groups=groups, roles=roles,
                               subprotocol=subprotocol or None, connection_state=state)

    @staticmethod
    def _string_list(data: dict, key: str, limit: int) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer's {key} must be a list of strings")
        if len(value) > limit:
            raise UpstreamFailure(Failure.BAD_BODY, f"the connect answer lists {len(value)} {key}; at most {limit}")
        return tuple(dict.fromkeys(value))

    def _user_event_response(self, answer: _Answer) -> UserEventResponse | None:
        state = self._state_from(answer)
        metadata = self._metadata_from(answer)
        payload = None
        if answer.body:
            content_type = answer.get("content-type")
            media = spec.media_type(content_type)
            data_type = _REPLY_TYPES.get(media)
            if data_type is None:
                raise UpstreamFailure(Failure.BAD_CONTENT_TYPE,
                                      f"the event handler answered Content-Type {media!r}; a reply must be "
                                      "text/plain, application/json, application/octet-stream or application/x-protobuf")
            body = answer.body
            if data_type is DataType.TEXT:
                charset = _charset(content_type) or "utf-8"
                try:
                    text = body.decode(charset)
                except (LookupError, UnicodeDecodeError):
                    raise UpstreamFailure(Failure.BAD_BODY,
                                          f"the event handler's text/plain reply is not valid {charset}") from None
                body = text.encode("utf-8") if charset.replace("-", "").lower() != "utf8" else body
            elif data_type is DataType.JSON:
                if json_too_deep(body):
                    raise UpstreamFailure(Failure.BAD_BODY,
                                          f"the event handler's JSON reply nests deeper than {MAX_JSON_DEPTH} levels")
                try:
                    msgspec.json.decode(body)
                except msgspec.DecodeError as exc:
                    raise UpstreamFailure(Failure.BAD_BODY,
                                          f"the event handler's application/json reply is not valid JSON ({exc})") from None
            payload = Payload(data_type, body)
        if payload is None and state is UNCHANGED and metadata is None:
            return None
        return UserEventResponse(payload=payload, connection_state=state, metadata=metadata)

    @staticmethod
    def _metadata_from(answer: _Answer) -> dict[str, str] | None:
        """A 2xx answer's X-WebPubSub-Metadata-* headers (decision metadata.reply)."""
        pairs = [(name, value) for name, values in answer.headers.items()
                 if name.startswith(spec_metadata.UPSTREAM_HEADER_PREFIX) for value in values]
        if not pairs:
            return None
        folded = spec_metadata.fold_headers(pairs, spec_metadata.UPSTREAM_HEADER_PREFIX)
        metadata, problem = spec_metadata.normalize((k, spec_metadata.header_text(v)) for k, v in folded.items())
        if problem is not None:
            raise UpstreamFailure(Failure.BAD_BODY, f"the event handler answered invalid metadata headers: {problem}")
        return metadata

    def _failed(self, what: str, exc: UpstreamFailure) -> None:
        self.counters[f"failed_{exc.failure.value}"] += 1
        self._log.log((what.split(" ")[0], exc.failure), logging.WARNING, "hub %r: %s failed (%s): %s",
                      self.hub, what, exc.failure.value, exc.message)


def _metadata_headers(metadata) -> list[tuple[bytes, bytes]]:
    """``x-webpubsub-metadata-<key>: <value>`` per entry (keys are lower-case, values valid)."""
    prefix = spec_metadata.UPSTREAM_HEADER_PREFIX
    return [((prefix + key).encode("ascii"), _header_bytes("metadata value", value))
            for key, value in metadata.items()]


def _presence_events(handler: EventHandlerConfig) -> tuple[str, ...]:
    """The presence events a handler configuration opted into (``group_presence_events``;
    none on configurations that predate the setting)."""
    return getattr(handler, "group_presence_events", ()) or ()


_FILTERS: dict[tuple[str, ...], Callable[[str], bool]] = {}


def _group_filter(handler: EventHandlerConfig) -> Callable[[str], bool]:
    """A matcher of the handler's ``group_filters`` patterns (wildcard group-role syntax);
    every group when there are none."""
    patterns = tuple(getattr(handler, "group_filters", ()) or ())
    if not patterns:
        return _every_group
    matcher = _FILTERS.get(patterns)
    if matcher is None:
        if len(_FILTERS) >= URL_CACHE:
            _FILTERS.clear()
        compiled = [compile_group_pattern(p) for p in patterns]
        matcher = _FILTERS[patterns] = lambda group: any(m(group) for m in compiled)
    return matcher


def _every_group(group: str) -> bool:
    return True


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def origin_from_endpoint(endpoint: str) -> tuple[str, str]:
    """``(host, host:port)`` of an http(s) endpoint URL, for ``WebHook-Request-Origin``."""
    parts = urllib.parse.urlsplit(endpoint)
    host = parts.hostname or "localhost"
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{parts.port}" if parts.port else host
    return host, netloc


def _extension_headers(source: Any) -> tuple[tuple[bytes, bytes], ...]:
    """``ce-<name>`` headers for the CloudEvents extension attributes an edge attaches to an
    event's context or connect request (``extensions``; Socket.IO serverless: ``namespace``
    and ``socketId``). Nothing for a plain Web PubSub connection."""
    extensions = getattr(source, "extensions", None)
    if not extensions:
        return ()
    return tuple((f"ce-{name}".encode("ascii"), _header_bytes(name, value)) for name, value in extensions.items())

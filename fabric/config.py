"""Configuration: a TOML file, ``FABRIC_*`` environment variables and explicit overrides.

Rules this module keeps:
- Sans-IO apart from reading the one config file named by the caller (or by
  ``$FABRIC_CONFIG``); never imports trio.
- Precedence, lowest first: built-in defaults < config file < environment (``FABRIC_*``)
  < explicit ``overrides`` (the CLI's flags). Flags win because they are the most specific
  thing the operator typed; the environment beats the file because containers set it.
- Every value is validated, whatever its source, by the attrs classes themselves (so an
  embedding app that builds ``ServerConfig(...)`` directly gets the same checks). Nothing is
  coerced silently: ``port = "80"`` in TOML is an error, not 80. Strings from the environment
  and string-valued overrides are parsed by the field's type.
- Every problem is a :class:`ConfigError` naming its source (file path, environment variable
  or ``overrides``), the dotted key (``hubs.chat.event_handlers[0].url_template``) and what is
  wrong; all problems found in one pass are reported together. Unknown keys are errors, with
  the closest known key suggested.
- Every size, count and timeout has a finite bound; ``inf``/``nan`` are rejected.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
import types
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from specs.names import is_valid_hub_name

__all__ = [
    "SYSTEM_EVENTS",
    "ConfigError",
    "BrokerConfig",
    "DemoConfig",
    "EventHandlerConfig",
    "FabricConfig",
    "HubConfig",
    "MetricsConfig",
    "ReloadPlan",
    "ServerConfig",
    "SocketIOConfig",
    "SocketIOHubConfig",
    "config_as_dict",
    "load_config",
    "loads_config",
    "matches_user_event",
    "parse_event_handler_flag",
    "plan_reload",
]

#: System events an event handler may subscribe to.
SYSTEM_EVENTS: tuple[str, ...] = ("connect", "connected", "disconnected")

KiB = 1024
MiB = 1024 * 1024
_INT_MAX = 2**31 - 1
#: Azure Web PubSub's documented reliable-buffer capacity (the ``limits = "azure"`` profile).
AZURE_RELIABLE_BUFFER_MESSAGES = 1000
_MAX_ACCESS_KEYS = 16
_MAX_EVENT_HANDLERS = 64
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("text", "json")


# --------------------------------------------------------------------------------------------
# Errors


@attrs.frozen
class Problem:
    """One thing wrong with the configuration."""

    source: str | None  # config file path, "environment variable FABRIC_PORT", "overrides", ...
    key: str | None  # dotted key, e.g. "server.port"
    message: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.key, self.message) if part)


class ConfigError(ValueError):
    """The configuration is unusable. ``problems`` lists every problem found; ``str()`` says
    where each one is (file or environment variable, dotted key) and what is wrong."""

    def __init__(self, message: str | None = None, *, key: str | None = None, source: str | None = None,
                 problems: Sequence[Problem] = ()) -> None:
        found = list(problems)
        if message is not None:
            found.insert(0, Problem(source, key, message))
        if not found:
            raise ValueError("ConfigError needs a message or problems")
        self.problems: tuple[Problem, ...] = tuple(found)
        if len(found) == 1:
            text = str(found[0])
        else:
            text = f"{len(found)} configuration problems:\n" + "\n".join(f"  - {p}" for p in found)
        super().__init__(text)

    @property
    def source(self) -> str | None:
        return self.problems[0].source

    @property
    def key(self) -> str | None:
        return self.problems[0].key


def _join(path: str | None, part: str | None) -> str | None:
    if not part:
        return path
    if not path:
        return part
    return path + part if part.startswith("[") else f"{path}.{part}"


def _key_part(name: str) -> str:
    """A TOML key as written in a dotted path (quoted unless it is a bare key)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


_TOML_TYPE = {str: "string", int: "integer", float: "float", bool: "boolean", list: "array",
              tuple: "array", dict: "table"}


def _describe(value: object) -> str:
    kind = _TOML_TYPE.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys: {', '.join(known)}"


# --------------------------------------------------------------------------------------------
# Field checks: each returns None when fine or a message saying what is wrong.

Check = Callable[[Any], "str | None"]


def _int_in(low: int, high: int = _INT_MAX) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_describe(value)}"
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}"
        return None

    return check


def _float_in(low: float, high: float, *, low_open: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number of seconds, got {_describe(value)}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if value < low or (low_open and value == low) or value > high:
            bracket = "(" if low_open else "["
            return f"must be in {bracket}{low:g}, {high:g}], got {value:g}"
        return None

    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {_describe(value)}"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"expected a string, got {_describe(value)}"
        if value not in choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        return None

    return check


_HOST_RE = re.compile(r"[A-Za-z0-9._:%-]+")


def _host(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    if "://" in value or "/" in value:
        return f"must be a host name or IP address, not a URL: {value!r}"
    if value.startswith("["):
        return f"write an IPv6 address without brackets: {value!r}"
    if not _HOST_RE.fullmatch(value):
        return f"must be a host name or IP address, got {value!r}"
    return None


def _access_keys(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(k, str) for k in value):
        return f"expected an array of strings, got {_describe(value)}"
    if len(value) > _MAX_ACCESS_KEYS:
        return f"at most {_MAX_ACCESS_KEYS} access keys are allowed, got {len(value)}"
    for index, key in enumerate(value):
        if not key:
            return f"access key #{index + 1} is empty"
        if ";" in key or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in key):
            return f"access key #{index + 1} must not contain ';', whitespace or control characters"
    return None


def _public_endpoint(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc}): {value!r}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL with a host, got {value!r}"
    if parts.query or parts.fragment or ";" in value or any(c.isspace() for c in value):
        return f"must not contain a query, fragment, ';' or whitespace: {value!r}"
    return None


_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


def _url_template(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    if not value:
        return "must not be empty"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return f"must not contain whitespace or control characters: {value!r}"
    for name in _PLACEHOLDER_RE.findall(value):
        if name not in ("hub", "event"):
            return f"unknown placeholder {{{name}}} in {value!r}; only {{hub}} and {{event}} are allowed"
    if "{" in _PLACEHOLDER_RE.sub("", value) or "}" in _PLACEHOLDER_RE.sub("", value):
        return f"unbalanced '{{' or '}}' in {value!r}"
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as exc:
        return f"not a valid URL ({exc}): {value!r}"
    if parts.scheme.lower() == "tunnel":  # tunnel:///path: events go through a /server/tunnel
        if parts.netloc or parts.fragment or not parts.path.startswith("/"):
            return f"a tunnel URL is tunnel:///path (no host, no fragment), got {value!r}"
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return f"must be an http://, https:// or tunnel:/// URL, got {value!r}"
    if "{" in parts.netloc:
        return f"{{hub}} and {{event}} are not allowed in the host part: {value!r}"
    try:
        host, port = parts.hostname, parts.port  # noqa: F841 - port raises ValueError if bad
    except ValueError:
        return f"has an invalid port: {value!r}"
    if not host:
        return f"has no host: {value!r}"
    if parts.fragment:
        return f"must not contain a fragment ('#...'): {value!r}"
    return None


def _parse_user_event_pattern(value: str) -> frozenset[str] | None:
    """None means every user event; otherwise the set of names (empty: none)."""
    if value.strip() == "*":
        return None
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def _user_event_pattern(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string (\"*\", \"a,b\", a single event name or \"\"), got {_describe(value)}"
    if value.strip() in ("", "*"):
        return None
    for name in value.split(","):
        name = name.strip()
        if not name:
            return f"has an empty event name: {value!r}"
        if name == "*":
            return f"'*' cannot be combined with event names: {value!r}"
        if any(c.isspace() or ord(c) < 32 for c in name) or "*" in name:
            return f"event name {name!r} must not contain whitespace, control characters or '*'"
    return None


def _system_events(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(e, str) for e in value):
        return f"expected an array of strings, got {_describe(value)}"
    for event in value:
        if event not in SYSTEM_EVENTS:
            return f"unknown system event {event!r}; expected any of {', '.join(SYSTEM_EVENTS)}"
    return None


def _validate(instance: Any, checks: Mapping[str, Check]) -> list[Problem]:
    problems = []
    for name, check in checks.items():
        message = check(getattr(instance, name))
        if message:
            problems.append(Problem(None, name, message))
    return problems


# Converters: only shape-preserving normalisation (list -> tuple, int -> float); anything that
# does not fit is left as is for the checks to report.


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _to_unique_tuple(value: Any) -> Any:
    value = _to_tuple(value)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(value))
    return value


def _to_event_tuple(value: Any) -> Any:
    value = _to_tuple(value)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.lower() for v in value))
    return value


def _to_float(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _to_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# --------------------------------------------------------------------------------------------
# The configuration classes


def matches_user_event(pattern: str, event: str) -> bool:
    """Does a ``user_event_pattern`` (``"*"``, ``"a,b"``, ``"a"`` or ``""``) cover ``event``?
    Names are compared exactly (case-sensitive)."""
    names = _parse_user_event_pattern(pattern)
    return names is None or event in names


@attrs.frozen
class EventHandlerConfig:
    """One upstream event handler of a hub (Azure's ``eventHandlers[]`` entry).

    ``url_template`` is an http(s) URL that may contain ``{hub}`` and ``{event}`` outside the
    host part, or ``tunnel:///path`` (the events go through an app server's ``/server/tunnel``).
    ``user_event_pattern`` is ``"*"`` (all), ``"a,b"``, one name or ``""`` (none).
    ``system_events`` is a subset of ``connect``, ``connected``, ``disconnected``.
    """

    url_template: str
    user_event_pattern: str = "*"
    system_events: tuple[str, ...] = attrs.field(default=(), converter=_to_event_tuple)
    #: Group presence events this handler opts into: a subset of ``joined``, ``left``
    #: (Azure's ``groupPresenceEvents``); none by default.
    group_presence_events: tuple[str, ...] = attrs.field(default=(), converter=_to_event_tuple)
    #: Wildcard group patterns (group-role syntax) limiting presence events; empty: all groups.
    group_filters: tuple[str, ...] = attrs.field(default=(), converter=_to_unique_tuple)
    _user_events: frozenset[str] | None = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {
            "url_template": _url_template,
            "user_event_pattern": _user_event_pattern,
            "system_events": _system_events,
            "group_presence_events": _presence_events,
            "group_filters": _group_filters,
        })
        if problems:
            raise ConfigError(problems=problems)
        object.__setattr__(self, "_user_events", _parse_user_event_pattern(self.user_event_pattern))

    def matches_user_event(self, event: str) -> bool:
        """True if this handler receives the user event ``event``."""
        return self._user_events is None or event in self._user_events

    def handles_system_event(self, event: str) -> bool:
        """True if this handler receives the system event ``event`` (e.g. ``"connect"``)."""
        return event in self.system_events

    def url_for(self, hub: str, event: str) -> str:
        """The URL for one event: ``{hub}`` and ``{event}`` replaced, percent-encoded."""
        return (self.url_template
                .replace("{hub}", urllib.parse.quote(hub, safe=""))
                .replace("{event}", urllib.parse.quote(event, safe="")))


def _presence_events(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        return f"expected a list of strings, got {_describe(value)}"
    bad = [v for v in value if v not in ("joined", "left")]
    return f"unknown group presence event {bad[0]!r}; expected joined or left" if bad else None


_MAX_GROUP_FILTERS = 64
_MAX_FILTER_STARS = 5


def _group_filters(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        return f"expected a list of strings, got {_describe(value)}"
    if len(value) > _MAX_GROUP_FILTERS:
        return f"at most {_MAX_GROUP_FILTERS} group filters per handler, got {len(value)}"
    for pattern in value:
        problem = _group_pattern_problem(pattern)
        if problem:
            return problem
    return None


def _group_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a wildcard group pattern, or None. The syntax of wildcard group
    roles (``fabric.core.permissions.compile_group_pattern``; a test keeps the two in step):
    ``\\`` escapes only ``\\``, ``*`` and ``?``; at most five unescaped ``*`` (``**`` is two)."""
    if not 0 < len(pattern) <= 1024:
        return f"a group filter is 1-1024 characters, got {pattern!r}"
    stars = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return f"group filter {pattern!r} ends with a lone backslash"
            if pattern[i + 1] not in "\\*?":
                return (f"group filter {pattern!r} has the escape '\\{pattern[i + 1]}'; "
                        "only \\\\, \\* and \\? are escapes")
            i += 2
            continue
        stars += c == "*"
        i += 1
    if stars > _MAX_FILTER_STARS:
        return f"group filter {pattern!r} has {stars} '*'; at most {_MAX_FILTER_STARS} ('**' counts two)"
    return None


def _event_handlers(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(h, EventHandlerConfig) for h in value):
        return f"expected an array of event handler tables, got {_describe(value)}"
    if len(value) > _MAX_EVENT_HANDLERS:
        return f"at most {_MAX_EVENT_HANDLERS} event handlers per hub, got {len(value)}"
    return None


_NAMESPACE_RE = re.compile(r"/[^,\x00-\x1f\x7f]*")


def _namespaces(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(n, str) for n in value):
        return f"expected an array of namespace names, got {_describe(value)}"
    if len(value) > 1024:
        return f"at most 1024 namespaces, got {len(value)}"
    for name in value:
        if name != "*" and not _NAMESPACE_RE.fullmatch(name):
            return f"namespace {name!r} must be \"*\" or start with '/' and contain no ',' or control characters"
    return None


SOCKETIO_SERVICE_MODES = ("default", "serverless")


def _service_mode(value: Any) -> str | None:
    if value not in SOCKETIO_SERVICE_MODES:
        return f"must be one of {', '.join(map(repr, SOCKETIO_SERVICE_MODES))}, got {_describe(value)}"
    return None


@attrs.frozen
class SocketIOHubConfig:
    """A hub's Socket.IO endpoint (``[hubs.NAME.socketio]``): ``/clients/socketio/hubs/NAME/``."""

    #: Serve Socket.IO clients for this hub at ``/clients/socketio/hubs/NAME/``.
    enabled: bool = True
    #: Namespaces clients may connect to when the app registered no handler for them:
    #: ``["*"]`` (any), or a list such as ``["/", "/chat"]``.
    namespaces: tuple[str, ...] = attrs.field(default=("*",), converter=_to_unique_tuple)
    #: ``"default"``: the app's handlers (embedded API) serve the sockets. ``"serverless"``
    #: (Azure's ``socketIO.serviceMode``): socket connect/connected/disconnected and every
    #: event go to the hub's upstream event handlers (``ce-namespace``, ``ce-socketId``); their
    #: answers (Engine.IO payloads) go back to the client; the app drives rooms and emits
    #: through REST.
    service_mode: str = "default"

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {"enabled": _bool, "namespaces": _namespaces, "service_mode": _service_mode})
        if problems:
            raise ConfigError(problems=problems)


_DEFAULT_HUB_SOCKETIO = SocketIOHubConfig()


def _hub_socketio(value: Any) -> str | None:
    return None if isinstance(value, SocketIOHubConfig) else f"expected a table, got {_describe(value)}"


@attrs.frozen
class HubConfig:
    """Settings of one hub. Unconfigured hubs use ``HubConfig()``."""

    #: Allow connections without an access token (Azure's ``anonymousConnectPolicy``).
    anonymous_connect: bool = False
    #: Ordered; for each event the first matching handler wins.
    event_handlers: tuple[EventHandlerConfig, ...] = attrs.field(default=(), converter=_to_tuple)
    #: The hub's Socket.IO endpoint (``[hubs.NAME.socketio]``).
    socketio: SocketIOHubConfig = _DEFAULT_HUB_SOCKETIO

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {"anonymous_connect": _bool, "event_handlers": _event_handlers,
                                    "socketio": _hub_socketio})
        if problems:
            raise ConfigError(problems=problems)

    def handler_for_user_event(self, event: str) -> EventHandlerConfig | None:
        return next((h for h in self.event_handlers if h.matches_user_event(event)), None)

    def handler_for_system_event(self, event: str) -> EventHandlerConfig | None:
        return next((h for h in self.event_handlers if h.handles_system_event(event)), None)


@attrs.frozen
class ServerConfig:
    """Process-wide settings: the listener, keys, and every bound the server keeps."""

    #: Listen address. ``0.0.0.0`` / ``::`` listen on every interface.
    host: str = "127.0.0.1"
    #: Listen port; 0 picks a free port.
    port: int = 8080
    #: Accepted access keys (primary first). Empty: the caller generates a random key.
    access_keys: tuple[str, ...] = attrs.field(default=(), converter=_to_unique_tuple)
    #: The http(s) URL clients and SDKs should use, when it differs from ``http://host:port``
    #: (behind a proxy, or listening on 0.0.0.0). When set, token audiences (client and REST)
    #: must name it (scheme, host, port), not only the path; the upstream
    #: ``WebHook-Request-Origin`` names its host.
    public_endpoint: str | None = None
    #: Largest message a client may send (a bigger frame closes with 1009).
    max_message_bytes: int = 1 * MiB
    #: Largest REST request body.
    max_request_body_bytes: int = 1 * MiB
    #: Largest HTTP request head (request line + headers, incl. the access_token query).
    max_header_bytes: int = 64 * KiB
    #: Concurrent client connections across all hubs; more are refused with 503.
    max_connections: int = 100_000
    #: Groups one client connection may join with joinGroup messages; more are refused
    #: (ack BadRequest). Each group costs its hub a few kB (decision limits.groups-per-connection).
    max_groups_per_connection: int = 1000
    #: Per-connection outbound queue bounds; past either, ``slow_consumer`` applies. Bytes
    #: are the real bound; the count only caps per-frame overhead, so a one-second burst
    #: to a client that keeps reading never reaches it (specs/limits.py, ``limits.outbox``).
    outbox_max_messages: int = 65536
    outbox_max_bytes: int = 4 * MiB
    #: Seconds a connection may hold queued data without its writer making any progress
    #: (the peer stopped reading) before it is closed as a slow consumer (``limits.stall``).
    stall_timeout: float = attrs.field(default=20.0, converter=_to_float)
    #: "close": close a slow consumer's connection; "drop": drop messages and signal a lag.
    slow_consumer: str = attrs.field(default="close", converter=_to_lower)
    #: Seconds between WebSocket pings the server sends.
    keepalive_interval: float = attrs.field(default=20.0, converter=_to_float)
    #: Seconds a client has to complete the HTTP/WebSocket handshake.
    handshake_timeout: float = attrs.field(default=10.0, converter=_to_float)
    #: Seconds without any frame from a client before it is closed.
    idle_timeout: float = attrs.field(default=120.0, converter=_to_float)
    #: Seconds a graceful shutdown waits for connections to close before cancelling.
    shutdown_timeout: float = attrs.field(default=5.0, converter=_to_float)
    #: Clock skew allowed when checking token ``exp``/``nbf``.
    token_leeway: float = attrs.field(default=30.0, converter=_to_float)
    #: Seconds a reliable-subprotocol session survives a dropped socket (for recovery).
    reconnect_window: float = attrs.field(default=60.0, converter=_to_float)
    #: Unacknowledged messages kept per reliable connection for replay. Bytes are the real
    #: bound; the count caps per-message overhead (``limits.reliable-buffer``). Azure documents
    #: 1000 messages: ``limits = "azure"`` applies that count.
    reliable_buffer_messages: int = 65536
    reliable_buffer_bytes: int = 16 * MiB
    #: "fabric" (bounds by bytes, so no burst drops a reading client) or "azure" (Azure's
    #: documented counts, for apps that want to see exactly what the cloud service does).
    limits: str = attrs.field(default="fabric", converter=_to_lower)
    #: Seconds a closing WebSocket may take (flush, close frame, the peer's close) before the
    #: connection is reset; a peer that stopped reading cannot hold its socket longer.
    close_timeout: float = attrs.field(default=2.0, converter=_to_float)
    #: Frames one WebSocket message may arrive in (more closes with 1009).
    max_message_fragments: int = 1024
    #: ackIds remembered per connection for ``Duplicate`` detection.
    ack_cache_size: int = 1000
    #: The cyclic garbage collector's youngest-generation threshold while a fabric runs
    #: (Python's default is 700; 0 leaves the interpreter's setting alone). See
    #: docs/design.md "Garbage collection".
    gc_young_threshold: int = 10_000
    #: Seconds an upstream event handler request may take.
    upstream_timeout: float = attrs.field(default=20.0, converter=_to_float)
    #: debug, info, warning, error or critical.
    log_level: str = attrs.field(default="info", converter=_to_lower)
    #: "text" (one human-readable line per event) or "json" (one JSON object per line).
    log_format: str = attrs.field(default="text", converter=_to_lower)

    @property
    def reliable_buffer_count(self) -> int:
        """The reliable replay buffer's count bound under the chosen ``limits`` profile."""
        if self.limits == "azure":
            return min(self.reliable_buffer_messages, AZURE_RELIABLE_BUFFER_MESSAGES)
        return self.reliable_buffer_messages

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, _SERVER_CHECKS)
        # outbox_max_bytes may be below max_message_bytes on purpose (tests, tiny devices):
        # how an outbox treats one oversized frame is the transport's rule, not ours.
        if not problems:
            if self.idle_timeout <= self.keepalive_interval:
                problems.append(Problem(None, "idle_timeout", (
                    f"must be longer than keepalive_interval ({self.keepalive_interval:g}), "
                    f"got {self.idle_timeout:g}")))
        if problems:
            raise ConfigError(problems=problems)


_SERVER_CHECKS: dict[str, Check] = {
    "host": _host,
    "port": _int_in(0, 65535),
    "access_keys": _access_keys,
    "public_endpoint": _public_endpoint,
    "max_message_bytes": _int_in(1),
    "max_request_body_bytes": _int_in(1),
    "max_header_bytes": _int_in(1 * KiB),
    "max_connections": _int_in(1),
    "max_groups_per_connection": _int_in(1),
    "outbox_max_messages": _int_in(1),
    "outbox_max_bytes": _int_in(1),
    "slow_consumer": _one_of("close", "drop"),
    "keepalive_interval": _float_in(0.0, 3600.0, low_open=True),
    "handshake_timeout": _float_in(0.0, 3600.0, low_open=True),
    "idle_timeout": _float_in(0.0, 86400.0, low_open=True),
    "shutdown_timeout": _float_in(0.0, 3600.0),
    "token_leeway": _float_in(0.0, 3600.0),
    "reconnect_window": _float_in(0.0, 7 * 86400.0, low_open=True),
    "reliable_buffer_messages": _int_in(1),
    "reliable_buffer_bytes": _int_in(1),
    "stall_timeout": _float_in(0.0, 86400.0, low_open=True),
    "limits": _one_of("fabric", "azure"),
    "close_timeout": _float_in(0.0, 3600.0, low_open=True),
    "max_message_fragments": _int_in(1),
    "ack_cache_size": _int_in(0),
    "gc_young_threshold": _int_in(0),
    "upstream_timeout": _float_in(0.0, 3600.0, low_open=True),
    "log_level": _one_of(*_LOG_LEVELS),
    "log_format": _one_of(*_LOG_FORMATS),
}

_DEFAULT_HUB = HubConfig()


def _to_mapping(value: Any) -> Any:
    return types.MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


_TRANSPORTS = ("polling", "websocket")


def _path(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    if value == "":
        return None
    if not value.startswith("/") or "?" in value or "#" in value or any(c.isspace() or ord(c) < 32 for c in value):
        return f"must be \"\" (off) or a path starting with '/' without '?', '#' or whitespace, got {value!r}"
    if value.rstrip("/").startswith(("/api", "/client/", "/clients/")) or value.rstrip("/") in ("/client", "/clients"):
        return f"{value!r} overlaps the service's own paths (/api, /client, /clients)"
    return None


def _socketio_hub(value: Any) -> str | None:
    if not isinstance(value, str) or not is_valid_hub_name(value):
        return (f"must be a valid hub name (a letter, then letters, digits and _ ` , . [ ]), "
                f"got {_describe(value)}")
    return None


def _transports(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(t, str) for t in value):
        return f"expected an array of strings, got {_describe(value)}"
    if not value:
        return "must name at least one transport"
    for transport in value:
        if transport not in _TRANSPORTS:
            return f"unknown transport {transport!r}; expected any of {', '.join(_TRANSPORTS)}"
    return None


def _origins(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(o, str) for o in value):
        return f"expected an array of origins, got {_describe(value)}"
    for origin in value:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
            return f"origin {origin!r} must be \"*\" or scheme://host[:port] without a path"
    return None


def _cookie(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value):
        return f"must be \"\" (no cookie) or a cookie name (an HTTP token), got {value!r}"
    return None


@attrs.frozen
class SocketIOConfig:
    """Socket.IO and Engine.IO settings (``[socketio]``; Node's option names in the comments).

    ``path`` serves the hub ``hub`` without a token, for apps that embed the fabric as their
    Socket.IO server; ``/clients/socketio/hubs/NAME/`` serves every hub with Azure's client
    tokens.
    """

    #: The plain endpoint's path ("" for none).
    path: str = "/socket.io/"
    #: The hub the plain path serves.
    hub: str = "socketio"
    #: Seconds between server pings (pingInterval).
    ping_interval: float = attrs.field(default=25.0, converter=_to_float)
    #: Seconds a client has to answer a ping (pingTimeout).
    ping_timeout: float = attrs.field(default=20.0, converter=_to_float)
    #: Seconds an upgrade to WebSocket may take (upgradeTimeout).
    upgrade_timeout: float = attrs.field(default=10.0, converter=_to_float)
    #: Seconds a connection has to join a namespace (connectTimeout).
    connect_timeout: float = attrs.field(default=45.0, converter=_to_float)
    #: Largest polling POST body and WebSocket message, advertised as maxPayload
    #: (maxHttpBufferSize). The HTTP front's ``server.max_request_body_bytes`` bounds POSTs too.
    max_http_buffer_size: int = 1_000_000
    #: Enabled transports (transports).
    transports: tuple[str, ...] = attrs.field(default=_TRANSPORTS, converter=_to_unique_tuple)
    #: Let polling clients upgrade to WebSocket (allowUpgrades).
    allow_upgrades: bool = True
    #: CORS for polling: [] (off), ["*"] or explicit origins (cors.origin).
    cors_allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_to_unique_tuple)
    #: Send Access-Control-Allow-Credentials with an explicit origin (cors.credentials).
    cors_credentials: bool = True
    #: Cookie set to the sid on a polling handshake ("" for none; Node's default name is "io").
    cookie: str = ""
    #: Seconds a dropped socket is kept for connection-state recovery (0: off; Node: 120).
    connection_state_recovery: float = attrs.field(default=0.0, converter=_to_float)

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {
            "path": _path, "hub": _socketio_hub,
            "ping_interval": _float_in(0.0, 3600.0, low_open=True),
            "ping_timeout": _float_in(0.0, 3600.0, low_open=True),
            "upgrade_timeout": _float_in(0.0, 3600.0, low_open=True),
            "connect_timeout": _float_in(0.0, 3600.0, low_open=True),
            "max_http_buffer_size": _int_in(1, 1 << 30),
            "transports": _transports, "allow_upgrades": _bool,
            "cors_allowed_origins": _origins, "cors_credentials": _bool, "cookie": _cookie,
            "connection_state_recovery": _float_in(0.0, 86400.0),
        })
        if problems:
            raise ConfigError(problems=problems)


def _socketio_config(value: Any) -> str | None:
    return None if isinstance(value, SocketIOConfig) else f"expected a SocketIOConfig, got {_describe(value)}"


def _bearer_token(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    if not 16 <= len(value) <= 4096:
        return f"must be 16 to 4096 characters long, got {len(value)}"
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", value):
        return "must contain only letters, digits and . _ ~ + / = - (a bearer token, RFC 6750 section 2.1)"
    return None


@attrs.frozen
class MetricsConfig:
    """``[metrics]``: ``GET /metrics`` in the Prometheus text format."""

    #: Serve ``/metrics`` and count fan-out per publication (false: 404, no counting).
    enabled: bool = True
    #: When set, a scrape must send ``Authorization: Bearer TOKEN`` (else 401).
    token: str | None = attrs.field(default=None, repr=False)
    #: Seconds a rendering is reused by later scrapes (a scrape flood renders at most once
    #: per interval, or per ten times the last rendering's duration if that is longer).
    min_interval: float = attrs.field(default=1.0, converter=_to_float)

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {"enabled": _bool, "token": _bearer_token,
                                    "min_interval": _float_in(0.0, 60.0)})
        if problems:
            raise ConfigError(problems=problems)


@attrs.frozen
class DemoConfig:
    """``[demo]``: the chat, whiteboard and status pages under ``/demo/`` (``--demo``)."""

    #: Serve the demos (off by default: they mint tokens for anyone who asks).
    enabled: bool = False
    #: Hub of the chat demo (Web PubSub JSON subprotocol).
    chat_hub: str = "demochat"
    #: Hub of the whiteboard demo (Socket.IO).
    whiteboard_hub: str = "demoboard"
    #: Strokes kept per whiteboard room for late joiners (oldest dropped first).
    whiteboard_history: int = 2000

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {"enabled": _bool, "chat_hub": _socketio_hub, "whiteboard_hub": _socketio_hub,
                                    "whiteboard_history": _int_in(0, 100_000)})
        if problems:
            raise ConfigError(problems=problems)


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:{}-]{0,64}")


def _broker_url(value: Any) -> str | None:
    """The shape only (a scheme we speak, no whitespace); ``fabric.core.redis_resp.RedisURL``
    parses it fully when the fabric starts (before it binds)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"expected a string, got {_describe(value)}"
    if not value.lower().startswith(_REDIS_SCHEMES):
        return "must start with redis://, rediss:// or unix:// (e.g. redis://127.0.0.1:6379/0)"
    if any(c.isspace() for c in value) or len(value) > 4096:
        return "must be one URL without whitespace (at most 4096 characters)"
    return None


def _node_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _NODE_ID_RE.fullmatch(value):
        return "must be 1 to 64 letters, digits or _ . : -"
    return None


def _channel_prefix(value: Any) -> str | None:
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value):
        return "must be at most 64 letters, digits or _ . : { } -"
    return None


@attrs.frozen
class BrokerConfig:
    """``[broker]``: what makes several processes or machines one fabric.

    Without ``url`` the fabric is one process (the in-memory broker). With
    ``url = "redis://HOST:PORT/DB"`` (or ``$FABRIC_REDIS_URL``, or ``fabric serve --redis``)
    every node naming the same Redis and db shares hubs, groups, users and every operation.
    """

    #: ``redis://[user:password@]host:port/db``, ``rediss://...`` or ``unix:///path?db=N``.
    url: str | None = attrs.field(default=None, repr=False)
    #: Prefix of every Redis channel and key (fabrics sharing one Redis and db stay apart).
    channel_prefix: str = "fabric:"
    #: This node's name in Redis (client names, presence); default ``hostname-pid``.
    node_id: str | None = None
    #: Seconds an operation waits for the other nodes' answers.
    request_timeout: float = attrs.field(default=5.0, converter=_to_float)
    #: Seconds after which a node that stopped refreshing its presence (crashed machine,
    #: partition) is dropped by the others: its connections no longer exist for them.
    node_ttl: float = attrs.field(default=10.0, converter=_to_float)
    #: "resp" (our RESP3 connection, the default) or "coredis".
    publisher: str = "resp"

    def __attrs_post_init__(self) -> None:
        problems = _validate(self, {
            "url": _broker_url, "channel_prefix": _channel_prefix, "node_id": _node_id,
            "request_timeout": _float_in(0.0, 600.0, low_open=True),
            "node_ttl": _float_in(1.0, 3600.0),
            "publisher": _one_of("resp", "coredis"),
        })
        if problems:
            raise ConfigError(problems=problems)


def _broker_config(value: Any) -> str | None:
    return None if isinstance(value, BrokerConfig) else f"expected a BrokerConfig, got {_describe(value)}"


def _metrics_config(value: Any) -> str | None:
    return None if isinstance(value, MetricsConfig) else f"expected a MetricsConfig, got {_describe(value)}"


def _demo_config(value: Any) -> str | None:
    return None if isinstance(value, DemoConfig) else f"expected a DemoConfig, got {_describe(value)}"


@attrs.frozen
class FabricConfig:
    """The whole configuration. ``hub(name)`` works for every hub, configured or not."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    hubs: Mapping[str, HubConfig] = attrs.field(factory=dict, converter=_to_mapping, hash=False)
    #: ``[socketio]``: the Socket.IO and Engine.IO settings.
    socketio: SocketIOConfig = attrs.field(factory=SocketIOConfig)
    #: ``[metrics]``: ``GET /metrics``.
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    #: ``[demo]``: the demos under ``/demo/``.
    demo: DemoConfig = attrs.field(factory=DemoConfig)
    #: ``[broker]``: the Redis URL that makes several nodes one fabric (none: one process).
    broker: BrokerConfig = attrs.field(factory=BrokerConfig)
    _hubs_by_lower: Mapping[str, HubConfig] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        problems = []
        if not isinstance(self.server, ServerConfig):
            problems.append(Problem(None, "server", f"expected a ServerConfig, got {_describe(self.server)}"))
        if not isinstance(self.socketio, SocketIOConfig):
            problems.append(Problem(None, "socketio", _socketio_config(self.socketio) or ""))
        if not isinstance(self.metrics, MetricsConfig):
            problems.append(Problem(None, "metrics", _metrics_config(self.metrics) or ""))
        if not isinstance(self.demo, DemoConfig):
            problems.append(Problem(None, "demo", _demo_config(self.demo) or ""))
        if not isinstance(self.broker, BrokerConfig):
            problems.append(Problem(None, "broker", _broker_config(self.broker) or ""))
        if not isinstance(self.hubs, Mapping):
            raise ConfigError(f"expected a mapping of hub name to HubConfig, got {_describe(self.hubs)}", key="hubs")
        by_lower: dict[str, str] = {}
        for name, hub in self.hubs.items():
            key = "hubs." + (_key_part(name) if isinstance(name, str) else repr(name))
            if not is_valid_hub_name(name):
                problems.append(Problem(None, key, (
                    "invalid hub name: it must start with a letter and contain only letters, digits "
                    "and _ ` , . [ ] (at most 128 characters)")))
                continue
            if not isinstance(hub, HubConfig):
                problems.append(Problem(None, key, f"expected a HubConfig, got {_describe(hub)}"))
            other = by_lower.setdefault(name.lower(), name)
            if other != name:
                problems.append(Problem(None, key, (
                    f"hub names are case-insensitive and {other!r} is also configured")))
        if problems:
            raise ConfigError(problems=problems)
        object.__setattr__(self, "_hubs_by_lower", {n.lower(): h for n, h in self.hubs.items()})

    def hub(self, name: str) -> HubConfig:
        """The settings of hub ``name`` (case-insensitive); ``HubConfig()`` if unconfigured."""
        found = self.hubs.get(name)
        if found is None:
            found = self._hubs_by_lower.get(name.lower(), _DEFAULT_HUB)
        return found


# --------------------------------------------------------------------------------------------
# Structuring (cattrs) with precise error paths

_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
for _scalar in (str, int, float, bool):
    # No coercion: the attrs checks report a wrong type instead of cattrs "fixing" it.
    _converter.register_structure_hook(_scalar, lambda value, _type: value)
_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda value, _type: value)


def _structure_handlers(value: Any, _type: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected an array of tables ([[...event_handlers]]), got {_describe(value)}")
    handlers = []
    problems: list[Problem] = []
    for index, item in enumerate(value):
        try:
            handlers.append(_structure_table(item, EventHandlerConfig))
        except ConfigError as exc:
            problems.extend(attrs.evolve(p, key=_join(f"[{index}]", p.key)) for p in exc.problems)
    if problems:
        raise ConfigError(problems=problems)
    return tuple(handlers)


_converter.register_structure_hook_func(lambda t: t == tuple[EventHandlerConfig, ...], _structure_handlers)


def _public_fields(cls: type) -> list[str]:
    return [a.name for a in attrs.fields(cls) if a.init]


def _flatten(exc: BaseException, path: str | None) -> list[Problem]:
    """Turn cattrs' exception tree into problems with dotted key paths (relative to ``path``)."""
    if isinstance(exc, ConfigError):
        return [attrs.evolve(p, key=_join(path, p.key)) for p in exc.problems]
    if isinstance(exc, ForbiddenExtraKeysError):
        known = _public_fields(exc.cl)
        return [Problem(None, _join(path, _key_part(k)), "unknown key" + _suggest(k, known))
                for k in sorted(exc.extra_fields)]
    if isinstance(exc, ClassValidationError):
        problems: list[Problem] = []
        for sub in exc.exceptions:
            names = [n.name for n in getattr(sub, "__notes__", ()) if isinstance(n, AttributeValidationNote)]
            problems.extend(_flatten(sub, _join(path, names[0]) if names else path))
        return problems
    if isinstance(exc, KeyError):  # cattrs: a required key is absent (the note named it)
        return [Problem(None, path, "is required but missing")]
    return [Problem(None, path, f"invalid value ({type(exc).__name__}: {exc})")]


def _structure_table(value: Any, cls: type) -> Any:
    """Structure one TOML table into ``cls``; raise ConfigError with relative key paths."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table, got {_describe(value)}")
    try:
        return _converter.structure(dict(value), cls)
    except (ClassValidationError, ForbiddenExtraKeysError, ConfigError) as exc:
        problems = _flatten(exc, None)
    # A structural problem (unknown key, bad nested table) stops cattrs before the class's own
    # checks run. Try once more without the offending keys so one pass reports the rest too.
    offending = {re.split(r"[.\[]", p.key or "", maxsplit=1)[0] for p in problems}
    rest = {k: v for k, v in value.items() if _key_part(k) not in offending}
    if len(rest) < len(value):
        try:
            _converter.structure(rest, cls)
        except (ClassValidationError, ForbiddenExtraKeysError, ConfigError) as exc:
            seen = {p.key for p in problems}
            problems.extend(p for p in _flatten(exc, None) if p.key not in seen)
    raise ConfigError(problems=problems)


# --------------------------------------------------------------------------------------------
# Environment variables and overrides

ENV_PREFIX = "FABRIC_"
_SERVER_FIELD_TYPES: dict[str, str] = {
    "host": "str", "port": "int", "access_keys": "list", "public_endpoint": "str",
    "max_message_bytes": "int", "max_request_body_bytes": "int", "max_header_bytes": "int",
    "max_connections": "int", "max_groups_per_connection": "int", "outbox_max_messages": "int", "outbox_max_bytes": "int",
    "slow_consumer": "str", "keepalive_interval": "float", "handshake_timeout": "float",
    "idle_timeout": "float", "shutdown_timeout": "float", "token_leeway": "float",
    "reconnect_window": "float", "reliable_buffer_messages": "int", "reliable_buffer_bytes": "int",
    "ack_cache_size": "int", "upstream_timeout": "float", "log_level": "str",
    "stall_timeout": "float", "limits": "str", "close_timeout": "float", "max_message_fragments": "int",
    "log_format": "str", "gc_young_threshold": "int",
}
if set(_SERVER_FIELD_TYPES) != set(_public_fields(ServerConfig)):
    raise LookupError("ServerConfig fields and their environment-variable types disagree: "
                      f"{sorted(set(_SERVER_FIELD_TYPES) ^ set(_public_fields(ServerConfig)))}")


def _parse_text(kind: str, text: str) -> Any:
    """Parse an environment-variable (or string override) value. Raises ValueError."""
    text = text.strip()
    if kind == "int":
        if not re.fullmatch(r"[+-]?\d[\d_]*", text):
            raise ValueError(f"expected an integer, got {text!r}")
        return int(text)
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {text!r}")
        return number
    if kind == "list":
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise ValueError(f"expected a comma-separated list, got {text!r}")
        return tuple(items)
    return text


def _env_values(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for name, kind in _SERVER_FIELD_TYPES.items():
        var = ENV_PREFIX + name.upper()
        text = env.get(var)
        if text is None or not text.strip():  # empty means unset
            continue
        try:
            values[name] = _parse_text(kind, text)
        except ValueError as exc:
            problems.append(Problem(f"environment variable {var}", f"server.{name}", str(exc)))
            continue
        sources[name] = f"environment variable {var}"
    single = env.get(ENV_PREFIX + "ACCESS_KEY", "").strip()
    if single:
        # FABRIC_ACCESS_KEY is the primary key; FABRIC_ACCESS_KEYS (if also set) follow it.
        values["access_keys"] = (single, *values.get("access_keys", ()))
        sources["access_keys"] = (
            f"environment variable {ENV_PREFIX}ACCESS_KEY"
            if "access_keys" not in sources
            else f"environment variables {ENV_PREFIX}ACCESS_KEY and {ENV_PREFIX}ACCESS_KEYS"
        )
    return values, sources, problems


_OVERRIDES_SOURCE = "overrides"


def _override_values(
    overrides: Mapping[str, Any],
) -> tuple[dict[str, Any], list[tuple[int, Any, Any]], list[Problem]]:
    values: dict[str, Any] = {}
    handlers: list[tuple[int, Any, Any]] = []
    problems: list[Problem] = []
    primary: str | None = None
    known = [*_SERVER_FIELD_TYPES, "access_key", "event_handlers"]
    for name, value in overrides.items():
        if value is None:  # "not given", e.g. an absent CLI flag
            continue
        if name == "event_handlers":
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                problems.append(Problem(_OVERRIDES_SOURCE, "event_handlers",
                                        f"expected a list of (hub, EventHandlerConfig), got {_describe(value)}"))
                continue
            for index, item in enumerate(value):
                if not (isinstance(item, tuple) and len(item) == 2):
                    problems.append(Problem(_OVERRIDES_SOURCE, f"event_handlers[{index}]",
                                            f"expected a (hub, EventHandlerConfig) pair, got {_describe(item)}"))
                    continue
                handlers.append((index, item[0], item[1]))
        elif name == "access_key":
            if isinstance(value, str):
                primary = value
            else:
                problems.append(Problem(_OVERRIDES_SOURCE, "access_key", f"expected a string, got {_describe(value)}"))
        elif name not in _SERVER_FIELD_TYPES:
            problems.append(Problem(_OVERRIDES_SOURCE, name, "unknown override" + _suggest(name, known)))
        elif isinstance(value, str) and _SERVER_FIELD_TYPES[name] != "str":
            try:
                values[name] = _parse_text(_SERVER_FIELD_TYPES[name], value)
            except ValueError as exc:
                problems.append(Problem(_OVERRIDES_SOURCE, f"server.{name}", str(exc)))
        else:
            values[name] = value
    if primary is not None:
        # access_key (e.g. --access-key) is the primary key; explicit access_keys follow it
        rest = values.get("access_keys", ())
        values["access_keys"] = (primary, *rest) if isinstance(rest, (list, tuple)) else rest
    return values, handlers, problems


# --------------------------------------------------------------------------------------------
# Loading


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> FabricConfig:
    """Load the configuration: defaults < TOML file < ``FABRIC_*`` env < ``overrides``.

    ``path`` None means ``$FABRIC_CONFIG`` if set, else no file. ``env`` None means
    ``os.environ``. ``overrides`` is a flat dict of ``ServerConfig`` field names (plus
    ``access_key``: one key, placed first; ``event_handlers``: a list of
    ``(hub, EventHandlerConfig)`` appended to that hub's handlers; and ``broker_url``:
    ``[broker] url``, which ``$FABRIC_REDIS_URL`` also sets); None values are ignored.
    Raises :class:`ConfigError`. Reads the file synchronously (call it before starting trio,
    or through ``trio.to_thread.run_sync``).
    """
    environ = os.environ if env is None else env
    source_of_path = None
    if path is None:
        from_env = environ.get(ENV_PREFIX + "CONFIG", "").strip()
        if from_env:
            path = from_env
            source_of_path = f"environment variable {ENV_PREFIX}CONFIG"
    if path is None:
        return _build({}, None, environ, overrides or {})
    label = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        where = f" (named by {source_of_path})" if source_of_path else ""
        raise ConfigError(f"config file not found{where}", source=label) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=label) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8 text ({exc.reason} at byte {exc.start})", source=label) from None
    return loads_config(text, source=label, env=environ, overrides=overrides)


def loads_config(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> FabricConfig:
    """Like :func:`load_config` for TOML text already in memory (``source`` names it in errors)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    except RecursionError:
        raise ConfigError("invalid TOML: nested too deeply", source=source) from None
    return _build(raw, source, os.environ if env is None else env, overrides or {})


def _build(raw: dict[str, Any], file_source: str | None, env: Mapping[str, str],
           overrides: Mapping[str, Any]) -> FabricConfig:
    problems: list[Problem] = []
    sections = ["server", "hubs", "socketio", "metrics", "demo", "broker"]
    for key in raw:
        if key not in sections:
            problems.append(Problem(file_source, _key_part(key), "unknown key" + _suggest(key, sections)))

    # [server] merged with the environment and the overrides, remembering where each came from
    raw_server = raw.get("server", {})
    if not isinstance(raw_server, dict):
        problems.append(Problem(file_source, "server", f"expected a table, got {_describe(raw_server)}"))
        raw_server = {}
    sources = dict.fromkeys(raw_server, file_source)
    merged = dict(raw_server)
    env_values, env_sources, env_problems = _env_values(env)
    merged.update(env_values)
    sources.update(env_sources)
    problems.extend(env_problems)
    overrides = dict(overrides)
    broker_url_override = overrides.pop("broker_url", None)
    override_values, override_handlers, override_problems = _override_values(overrides)
    merged.update(override_values)
    sources.update(dict.fromkeys(override_values, _OVERRIDES_SOURCE))
    problems.extend(override_problems)

    server: ServerConfig | None = None
    try:
        server = _structure_table(merged, ServerConfig)
    except ConfigError as exc:
        for p in exc.problems:
            field = (p.key or "").split(".")[0].split("[")[0]
            problems.append(Problem(sources.get(field, file_source), _join("server", p.key), p.message))

    # [socketio]
    socketio = SocketIOConfig()
    if "socketio" in raw:
        try:
            socketio = _structure_table(raw["socketio"], SocketIOConfig)
        except ConfigError as exc:
            problems.extend(Problem(file_source, _join("socketio", p.key), p.message) for p in exc.problems)

    # [metrics], [demo]
    metrics = MetricsConfig()
    if "metrics" in raw:
        try:
            metrics = _structure_table(raw["metrics"], MetricsConfig)
        except ConfigError as exc:
            problems.extend(Problem(file_source, _join("metrics", p.key), p.message) for p in exc.problems)
    demo = DemoConfig()
    if "demo" in raw:
        try:
            demo = _structure_table(raw["demo"], DemoConfig)
        except ConfigError as exc:
            problems.extend(Problem(file_source, _join("demo", p.key), p.message) for p in exc.problems)

    # [broker]: url from the file < $FABRIC_REDIS_URL < the broker_url override (--redis)
    raw_broker = raw.get("broker", {})
    if not isinstance(raw_broker, dict):
        problems.append(Problem(file_source, "broker", f"expected a table, got {_describe(raw_broker)}"))
        raw_broker = {}
    raw_broker = dict(raw_broker)
    url_source = file_source
    env_url = env.get(ENV_PREFIX + "REDIS_URL", "").strip()
    if env_url:
        raw_broker["url"], url_source = env_url, f"environment variable {ENV_PREFIX}REDIS_URL"
    if broker_url_override is not None:
        raw_broker["url"], url_source = broker_url_override, _OVERRIDES_SOURCE
    broker = BrokerConfig()
    try:
        broker = _structure_table(raw_broker, BrokerConfig)
    except ConfigError as exc:
        problems.extend(Problem(url_source if p.key == "url" else file_source, _join("broker", p.key), p.message)
                        for p in exc.problems)

    # [hubs.NAME]
    hubs: dict[str, HubConfig] = {}
    raw_hubs = raw.get("hubs", {})
    if not isinstance(raw_hubs, dict):
        problems.append(Problem(file_source, "hubs", f"expected a table of hubs, got {_describe(raw_hubs)}"))
        raw_hubs = {}
    for name, table in raw_hubs.items():
        key = f"hubs.{_key_part(name)}"
        if not is_valid_hub_name(name):
            problems.append(Problem(file_source, key, (
                "invalid hub name: it must start with a letter and contain only letters, digits "
                "and _ ` , . [ ] (at most 128 characters)")))
            continue
        try:
            hubs[name] = _structure_table(table, HubConfig)
        except ConfigError as exc:
            problems.extend(Problem(file_source, _join(key, p.key), p.message) for p in exc.problems)

    # --event-handler HUB=URL overrides: appended to the hub's own handlers
    lower_names = {name.lower(): name for name in hubs}
    for index, hub, handler in override_handlers:
        key = f"event_handlers[{index}]"
        if not is_valid_hub_name(hub):
            problems.append(Problem(_OVERRIDES_SOURCE, key, f"invalid hub name {hub!r}"))
            continue
        if not isinstance(handler, EventHandlerConfig):
            problems.append(Problem(_OVERRIDES_SOURCE, key, f"expected an EventHandlerConfig, got {_describe(handler)}"))
            continue
        name = lower_names.setdefault(hub.lower(), hub)
        current = hubs.get(name, _DEFAULT_HUB)
        hubs[name] = attrs.evolve(current, event_handlers=(*current.event_handlers, handler))

    if problems:
        raise ConfigError(problems=problems)
    if server is None:  # unreachable: a [server] that does not structure has added its problems
        raise RuntimeError("[server] could not be structured, yet no configuration problem was recorded")
    try:
        return FabricConfig(server=server, hubs=hubs, socketio=socketio, metrics=metrics, demo=demo, broker=broker)
    except ConfigError as exc:
        raise ConfigError(problems=[attrs.evolve(p, source=file_source) for p in exc.problems]) from None


def parse_event_handler_flag(value: str) -> tuple[str, EventHandlerConfig]:
    """Parse ``--event-handler HUB=URL_TEMPLATE``.

    The handler receives every user event and all three system events (the flag cannot say
    otherwise; use the config file for finer control). Raises :class:`ConfigError`.
    """
    source = "--event-handler"
    hub, sep, url = value.partition("=")
    hub, url = hub.strip(), url.strip()
    if not sep or not hub or not url:
        raise ConfigError(f"expected HUB=URL_TEMPLATE, got {value!r}", source=source)
    if not is_valid_hub_name(hub):
        raise ConfigError(f"invalid hub name {hub!r} in {value!r}", source=source)
    try:
        handler = EventHandlerConfig(url_template=url, user_event_pattern="*", system_events=SYSTEM_EVENTS)
    except ConfigError as exc:
        raise ConfigError(problems=[attrs.evolve(p, source=source) for p in exc.problems]) from None
    return hub, handler


def config_as_dict(config: FabricConfig, *, redact_keys: bool = True) -> dict[str, Any]:
    """The effective configuration as plain data in the TOML file's shape (for ``--print-config``
    style output); access keys are replaced by ``"***"`` unless ``redact_keys`` is false."""
    server = {a.name: getattr(config.server, a.name) for a in attrs.fields(ServerConfig)}
    server["access_keys"] = ["***" if redact_keys else k for k in config.server.access_keys]
    if server["public_endpoint"] is None:
        del server["public_endpoint"]
    hubs = {
        name: {
            "anonymous_connect": hub.anonymous_connect,
            "event_handlers": [
                {"url_template": h.url_template, "user_event_pattern": h.user_event_pattern,
                 "system_events": list(h.system_events), "group_presence_events": list(h.group_presence_events),
                 "group_filters": list(h.group_filters)}
                for h in hub.event_handlers
            ],
            "socketio": {"enabled": hub.socketio.enabled, "namespaces": list(hub.socketio.namespaces),
                         "service_mode": hub.socketio.service_mode},
        }
        for name, hub in config.hubs.items()
    }
    socketio = {a.name: getattr(config.socketio, a.name) for a in attrs.fields(SocketIOConfig)}
    for key, value in socketio.items():
        if isinstance(value, tuple):
            socketio[key] = list(value)
    metrics = {a.name: getattr(config.metrics, a.name) for a in attrs.fields(MetricsConfig)}
    if metrics["token"] is None:
        del metrics["token"]
    elif redact_keys:
        metrics["token"] = "***"
    demo = {a.name: getattr(config.demo, a.name) for a in attrs.fields(DemoConfig)}
    broker = {a.name: getattr(config.broker, a.name) for a in attrs.fields(BrokerConfig)}
    for key in ("url", "node_id"):
        if broker[key] is None:
            del broker[key]
    if "url" in broker and redact_keys:
        broker["url"] = _redact_url(broker["url"])
    return {"server": server, "hubs": hubs, "socketio": socketio, "metrics": metrics, "demo": demo,
            "broker": broker}


def _redact_url(url: str) -> str:
    """A URL with whatever sits between ``:`` and ``@`` in its authority replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    auth, _, tail = rest.partition("@")
    user, colon, _ = auth.partition(":")
    return f"{head}://{user}{':***' if colon else ''}@{tail}"


# --------------------------------------------------------------------------------------------
# Reloading (SIGHUP, --watch-config)

#: ``[server]`` keys read once when the listener or a hub starts: a reload that changes them
#: keeps the running value and says a restart is needed. Every other ``[server]`` key is read
#: when it is used (per request, per connection, per event), so a reload applies it at once;
#: bounds of a connection (outbox, reliable buffer, message size) apply to new connections.
RESTART_SERVER_KEYS: frozenset[str] = frozenset({
    "host", "port", "max_request_body_bytes", "max_header_bytes", "handshake_timeout",
    "keepalive_interval", "idle_timeout", "max_connections",
})
#: Whole sections that are built once at start (the Socket.IO endpoints, the demos, the
#: broker) and ``[metrics] enabled`` (hubs count fan-out or not from their start).
RESTART_SECTIONS: frozenset[str] = frozenset({"socketio", "demo", "metrics.enabled", "broker"})


@attrs.frozen
class ReloadPlan:
    """What a reload does: ``config`` is the new file's configuration with every
    restart-only value kept from the running one; ``applied`` names the dotted keys that
    changed and take effect now, ``needs_restart`` those that changed in the file but keep
    their running value until the process restarts."""

    config: "FabricConfig"
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def _flat(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value and prefix.count(".") < 2:
        for key, item in value.items():
            _flat(item, f"{prefix}.{_key_part(key)}" if prefix else _key_part(key), out)
    else:
        out[prefix] = value


def plan_reload(old: "FabricConfig", new: "FabricConfig") -> ReloadPlan:
    """Compare the running configuration with a freshly loaded one (pure; no I/O).

    Dotted keys name what changed (``server.access_keys``, ``hubs.chat.event_handlers``),
    never the values, so the result is safe to log.
    """
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flat(config_as_dict(old, redact_keys=False), "", before)
    _flat(config_as_dict(new, redact_keys=False), "", after)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, _ABSENT) != after.get(k, _ABSENT))

    def restart_only(key: str) -> bool:
        section, _, rest = key.partition(".")
        if section == "server":
            return rest in RESTART_SERVER_KEYS
        if section == "hubs":
            return rest.partition(".")[2] == "socketio"
        return section in RESTART_SECTIONS or key in RESTART_SECTIONS

    needs_restart = tuple(k for k in changed if restart_only(k))
    applied = tuple(k for k in changed if not restart_only(k))
    server = attrs.evolve(new.server, **{k: getattr(old.server, k) for k in RESTART_SERVER_KEYS})
    hubs = {}
    for name, hub in new.hubs.items():
        hubs[name] = attrs.evolve(hub, socketio=old.hub(name).socketio)
    for name, hub in old.hubs.items():  # a removed hub keeps its Socket.IO endpoint settings
        if name not in hubs and hub.socketio != _DEFAULT_HUB_SOCKETIO:
            hubs[name] = attrs.evolve(_DEFAULT_HUB, socketio=hub.socketio)
    metrics = attrs.evolve(new.metrics, enabled=old.metrics.enabled)
    config = FabricConfig(server=server, hubs=hubs, socketio=old.socketio, metrics=metrics, demo=old.demo,
                          broker=old.broker)
    return ReloadPlan(config, applied, needs_restart)


_ABSENT = object()

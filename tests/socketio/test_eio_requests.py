"""Engine.IO request verification: Node's order, codes, statuses and bodies (§a.4)."""

from __future__ import annotations

import json

import pytest

from fabric.socketio.eio_requests import (
    ERROR_MESSAGES,
    ErrorCode,
    RequestRejected,
    RouteKind,
    parse_query,
    route_request,
)


class FakeSession:
    def __init__(self, transport="polling", accepts_probe=True):
        self.transport = transport
        self.accepts_probe = accepts_probe


SESSIONS = {
    "poll": FakeSession("polling"),
    "ws": FakeSession("websocket", accepts_probe=False),
    "busy": FakeSession("polling", accepts_probe=False),
}


def route(query, method="GET", upgrade=False, **kw):
    return route_request(
        method=method, query=parse_query(query), upgrade=upgrade, lookup=SESSIONS.get, **kw
    )


def rejected(query, method="GET", upgrade=False, **kw) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        route(query, method, upgrade, **kw)
    return info.value


def test_error_messages_are_nodes():
    assert {int(c): m for c, m in ERROR_MESSAGES.items()} == {
        0: "Transport unknown",
        1: "Session ID unknown",
        2: "Bad handshake method",
        3: "Bad request",
        4: "Forbidden",
        5: "Unsupported protocol version",
    }


def test_handshakes():
    assert route("EIO=4&transport=polling").kind is RouteKind.OPEN_POLLING
    assert route("EIO=4&transport=polling&t=abc").kind is RouteKind.OPEN_POLLING
    assert route("EIO=4&transport=websocket", upgrade=True).kind is RouteKind.OPEN_WEBSOCKET
    assert route("EIO=4&transport=polling&sid=").kind is RouteKind.OPEN_POLLING  # empty sid = none


@pytest.mark.parametrize(
    ("query", "method", "upgrade", "code"),
    [
        ("EIO=4", "GET", False, ErrorCode.UNKNOWN_TRANSPORT),
        ("EIO=4&transport=abc", "GET", False, ErrorCode.UNKNOWN_TRANSPORT),
        ("EIO=4&transport=webtransport", "GET", False, ErrorCode.UNKNOWN_TRANSPORT),
        ("transport=polling", "GET", False, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ("EIO=abc&transport=polling", "GET", False, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ("EIO=3&transport=polling", "GET", False, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ("transport=websocket", "GET", True, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ("EIO=abc&transport=websocket", "GET", True, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ("EIO=4&transport=polling", "POST", False, ErrorCode.BAD_HANDSHAKE_METHOD),
        ("EIO=4&transport=polling", "PUT", False, ErrorCode.BAD_HANDSHAKE_METHOD),
        ("EIO=4&transport=websocket", "GET", False, ErrorCode.BAD_REQUEST),  # no Upgrade
        ("EIO=4&transport=polling&sid=nope", "GET", False, ErrorCode.UNKNOWN_SID),
        ("EIO=4&transport=websocket&sid=nope", "GET", True, ErrorCode.UNKNOWN_SID),
        ("EIO=4&transport=polling&sid=ws", "GET", False, ErrorCode.BAD_REQUEST),  # after upgrade
        ("EIO=4&transport=websocket&sid=poll", "GET", False, ErrorCode.BAD_REQUEST),
        ("EIO=4&transport=websocket&sid=ws", "GET", False, ErrorCode.BAD_REQUEST),
    ],
)
def test_refusals(query, method, upgrade, code):
    err = rejected(query, method, upgrade)
    assert err.code is code
    assert err.message == ERROR_MESSAGES[code]
    assert err.http_status == 400
    assert err.http_content_type == "application/json"
    assert json.loads(err.http_body()) == {"code": int(code), "message": ERROR_MESSAGES[code]}


def test_check_order_matches_node():
    # transport before everything; sid before method; method before version.
    assert rejected("transport=abc&sid=nope", "PUT").code is ErrorCode.UNKNOWN_TRANSPORT
    assert rejected("EIO=3&transport=polling&sid=nope", "PUT").code is ErrorCode.UNKNOWN_SID
    assert rejected("EIO=3&transport=polling", "PUT").code is ErrorCode.BAD_HANDSHAKE_METHOD
    # EIO is only checked on handshakes
    assert route("transport=polling&sid=poll").kind is RouteKind.POLL
    # the origin check comes before the sid check
    err = rejected("EIO=4&transport=polling&sid=nope", origin="http://a\x01b")
    assert err.code is ErrorCode.BAD_REQUEST and err.context == "INVALID_ORIGIN"


def test_transport_mismatch_context():
    assert rejected("EIO=4&transport=polling&sid=ws").context == "TRANSPORT_MISMATCH"
    assert rejected("EIO=4&transport=websocket").context == "TRANSPORT_HANDSHAKE_ERROR"


def test_origin_header_characters():
    assert route("EIO=4&transport=polling", origin="https://example.com").kind is RouteKind.OPEN_POLLING
    assert route("EIO=4&transport=polling", origin=b"https://\xe9x.com").kind is RouteKind.OPEN_POLLING
    assert route("EIO=4&transport=polling", origin="a\tb").kind is RouteKind.OPEN_POLLING
    for bad in ("a\nb", "a\x7fb", b"a\rb", "\u0100"):
        assert rejected("EIO=4&transport=polling", origin=bad).context == "INVALID_ORIGIN"


def test_forbidden_is_403_and_carries_the_hook_message():
    err = rejected("EIO=4&transport=polling", allow=lambda: "go away")
    assert err.code is ErrorCode.FORBIDDEN and err.http_status == 403
    assert json.loads(err.http_body()) == {"code": 4, "message": "go away"}
    err = rejected("EIO=4&transport=polling", allow=lambda: "")
    assert err.message == "Forbidden"
    assert route("EIO=4&transport=polling", allow=lambda: None).kind is RouteKind.OPEN_POLLING
    # Node runs allowRequest before the version check
    assert rejected("EIO=3&transport=polling", allow=lambda: "no").code is ErrorCode.FORBIDDEN
    # and never for requests with a sid
    assert route("EIO=4&transport=polling&sid=poll", allow=lambda: "no").kind is RouteKind.POLL


def test_upgrade_response_is_raw_http_400():
    err = rejected("transport=websocket", upgrade=True)
    assert err.upgrade_response() == (
        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\n"
        b"Content-Length: 28\r\n\r\nUnsupported protocol version"
    )
    forbidden = rejected("EIO=4&transport=websocket", upgrade=True, allow=lambda: "nope")
    assert forbidden.upgrade_response().startswith(b"HTTP/1.1 400 ")
    assert forbidden.upgrade_response().endswith(b"\r\n\r\nnope")


def test_requests_on_existing_sessions():
    r = route("EIO=4&transport=polling&sid=poll")
    assert (r.kind, r.sid, r.session) == (RouteKind.POLL, "poll", SESSIONS["poll"])
    assert route("EIO=4&transport=polling&sid=poll", "POST").kind is RouteKind.POST
    assert route("EIO=4&transport=polling&sid=poll", "DELETE").kind is RouteKind.BAD_METHOD
    assert route("EIO=4&transport=websocket&sid=poll", upgrade=True).kind is RouteKind.PROBE


def test_websockets_that_are_accepted_then_closed():
    # a second WebSocket after the upgrade, or while one is upgrading
    assert route("EIO=4&transport=websocket&sid=ws", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE
    assert route("EIO=4&transport=websocket&sid=busy", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE
    # an Upgrade on the polling transport
    assert route("EIO=4&transport=polling&sid=poll", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE
    assert route("EIO=4&transport=polling", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE


def test_disabled_transport():
    only_ws = ("websocket",)
    assert rejected("EIO=4&transport=polling", transports=only_ws).code is ErrorCode.UNKNOWN_TRANSPORT
    assert route("EIO=4&transport=websocket", upgrade=True, transports=only_ws).kind is RouteKind.OPEN_WEBSOCKET


def test_parse_query():
    assert parse_query("EIO=4&transport=polling&t=N8h") == {"EIO": "4", "transport": "polling", "t": "N8h"}
    assert parse_query(b"sid=a%2Bb&sid=c") == {"sid": "c"}  # last wins, percent-decoded
    assert parse_query("EIO=&x") == {"EIO": "", "x": ""}
    assert parse_query("") == {}


def test_routes_with_real_sessions():
    from fabric.socketio.eio_session import EngineConfig, Session

    sessions = {"p": Session("p", EngineConfig(), "polling", 0.0), "w": Session("w", EngineConfig(), "websocket", 0.0)}

    def go(query, method="GET", upgrade=False):
        return route_request(method=method, query=parse_query(query), upgrade=upgrade, lookup=sessions.get)

    assert go("EIO=4&transport=polling&sid=p").kind is RouteKind.POLL
    assert go("EIO=4&transport=websocket&sid=p", upgrade=True).kind is RouteKind.PROBE
    sessions["p"].attach_probe(0.0)
    assert go("EIO=4&transport=websocket&sid=p", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE
    sessions["p"].receive_probe("5", 0.0)
    assert go("EIO=4&transport=websocket&sid=p", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE
    with pytest.raises(RequestRejected):
        go("EIO=4&transport=polling&sid=p")
    assert go("EIO=4&transport=websocket&sid=w", upgrade=True).kind is RouteKind.ACCEPT_AND_CLOSE

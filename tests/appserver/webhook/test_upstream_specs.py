"""specs/upstream.py as data, and the answer parsers under arbitrary input (Hypothesis)."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import pkgutil
import re

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

import specs
from fabric.appserver.webhook import UpstreamFailure, WebhookEventHandler, _Answer, origin_from_endpoint
from fabric.config import SYSTEM_EVENTS, EventHandlerConfig, HubConfig
from fabric.core.events import UNCHANGED, ConnectRequest, ConnectResponse, UserEventResponse
from specs import upstream as spec
from specs.upstream import FAILURES, Failure


def test_signature_is_hmac_sha256_hex_of_the_connection_id_per_key():
    keys = ("k1", "ключ")
    expected = ",".join("sha256=" + hmac.new(k.encode(), "conn-1".encode(), hashlib.sha256).hexdigest() for k in keys)
    assert spec.signature(keys, "conn-1") == expected
    assert spec.verify_signature(expected.upper().replace("SHA256=", "sha256="), ("ключ",), "conn-1")
    assert not spec.verify_signature(expected, ("other",), "conn-1")
    assert not spec.verify_signature(expected, keys, "conn-2")


def test_origin_matching():
    assert spec.origin_allowed(["*"], "h", "h:1")
    assert spec.origin_allowed(["a.example, H"], "h", "h:1")
    assert spec.origin_allowed(["x", "H:1"], "h", "h:1")  # several header lines, host:port
    assert not spec.origin_allowed(["h:2", "hh"], "h", "h:1")
    assert not spec.origin_allowed([], "h", "h")
    assert origin_from_endpoint("http://LocalHost:8080/") == ("localhost", "localhost:8080")
    assert origin_from_endpoint("https://x.example") == ("x.example", "x.example")
    assert origin_from_endpoint("http://0.0.0.0:9") == ("localhost", "localhost:9")
    assert origin_from_endpoint("http://[::1]:9") == ("::1", "[::1]:9")


def test_time_source_and_types():
    assert spec.ce_time(0) == "1970-01-01T00:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", spec.ce_time())
    assert spec.ce_source("h", "c") == "/hubs/h/client/c"
    assert spec.ce_type("connect", system=True) == "azure.webpubsub.sys.connect"
    assert spec.ce_type("x", system=False) == "azure.webpubsub.user.x"
    assert spec.media_type(" Text/Plain ; charset=utf-8") == "text/plain"
    assert spec.media_type("") is None and spec.media_type(None) is None


def test_header_order_and_optional_headers():
    assert spec.REQUEST_HEADERS[0] == spec.H_ORIGIN and spec.REQUEST_HEADERS[-1] == spec.H_AWPS_VERSION
    assert spec.OPTIONAL_HEADERS <= set(spec.REQUEST_HEADERS)
    assert len({h.lower() for h in spec.REQUEST_HEADERS}) == len(spec.REQUEST_HEADERS)
    assert set(spec.USER_CONTENT_TYPES) == {"text", "json", "binary", "protobuf"}
    assert set(spec.REPLY_DATA_TYPES.values()) == {"text", "json", "binary", "protobuf"}


def test_every_failure_has_exactly_one_rule():
    assert set(FAILURES) == set(Failure)
    for failure, rule in FAILURES.items():
        assert rule.failure is failure and rule.when and rule.notification
        assert rule.connect_status == 0 or 500 <= rule.connect_status < 600
    assert FAILURES[Failure.CLIENT_ERROR].connect_status == 0  # the handler's own 4xx
    assert FAILURES[Failure.TIMEOUT].ack_error.value == "Timeout"
    assert set(spec.OUTCOMES) == {"connect", "user event with ackId", "user event without ackId",
                                  "simple client message", "connected / disconnected / joined / left", "invoke"}
    # an invocation that the handler refused reads InvocationFailed; the rest keep the ack names
    assert FAILURES[Failure.SERVER_ERROR].invoke_error.value == "InvocationFailed"
    assert FAILURES[Failure.CLIENT_ERROR].invoke_error.value == "InvocationFailed"
    assert FAILURES[Failure.TIMEOUT].invoke_error.value == "Timeout"
    assert FAILURES[Failure.UNSENDABLE].invoke_error.value == "BadRequest"


def test_decision_ids_are_unique_across_specs():
    ids: list[str] = []
    for info in pkgutil.iter_modules(specs.__path__):
        module = importlib.import_module(f"specs.{info.name}")
        ids += [d.id for d in getattr(module, "DECISIONS", ())]
    assert len(ids) == len(set(ids))
    mine = [d for d in spec.DECISIONS if d.id.startswith("upstream.")]
    assert len(mine) == len(spec.DECISIONS) and all(d.question and d.decision and d.reason for d in mine)


# ---- parsers: garbage in, a documented failure out (never anything else) ----------------

def _handler() -> WebhookEventHandler:
    config = HubConfig(event_handlers=(EventHandlerConfig("http://h/{event}", "*", SYSTEM_EVENTS),))
    return WebhookEventHandler("hub", config, access_keys=("k",))


def _answer(status: int, headers: list[tuple[str, str]], body: bytes) -> _Answer:
    return _Answer.from_raw(status, httpx.Headers(headers).raw, body)


REQUEST = ConnectRequest(hub="hub", connection_id="c", user_id=None, claims={}, query={}, headers={},
                         subprotocols=("json.webpubsub.azure.v1", "custom"), roles=(), groups=())

header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
headers = st.lists(st.tuples(
    st.sampled_from(["content-type", "ce-connectionState", "x-other", "content-length"]), header_values), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["userId", "groups", "roles", "subprotocol", "other"]), inner, max_size=5),
    max_leaves=12)
bodies = st.binary(max_size=200) | json_values.map(lambda v: __import__("json").dumps(v).encode())


@settings(max_examples=300, deadline=None)
@given(headers=headers, body=bodies, status=st.integers(200, 299))
def test_connect_answers_parse_or_fail_cleanly(headers, body, status):
    handler = _handler()
    try:
        result = handler._connect_response(_answer(status, headers, body), REQUEST)
    except UpstreamFailure as exc:
        assert exc.failure in FAILURES and exc.message
        return
    assert result is None or isinstance(result, ConnectResponse)
    if result is not None:
        assert result.subprotocol in (None, *REQUEST.subprotocols)
        assert all(isinstance(g, str) and g for g in result.groups)


@settings(max_examples=300, deadline=None)
@given(headers=headers, body=bodies, status=st.integers(200, 299))
def test_user_event_answers_parse_or_fail_cleanly(headers, body, status):
    handler = _handler()
    try:
        result = handler._user_event_response(_answer(status, headers, body))
    except UpstreamFailure as exc:
        assert exc.failure in FAILURES and exc.message
        return
    assert result is None or isinstance(result, UserEventResponse)
    if result is not None:
        assert result.connection_state is UNCHANGED or result.connection_state is None or \
            isinstance(result.connection_state, str)
        if result.payload is not None:
            assert result.payload.body  # empty bodies are "no reply"


@settings(max_examples=200, deadline=None)
@given(status=st.integers(100, 599), body=st.binary(max_size=50))
def test_status_classification(status, body):
    handler = _handler()
    try:
        handler._check_status(_answer(status, [], body))
    except UpstreamFailure as exc:
        assert not 200 <= status < 300
        expected = (Failure.REDIRECT if 300 <= status < 400 else Failure.CLIENT_ERROR if 400 <= status < 500
                    else Failure.SERVER_ERROR if status >= 500 else Failure.UNEXPECTED_STATUS)
        assert exc.failure is expected and str(status) in exc.message
    else:
        assert 200 <= status < 300

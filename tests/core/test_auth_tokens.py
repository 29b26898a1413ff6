"""Client and REST token verification, against tokens minted by Microsoft's Python SDK and by
hand-built JWTs in the shapes the JS and .NET SDKs produce."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import jwt
import pytest
from azure.core.pipeline.transport import HttpTransport
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from azure.messaging.webpubsubservice._patch import _parse_connection_string
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.core.auth import (
    MAX_TOKEN_CHARS,
    ClientIdentity,
    TokenError,
    client_url,
    connection_string,
    endpoint_for,
    generate_access_key,
    mint_client_token,
    mint_rest_token,
    parse_connection_string,
    verify_client_token,
    verify_rest_token,
)
from specs.names import is_valid_group_name, is_valid_hub_name

KEY = "primary-key-0123456789-0123456789-0123456789"  # >= 32 bytes: the SDK's PyJWT warns otherwise
KEY2 = "secondary-key-0123456789-0123456789-012345678"
ENDPOINT = "http://127.0.0.1:8080"
NOW = 1_700_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, payload: bytes | dict, key: str | None = KEY, alg: str = "sha256") -> str:
    """A JWT assembled by hand (any header, any payload bytes), HMAC-signed with ``key``."""
    import hashlib
    import hmac

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    if key is None:
        return signing_input + "."
    sig = hmac.new(key.encode(), signing_input.encode(), getattr(hashlib, alg)).digest()
    return f"{signing_input}.{b64(sig)}"


def claims_token(claims: dict, key: str = KEY) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def good_claims(**extra) -> dict:
    return {"aud": f"{ENDPOINT}/client/hubs/chat", "iat": int(NOW), "exp": int(NOW) + 3600, **extra}


def verify(token: str | None, **kwargs) -> ClientIdentity:
    kwargs.setdefault("keys", [KEY])
    kwargs.setdefault("hub", "chat")
    kwargs.setdefault("now", NOW)
    return verify_client_token(token, **kwargs)


def expect(code: str, token: str | None, **kwargs) -> TokenError:
    with pytest.raises(TokenError) as info:
        verify(token, **kwargs)
    assert info.value.code == code, str(info.value)
    assert info.value.status == 401
    assert str(info.value)
    return info.value


def sdk_client(hub: str = "chat", key: str = KEY, endpoint: str = ENDPOINT, **kwargs) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(connection_string(endpoint, key), hub=hub, **kwargs)


# ---------------------------------------------------------------------------------- the SDK


def test_python_sdk_client_token_verifies():
    result = sdk_client().get_client_access_token(
        user_id="alice", roles=["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.g1"], groups=["g1", "g2"]
    )
    assert result["url"].startswith("ws://127.0.0.1:8080/client/hubs/chat?access_token=")
    identity = verify_client_token(result["token"], keys=[KEY], hub="chat")
    assert identity.user_id == "alice"
    assert identity.roles == ("webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.g1")
    assert identity.groups == ("g1", "g2")
    assert identity.claims == {}
    assert identity.expires_at is not None and 3500 < identity.expires_at - time.time() <= 3600


def test_python_sdk_anonymous_token_and_secondary_key():
    token = sdk_client(key=KEY2).get_client_access_token()["token"]
    identity = verify_client_token(token, keys=[KEY, KEY2], hub="chat")
    assert (identity.user_id, identity.roles, identity.groups) == (None, (), ())
    with pytest.raises(TokenError) as info:
        verify_client_token(token, keys=[KEY], hub="chat")
    assert info.value.code == "InvalidSignature"
    assert "does not match any configured access key" in str(info.value)


def test_python_sdk_token_is_bound_to_its_hub():
    token = sdk_client(hub="chat").get_client_access_token(user_id="u")["token"]
    err = expect("InvalidAudience", token, hub="other", now=None)
    assert "/client/hubs/other" in str(err)
    assert verify(token, hub="CHAT", now=None).user_id == "u"  # hub compared case-insensitively


def test_python_sdk_socketio_token_needs_the_socketio_prefix():
    token = sdk_client().get_client_access_token(client_protocol="SocketIO")["token"]
    assert verify(token, now=None, client_path_prefixes=("/clients/socketio/hubs/",)).user_id is None
    expect("InvalidAudience", token, now=None)


def test_python_sdk_token_for_a_hub_with_punctuation():
    hub = "Hub_1`,.[x]"
    result = sdk_client(hub=hub).get_client_access_token(user_id="u")
    assert verify(result["token"], hub=hub, now=None).user_id == "u"
    # our own client_url percent-encodes the path; the server decodes it back to the hub
    url = client_url(ENDPOINT, hub, result["token"])
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    assert path == "/client/hubs/" + hub


def test_python_sdk_https_endpoint_with_trailing_slash():
    client = sdk_client(endpoint="https://Fabric.Example:8443/")
    token = client.get_client_access_token()["token"]
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "https://fabric.example:8443/client/hubs/chat"
    assert verify(token, now=None).user_id is None


def test_minted_token_matches_the_python_sdk_claims():
    ours = jwt.decode(
        mint_client_token(key=KEY, endpoint="HTTP://Host:8080/", hub="chat", user_id="u", roles=["r"], groups=["g"], now=NOW),
        KEY,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
    )
    assert ours == {
        "aud": "http://host:8080/client/hubs/chat",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
        "sub": "u",
        "role": ["r"],
        "webpubsub.group": ["g"],
    }
    sdk = jwt.decode(
        sdk_client(endpoint="HTTP://Host:8080/").get_client_access_token(user_id="u", roles=["r"], groups=["g"])["token"],
        KEY,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
    )
    assert set(sdk) == set(ours) and sdk["aud"] == ours["aud"]


@pytest.mark.parametrize("client_type", ["default", "MQTT", "socketio"])
def test_mint_and_verify_round_trip(client_type):
    token = mint_client_token(key=KEY, endpoint=ENDPOINT, hub="chat", user_id="u", ttl_seconds=60, client_type=client_type, now=NOW)
    prefix = {"default": "/client/hubs/", "mqtt": "/clients/mqtt/hubs/", "socketio": "/clients/socketio/hubs/"}
    identity = verify(token, client_path_prefixes=(prefix[client_type.lower()],))
    assert identity.user_id == "u" and identity.expires_at == NOW + 60
    url = client_url(ENDPOINT, "chat", token, client_type=client_type)
    assert url == f"ws://127.0.0.1:8080{prefix[client_type.lower()]}chat?access_token={token}"


def test_client_url_schemes():
    assert client_url("https://h:1/", "c", "t").startswith("wss://h:1/client/hubs/c?")
    assert client_url("HTTP://h:1", "c", "t").startswith("ws://h:1/client/hubs/c?")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint": "ws://h"},
        {"endpoint": "localhost:8080"},
        {"hub": "1chat"},
        {"hub": ""},
        {"ttl_seconds": 0},
        {"ttl_seconds": True},
        {"client_type": "grpc"},
    ],
)
def test_mint_rejects_bad_arguments(kwargs):
    args = {"key": KEY, "endpoint": ENDPOINT, "hub": "chat", **kwargs}
    with pytest.raises(ValueError):
        mint_client_token(**args)


def test_mint_rejects_a_string_where_a_list_belongs():
    with pytest.raises(TypeError):
        mint_client_token(key=KEY, endpoint=ENDPOINT, hub="chat", roles="webpubsub.sendToGroup")


# ---------------------------------------------------------------------- other token producers


def test_js_style_audience_and_list_roles():
    # @azure/web-pubsub: new URL(endpoint).toString() + "client/hubs/" + hub, with iat/exp
    identity = verify(claims_token(good_claims(aud="http://127.0.0.1:8080/client/hubs/chat", sub="u", role=["a", "b"])))
    assert identity.roles == ("a", "b")


def test_dotnet_style_token_with_nbf():
    identity = verify(claims_token(good_claims(nbf=int(NOW) - 5, sub="u")))
    assert identity.user_id == "u"


@pytest.mark.parametrize(
    "aud",
    [
        "http://127.0.0.1:8080/client/hubs/chat",
        "ws://127.0.0.1:8080/client/hubs/chat",
        "wss://proxy.example/client/hubs/chat/",
        "https://OTHER-host:443/CLIENT/HUBS/Chat",
        "http://h/client/hubs/%63hat",
        "http://h/client/hubs/chat?x=1#frag",
        "/client/hubs/chat",
    ],
)
def test_audience_path_is_compared_leniently(aud):
    assert verify(claims_token(good_claims(aud=aud))).expires_at == NOW + 3600


def test_audience_list_accepts_any_matching_entry():
    verify(claims_token(good_claims(aud=["http://x/api/hubs/chat", "http://x/client/hubs/chat"])))


@pytest.mark.parametrize(
    "aud",
    [
        "http://127.0.0.1:8080/client/hubs/chat2",
        "http://127.0.0.1:8080/client/hubs/cha",
        "http://127.0.0.1:8080/client/hubs",
        "http://127.0.0.1:8080/api/hubs/chat",
        "http://127.0.0.1:8080/x/client/hubs/chat",
        "http://127.0.0.1:8080/clients/socketio/hubs/chat",
        "client/hubs/chat",
        "chat",
        "",
        "http://[::1/client/hubs/chat",
    ],
)
def test_audience_mismatch(aud):
    err = expect("InvalidAudience", claims_token(good_claims(aud=aud)))
    assert "does not match /client/hubs/chat" in str(err)


@pytest.mark.parametrize("aud", [None, 5, [], [1], {"a": 1}])
def test_audience_of_the_wrong_type(aud):
    claims = good_claims()
    if aud is None:
        del claims["aud"]
        err = expect("InvalidAudience", claims_token(claims))
        assert "no 'aud' claim" in str(err)
    else:
        claims["aud"] = aud
        expect("InvalidAudience", claims_token(claims))


def test_expired_and_leeway():
    token = claims_token(good_claims(exp=int(NOW)))
    verify(token, now=NOW + 29)  # inside the 30 s clock-skew allowance
    err = expect("TokenExpired", token, now=NOW + 31)
    assert "token expired at 2023-11-14T22:13:20Z" in str(err)
    expect("TokenExpired", token, now=NOW + 1, leeway=0)


def test_not_before_in_the_future():
    token = claims_token(good_claims(nbf=int(NOW) + 100))
    err = expect("TokenNotYetValid", token)
    assert "not valid before" in str(err)
    verify(token, now=NOW + 71)


@pytest.mark.parametrize("exp", [None, "soon", True, 1e300 * 10, 2**60, [1]])
def test_exp_is_required_and_numeric(exp):
    claims = good_claims()
    if exp is None:
        del claims["exp"]
    else:
        claims["exp"] = exp
    err = expect("InvalidToken", claims_token(claims) if exp != 1e300 * 10 else raw_token({"alg": "HS256"}, json.dumps(claims).encode()))
    assert "exp" in str(err)


def test_nan_and_infinity_are_rejected():
    body = json.dumps(good_claims()).replace(str(int(NOW) + 3600), "Infinity").encode()
    expect("InvalidToken", raw_token({"alg": "HS256", "typ": "JWT"}, body))


def test_roles_and_groups_accept_a_single_string():
    identity = verify(claims_token(good_claims(role="webpubsub.sendToGroup", **{"webpubsub.group": "g"})))
    assert identity.roles == ("webpubsub.sendToGroup",) and identity.groups == ("g",)


def test_roles_and_groups_are_deduplicated_in_order():
    identity = verify(claims_token(good_claims(role=["b", "a", "b", ""], **{"webpubsub.group": ["y", "x", "y"]})))
    assert identity.roles == ("b", "a") and identity.groups == ("y", "x")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 5},
        {"sub": ["a", "b"]},
        {"role": 3},
        {"role": ["a", 1]},
        {"webpubsub.group": {"g": 1}},
        {"webpubsub.group": ["ok", "   "]},
        {"webpubsub.group": ["x" * 1025]},
    ],
)
def test_claims_of_the_wrong_shape(claims):
    err = expect("InvalidToken", claims_token(good_claims(**claims)))
    assert repr(next(iter(claims))) in str(err)


def test_custom_claims_are_lists_of_strings_and_standard_claims_are_not_custom():
    token = claims_token(
        good_claims(
            sub="u",
            role=["r"],
            jti="id",
            iss="me",
            nbf=int(NOW),
            **{"webpubsub.group": ["g"]},
            tenant="contoso",
            levels=[1, "two", True, None, {"k": "v"}],
            flag=False,
            ratio=0.5,
        )
    )
    assert verify(token).claims == {
        "tenant": ["contoso"],
        "levels": ["1", "two", "true", '{"k":"v"}'],
        "flag": ["false"],
        "ratio": ["0.5"],
    }


def test_empty_sub_is_anonymous():
    assert verify(claims_token(good_claims(sub=""))).user_id is None


# ------------------------------------------------------------------------- hostile tokens


@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing_token(token):
    err = expect("MissingToken", token)
    assert "access_token" in str(err)


def test_alg_none_is_rejected_even_without_a_signature():
    for alg in ("none", "None", "NONE"):
        err = expect("InvalidAlgorithm", raw_token({"alg": alg, "typ": "JWT"}, good_claims(), key=None))
        assert "HS256" in str(err)


@pytest.mark.parametrize("alg,digest", [("HS512", "sha512"), ("HS384", "sha384")])
def test_other_hmac_algorithms_are_rejected_with_the_right_key(alg, digest):
    expect("InvalidAlgorithm", raw_token({"alg": alg, "typ": "JWT"}, good_claims(), alg=digest))


@pytest.mark.parametrize("header", [{"typ": "JWT"}, {"alg": ["HS256"]}, {"alg": "RS256"}, {"alg": ""}])
def test_missing_or_odd_alg_header(header):
    expect("InvalidAlgorithm", raw_token(header, good_claims()))


def test_wrong_key():
    expect("InvalidSignature", claims_token(good_claims(), key="not-the-key-" + "x" * 32))


def test_tampered_payload():
    header, _payload, sig = claims_token(good_claims(sub="alice")).split(".")
    forged = b64(json.dumps(good_claims(sub="admin")).encode())
    expect("InvalidSignature", f"{header}.{forged}.{sig}")


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.###",
        "eyJhbGciOiJIUzI1NiJ9..sig",
        "e30.e30.",  # {} header: no alg
        "bm90IGpzb24.e30.sig",  # header is not JSON
        "WzFd.e30.sig",  # header is a JSON array
        "Zm9v\u00e9.e30.sig",
    ],
)
def test_malformed_tokens(token):
    with pytest.raises(TokenError) as info:
        verify(token)
    assert info.value.code in {"InvalidToken", "InvalidAlgorithm"}


@pytest.mark.parametrize("payload", [b"not json", b"[1,2]", b'"str"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_signed_payload_that_is_not_a_json_object(payload):
    expect("InvalidToken", raw_token({"alg": "HS256", "typ": "JWT"}, payload))


def test_oversized_token():
    err = expect("InvalidToken", "a" * (MAX_TOKEN_CHARS + 1))
    assert "characters long" in str(err)


def test_no_keys_is_a_programming_error():
    with pytest.raises(ValueError):
        verify(claims_token(good_claims()), keys=[])
    with pytest.raises(TypeError):
        verify(claims_token(good_claims()), keys=KEY)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_garbage_text_only_ever_raises_token_error(text):
    with pytest.raises(TokenError):
        verify_client_token(text, keys=[KEY], hub="chat")
    with pytest.raises(TokenError):
        verify_rest_token(text, keys=[KEY], request_path="/api/hubs/chat/:send")
    with pytest.raises(TokenError):
        verify_rest_token("Bearer " + text, keys=[KEY], request_path="/api/hubs/chat/:send")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_claim_names = st.sampled_from(["aud", "exp", "nbf", "iat", "sub", "role", "webpubsub.group", "jti", "x"]) | st.text(max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_claim_names, _json, max_size=8), st.dictionaries(st.text(max_size=5), _json, max_size=3))
def test_correctly_signed_arbitrary_claims_verify_or_raise_token_error(claims, header):
    token = raw_token({**header, "alg": "HS256"}, json.dumps(claims).encode())
    try:
        identity = verify(token)
    except TokenError as err:
        assert err.code in {"InvalidToken", "InvalidAudience", "TokenExpired", "TokenNotYetValid"}
    else:
        assert all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in identity.claims.values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=40))
def test_random_segments_only_ever_raise_token_error(header, payload, sig):
    with pytest.raises(TokenError):
        verify(f"{b64(header)}.{b64(payload)}.{b64(sig)}")


# -------------------------------------------------------------------------------------- REST


class _Captured(Exception):
    pass


class CapturingTransport(HttpTransport):
    """An azure-core transport that records each request and fails it (no network)."""

    def __init__(self) -> None:
        self.requests = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def open(self):
        return None

    def close(self):
        return None

    def send(self, request, **kwargs):
        self.requests.append(request)
        raise _Captured()


def sdk_rest_request(call) -> tuple[str, str]:
    """(Authorization header, request target) of one SDK REST call, captured offline."""
    transport = CapturingTransport()
    client = sdk_client(transport=transport)
    with pytest.raises(_Captured):
        call(client)
    request = transport.requests[-1]
    split = urllib.parse.urlsplit(request.url)
    return request.headers["Authorization"], split.path + "?" + split.query


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.send_to_all({"hello": 1}, filter="userId eq 'u1'", excluded=["c1", "c2"]),
        lambda c: c.send_to_group("group with space", "text", content_type="text/plain"),
        lambda c: c.add_user_to_group(group="g/1", user_id="user%1"),
        lambda c: c.close_all_connections(reason="bye"),
    ],
    ids=["send_to_all", "send_to_group", "add_user_to_group", "close_all"],
)
def test_python_sdk_rest_tokens_verify(call):
    authorization, target = sdk_rest_request(call)
    claims = verify_rest_token(authorization, keys=[KEY2, KEY], request_path=target)
    assert urllib.parse.urlsplit(claims["aud"]).path == urllib.parse.urlsplit(target).path
    with pytest.raises(TokenError) as info:
        verify_rest_token(authorization, keys=[KEY], request_path="/api/hubs/other/:send")
    assert info.value.code == "InvalidAudience"
    assert "does not match the request path '/api/hubs/other/:send'" in str(info.value)


def test_python_sdk_rest_token_audience_is_the_full_url():
    authorization, target = sdk_rest_request(lambda c: c.send_to_all({"a": 1}, excluded=["c1"]))
    aud = jwt.decode(authorization.split()[1], options={"verify_signature": False})["aud"]
    assert aud == "http://127.0.0.1:8080" + target
    assert "api-version=" in aud


def rest(token: str, path: str = "/api/hubs/chat/:send", **kwargs):
    kwargs.setdefault("keys", [KEY])
    kwargs.setdefault("now", NOW)
    return verify_rest_token(token, request_path=path, **kwargs)


def rest_error(code: str, authorization: str | None, path: str = "/api/hubs/chat/:send", **kwargs) -> TokenError:
    with pytest.raises(TokenError) as info:
        rest(authorization, path, **kwargs)
    assert info.value.code == code, str(info.value)
    return info.value


def test_rest_scheme_is_case_insensitive_and_query_and_slash_are_ignored():
    token = mint_rest_token(key=KEY, url="https://host/api/hubs/Chat/:send/?api-version=2024-12-01", now=NOW)
    assert rest("bearer " + token)["aud"].startswith("https://host/")
    assert rest("BEARER   " + token, "/api/hubs/chat/%3Asend?api-version=2021-10-01")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   "])
def test_rest_missing_token(header):
    rest_error("MissingToken", header)


def test_rest_other_scheme():
    err = rest_error("InvalidToken", "Basic dXNlcjpwYXNz")
    assert "Bearer" in str(err)


def test_rest_expiry_and_nbf():
    token = mint_rest_token(key=KEY, url="http://h/api/hubs/chat/:send", ttl_seconds=60, now=NOW)
    rest("Bearer " + token, now=NOW + 89)
    rest_error("TokenExpired", "Bearer " + token, now=NOW + 91)
    no_exp = claims_token({"aud": "http://h/api/hubs/chat/:send"})
    rest_error("InvalidToken", "Bearer " + no_exp)
    future = claims_token({"aud": "http://h/api/hubs/chat/:send", "exp": NOW + 600, "nbf": NOW + 300})
    rest_error("TokenNotYetValid", "Bearer " + future)


def test_rest_wrong_key_and_algorithm():
    token = mint_rest_token(key="o", url="http://h/api/hubs/chat/:send", now=NOW)
    rest_error("InvalidSignature", "Bearer " + token)
    hs512 = raw_token({"alg": "HS512"}, {"aud": "http://h/api/hubs/chat/:send", "exp": NOW + 60}, alg="sha512")
    rest_error("InvalidAlgorithm", "Bearer " + hs512)


def test_rest_client_token_is_not_a_rest_token():
    token = mint_client_token(key=KEY, endpoint=ENDPOINT, hub="chat", now=NOW)
    rest_error("InvalidAudience", "Bearer " + token)


# ------------------------------------------------------------------- connection strings etc.


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8080", "http://localhost:8080/", "https://fabric.example", "http://[::1]:9000"]
)
def test_connection_string_round_trips_through_the_sdk_parser(endpoint):
    text = connection_string(endpoint, KEY)
    assert "Port=" not in text and text.endswith(";Version=1.0;") and text.startswith("Endpoint=")
    parsed = _parse_connection_string(text)
    assert parsed == {"endpoint": endpoint.rstrip("/"), "accesskey": KEY}
    client = WebPubSubServiceClient.from_connection_string(text, hub="chat")
    assert client._config.endpoint == endpoint.rstrip("/")
    base = client.get_client_access_token()["baseUrl"]
    assert base == "ws" + endpoint.rstrip("/")[4:] + "/client/hubs/chat"
    assert parse_connection_string(text) == (endpoint.rstrip("/"), KEY)


def test_parse_connection_string_applies_port_like_the_js_sdk():
    assert parse_connection_string("endpoint=http://h;port=81;accesskey=k=v;") == ("http://h:81", "k=v")
    with pytest.raises(ValueError):
        parse_connection_string("Endpoint=http://h")
    with pytest.raises(ValueError):
        parse_connection_string("Endpoint=http://h;junk;AccessKey=k")


@pytest.mark.parametrize("endpoint,key", [("ftp://h", "k"), ("http://h", ""), ("http://h", "a;b"), ("http://h;x", "k")])
def test_connection_string_rejects_what_would_not_parse(endpoint, key):
    with pytest.raises(ValueError):
        connection_string(endpoint, key)


def test_endpoint_for():
    assert endpoint_for("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert endpoint_for("::", 1) == "http://[::1]:1"
    assert endpoint_for("::1", 1) == "http://[::1]:1"
    assert endpoint_for("example.org", 443, scheme="https") == "https://example.org:443"


def test_generated_keys_are_fresh_and_connection_string_safe():
    keys = {generate_access_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) >= 43 and ";" not in key and "=" not in key
        connection_string(ENDPOINT, key)


@pytest.mark.parametrize("name", ["a", "Chat", "hub_1", "h`,.[]", "a" * 128])
def test_valid_hub_names(name):
    assert is_valid_hub_name(name)


@pytest.mark.parametrize("name", ["", "1a", "_a", "a-b", "a b", "a/b", "a" * 129, "é", None, 5])
def test_invalid_hub_names(name):
    assert not is_valid_hub_name(name)


def test_group_names():
    assert is_valid_group_name("g") and is_valid_group_name(" g ") and is_valid_group_name("x" * 1024)
    for bad in ("", " ", "\t ", "x" * 1025, "a\nb", None):
        assert not is_valid_group_name(bad)

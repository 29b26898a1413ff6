"""The fabric verifies HS256 tokens without PyJWT's generic decode path (fabric.core.auth
``_decode_verified``); it must give PyJWT's answers. Each token here, valid or mangled, is
judged by both: the same claims when accepted, and when refused the same verdict (the
algorithm, the signature, or the token's form)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.core import auth
from fabric.core.auth import TokenError

KEY = "primary-key-0123456789-0123456789-0123456789"
KEY2 = "secondary-key-0123456789-0123456789-012345678"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header_segment: str, payload_segment: str, key: str = KEY) -> str:
    sig = hmac.new(key.encode(), f"{header_segment}.{payload_segment}".encode(), hashlib.sha256).digest()
    return f"{header_segment}.{payload_segment}.{b64(sig)}"


def pyjwt_verdict(token: str, keys: list[str]):
    """What the previous implementation (PyJWT's get_unverified_header + decode_complete,
    same key handling) answered: ("ok", claims) or ("error", code)."""
    jws = auth._JWS
    try:
        header = jws.get_unverified_header(token)
    except jwt.PyJWTError:
        return "error", "InvalidToken"
    if header.get("alg") != "HS256":
        return "error", "InvalidAlgorithm"
    for key in keys:
        try:
            payload = jws.decode_complete(token, key=key, algorithms=["HS256"])["payload"]
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            return "error", "InvalidToken"
        try:
            claims = json.loads(payload, parse_constant=auth._reject_constant)
        except (ValueError, RecursionError):
            return "error", "InvalidToken"
        if not isinstance(claims, dict):
            return "error", "InvalidToken"
        return "ok", claims
    return "error", "InvalidSignature"


def ours(token: str, keys: list[str]):
    try:
        return "ok", auth._decode_verified(token, keys)
    except TokenError as err:
        return "error", err.code


def both(token: str, keys: list[str] | None = None) -> None:
    keys = keys or [KEY]
    if auth._TOKEN_SHAPE_RE.fullmatch(token) is None or len(token) > auth.MAX_TOKEN_CHARS:
        assert ours(token, keys) == ("error", "InvalidToken")  # refused before either engine
        return
    assert ours(token, keys) == pyjwt_verdict(token, keys), token


GOOD_HEADER = b64(b'{"alg":"HS256","typ":"JWT"}')
GOOD_PAYLOAD = b64(b'{"aud":"http://h/client/hubs/chat","exp":1}')


@pytest.mark.parametrize("token", [
    sign(GOOD_HEADER, GOOD_PAYLOAD),
    sign(GOOD_HEADER, GOOD_PAYLOAD, KEY2),
    sign(GOOD_HEADER, GOOD_PAYLOAD, "wrong"),
    sign(GOOD_HEADER + "=", GOOD_PAYLOAD),
    sign(GOOD_HEADER, GOOD_PAYLOAD + "=="),
    sign(GOOD_HEADER, GOOD_PAYLOAD + "==="),
    sign(GOOD_HEADER, GOOD_PAYLOAD)[:-1] + "B",  # non-canonical signature bits
    sign(b64(b'{"alg":"HS256","kid":1}'), GOOD_PAYLOAD),
    sign(b64(b'{"alg":"HS256","kid":"k"}'), GOOD_PAYLOAD),
    sign(b64(b'{"alg":"HS256","crit":[]}'), GOOD_PAYLOAD),
    sign(b64(b'{"alg":"HS256","crit":["exp"]}'), GOOD_PAYLOAD),
    sign(b64(b'{"alg":"HS256","crit":["b64"]}'), GOOD_PAYLOAD),
    sign(b64(b'{"alg":"HS256","crit":["b64"],"b64":false}'), ""),
    sign(b64(b'{"alg":"HS256","b64":false}'), ""),
    sign(b64(b'{"alg":"HS256","b64":false}'), GOOD_PAYLOAD),
    sign(b64(b'{"alg":"HS512","b64":false}'), ""),
    sign(b64(b'{"alg":"HS256"}'), b64(b"[1]")),
    sign(b64(b'{"alg":"HS256"}'), b64(b'{"a":NaN}')),
    sign(b64(b'{"alg":"HS256"}'), b64(b"\xff")),
    sign(b64(b"[]"), GOOD_PAYLOAD),
    sign(b64(b"\xff"), GOOD_PAYLOAD),
    sign(b64('{"alg":"HS256"}'.encode("utf-16")), GOOD_PAYLOAD),
    sign(GOOD_HEADER, "A"),
    sign(GOOD_HEADER, "AB=C"),
    GOOD_HEADER + "." + GOOD_PAYLOAD + ".",
])
def test_same_verdict_on_chosen_tokens(token):
    both(token, [KEY, KEY2])


_segment_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=60)
_headers = st.dictionaries(
    st.sampled_from(["alg", "typ", "kid", "crit", "b64", "x"]),
    st.sampled_from(["HS256", "HS512", "none", "", 1, None, False, True, ["b64"], [], ["x"], "JWT"]),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(header=_headers, payload=st.binary(max_size=80), mutate=st.integers(0, 6), junk=_segment_text)
def test_same_verdict_on_mangled_tokens(header, payload, mutate, junk):
    token = sign(b64(json.dumps(header).encode()), b64(payload))
    h, p, s = token.split(".")
    token = [token, f"{junk}.{p}.{s}", f"{h}.{junk}.{s}", f"{h}.{p}.{junk}", f"{h}{junk}.{p}.{s}",
             f"{h}.{p}{junk}.{s}", f"{h}.{p}.{s}{junk}"][mutate]
    both(token, [KEY, KEY2])

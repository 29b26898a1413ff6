"""Access tokens (JWT) and connection strings.

Rules this module keeps:
- Sans-IO: pure functions over strings and numbers; never imports trio, never reads the clock
  except through ``now=None`` (the caller may pass ``now`` for determinism).
- Tokens are HS256 only. The HMAC key is the UTF-8 bytes of the access key *string* (not
  base64-decoded), as every Microsoft SDK does. ``alg: none`` and every other algorithm are
  rejected before any key is tried. Every configured key is tried (primary, secondary, ...).
- Every failure on a hostile token is a :class:`TokenError` (HTTP 401) with a specific ``code``
  and a human message; nothing else escapes from the ``verify_*`` functions for any ``str``
  input. Values from a token that appear in a message are truncated.
- ``exp`` is required (all SDKs set it; a token without expiry would be valid forever) and is
  checked with ``leeway`` seconds of clock skew; ``nbf`` is honoured when present; ``iat`` is
  ignored. ``aud`` is required and its *path* is compared (percent-decoded, trailing ``/``
  stripped, ASCII case-insensitive). Its scheme, host and port are compared only when the
  operator names the public endpoint (``public_endpoint=``): without it, clients and reverse
  proxies legitimately reach the server through another host or port than the token names,
  and the server cannot know which one is its own.
- Roles and their wildcard patterns are ``fabric.core.permissions``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import jwt
import msgspec
from jwt.algorithms import HMACAlgorithm

from specs.names import is_valid_group_name, is_valid_hub_name

__all__ = [
    "CLIENT_PATHS",
    "STANDARD_CLAIMS",
    "ClientIdentity",
    "TokenError",
    "client_url",
    "connection_string",
    "endpoint_for",
    "generate_access_key",
    "mint_client_token",
    "mint_rest_token",
    "parse_connection_string",
    "verify_client_token",
    "verify_rest_token",
]

#: Path prefix of the client WebSocket endpoint per client type (as the SDKs build them).
CLIENT_PATHS: Mapping[str, str] = {
    "default": "/client/hubs/",
    "mqtt": "/clients/mqtt/hubs/",
    "socketio": "/clients/socketio/hubs/",
}

#: Claims with a meaning of their own; every other claim is a custom claim.
STANDARD_CLAIMS: frozenset[str] = frozenset(
    {"aud", "exp", "iat", "nbf", "sub", "role", "webpubsub.group", "jti", "iss"}
)

#: Longest token accepted (characters). Bounds the work an unauthenticated peer can cause.
MAX_TOKEN_CHARS = 65536

_TOKEN_SHAPE_RE = re.compile(r"[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*")
# Largest magnitude accepted for exp/nbf: a NumericDate beyond 2**53 seconds is nonsense and
# would overflow float conversion.
_MAX_NUMERIC_DATE = 2**53


# --------------------------------------------------------------------------------------------
# Errors and results


class TokenError(Exception):
    """A token was missing or unacceptable. ``str()`` is a message fit for the client.

    ``code`` is one of ``MissingToken``, ``InvalidToken`` (malformed, or a claim of the wrong
    type), ``InvalidAlgorithm``, ``InvalidSignature``, ``TokenExpired``, ``TokenNotYetValid``,
    ``InvalidAudience``. ``status`` is the HTTP status to answer with (always 401).
    """

    status: int = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"TokenError({self.code!r}, {self.message!r})"


@attrs.frozen
class ClientIdentity:
    """Who a verified client token says the connection is, and what it may do."""

    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    #: Every custom (non-standard) claim, each value as a list of strings, as the upstream
    #: ``connect`` event carries them.
    claims: dict[str, list[str]] = attrs.field(eq=True, hash=False)
    #: ``exp`` as epoch seconds (always set by :func:`verify_client_token`, which requires it).
    expires_at: float | None


# --------------------------------------------------------------------------------------------
# The JWS engine: HS256 only, key = UTF-8 bytes of the access key, no key-shape heuristics.


class _AccessKeyHMAC(HMACAlgorithm):
    """HS256 whose key is exactly the UTF-8 bytes of the access key string.

    PyJWT's own ``prepare_key`` runs PEM/DER/JWK detection on every call (slow, and wrong for
    an access key) and warns about keys shorter than 32 bytes on every verification; an access
    key is the operator's choice, so we do neither.
    """

    def prepare_key(self, key: str | bytes) -> bytes:  # type: ignore[override]
        key_bytes = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if not key_bytes:
            raise jwt.InvalidKeyError("an access key must not be empty")
        return key_bytes

    def check_key_length(self, key: bytes) -> str | None:  # PyJWT >= 2.10
        return None


_JWS = jwt.PyJWS(algorithms=["HS256"])
_JWS.unregister_algorithm("HS256")
_JWS.register_algorithm("HS256", _AccessKeyHMAC(HMACAlgorithm.SHA256))


def _short(value: object, limit: int = 120) -> str:
    """repr() of a token-supplied value, truncated so hostile input cannot bloat messages."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a token")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: byte -> its 6-bit value (only the alphabet's bytes are ever looked up: the regex ran first)
_B64URL_VALUE = [0] * 256
for _i, _c in enumerate(_B64URL_ALPHABET):
    _B64URL_VALUE[_c] = _i
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_SUPPORTED_CRIT = frozenset({"b64"})


def _malformed(detail: str) -> TokenError:
    return TokenError("InvalidToken", f"malformed token: {detail}")


def _segment(segment: str, name: str) -> bytes:
    """One base64url segment, as strictly as PyJWT reads it: at most two ``=`` of padding
    and only on a length that is a multiple of 4, nothing outside the alphabet, and the
    canonical encoding of what it decodes to (no stray trailing bits)."""
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    if (padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1
            or _B64URL.fullmatch(stripped) is None):
        raise _malformed(f"Invalid {name} padding")
    raw = stripped.encode("ascii")
    # Canonical: the bits of the last character beyond the data are zero (what encoding
    # the decoded bytes again and comparing would check, without the second pass).
    tail = len(raw) % 4
    if tail and _B64URL_VALUE[raw[-1]] & (0x0F if tail == 2 else 0x03):
        raise _malformed(f"Invalid {name} padding")
    try:
        return binascii.a2b_base64(raw.translate(_URL_TO_STD) + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise _malformed(f"Invalid {name} padding") from None


def _check_header(header: dict[str, Any]) -> None:
    """PyJWT's header rules: ``kid`` a string; ``crit`` a non-empty list of supported names
    present in the header."""
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError("InvalidToken", "Key ID header parameter must be a string")
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or not crit:
            raise TokenError("InvalidToken", "Invalid 'crit' header: must be a non-empty list")
        for ext in crit:
            if not isinstance(ext, str):
                raise TokenError("InvalidToken", "Invalid 'crit' header: values must be strings")
            if ext not in _SUPPORTED_CRIT:
                raise TokenError("InvalidToken", f"Unsupported critical extension: {_short(ext, 40)}")
            if ext not in header:
                raise TokenError("InvalidToken", f"Critical extension '{ext}' is missing from headers")


#: Header segments that passed every header rule (a pure function of the text; a client's
#: tokens all carry the same one, e.g. {"alg":"HS256","typ":"JWT"}). Bounded: cleared
#: when full.
_GOOD_HEADERS: set[str] = set()
_GOOD_HEADERS_MAX = 64


def _check_header_segment(header_segment: str, payload_segment: str, signature_segment: str) -> None:
    """The header's rules, in PyJWT's order with the other segments' shape checks; remember
    a header that passes. Raises TokenError."""
    header_data = _segment(header_segment, "header")
    try:
        header = _json_loads(header_data, _JSON)
    except (ValueError, RecursionError) as exc:
        raise _malformed(f"Invalid header string: {_short(str(exc), 80)}") from None
    if not isinstance(header, dict):
        raise _malformed("Invalid header string: must be a json object")
    detached = header.get("b64", True) is False
    if detached:
        if payload_segment:
            raise _malformed("Payload segment must be empty when 'b64' is false.")
    else:
        _segment(payload_segment, "payload")
    _segment(signature_segment, "crypto")
    _check_header(header)
    alg = header.get("alg")
    if alg != "HS256":
        raise TokenError(
            "InvalidAlgorithm",
            f"token algorithm {_short(alg)} is not accepted; tokens must be signed with HS256",
        )
    if detached:  # RFC 7797 unencoded payloads are never what an SDK sends
        raise _malformed("a 'b64': false token needs a detached payload, which is not accepted")
    if len(_GOOD_HEADERS) >= _GOOD_HEADERS_MAX:
        _GOOD_HEADERS.clear()
    _GOOD_HEADERS.add(header_segment)


@functools.lru_cache(maxsize=16)
def _keyed_sha256(key: str | bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes with the key already absorbed (RFC 2104), so a
    token costs two copies and two updates rather than a key schedule (what
    ``hmac.digest`` redoes per call: 3.8 vs 1.2 us)."""
    key_bytes = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not key_bytes:
        raise _malformed("an access key must not be empty")
    if len(key_bytes) > 64:  # SHA-256's block size
        key_bytes = hashlib.sha256(key_bytes).digest()
    key_bytes = key_bytes.ljust(64, b"\0")
    return (hashlib.sha256(key_bytes.translate(_IPAD)), hashlib.sha256(key_bytes.translate(_OPAD)))


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _hmac_sha256(key: str | bytes, message: bytes) -> bytes:
    inner, outer = _keyed_sha256(key)
    inner = inner.copy()
    inner.update(message)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()


def _decode_verified(token: str, keys: Sequence[str]) -> dict[str, Any]:
    """Check shape, algorithm and signature; return the payload object. Raises TokenError.

    HS256 compact JWS decoded here rather than through PyJWT's generic ``decode_complete``
    (which costs about 45 µs per token: option merging, algorithm lookup, key preparation,
    header validation twice): split, three strict base64url segments, the header's rules,
    ``alg`` exactly ``HS256``, then one HMAC-SHA256 per configured key compared in constant
    time. The rules and their order are PyJWT's (tests/core/test_auth_tokens.py holds both
    to the same answers); minting still goes through PyJWT.
    """
    if isinstance(keys, str):
        raise TypeError("keys must be a sequence of access keys, not a single string")
    if not keys:
        raise ValueError("no access keys configured: cannot verify any token")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(
            "InvalidToken", f"token is {len(token)} characters long; at most {MAX_TOKEN_CHARS} are accepted"
        )
    if _TOKEN_SHAPE_RE.fullmatch(token) is None:
        raise TokenError(
            "InvalidToken",
            "malformed token: expected a JWT (three base64url segments separated by '.')",
        )
    header_segment, payload_segment, signature_segment = token.split(".")
    if header_segment not in _GOOD_HEADERS:
        _check_header_segment(header_segment, payload_segment, signature_segment)
    payload = _segment(payload_segment, "payload")
    signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
    digests = [_hmac_sha256(key, signing_input) for key in keys]
    # The usual token carries its signature in canonical base64url: compare that text (in
    # constant time) and skip decoding it; anything else takes the strict path, which
    # gives PyJWT's answer for a malformed segment.
    encoded = signature_segment.encode("ascii")
    if not any(hmac.compare_digest(base64.urlsafe_b64encode(d).rstrip(b"="), encoded) for d in digests):
        signature = _segment(signature_segment, "crypto")
        if not any(hmac.compare_digest(d, signature) for d in digests):
            raise TokenError("InvalidSignature", "token signature does not match any configured access key")
    try:
        # msgspec first (4x faster); whatever it refuses (a lone surrogate, NaN, a float out of
        # range, another encoding) gets the standard library's answer and error text.
        claims = _msgspec_json_decode(payload)
    except (msgspec.DecodeError, RecursionError):
        try:
            claims = _json_loads(payload, _CLAIMS_JSON)
        except (ValueError, RecursionError) as exc:
            raise TokenError("InvalidToken",
                             f"malformed token: payload is not valid JSON ({_short(str(exc), 80)})") from None
    if not isinstance(claims, dict):
        raise TokenError("InvalidToken", "malformed token: payload is not a JSON object")
    return claims


_JSON = json.JSONDecoder()
_msgspec_json_decode = msgspec.json.decode
_CLAIMS_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _json_loads(data: bytes, decoder: json.JSONDecoder) -> Any:
    """``json.loads(data, ...)`` with a decoder made once (``json.loads`` with an option
    builds a new one per call): the same encoding detection, the same errors."""
    return decoder.decode(data.decode(json.detect_encoding(data), "surrogatepass"))


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError("InvalidToken", f"claim {name!r} must be a number of seconds since the epoch, got {_short(value)}")
    if abs(value) > _MAX_NUMERIC_DATE:
        raise TokenError("InvalidToken", f"claim {name!r} is out of range: {_short(value)}")
    return float(value)


def _format_time(epoch: float) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{epoch:.0f} (epoch seconds)"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_times(claims: Mapping[str, Any], now: float | None, leeway: float) -> float:
    """Require ``exp``; check it and ``nbf`` against ``now`` with ``leeway``. Return exp."""
    current = time.time() if now is None else now
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise TokenError("InvalidToken", "token has no 'exp' claim; an expiry time is required")
    if exp + leeway <= current:
        raise TokenError(
            "TokenExpired",
            f"token expired at {_format_time(exp)} (now {_format_time(current)}, "
            f"clock-skew allowance {leeway:g}s)",
        )
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf - leeway > current:
        raise TokenError(
            "TokenNotYetValid",
            f"token is not valid before {_format_time(nbf)} (now {_format_time(current)}, "
            f"clock-skew allowance {leeway:g}s)",
        )
    return exp


def _normalise_path(path: str) -> str:
    return urllib.parse.unquote(path).rstrip("/").lower()


@functools.lru_cache(maxsize=256)
def _expected_audiences(prefixes: tuple[str, ...], hub: str) -> tuple[str, frozenset[str]]:
    """The text naming the audience paths a hub's tokens may carry, and their normalised
    forms (a pure function of its arguments, cached: every connection of a hub asks)."""
    expected = ["/" + (p.strip("/") + "/" + hub).lstrip("/") for p in prefixes]
    return " or ".join(expected), frozenset(_normalise_path(e) for e in expected)


@functools.lru_cache(maxsize=1024)
def _audience_path(aud: str) -> str | None:
    """The normalised path of an ``aud`` URL (scheme/host/port/query ignored), or None."""
    if "://" in aud:
        try:
            path = urllib.parse.urlsplit(aud).path
        except ValueError:
            return None
    elif aud.startswith("/"):
        path = aud.split("?", 1)[0].split("#", 1)[0]
    else:
        return None
    return _normalise_path(path)


def url_origin(url: str) -> tuple[bool, str, int] | None:
    """``(secure, host, port)`` of an absolute http(s)/ws(s) URL, or None. Hosts compare
    case-insensitively; default ports are filled in; ws is http and wss is https."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return None
    secure = scheme in ("https", "wss")
    return secure, parts.hostname.lower(), port if port is not None else (443 if secure else 80)


def _check_origin(audiences: list[str], origin: tuple[bool, str, int] | None, shown: str | None) -> None:
    """With a public endpoint configured, some ``aud`` must name it (scheme, host, port)."""
    if origin is None:
        return
    if not any(url_origin(a) == origin for a in audiences):
        raise TokenError("InvalidAudience",
                         f"audience {_short(audiences[0])} is not for this service's public endpoint {shown}")


def _audiences(claims: Mapping[str, Any], expected_text: str) -> list[str]:
    if "aud" not in claims:
        raise TokenError("InvalidAudience", f"token has no 'aud' claim; expected a URL whose path is {expected_text}")
    aud = claims["aud"]
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return aud
    raise TokenError("InvalidAudience", f"claim 'aud' must be a URL string, got {_short(aud)}")


def _string_list(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise TokenError("InvalidToken", f"claim {name!r} must be a string or a list of strings, got {_short(value)}")
    return tuple(dict.fromkeys(v for v in items if v))  # drop empties and duplicates, keep order


def _claim_strings(value: Any) -> list[str]:
    """One custom claim as the list of strings the upstream ``connect`` event carries."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, bool):
            out.append("true" if item else "false")
        else:  # numbers, nested objects and arrays: compact JSON text
            out.append(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
    return out


# --------------------------------------------------------------------------------------------
# Verification


def verify_client_token(
    token: str | None,
    *,
    keys: Sequence[str],
    hub: str,
    now: float | None = None,
    leeway: float = 30.0,
    client_path_prefixes: Sequence[str] = ("/client/hubs/",),
    public_endpoint: str | None = None,
) -> ClientIdentity:
    """Verify a client access token for ``hub`` and return the identity it carries.

    ``token`` is the ``access_token`` query value or the Bearer value of an Authorization
    header (None or empty: ``MissingToken``). ``aud`` must have a path equal to one of
    ``prefix + hub`` (e.g. ``/client/hubs/chat``; pass ``("/clients/socketio/hubs/",)`` for
    Socket.IO). With ``public_endpoint`` (``[server] public_endpoint``), the scheme, host and
    port of ``aud`` must name it too, so a token minted for another service sharing the key
    is refused. Raises :class:`TokenError`; ValueError only when ``keys`` is empty.
    """
    if token is None or not token.strip():
        raise TokenError(
            "MissingToken",
            "no access token: pass ?access_token=<JWT> or an 'Authorization: Bearer <JWT>' header",
        )
    claims = _decode_verified(token.strip(), keys)
    expires_at = _check_times(claims, now, leeway)

    expected_text, wanted = _expected_audiences(tuple(client_path_prefixes), hub)
    audiences = _audiences(claims, expected_text)
    if not any(_audience_path(a) in wanted for a in audiences):
        raise TokenError("InvalidAudience", f"audience {_short(audiences[0])} does not match {expected_text}")
    _check_origin(audiences, url_origin(public_endpoint) if public_endpoint else None, public_endpoint)

    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TokenError("InvalidToken", f"claim 'sub' (the user id) must be a single string, got {_short(sub)}")
    groups = _string_list(claims, "webpubsub.group")
    for group in groups:
        if not is_valid_group_name(group):
            raise TokenError(
                "InvalidToken",
                f"claim 'webpubsub.group' has an invalid group name {_short(group)} "
                "(1-1024 characters, not whitespace-only)",
            )
    return ClientIdentity(
        user_id=sub or None,
        roles=_string_list(claims, "role"),
        groups=groups,
        claims={k: _claim_strings(v) for k, v in claims.items() if k not in STANDARD_CLAIMS},
        expires_at=expires_at,
    )


def verify_rest_token(
    authorization: str | None,
    *,
    keys: Sequence[str],
    request_path: str,
    now: float | None = None,
    leeway: float = 30.0,
    public_endpoint: str | None = None,
) -> dict[str, Any]:
    """Verify the ``Authorization: Bearer <JWT>`` header of a REST request; return the claims.

    ``aud`` is the full request URL the SDK signed; only its path is compared with
    ``request_path`` (the request target as received; a query part is ignored), and with
    ``public_endpoint`` its scheme, host and port too. Raises :class:`TokenError`; ValueError
    only when ``keys`` is empty.
    """
    if authorization is None or not authorization.strip():
        raise TokenError("MissingToken", "missing Authorization header; expected 'Authorization: Bearer <JWT>'")
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenError("InvalidToken", f"unsupported Authorization scheme {_short(scheme, 40)}; expected Bearer")
    if not credentials.strip():
        raise TokenError("MissingToken", "the Authorization header has no token after 'Bearer'")
    claims = _decode_verified(credentials.strip(), keys)
    _check_times(claims, now, leeway)
    path = request_path.split("?", 1)[0]
    audiences = _audiences(claims, path)
    wanted = _normalise_path(path)
    if not any(_audience_path(a) == wanted for a in audiences):
        raise TokenError(
            "InvalidAudience", f"audience {_short(audiences[0])} does not match the request path {_short(path)}"
        )
    _check_origin(audiences, url_origin(public_endpoint) if public_endpoint else None, public_endpoint)
    return claims


# --------------------------------------------------------------------------------------------
# Minting, URLs and connection strings


def _check_endpoint(endpoint: str) -> str:
    lowered = endpoint.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        raise ValueError(f"endpoint {endpoint!r} must start with http:// or https://")
    return endpoint.rstrip("/")


def _client_path(client_type: str) -> str:
    try:
        return CLIENT_PATHS[client_type.lower()]
    except KeyError:
        raise ValueError(f"unknown client_type {client_type!r}; expected one of {', '.join(CLIENT_PATHS)}") from None


def _strings(name: str, values: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name} must contain only strings")
    return out


def _encode(claims: Mapping[str, Any], key: str) -> str:
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _JWS.encode(payload, key, algorithm="HS256", headers={"typ": "JWT"})


def mint_client_token(
    *,
    key: str,
    endpoint: str,
    hub: str,
    user_id: str | None = None,
    roles: Sequence[str] = (),
    groups: Sequence[str] = (),
    ttl_seconds: int = 3600,
    client_type: str = "default",
    now: float | None = None,
) -> str:
    """A client access token exactly as the Python SDK's ``get_client_access_token`` mints it.

    ``aud`` is ``endpoint.lower().rstrip("/") + "/client/hubs/" + hub`` (the path depends on
    ``client_type``: ``default``, ``mqtt`` or ``socketio``). Raises ValueError/TypeError on
    bad arguments.
    """
    base = _check_endpoint(endpoint).lower()
    if not is_valid_hub_name(hub):
        raise ValueError(f"invalid hub name {hub!r}")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be a positive integer, got {ttl_seconds!r}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": base + _client_path(client_type) + hub,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if user_id:
        claims["sub"] = user_id
    role_list = _strings("roles", roles)
    if role_list:
        claims["role"] = role_list
    group_list = _strings("groups", groups)
    if group_list:
        claims["webpubsub.group"] = group_list
    return _encode(claims, key)


def mint_rest_token(*, key: str, url: str, ttl_seconds: int = 60, now: float | None = None) -> str:
    """A REST bearer token as the service SDKs mint it: ``aud`` = the full request URL."""
    issued = int(time.time() if now is None else now)
    return _encode({"aud": url, "iat": issued, "exp": issued + ttl_seconds}, key)


def client_url(endpoint: str, hub: str, token: str, *, client_type: str = "default") -> str:
    """``ws(s)://host:port/client/hubs/{hub}?access_token=...`` for an http(s) endpoint."""
    base = _check_endpoint(endpoint)
    ws_base = "ws" + base[4:] if base[:5].lower() == "http:" else "wss" + base[5:]
    hub_part = urllib.parse.quote(hub, safe=",")
    return f"{ws_base}{_client_path(client_type)}{hub_part}?access_token={urllib.parse.quote(token, safe='')}"


def connection_string(endpoint: str, key: str) -> str:
    """``Endpoint=http://HOST:PORT;AccessKey=KEY;Version=1.0;`` (never a ``Port=`` part)."""
    base = _check_endpoint(endpoint)
    if ";" in base or not key or ";" in key:
        raise ValueError("neither the endpoint nor the access key may contain ';' (and the key must not be empty)")
    return f"Endpoint={base};AccessKey={key};Version=1.0;"


def parse_connection_string(value: str) -> tuple[str, str]:
    """``(endpoint, access_key)`` from a connection string, with the SDKs' rules (keys
    case-insensitive, each segment split at its first ``=``, ``Port=`` appended to the
    endpoint's authority). Raises ValueError."""
    parts: dict[str, str] = {}
    for segment in value.split(";"):
        if not segment.strip():
            continue
        name, sep, item = segment.partition("=")
        if not sep:
            raise ValueError(f"malformed connection string segment {segment!r}: expected key=value")
        parts.setdefault(name.strip().lower(), item.strip())
    if "endpoint" not in parts or "accesskey" not in parts:
        raise ValueError("a connection string needs both Endpoint= and AccessKey=")
    endpoint = _check_endpoint(parts["endpoint"])
    if "port" in parts:
        split = urllib.parse.urlsplit(endpoint)
        host = split.hostname or ""
        host = f"[{host}]" if ":" in host else host
        endpoint = urllib.parse.urlunsplit((split.scheme, f"{host}:{int(parts['port'])}", split.path, "", ""))
    return endpoint, parts["accesskey"]


def endpoint_for(host: str, port: int, *, scheme: str = "http") -> str:
    """The endpoint URL clients should use for a listener on ``host:port``.

    Wildcard listen addresses map to loopback (``0.0.0.0``/empty -> ``127.0.0.1``,
    ``::`` -> ``[::1]``); IPv6 literals get brackets.
    """
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def generate_access_key() -> str:
    """A fresh random access key (256 bits, URL- and shell-safe characters).

    Never starts with ``-``, so it can follow ``--access-key`` on a command line.
    """
    while True:
        key = secrets.token_urlsafe(32)
        if not key.startswith("-"):
            return key

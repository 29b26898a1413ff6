"""Where the endpoint is and how to sign for it: connection strings, client and REST tokens.

Rules this module keeps:
- Connection strings are parsed as Microsoft's SDKs parse them: ``;``-separated ``key=value``
  parts, keys case-insensitive, ``Version`` ignored, an optional ``Port`` applied to the
  endpoint (Azure/azure-sdk-for-js ``parseConnectionString``; Azure/azure-sdk-for-python
  ``azure-messaging-webpubsubservice`` ``_parse_connection_string``).
- Tokens are HS256 JWTs keyed with the UTF-8 bytes of the access key. A client token's
  ``aud`` is ``<endpoint lower-cased>/client/hubs/<hub>`` and carries ``sub``, ``role`` (an
  array) and ``webpubsub.group`` (an array) as the Python service SDK mints them; a REST
  token's ``aud`` is the full request URL, query included, as every service SDK sends it
  (Microsoft docs: "reference-rest-api-data-plane", "JWT ... aud: the request URL").
- Pure functions; a bad connection string is a ``ConnectionStringError`` whose message is one
  line a person can act on.
"""

from __future__ import annotations

import time
import urllib.parse
import warnings
from dataclasses import dataclass

import jwt

#: The data-plane api-version the SDKs send today.
API_VERSION = "2024-12-01"
#: Lifetime of the tokens the checker mints (a run is far shorter).
CLIENT_TOKEN_SECONDS = 3600
REST_TOKEN_SECONDS = 300


class ConnectionStringError(ValueError):
    """The connection string cannot be used (one line, for people)."""


@dataclass(frozen=True)
class Endpoint:
    """A parsed connection string.

    Attributes:
        endpoint: ``http(s)://host[:port]`` without a trailing slash.
        access_key: the signing key.
    """

    endpoint: str
    access_key: str

    @property
    def secure(self) -> bool:
        return self.endpoint.startswith("https://")

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.endpoint)
        return parts.port or (443 if self.secure else 80)

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        host = self.host
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def ws_base(self) -> str:
        return ("wss://" if self.secure else "ws://") + self.host_header


def parse_connection_string(text: str) -> Endpoint:
    """``Endpoint=...;AccessKey=...;Version=1.0;`` -> ``Endpoint``.

    Raises:
        ConnectionStringError: no endpoint, no key, a scheme other than http(s), a bad port.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConnectionStringError("the connection string is empty")
    parts: dict[str, str] = {}
    for segment in text.split(";"):
        segment = segment.strip()
        if not segment:
            continue
        key, sep, value = segment.partition("=")
        if not sep:
            raise ConnectionStringError(f"connection string part {segment[:40]!r} is not key=value")
        parts[key.strip().lower()] = value.strip()
    endpoint = parts.get("endpoint")
    key = parts.get("accesskey")
    if not endpoint:
        raise ConnectionStringError("the connection string has no Endpoint=")
    if not key:
        raise ConnectionStringError("the connection string has no AccessKey=")
    if not endpoint.startswith(("http://", "https://")):
        if "://" in endpoint:
            raise ConnectionStringError(f"Endpoint must be http:// or https://, got {endpoint[:60]!r}")
        endpoint = "https://" + endpoint
    endpoint = endpoint.rstrip("/")
    split = urllib.parse.urlsplit(endpoint)
    try:
        inline_port = split.port
    except ValueError:
        raise ConnectionStringError(f"Endpoint {endpoint[:60]!r} has an invalid port") from None
    if not split.hostname:
        raise ConnectionStringError(f"Endpoint {endpoint[:60]!r} has no host")
    if split.path not in ("", "/"):
        raise ConnectionStringError(f"Endpoint {endpoint[:60]!r} must not have a path")
    port = parts.get("port")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConnectionStringError(f"Port={port[:20]!r} is not a port number")
        host = split.hostname if ":" not in split.hostname else f"[{split.hostname}]"
        endpoint = f"{split.scheme}://{host}:{int(port)}"
    elif inline_port is not None and not 0 < inline_port < 65536:
        raise ConnectionStringError(f"Endpoint {endpoint[:60]!r} has an invalid port")
    return Endpoint(endpoint=endpoint, access_key=key)


def client_audience(endpoint: Endpoint, hub: str) -> str:
    return endpoint.endpoint.lower().rstrip("/") + "/client/hubs/" + hub


def mint_client_token(
    endpoint: Endpoint,
    hub: str,
    *,
    user_id: str | None = None,
    roles: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
    ttl: int = CLIENT_TOKEN_SECONDS,
    key: str | None = None,
    audience: str | None = None,
) -> str:
    """A client access token as ``get_client_access_token`` mints it."""
    now = int(time.time())
    claims: dict[str, object] = {
        "aud": audience if audience is not None else client_audience(endpoint, hub),
        "iat": now,
        "exp": now + ttl,
    }
    if user_id is not None:
        claims["sub"] = user_id
    if roles:
        claims["role"] = list(roles)
    if groups:
        claims["webpubsub.group"] = list(groups)
    return _sign(claims, key if key is not None else endpoint.access_key)


def _sign(claims: dict, key: str) -> str:
    with warnings.catch_warnings():  # short keys are the endpoint owner's choice, not ours to warn about
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm="HS256")


def client_path(hub: str, token: str | None, extra: dict[str, str] | None = None) -> str:
    """``/client/hubs/<hub>?access_token=...`` (plus ``extra`` query parameters)."""
    query: list[tuple[str, str]] = []
    if token is not None:
        query.append(("access_token", token))
    for k, v in (extra or {}).items():
        query.append((k, v))
    path = "/client/hubs/" + urllib.parse.quote(hub, safe="")
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def rest_url(endpoint: Endpoint, path: str, query: list[tuple[str, str]] | None = None) -> str:
    """The full URL of a data-plane call; ``path`` is already percent-encoded."""
    params = list(query or ())
    params.append(("api-version", API_VERSION))
    return endpoint.endpoint + path + "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def mint_rest_token(endpoint: Endpoint, url: str, *, key: str | None = None,
                    ttl: int = REST_TOKEN_SECONDS) -> str:
    """A REST bearer token for exactly ``url`` (aud = the request URL)."""
    now = int(time.time())
    return _sign({"aud": url, "iat": now, "exp": now + ttl}, key if key is not None else endpoint.access_key)


def seg(value: str) -> str:
    """One percent-encoded path segment."""
    return urllib.parse.quote(value, safe="")

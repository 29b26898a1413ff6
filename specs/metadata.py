"""Message metadata as data: the key rule, the limits, the header forms, and how headers fold.

Metadata is a small ``string -> string`` map that travels with one message: on a client's
``sendToGroup``/``event``/``invoke``, on the messages clients receive (kept across reliable
replay), as ``X-WebPubSub-Metadata-<key>`` request headers on the four REST ``:send``
operations, as ``x-webpubsub-metadata-<key>`` headers on the CloudEvents sent to upstream
handlers, and back from a handler's answer. It is per message: never stored on a connection,
never added to ``connect``/``connected``/``disconnected``.

Sources: the canonical protobuf schema (Azure/azure-webpubsub
``protocols/protobuf.webpubsub.azure.v1/webpubsub.v1.proto``: ``map<string,string> metadata``
on SendToGroupMessage, EventMessage, InvokeEventMessage, DataMessage, InvokeResponseMessage)
[SPEC]; Microsoft's emulator for the key rule, the limits and the header folding [EMU]; no Learn
page documents it yet. What no source settles is in ``DECISIONS``.

Rules this module keeps:
- One validator, ``metadata_problem``, for every surface (client codecs, REST, the embedded API,
  handler answers). A valid map has keys matching ``KEY_PATTERN`` (HTTP token characters,
  ASCII), at most ``MAX_KEY_CHARS`` per key, ``MAX_VALUE_CHARS`` per value, ``MAX_TOTAL_CHARS``
  for all keys and values together, no control character in a value.
- Keys are case-insensitive and normalised to lower case when a map is read (``normalize``),
  so the same key cannot arrive twice in two spellings; two keys that differ only in case are
  a duplicate (decision ``metadata.case``).
- ``fold_headers`` is the one header reader (REST requests, handler answers): prefix matched
  case-insensitively, key lower-cased, empty key ignored, a repeated header's last value wins,
  and within a value the last comma-separated part, trimmed.
- Pure data and pure functions; imports nothing of ours outside ``specs``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from specs._decisions import Decision

#: Metadata keys: RFC 9110 token characters (a key becomes part of an HTTP header name).
KEY_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_KEY_RE = re.compile(KEY_PATTERN)

MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 1024
#: All keys and values of one message together.
MAX_TOTAL_CHARS = 8 * 1024
#: At most this many entries (each needs a key character at least; this bounds the work of a
#: hostile map before the size check even starts).
MAX_ENTRIES = MAX_TOTAL_CHARS

#: REST request header prefix on the ``:send`` operations (matched case-insensitively).
REST_HEADER_PREFIX = "x-webpubsub-metadata-"
#: Upstream CloudEvents header prefix, both directions (requests carry it lower-case; answers
#: are matched case-insensitively).
UPSTREAM_HEADER_PREFIX = "x-webpubsub-metadata-"

#: REST ``ErrorDetail.code`` / ``x-ms-error-code`` of an invalid metadata header (400; ours, like
#: every code in ``specs.rest.ErrorCode``).
REST_ERROR_CODE = "InvalidMetadata"

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def metadata_problem(metadata: Mapping[str, str]) -> str | None:
    """Why ``metadata`` is not a valid map (keys already normalised), or None when it is."""
    if len(metadata) > MAX_ENTRIES:
        return f"'metadata' has more than {MAX_ENTRIES} entries"
    total = 0
    for key, value in metadata.items():
        if type(key) is not str or type(value) is not str:
            return "'metadata' keys and values must be strings"
        if len(key) > MAX_KEY_CHARS:
            return f"a 'metadata' key is longer than {MAX_KEY_CHARS} characters"
        if _KEY_RE.fullmatch(key) is None:
            return f"'metadata' key {key[:40]!r} must be 1 or more HTTP token characters (letters, digits, !#$%&'*+-.^_`|~)"
        if len(value) > MAX_VALUE_CHARS:
            return f"the 'metadata' value of {key!r} is longer than {MAX_VALUE_CHARS} characters"
        if _CONTROL.search(value) is not None:
            return f"the 'metadata' value of {key!r} must not contain control characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"the 'metadata' value of {key!r} must be valid Unicode"
        total += len(key) + len(value)
        if total > MAX_TOTAL_CHARS:
            return f"'metadata' keys and values together are longer than {MAX_TOTAL_CHARS} characters"
    return None


def normalize(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str] | None, str | None]:
    """``(metadata, problem)`` from key/value pairs in arrival order: keys lower-cased, a
    duplicate key (in any case) is a problem, then ``metadata_problem``. An empty map is None."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if type(key) is not str or type(value) is not str:
            return None, "'metadata' keys and values must be strings"
        if len(out) >= MAX_ENTRIES:
            return None, f"'metadata' has more than {MAX_ENTRIES} entries"
        low = key.lower()
        if low in out:
            return None, f"'metadata' key {key[:40]!r} appears more than once"
        out[low] = value
    if not out:
        return None, None
    problem = metadata_problem(out)
    return (None, problem) if problem is not None else (out, None)


def fold_headers(headers: Iterable[tuple[str, str]], prefix: str) -> dict[str, str]:
    """The metadata carried by HTTP headers ``prefix<key>: value`` (names compared
    case-insensitively). Not validated: call ``metadata_problem`` on the result."""
    out: dict[str, str] = {}
    n = len(prefix)
    for name, value in headers:
        if len(name) <= n or name[:n].lower() != prefix:
            continue
        key = name[n:].lower()
        out.pop(key, None)  # a repeated header: the last one wins (and moves to the end)
        out[key] = value.rsplit(",", 1)[-1].strip()
    return out


def header_text(value: str) -> str:
    """A header value read as latin-1 (how HTTP libraries hand it over) back to the text it was
    sent as: UTF-8 when its bytes are UTF-8, else the latin-1 text."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


DECISIONS: tuple[Decision, ...] = (
    Decision(
        "metadata.case",
        "Are metadata keys case-sensitive, and in which spelling do they travel?",
        "Case-insensitive: every surface lower-cases keys when it reads them, so clients, "
        "handlers and REST callers all see lower-case keys; two keys of one message that differ "
        "only in case are a duplicate (invalid).",
        "[EMU] the REST and handler-answer headers are lower-cased and the key rule is "
        "case-insensitive; upstream headers are lower-cased (a client key 'Trace' arrives as "
        "x-webpubsub-metadata-trace). Keeping the client's spelling on one path and not on the "
        "others would make the same message look different to different receivers.",
    ),
    Decision(
        "metadata.units",
        "In what unit are the key/value/total limits counted?",
        "Unicode code points (Python len); keys are ASCII, so for keys it is also bytes.",
        "[EMU] counts .NET string lengths (UTF-16 units); the two differ only for characters "
        "outside the BMP, which a limit of this size does not need to distinguish.",
    ),
    Decision(
        "metadata.values",
        "Which values are valid?",
        "Any string up to MAX_VALUE_CHARS without control characters (TAB allowed) and without "
        "lone surrogates; empty values are valid.",
        "A value becomes an HTTP header value upstream, where control characters cannot be "
        "sent; rejecting them where the message enters keeps one message valid on every path.",
    ),
    Decision(
        "metadata.errors",
        "What does an invalid metadata map do?",
        "Client messages: InvalidMessage (ack BadRequest with an ackId, invokeResponse BadRequest "
        "for invoke, else system/disconnected and close 1007). REST: 400 InvalidParameter naming "
        "the header. Handler answers: the BadBody failure of the event.",
        "The same outcome as any other invalid field of that surface; the emulator closes 1007 "
        "for invalid client metadata.",
    ),
    Decision(
        "metadata.header-encoding",
        "How are non-ASCII metadata values written to and read from HTTP headers?",
        "Written as latin-1 when every character fits (what Node and .NET read header bytes as), "
        "else as UTF-8; read back as UTF-8 when the bytes are valid UTF-8, else as latin-1 "
        "(header_text). ASCII values, the common case, are the same either way.",
        "HTTP header values are bytes with no declared charset (RFC 9110 §5.5); express hands "
        "them to handlers latin-1 decoded, and the Python SDK sends str headers as UTF-8 or "
        "latin-1 depending on the HTTP library: reading both keeps either sender's value intact.",
    ),
    Decision(
        "metadata.only",
        "sendToGroup/event/invoke with metadata and no data.",
        "A message with an empty text payload and that metadata.",
        "[EMU] a metadata-only message is an empty text message; protobuf needs a non-empty map "
        "for it (an empty map is indistinguishable from no map).",
    ),
    Decision(
        "metadata.reply",
        "Metadata in a handler's answer to a user event or an invocation.",
        "From a 2xx answer only: the answer's X-WebPubSub-Metadata-* headers (folded like REST "
        "headers) become the metadata of the reply to the sender (for an event with an empty body: "
        "an empty text message carrying it) or of the invokeResponse. In-process handlers return "
        "UserEventResponse(metadata=...).",
        "[EMU] tests: response metadata is forwarded before the ack, an empty body with metadata "
        "still produces a message, non-2xx metadata is dropped.",
    ),
)

"""Name rules: hubs, groups, user ids, connection ids, event names. One rule each.

Every validator in the project (client codecs, REST and the embedded API, tokens, connect
handler answers, config) calls these functions; nothing else decides what a valid name is.

Rules:
- Hubs: the regex Microsoft's SDKs enforce client-side, ``^[A-Za-z][A-Za-z0-9_`,.[\\]]{0,127}$``.
- Groups: 1-1024 code points, not whitespace-only, no control character (Unicode ``Cc``:
  C0, DEL, C1; so no line feed), no lone surrogate (decision ``names.group``).
- User ids and connection ids: 1-1024 code points, no control character, no lone surrogate.
- Event names: 1-1024 code points, no control character, no lone surrogate.
- Pure functions; ``*_problem`` says why a name is invalid (None when valid), ``is_valid_*``
  answers for any object (non-strings are invalid).
"""

from __future__ import annotations

import re
import unicodedata

from specs._decisions import Decision

#: Hub names as the SDKs enforce them client-side.
HUB_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$"
_HUB_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")

#: Group names as published (REST spec ``^(?!\s+$).+$``), plus our control-character rule.
GROUP_NAME_PATTERN = r"^(?!\s+$).+$"
GROUP_NAME_MIN_CHARS = 1
GROUP_NAME_MAX_CHARS = 1024
#: User ids, connection ids and event names share the length bound.
MAX_NAME_CHARS = 1024
EVENT_NAME_MAX_CHARS = MAX_NAME_CHARS


def is_valid_hub_name(name: object) -> bool:
    """True when ``name`` matches ``HUB_NAME_PATTERN`` (a full match, ASCII only)."""
    return isinstance(name, str) and _HUB_NAME_RE.fullmatch(name) is not None


def _has_lone_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _has_control(s: str) -> bool:
    if s.isascii():
        return not s.isprintable()  # in ASCII only C0 and DEL are unprintable
    return any(unicodedata.category(c) == "Cc" for c in s)


def _plain(s: str) -> bool:
    """The common case in one test: printable ASCII has no control character or surrogate."""
    return s.isascii() and s.isprintable()


def _text_problem(what: str, name: str, max_chars: int) -> str | None:
    n = len(name)
    if n == 0:
        return f"'{what}' must not be empty"
    if n > max_chars:
        return f"'{what}' must be at most {max_chars} characters"
    if what == "group" and "\n" in name:
        return f"'{what}' must not contain a line feed"
    if _has_control(name):
        return f"'{what}' must not contain control characters"
    if not name.isascii() and _has_lone_surrogate(name):
        return f"'{what}' must be valid Unicode"
    return None


def group_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid group name, or None when it is (decision ``names.group``)."""
    if 0 < len(name) <= GROUP_NAME_MAX_CHARS and _plain(name) and not name.isspace():
        return None
    if name and name.isspace():
        return "'group' must not be only whitespace"
    return _text_problem("group", name, GROUP_NAME_MAX_CHARS)


def is_valid_group_name(name: object) -> bool:
    return isinstance(name, str) and group_name_problem(name) is None


def event_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid user event name, or None when it is (``names.event``)."""
    if 0 < len(name) <= EVENT_NAME_MAX_CHARS and _plain(name):
        return None
    return _text_problem("event", name, EVENT_NAME_MAX_CHARS)


def is_valid_event_name(name: object) -> bool:
    return isinstance(name, str) and event_name_problem(name) is None


def is_valid_user_id(value: object) -> bool:
    """1-1024 code points, no control character, no lone surrogate."""
    if not isinstance(value, str):
        return False
    if 0 < len(value) <= MAX_NAME_CHARS and _plain(value):
        return True
    return _text_problem("userId", value, MAX_NAME_CHARS) is None


def is_valid_connection_id(value: object) -> bool:
    """1-1024 code points, no control character, no lone surrogate (the spec says only
    ``minLength: 1``; the bound caps the work)."""
    return is_valid_user_id(value)


DECISIONS: tuple[Decision, ...] = (
    Decision(
        "names.group",
        "What is a valid group name, on every surface (client messages, REST, embedded API, "
        "tokens, connect-handler answers, Socket.IO rooms)?",
        "1-1024 code points, not whitespace-only, no control character (Unicode Cc: C0, DEL, C1, "
        "so no line feed), no lone surrogate. Client requests get an InvalidMessage/BadRequest "
        "ack, REST a 400 InvalidGroupName, the embedded API a ValueError.",
        "The published pattern ^(?!\\s+$).+$ (routes.tsp in Azure/azure-rest-api-specs) read as a "
        "full match excludes only the line feed; we also exclude the other control characters "
        "because group names travel in upstream headers, log lines and broker keys where a control "
        "character is at best unreadable. One rule everywhere: a name valid on one surface is valid "
        "on all of them.",
    ),
    Decision(
        "names.event",
        "Which user event names are acceptable?",
        "1-1024 code points, no control character, no lone surrogate.",
        "Event names become upstream HTTP header values (ce-type, ce-eventName) and a URL path "
        "segment ({event} in the handler's URL template): a control character there is an injection.",
    ),
    Decision(
        "names.ids",
        "Valid user ids and connection ids.",
        "1-1024 code points, no control character, no lone surrogate; otherwise 400 InvalidUserId / "
        "InvalidConnectionId (ValueError on the embedded API).",
        "The REST spec gives only minLength 1; 1024 bounds the work and matches the group bound.",
    ),
)

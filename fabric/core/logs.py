"""Log lines for people and for machines: ``--log-format text|json``, and a last line of
defence that keeps secrets out of them.

Rules this module keeps:
- Structured fields travel in ``extra={"fields": {...}}``: the text format appends them as
  ``key=value`` (values quoted when they contain spaces), the JSON format puts them beside
  ``ts``, ``level``, ``logger`` and ``msg`` in one object per line.
- Nothing in the fabric logs a token, a key or a message body on purpose. As a safety net
  every record passes ``Redactor`` on its way out: the configured access keys and metrics
  token, ``access_token=``/``awps_reconnection_token=`` query values, ``Bearer`` credentials,
  ``AccessKey=`` connection-string parts and anything shaped like a JWT become ``***``.
- Synchronous calls only (logging from trio code must never await).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Iterable, TextIO

_MASK = "***"
_PATTERNS = (
    (re.compile(r"(?i)((?:access_token|awps_reconnection_token|token|key|sig)=)[^&\s\"';]+"), r"\1" + _MASK),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + _MASK),
    (re.compile(r"(?i)(accesskey=)[^;\s\"']+"), r"\1" + _MASK),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), _MASK),
)
#: Record attributes that are not extra fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "fields"}


class Redactor(logging.Filter):
    """Masks secrets in a record's message, arguments and fields (see the module's rules)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """The exact strings to mask (access keys, the metrics token); longest first."""
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        if "=" in text or "eyJ" in text or "earer" in text or "EARER" in text:  # else no pattern can match
            for pattern, replacement in _PATTERNS:
                text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = str(record.msg)
        record.msg = self.scrub(message)
        record.args = ()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: self.scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
            record.exc_info = None
        return True


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", None) or {})
    for key, value in record.__dict__.items():  # plain ``extra={...}`` keys too
        if key not in _STANDARD and not key.startswith("_"):
            fields.setdefault(key, value)
    return fields


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _text_value(value: Any) -> str:
    text = "-" if value is None else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO fabric.connections: connection opened id=... hub=chat``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields_of(record)
        if fields:
            head, sep, tail = line.partition("\n")
            head += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
            line = head + sep + tail
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, the
    record's fields, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields_of(record).items():
            if key not in out:
                out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


_HANDLER_NAME = "fabric"


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None,
              secrets: Iterable[str] = ()) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``fmt``, at ``level`` and above.
    Calling it again (a config reload) replaces the fabric's handler. Returns the handler;
    its ``Redactor`` is ``handler.redactor``."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    redactor = Redactor(secrets)
    handler.addFilter(redactor)
    handler.redactor = redactor  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format shows the caller's file and line, the thread or the process: do not
    # look them up for every record (the logging HOWTO's "Optimization"; findCaller walks
    # the stack, a measurable share of a connection's setup when each one logs a line).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return handler


def fields(**values: Any) -> dict[str, Any]:
    """``log.info("...", extra=fields(hub=..., status=...))``."""
    return {"fields": values}

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
- Synchronous calls only (logging from trio code must never await). Inside a trio run the
  handler flushes once per scheduler pass (``LineHandler``): a line reaches the stream
  before trio next waits for I/O, not necessarily before the call returns.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, TextIO

import trio

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

    def scrub_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with every string value scrubbed (``fields`` itself when none changes)."""
        # One pass over all the strings first: if nothing in them changes, no single one
        # would (a match inside one value is a match in the joined text), and the usual
        # record (ids, names, numbers) costs one scrub instead of one per field.
        joined = "\n".join([v for v in fields.values() if isinstance(v, str)])
        if self.scrub(joined) == joined:
            return fields
        return {k: self.scrub(v) if isinstance(v, str) else v for k, v in fields.items()}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = str(record.msg)
        record.msg = self.scrub(message)
        record.args = ()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            record.fields = self.scrub_fields(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
            record.exc_info = None
        return True


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields, then its plain ``extra={...}`` keys. The caller must
    not change the dict (it may be the record's own)."""
    fields = getattr(record, "fields", None) or {}
    extra = record.__dict__.keys() - _STANDARD
    if extra:
        fields = dict(fields)
        for key, value in record.__dict__.items():
            if key in extra and not key.startswith("_"):
                fields.setdefault(key, value)
    return fields


class _Clock:
    """The seconds part of a time stamp, formatted once per second rather than per line
    (``time.strftime`` is most of a formatter's cost when every connection logs a line)."""

    __slots__ = ("_convert", "_pattern", "_second", "_text")

    def __init__(self, convert: Callable[[float], time.struct_time], pattern: str) -> None:
        self._convert, self._pattern = convert, pattern
        self._second, self._text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._pattern, self._convert(second))
            self._second = second
        return self._text


_NEEDS_QUOTES = re.compile(r'[\s"=\x00-\x1f\x7f]')
#: Control characters (but tab) in a text line's message: a request path or a name a client
#: chose would otherwise forge line breaks or terminal escapes in the log.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _escape_control(match: re.Match) -> str:
    return repr(match.group())[1:-1]  # "\n", "\r", "\x1b"


def _text_value(value: Any) -> str:
    text = "-" if value is None else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _fields_text(fields: dict[str, Any]) -> str:
    """`` k=v k=v`` for a text line ("" without fields)."""
    if not fields:
        return ""
    return " " + " ".join([f"{k}={_text_value(v)}" for k, v in fields.items()])


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO fabric.connections: connection opened id=... hub=chat``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._clock = _Clock(self.converter, self.default_time_format)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            head, sep, tail = super().format(record).partition("\n")  # the traceback follows the head
            return head + _fields_text(_fields_of(record)) + sep + tail
        record.message = message = record.getMessage()
        return self.line(record.created, record.levelname, record.name, message, _fields_of(record))

    def line(self, created: float, levelname: str, name: str, message: str, fields: dict[str, Any]) -> str:
        """The line of a record without a traceback (what the format string gives, built
        directly; ``emit`` writes records this way without making one)."""
        if _CONTROL.search(message):
            message = _CONTROL.sub(_escape_control, message)
        return (f"{self._clock(created)},{int((created - int(created)) * 1000):03d} {levelname} {name}: {message}"
                + _fields_text(fields))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, the
    record's fields, and ``exc`` (the traceback) when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(time.gmtime, "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), _fields_of(record),
                         record.exc_text)

    def line(self, created: float, levelname: str, name: str, message: str, fields: dict[str, Any],
             exc: str | None = None) -> str:
        out: dict[str, Any] = {
            "ts": f"{self._clock(created)}.{int((created - int(created)) * 1000):03d}Z",
            "level": levelname.lower(),
            "logger": name,
            "msg": message,
        }
        for key, value in fields.items():
            if key not in out:
                out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        if exc:
            out["exc"] = exc
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


_HANDLER_NAME = "fabric"


class LineHandler(logging.StreamHandler):
    """The handler ``configure`` installs: a ``StreamHandler`` that, inside a trio run,
    leaves the writing to a system task that runs on the scheduler's next pass: the lines
    of one pass (a burst of connections each logging one) go out in one ``write`` and one
    flush. stderr is line-buffered, so each line written alone costs a system call, and
    trio's ``run_sync_soon`` would cost two more (its wake-up socket). At most ``BATCH``
    lines wait. Outside trio (other threads, start-up, shutdown) every line is written and
    flushed at once, as ``StreamHandler`` does; ``logging.shutdown`` flushes at exit, and
    the writer task flushes as the run ends."""

    BATCH = 256

    def __init__(self, stream: TextIO | None, formatter: TextFormatter | JsonFormatter, redactor: Redactor) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.addFilter(redactor)
        self.redactor = redactor
        self.line = formatter.line
        self._pending: list[str] = []
        self._run: object = None  # the TrioToken of the run the writer task belongs to
        self._writer: trio.lowlevel.Task | None = None  # parked, waiting for lines
        self._woken = False  # the writer task is scheduled to run

    def flush(self) -> None:
        """Write what waits, then flush the stream. Never raises (the writer task calls it,
        and a system task's exception would end the run)."""
        with self.lock:  # type: ignore[union-attr]
            pending = self._pending
            try:
                if pending:
                    text = "\n".join(pending) + "\n"
                    pending.clear()
                    self.stream.write(text)
                if self.stream and hasattr(self.stream, "flush"):
                    self.stream.flush()
            except Exception:
                pending.clear()
                self.handleError(logging.makeLogRecord({"msg": "writing the log stream failed"}))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._write(line)

    def _write(self, line: str) -> None:
        """Queue a line (the caller holds the handler's lock) and see that it is written."""
        pending = self._pending
        pending.append(line)
        if self._woken and len(pending) < self.BATCH:
            return
        try:
            run = trio.lowlevel.current_trio_token()
        except RuntimeError:  # not in the trio thread
            run = None
        if run is None or len(pending) >= self.BATCH:
            self.flush()
            return
        if run is not self._run:  # a new trio run: start its writer
            try:
                trio.lowlevel.spawn_system_task(self._write_soon, name="fabric log writer")
            except RuntimeError:  # the run is ending (its system nursery is closed)
                self.flush()
                return
            self._run, self._writer = run, None
            self._woken = True
        elif self._writer is not None and not self._woken:
            self._woken = True
            trio.lowlevel.reschedule(self._writer)

    async def _write_soon(self) -> None:
        try:
            while True:  # runs on the pass after the one that woke it
                self.flush()
                with self.lock:  # type: ignore[union-attr]
                    self._woken = False
                    self._writer = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
        finally:
            with self.lock:  # type: ignore[union-attr]
                self._writer = None
                self._run = None
                self._woken = False
            self.flush()

    def _abort_wait(self, _raise_cancel) -> trio.lowlevel.Abort:
        """The writer is being cancelled (the run ends): nobody may wake it any more (trio
        reschedules it itself); its ``finally`` writes what waits."""
        self._writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    def takes_all_of(self, logger: logging.Logger, level: int) -> bool:
        """True when a record ``logger`` makes at ``level`` would reach this handler and
        nothing else: no filter on the logger or this handler but the redactor, no handler
        on the way to the root, this the root's only handler."""
        if logger.filters or logger.disabled or level < self.level or len(self.filters) != 1:
            return False
        node: Any = logger
        while node.propagate and not node.handlers and node.parent is not None:
            node = node.parent
        return node.handlers == [self] and node.parent is None


#: The handler ``configure`` installed, for ``emit``; None when the embedding application
#: configures logging itself.
_installed: LineHandler | None = None


def _forget_in_child() -> None:
    """A forked child neither writes its parent's waiting lines again nor waits for the
    parent's writer task."""
    handler = _installed
    if handler is not None:
        handler._pending.clear()
        handler._run, handler._writer, handler._woken = None, None, False


os.register_at_fork(after_in_child=_forget_in_child)


def emit(logger: logging.Logger, level: int, message: str, **values: Any) -> None:
    """``logger.log(level, message, extra=fields(**values))``: the same line, at a fraction
    of the cost when the handler ``configure`` installed is the only place the record would
    go (the line is built and written without a ``LogRecord``: no record factory, no caller
    lookup). For the lines every connection logs. Synchronous, like all logging here."""
    if not logger.isEnabledFor(level):
        return
    handler = _installed
    if handler is None or not handler.takes_all_of(logger, level):
        logger.log(level, message, extra={"fields": values})
        return
    redactor = handler.redactor
    line = handler.line(time.time(), logging.getLevelName(level), logger.name, redactor.scrub(message),
                        redactor.scrub_fields(values))
    with handler.lock:  # type: ignore[union-attr]
        handler._write(line)


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None,
              secrets: Iterable[str] = ()) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``fmt``, at ``level`` and above.
    Calling it again (a config reload) replaces the fabric's handler. Returns the handler;
    its ``Redactor`` is ``handler.redactor``."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.flush()
    global _installed
    handler = LineHandler(stream if stream is not None else sys.stderr,
                          JsonFormatter() if fmt == "json" else TextFormatter(), Redactor(secrets))
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    _installed = handler
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

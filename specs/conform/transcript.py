"""The wire transcript of one run: every frame each client sent and received, every REST call.

Rules this module keeps:
- Bounded: at most ``MAX_ENTRIES`` entries per transcript (older ones are counted, not kept),
  each rendered to at most ``MAX_TEXT`` characters.
- Readable: connection ids and per-run name prefixes are replaced by short labels (``c0``,
  ``g1``, ``u0``) when rendered, and runs of similar lines (same client, direction and shape,
  different numbers) are folded into one line plus a count.
- Thread-safe appends (the driver writes from the trio thread, checks read from the test
  thread).
"""

from __future__ import annotations

import re
import threading
import time

MAX_ENTRIES = 5000
MAX_TEXT = 240
_DIGITS = re.compile(r"\d+")


class Transcript:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[float, str, str, str]] = []
        self._dropped = 0
        self._aliases: dict[str, str] = {}
        self._t0 = time.monotonic()

    def add(self, who: str, arrow: str, text: str) -> None:
        """``arrow``: ``>`` client sends, ``<`` client receives, ``*`` an event (close, drop)."""
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[0]
                self._dropped += 1
            self._entries.append((time.monotonic() - self._t0, who, arrow, text))

    def alias(self, value: str, label: str) -> None:
        """Render ``value`` (a connection id, a prefixed name) as ``label``."""
        if value and len(value) >= 2:
            with self._lock:
                self._aliases[value] = label

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self) -> int:
        return len(self._entries)

    def clean(self, text: str) -> str:
        """``text`` with connection ids and name prefixes replaced by their labels."""
        with self._lock:
            aliases = sorted(self._aliases.items(), key=lambda kv: -len(kv[0]))
        for value, label in aliases:
            if value in text:
                text = text.replace(value, label)
        return text

    def render(self, max_lines: int = 80, since: int = 0) -> str:
        with self._lock:
            entries = list(self._entries[since:])
            aliases = sorted(self._aliases.items(), key=lambda kv: -len(kv[0]))
        lines: list[tuple[str, str]] = []  # (shape key, line)
        for t, who, arrow, text in entries:
            for value, label in aliases:
                if value in text:
                    text = text.replace(value, label)
            line = f"{who:>5} {arrow} {text}"
            key = f"{who}{arrow}" + _DIGITS.sub("#", text)
            lines.append((key, line))
        folded: list[str] = []
        i = 0
        while i < len(lines):
            j = i
            while j + 1 < len(lines) and lines[j + 1][0] == lines[i][0]:
                j += 1
            run = j - i + 1
            if run >= 4:
                folded.append(lines[i][1])
                folded.append(f"        … {run - 2} similar lines …")
                folded.append(lines[j][1])
            else:
                folded.extend(line for _, line in lines[i:j + 1])
            i = j + 1
        if len(folded) > max_lines:
            cut = len(folded) - max_lines
            folded = [f"        … {cut} earlier lines …"] + folded[cut:]
        if self._dropped and since == 0:
            folded.insert(0, f"        … {self._dropped} entries dropped (transcript bound) …")
        return "\n".join(folded)

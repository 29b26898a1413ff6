"""The OS socket under a trio stream, read and written directly.

Rules this module keeps:
- Only a plain ``trio.SocketStream`` has an OS socket here (``os_socket``); TLS and other
  streams (memory pairs in tests) get None, and the helpers fall back to the stream's own
  ``receive_some`` and ``send_all``.
- ``receive_some``: wait for readability first, then one ``recv``. Callers read when
  everything they had was used, so the data is rarely there yet: trio's ``receive_some``
  would first try a ``recv`` that fails with EAGAIN (an exception) before it waits.
  Checkpoint: yes.
- ``send_all``: one non-blocking ``send``, and trio's ``send_all`` only for what the kernel
  did not take (trio's yields once more after a send the kernel took whole). Not a
  checkpoint when the kernel takes it all; callers serialize their sends.
- Errors of the OS socket come out as ``OSError`` (the stream's as trio's); callers map them.
"""

from __future__ import annotations

import socket

import trio

RECEIVE_BYTES = 65536


def os_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The OS socket under a trio ``SocketStream``, or None for any other stream."""
    if isinstance(stream, trio.SocketStream):
        raw = getattr(stream.socket, "_sock", None)
        if isinstance(raw, socket.socket):
            return raw
    return None


async def receive_some(stream: trio.abc.Stream, raw: socket.socket | None,
                       max_bytes: int = RECEIVE_BYTES) -> bytes:
    """At most ``max_bytes`` (b"" at EOF): ``raw`` (``os_socket(stream)``) waited for, then
    read once; the stream's ``receive_some`` when ``raw`` is None. Checkpoint: yes."""
    if raw is None:
        return await stream.receive_some(max_bytes)
    while True:
        await trio.lowlevel.wait_readable(raw)
        try:
            return raw.recv(max_bytes)
        except BlockingIOError:
            continue  # readable was a false alarm


async def send_all(stream: trio.abc.Stream, raw: socket.socket | None, data: bytes) -> None:
    """Send all of ``data``: one non-blocking ``send`` on ``raw``, the stream's ``send_all``
    for the rest (or for all of it when ``raw`` is None). Checkpoint: only when the kernel
    did not take it all."""
    if raw is None:
        await stream.send_all(data)
        return
    try:
        sent = raw.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])

"""Exceptions of the Socket.IO handler API (python-socketio's names, so its users recognise them)."""

from __future__ import annotations

import builtins
from typing import Any

__all__ = ["ConnectionRefusedError", "DisconnectedError", "SocketIOError", "TimeoutError"]


class SocketIOError(Exception):
    """Base of this package's API errors."""


class ConnectionRefusedError(SocketIOError):  # noqa: A001 - python-socketio's name
    """Raise from a connect handler to refuse the namespace connection.

    ``ConnectionRefusedError("not allowed", {"retry": False})`` sends the client
    ``44{"message":"not allowed","data":{"retry":false}}``. With no argument the message is
    ``"Connection rejected by server"``.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        message = args[0] if args else "Connection rejected by server"
        self.message = message if isinstance(message, str) else str(message)
        self.data = args[1] if len(args) > 1 else None
        self.has_data = len(args) > 1

    def error_args(self) -> dict:
        """The CONNECT_ERROR payload."""
        out: dict[str, Any] = {"message": self.message}
        if self.has_data:
            out["data"] = self.data
        return out


class TimeoutError(SocketIOError, builtins.TimeoutError):  # noqa: A001 - python-socketio's name
    """``call``/``emit_with_ack`` got no acknowledgement in time (also a builtin ``TimeoutError``)."""


class DisconnectedError(SocketIOError):
    """The socket is not (or no longer) connected."""

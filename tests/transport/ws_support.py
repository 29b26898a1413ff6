"""A raw client for one server ``WebSocket`` (no HTTP handshake): wsproto on the client side."""

from __future__ import annotations

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, TextMessage


class RawClient:
    """Builds masked client frames and parses the server's frames. Pull-based."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)

    def frames(self, *events: Event) -> bytes:
        return b"".join(self.ws.send(e) for e in events)

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(self.frames(*events))

    async def receive_events(self) -> list[Event]:
        """The events in the next chunk from the server; [] at end of stream."""
        data = await self.stream.receive_some(65536)
        if not data:
            return []
        self.ws.receive_data(data)
        return list(self.ws.events())

    async def until_close(self) -> tuple[list[str | bytes], CloseConnection | None]:
        """Read messages until the server's close frame (or the end of the stream)."""
        messages: list[str | bytes] = []
        while True:
            events = await self.receive_events()
            if not events:
                return messages, None
            for event in events:
                if isinstance(event, (TextMessage, BytesMessage)):
                    messages.append(event.data)
                elif isinstance(event, CloseConnection):
                    return messages, event


def fragments(n: int, piece: str = "x") -> list[TextMessage]:
    """One text message as ``n`` frames (the first and n-2 continuations, then the last)."""
    return [TextMessage(data=piece, message_finished=(i == n - 1)) for i in range(n)]

"""The whiteboard demo: Socket.IO handlers on the fabric's own Socket.IO server.

A page joins a room (``join`` with an acknowledgement that carries the drawing so far),
then emits ``stroke`` and ``clear``; the server checks each stroke's shape, keeps it in the
room's history and broadcasts it to the room's other sockets. Rooms are Socket.IO rooms,
that is hub groups, so the fabric's fan-out does the delivery.

Bounds: ``history`` strokes per room (oldest dropped), ``MAX_ROOMS`` rooms with a history
(least recently drawn dropped), ``MAX_POINTS`` points per stroke. A stroke that breaks a
rule is dropped and never broadcast: what reaches other pages is rebuilt from checked
numbers and a ``#rrggbb`` color, never the sender's object.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict, deque
from typing import Any

MAX_ROOMS = 100
MAX_POINTS = 512
_ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def clean_stroke(data: Any) -> dict | None:
    """The stroke rebuilt from checked values, or None when it breaks a rule."""
    if not isinstance(data, dict):
        return None
    points, color, width = data.get("points"), data.get("color"), data.get("width")
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS:
        return None
    if not isinstance(color, str) or not _COLOR.fullmatch(color):
        return None
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 1 <= width <= 40:
        return None
    clean = []
    for point in points:
        if not (isinstance(point, list) and len(point) == 2):
            return None
        x, y = point
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1
               for v in (x, y)):
            return None
        clean.append([round(float(x), 4), round(float(y), 4)])
    return {"points": clean, "color": color.lower(), "width": float(width)}


class Whiteboard:
    """Registers its handlers on ``sio`` (the whiteboard hub's Socket.IO server)."""

    def __init__(self, sio: Any, history: int) -> None:
        self.sio = sio
        self.limit = history
        self.rooms: OrderedDict[str, deque] = OrderedDict()
        self.members: dict[str, str] = {}
        self.strokes = 0
        self.rejected = 0
        sio.on("join", self._join)
        sio.on("stroke", self._stroke)
        sio.on("clear", self._clear)
        sio.on("disconnect", self._disconnect)

    def _history(self, room: str) -> deque:
        history = self.rooms.get(room)
        if history is None:
            while len(self.rooms) >= MAX_ROOMS:
                self.rooms.popitem(last=False)
            history = self.rooms[room] = deque(maxlen=self.limit)
        else:
            self.rooms.move_to_end(room)
        return history

    async def _join(self, sid: str, data: Any) -> Any:
        room = data.get("room") if isinstance(data, dict) else None
        if not isinstance(room, str) or not _ROOM.fullmatch(room):
            return {"ok": False, "error": "room: 1 to 32 letters, digits, _ or -"}
        old = self.members.get(sid)
        if old is not None:
            await self.sio.leave_room(sid, f"board:{old}")
        self.members[sid] = room
        await self.sio.enter_room(sid, f"board:{room}")
        return {"ok": True, "room": room, "strokes": list(self.rooms.get(room, ()))}

    async def _stroke(self, sid: str, data: Any) -> None:
        room = self.members.get(sid)
        stroke = clean_stroke(data)
        if room is None or stroke is None:
            self.rejected += 1
            return
        self._history(room).append(stroke)
        self.strokes += 1
        await self.sio.emit("stroke", stroke, room=f"board:{room}", skip_sid=sid)

    async def _clear(self, sid: str, data: Any = None) -> None:
        room = self.members.get(sid)
        if room is None:
            return
        self._history(room).clear()
        await self.sio.emit("clear", {}, room=f"board:{room}", skip_sid=sid)

    async def _disconnect(self, sid: str, *args: Any) -> None:
        self.members.pop(sid, None)

"""Reliable subprotocol sessions: the replay buffer and reconnection tokens (sans-IO).

Rules this module keeps (``specs/reliable.py`` states them as the session table):
- Every data message to a reliable connection gets the next ``sequenceId`` (from 1) and
  is kept, already encoded, until the client's cumulative ``sequenceAck`` covers it.
- The buffer is bounded in count and bytes; ``add`` refuses past either bound and the
  caller discards the session (close 1008, "not recoverable"): a session with a gap must
  not pretend to be recoverable.
- Acks are cumulative and monotonic: an ack below the last one is ignored; an ack above
  the last id sent is clamped to it (a client cannot acknowledge what it never got) and
  counted as ``bogus_acks``.
- A reconnection token is an HMAC-SHA256 over hub and connection id with an access key:
  unforgeable without the key, valid for that connection id only, and checked in constant
  time against every configured key (so key rotation keeps sessions recoverable).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import deque
from typing import Iterable, Sequence


def reconnection_token(key: str, hub: str, connection_id: str) -> str:
    mac = hmac.new(key.encode("utf-8"), f"{hub}\x00{connection_id}".encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def valid_reconnection_token(token: str, keys: Sequence[str], hub: str, connection_id: str) -> bool:
    ok = False
    for key in keys:
        # no early exit: every key is compared, in constant time
        ok |= hmac.compare_digest(reconnection_token(key, hub, connection_id), token)
    return ok


class ReplayBuffer:
    """Unacknowledged encoded frames of one reliable connection, in sequence order.

    Sequence ids are consecutive, so only the frames are stored (plain bytes: nothing for
    the garbage collector to track per message); frame ``i`` carries ``last_acked + 1 + i``.
    """

    __slots__ = ("_frames", "_bytes", "max_messages", "max_bytes", "last_sent", "last_acked", "bogus_acks")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.last_sent = 0
        self.last_acked = 0
        self.bogus_acks = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def next_sequence_id(self) -> int:
        return self.last_sent + 1

    def add(self, sequence_id: int, frame: bytes) -> bool:
        """Keep ``frame`` (carrying ``sequence_id`` = last_sent + 1). False if over a bound."""
        size = self._bytes + len(frame)
        if size > self.max_bytes or len(self._frames) >= self.max_messages:
            return False
        self._frames.append(frame)
        self._bytes = size
        self.last_sent = sequence_id
        return True

    def ack(self, sequence_id: int) -> int:
        """Apply a cumulative ack; returns how many frames it released."""
        if sequence_id > self.last_sent:
            self.bogus_acks += 1
            sequence_id = self.last_sent
        released = sequence_id - self.last_acked
        if released <= 0:
            return 0
        self.last_acked = sequence_id
        frames = self._frames
        for _ in range(released):
            self._bytes -= len(frames.popleft())
        return released

    def unacked(self) -> Iterable[bytes]:
        """The frames to replay after a recovery, oldest first."""
        return list(self._frames)

"""Reliable subprotocol sessions: the replay buffer and reconnection tokens (sans-IO).

Rules this module keeps (``specs/reliable.py`` states them as the session table):
- Every data message to a reliable connection gets the next ``sequenceId`` (from 1) and
  is kept (a reference to the shared publication) until the client's cumulative
  ``sequenceAck`` covers it; a replay re-encodes it with its original id.
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


MESSAGE_OVERHEAD = 64
"""Bytes counted per kept message on top of its payload (the envelope, roughly)."""


def accounted_size(publication) -> int:
    """What one kept message counts against ``reliable_buffer_bytes``: its payload plus a
    fixed envelope allowance. Deterministic, so ``ack`` subtracts exactly what ``add`` added."""
    return len(publication.payload.body) + MESSAGE_OVERHEAD


class ReplayBuffer:
    """The unacknowledged publications of one reliable connection, in sequence order.

    It keeps references to the (shared, immutable) publications, not per-connection
    frames: a publication to a group of N reliable members is stored once, and the
    sequenced frame is rebuilt only for the rare replay. Sequence ids are consecutive, so
    entry ``i`` carries ``last_acked + 1 + i``.
    """

    __slots__ = ("_entries", "_bytes", "max_messages", "max_bytes", "last_sent", "last_acked", "bogus_acks")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._entries: deque = deque()
        self._bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.last_sent = 0
        self.last_acked = 0
        self.bogus_acks = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def add(self, publication) -> int:
        """Keep ``publication``; its sequence id, or 0 if a bound would be passed."""
        size = self._bytes + accounted_size(publication)
        if size > self.max_bytes or len(self._entries) >= self.max_messages:
            return 0
        self._entries.append(publication)
        self._bytes = size
        self.last_sent += 1
        return self.last_sent

    def ack(self, sequence_id: int) -> int:
        """Apply a cumulative ack; returns how many messages it released."""
        if sequence_id > self.last_sent:
            self.bogus_acks += 1
            sequence_id = self.last_sent
        released = sequence_id - self.last_acked
        if released <= 0:
            return 0
        self.last_acked = sequence_id
        entries = self._entries
        if released >= len(entries):  # the usual case: everything sent so far is acked
            entries.clear()
            self._bytes = 0
            return released
        popleft = entries.popleft
        dropped = 0
        for _ in range(released):
            dropped += accounted_size(popleft())
        self._bytes -= dropped
        return released

    def unacked(self) -> Iterable[tuple[int, object]]:
        """(sequence id, publication) of everything to replay after a recovery, oldest first."""
        first = self.last_acked + 1
        return [(first + i, pub) for i, pub in enumerate(self._entries)]

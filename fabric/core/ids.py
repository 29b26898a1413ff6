"""Random identifiers (connection ids, Engine.IO session ids) from a pooled OS random buffer.

Rules this module keeps:
- The bytes come from ``os.urandom`` (what ``secrets.token_urlsafe`` reads), taken 4 KiB
  at a time rather than one system call per id: a burst of connections each needing an id
  costs one ``getrandom`` per ~250 ids.
- A forked child never reuses its parent's pool (``fabric serve --workers`` forks):
  the pool is dropped in the child at fork.
- Ids are base64url without padding, like ``secrets.token_urlsafe``.
"""

from __future__ import annotations

import base64
import os

_POOL_BYTES = 4096
_pool = b""
_offset = 0


def _drop_pool() -> None:
    global _pool, _offset
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_drop_pool)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's random source (``n`` at most 4096)."""
    global _pool, _offset
    end = _offset + n
    if end > len(_pool):
        _pool, _offset, end = os.urandom(_POOL_BYTES), 0, n
    chunk = _pool[_offset:end]
    _offset = end
    return chunk


def random_id(n: int) -> str:
    """``n`` random bytes as base64url text without padding (``secrets.token_urlsafe(n)``)."""
    return base64.urlsafe_b64encode(random_bytes(n)).rstrip(b"=").decode("ascii")

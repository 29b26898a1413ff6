"""Running a little code in a forked child (what ``fabric serve --workers`` does to the
process) and reading back what it saw."""

from __future__ import annotations

import os
from typing import Callable


def in_forked_child(report: Callable[[], str]) -> str:
    """Fork; the child returns ``report()`` through a pipe and leaves at once with
    ``os._exit`` (nothing of the parent's, no test teardown, runs in it); the parent waits
    for it and returns the text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, report().encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        return os.read(read, 65536).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)

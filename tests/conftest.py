"""Shared test helpers. Fixtures specific to one area live beside its tests."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Return the path of an executable, or skip (locally) / fail (under CI=true) without it."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name!r} is not on PATH"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing tool is a failure, not a skip)")
        pytest.skip(msg)
    return path

"""Waiting in tests for something another thread or process brings about."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], *, within: float = 5.0, every: float = 0.01) -> None:
    """Return once `check()` is true; fail the test if it is not within `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not reached within {within:g} s"
        time.sleep(every)

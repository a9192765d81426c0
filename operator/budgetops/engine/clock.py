"""Time comes in from outside: every engine function takes `now`, adapters take a Clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real UTC time, to the second as Kubernetes timestamps are.

    The only place the engine's callers read the wall clock.
    """
    return datetime.now(UTC).replace(microsecond=0)

"""Shared fixtures: a frozen clock and the example manifests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 1, 1, 15, 30, tzinfo=UTC)

"""Shared fixtures: a frozen clock, the example manifests, a verdict keyring apart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 1, 1, 15, 30, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="session")
def verdict_keys_apart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests make and read verdict keyrings in a folder of their own, never in the user's
    configuration folder (the embedded default), and never beside a ledger; set for the
    whole session, so module fixtures that run the CLI have it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUDGETOPS_VERDICT_KEYS", str(tmp_path_factory.mktemp("verdict-keys")))
        yield

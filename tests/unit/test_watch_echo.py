"""The in-cluster cache's watch events, fed by hand: each is parsed once, and the echo of
the store's own write (the answer it already holds, sent again by the watch) not at all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from budgetops.apis.resources import BudgetKey
from budgetops.store import informer
from budgetops.store.informer import BudgetCache

from .test_budget_cache import stored

_loads = json.loads  # the real one, for the tests' own parsing


def line(kind: str, document: dict[str, Any]) -> str:
    """A watch event as the API server sends it: the object encoded as in its answers."""
    return json.dumps({"type": kind, "object": document}, separators=(",", ":"))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every JSON text the informer parses."""
    seen: list[str] = []

    def loads(text: str) -> Any:
        seen.append(text)
        return _loads(text)

    monkeypatch.setattr(informer.json, "loads", loads)
    return seen


def test_the_echo_of_our_write_is_not_parsed_and_other_events_are_parsed_once(
    parses: list[str],
) -> None:
    cache = BudgetCache(client.CustomObjectsApi(client.ApiClient(client.Configuration())))
    key = BudgetKey("TrustBudget", "certs")
    woken: list[BudgetKey] = []
    cache.listeners.append(woken.append)
    answer = stored(100, generation=1, version="5", charges=2)
    encoded = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
    cache.put(_loads(encoded), answer=encoded)  # the store's write, and its answer
    assert cache._event("TrustBudget", line("MODIFIED", answer)) == "5"
    assert parses == [], "the echo of our own write is not parsed"
    assert cache.echoes == 1
    assert cache.version(key) == "5"

    theirs = stored(100, generation=1, version="6", charges=3)  # another writer
    assert cache._event("TrustBudget", line("MODIFIED", theirs)) == "6"
    assert len(parses) == 1, "parsed once"
    assert cache.version(key) == "6"
    assert woken == [key, key]
    held = cache.get(key)
    assert held is not None
    assert held.status.accounts["user:alice"].reserved == 3


def test_an_echo_the_watch_went_past_is_parsed_like_any_event(parses: list[str]) -> None:
    """Only the version the cache holds is skipped: once a newer one came, our earlier
    answer is forgotten, and an event of it (which a watch never sends after the newer
    one) would be parsed, and ignored as older."""
    cache = BudgetCache(client.CustomObjectsApi(client.ApiClient(client.Configuration())))
    key = BudgetKey("TrustBudget", "certs")
    answer = stored(100, generation=1, version="5", charges=2)
    encoded = json.dumps(answer, separators=(",", ":")).encode()
    cache.put(_loads(encoded), answer=encoded)
    cache.put(stored(100, generation=1, version="6", charges=3))
    assert cache._event("TrustBudget", line("MODIFIED", answer)) == "5"
    assert cache.echoes == 0
    assert len(parses) == 1
    assert cache.version(key) == "6"
    cache.forget(key)
    assert cache._echoes == {}, "nothing held for a budget that is gone"

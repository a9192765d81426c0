"""The watch's echo of the store's own status write, against a real API server: the API
server sends the object it answered the write with, byte for byte, so the cache, which
holds that answer already, does not parse it again; another writer's change is parsed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from budgetops.apis.resources import BudgetKey, TrustBudget
from budgetops.store.kube import KubeStore
from tests.cluster.test_kube_store import charge, hot_budget, make_store  # noqa: F401
from tests.waiting import eventually


def test_the_echo_of_a_write_is_not_parsed_and_another_writers_change_is(
    make_store: Callable[..., KubeStore],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = make_store(), make_store()
    key = BudgetKey.of(ours.apply(hot_budget("echoed", 10)))
    eventually(lambda: theirs.cache.version(key) == ours.cache.version(key), within=10)
    # The watch may read the event before the writer has read the answer; then it parses
    # it like any other. Here the watch waits for the writer, so that the echo is checked.
    handle = ours.cache._event

    def after_the_writer(kind: str, line: str) -> str | None:
        meta = json.loads(line)["object"].get("metadata", {})
        deadline = time.monotonic() + 5
        while (
            meta.get("name") == key.name
            and int(ours.cache.version(key) or 0) < int(meta["resourceVersion"])
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        return handle(kind, line)

    monkeypatch.setattr(ours.cache, "_event", after_the_writer)
    before = ours.cache.echoes
    charge(ours, key, "ours-1")
    written = ours.cache.version(key)
    eventually(lambda: ours.cache.echoes == before + 1, within=10)
    assert ours.cache.version(key) == written
    monkeypatch.setattr(ours.cache, "_event", handle)  # no write of ours to wait for now

    charge(theirs, key, "theirs-1")  # the same budget, through another client and cache
    eventually(lambda: ours.cache.version(key) == theirs.cache.version(key), within=10)
    assert ours.cache.echoes == before + 1, "another writer's change is no echo"
    seen = ours.get(key)
    assert isinstance(seen, TrustBudget)
    assert seen.status.accounts["user:hot"].reserved == 2

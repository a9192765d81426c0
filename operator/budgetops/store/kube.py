"""The in-cluster store: budgets are custom resources, balances live in their status.

Reads come from a watch-fed cache. A charge is a compare-and-swap: the status is replaced
with the resourceVersion it was computed from, so a concurrent writer's change is never
overwritten; on 409 the budget is read again and the change decided again on fresh state.

Charges to one budget are group-committed: one writer thread per budget drains the waiting
charges, applies them in order to one snapshot, writes once and answers every waiter. A
waiter whose answer needs no write (a denial, a replay, a dry run) is answered from the
first attempt and never re-run, so a denied request can never be admitted by another
waiter's retry. Every wait is bounded by the caller's deadline.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from budgetops.apis.common import GROUP, VERSION
from budgetops.apis.resources import RESOURCES, Budget, Kind
from budgetops.store.base import BudgetKey, ChargeTimeout, NotFound

T = TypeVar("T")
log = logging.getLogger("budgetops.store")

WATCH_SECONDS = 240
IDLE_WRITER_SECONDS = 2.0
MAX_ATTEMPTS = 20


def _newer(candidate: str, current: str) -> bool:
    """resourceVersions are opaque; etcd's are integers, so compare those, else trust order."""
    if candidate.isdigit() and current.isdigit():
        return int(candidate) >= int(current)
    return True


def _document(value: object) -> dict[str, Any]:
    """The client returns JSON objects as `object`; a custom object is always a dict."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(value).__name__}")
    return value


def _key_of(document: dict[str, Any]) -> BudgetKey:
    meta = document["metadata"]
    return BudgetKey(document["kind"], meta["name"], meta.get("namespace") or "")


class BudgetCache:
    """Every budget, kept current by one list-then-watch loop per kind."""

    def __init__(self, api: client.CustomObjectsApi) -> None:
        self.api = api
        self._lock = threading.Lock()
        self._raw: dict[BudgetKey, dict[str, Any]] = {}
        self._parsed: dict[BudgetKey, tuple[str, Budget]] = {}
        self._synced = {kind: threading.Event() for kind in RESOURCES}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, *, timeout: float = 30.0) -> None:
        for kind in RESOURCES:
            thread = threading.Thread(
                target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        for kind, synced in self._synced.items():
            if not synced.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"could not list {kind} objects in {timeout:.0f}s")

    def stop(self) -> None:
        self._stop.set()

    def _run(self, kind: Kind) -> None:
        plural = RESOURCES[kind].plural
        backoff = 0.5
        while not self._stop.is_set():
            try:
                listing = _document(self.api.list_cluster_custom_object(GROUP, VERSION, plural))
                self._replace(kind, listing["items"])
                self._synced[kind].set()
                version = listing["metadata"]["resourceVersion"]
                self._follow(kind, plural, version)
                backoff = 0.5
            except Exception:
                log.exception("watching %s failed; listing again in %.1fs", plural, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _follow(self, kind: Kind, plural: str, version: str) -> None:
        """Apply watch events until the server ends the watch or the version expires (410)."""
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.api.list_cluster_custom_object,
            GROUP,
            VERSION,
            plural,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
        )
        for event in stream:
            if self._stop.is_set():
                return
            document = event["raw_object"]
            if event["type"] == "ERROR":
                if document.get("code") == 410:
                    return  # expired: list again
                raise RuntimeError(f"watch error on {plural}: {document.get('message')}")
            if event["type"] == "BOOKMARK":
                continue
            document.setdefault("kind", kind)
            if event["type"] == "DELETED":
                self.forget(_key_of(document))
            else:
                self.put(document)

    def _replace(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        with self._lock:
            for key in [k for k in self._raw if k.kind == kind]:
                del self._raw[key]
            for document in items:
                document.setdefault("kind", kind)
                self._raw[_key_of(document)] = document

    def put(self, document: dict[str, Any]) -> None:
        """Keep `document` unless the cache already holds a newer version of it."""
        key = _key_of(document)
        version = document["metadata"].get("resourceVersion", "")
        with self._lock:
            held = self._raw.get(key)
            if held is None or _newer(version, held["metadata"].get("resourceVersion", "")):
                self._raw[key] = document

    def forget(self, key: BudgetKey) -> None:
        with self._lock:
            self._raw.pop(key, None)
            self._parsed.pop(key, None)

    def get(self, key: BudgetKey) -> Budget | None:
        """The cached budget, parsed once per resourceVersion (shared: do not mutate)."""
        with self._lock:
            document = self._raw.get(key)
            if document is None:
                return None
            version = document["metadata"].get("resourceVersion", "")
            parsed = self._parsed.get(key)
            if parsed is not None and parsed[0] == version:
                return parsed[1]
        budget = RESOURCES[key.kind].model.model_validate(document)
        with self._lock:
            self._parsed[key] = (version, budget)
        return budget

    def budget_keys(self) -> list[BudgetKey]:
        with self._lock:
            return sorted(self._raw)


@dataclass
class _Waiter:
    change: Callable[[Budget], Any]
    needs_write: Callable[[Any], bool]
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def answer(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass
class _Lane:
    """The queue of one budget and whether its writer thread is running."""

    queue: list[_Waiter] = field(default_factory=list)
    running: bool = False
    wake: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class Stats:
    """Counters the metrics layer exports: batches, their sizes, conflicts.

    Writer threads of different budgets update them, so updates go through `count`.
    """

    batches: int = 0
    charges: int = 0
    conflicts: int = 0
    largest_batch: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, written: int = 0, conflicts: int = 0) -> None:
        with self._lock:
            if written:
                self.batches += 1
                self.charges += written
                self.largest_batch = max(self.largest_batch, written)
            self.conflicts += conflicts


class KubeStore:
    """A BudgetStore over the API server, with group commit per budget."""

    def __init__(self, api_client: client.ApiClient, *, group_commit: bool = True) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.cache = BudgetCache(self.api)
        self.group_commit = group_commit
        self.stats = Stats()
        self._lanes: dict[BudgetKey, _Lane] = {}
        self._lanes_lock = threading.Lock()

    def start(self) -> KubeStore:
        self.cache.start()
        return self

    def stop(self) -> None:
        self.cache.stop()

    # Reads.

    def _fetch(self, key: BudgetKey) -> dict[str, Any]:
        plural = RESOURCES[key.kind].plural
        try:
            if key.namespace:
                document = self.api.get_namespaced_custom_object(
                    GROUP, VERSION, key.namespace, plural, key.name
                )
            else:
                document = self.api.get_cluster_custom_object(GROUP, VERSION, plural, key.name)
        except ApiException as error:
            if error.status == 404:
                self.cache.forget(key)
                raise NotFound(str(key)) from None
            raise
        self.cache.put(_document(document))
        return _document(document)

    def get(self, key: BudgetKey) -> Budget:
        cached = self.cache.get(key)
        if cached is not None:
            return cached.model_copy(deep=True)
        document = self._fetch(key)
        return RESOURCES[key.kind].model.model_validate(document)

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        """Cached budgets, shared with the cache (status included either way)."""
        found = (self.cache.get(k) for k in self.cache.budget_keys() if kind in (None, k.kind))
        return [budget for budget in found if budget is not None]

    # Spec writes (for the CLI and tests; users normally `kubectl apply`).

    def apply(self, budget: Budget) -> Budget:
        key = BudgetKey.of(budget)
        plural = RESOURCES[key.kind].plural
        body = budget.to_wire()
        body.pop("status", None)
        try:
            if key.namespace:
                created = self.api.create_namespaced_custom_object(
                    GROUP, VERSION, key.namespace, plural, body
                )
            else:
                created = self.api.create_cluster_custom_object(GROUP, VERSION, plural, body)
        except ApiException as error:
            if error.status != 409:
                raise
            patch = {"spec": body["spec"]}
            if key.namespace:
                created = self.api.patch_namespaced_custom_object(
                    GROUP, VERSION, key.namespace, plural, key.name, patch
                )
            else:
                created = self.api.patch_cluster_custom_object(
                    GROUP, VERSION, plural, key.name, patch
                )
        self.cache.put(_document(created))
        return RESOURCES[key.kind].model.model_validate(created)

    def delete(self, key: BudgetKey) -> bool:
        plural = RESOURCES[key.kind].plural
        try:
            if key.namespace:
                self.api.delete_namespaced_custom_object(
                    GROUP, VERSION, key.namespace, plural, key.name
                )
            else:
                self.api.delete_cluster_custom_object(GROUP, VERSION, plural, key.name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        self.cache.forget(key)
        return True

    # Status writes: compare-and-swap, group-committed.

    def update_status(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float = 10.0,
        needs_write: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """Run `change` on the freshest status and persist it, within `timeout` seconds.

        `needs_write(result)` False means the result stands without persisting anything
        (a denial, a replay, a dry run): that caller is answered at once and its change is
        never re-run after a conflict. Raises ChargeTimeout when the deadline passes first.
        """
        waiter = _Waiter(change, needs_write, time.monotonic() + timeout)
        if not self.group_commit:
            self._commit(key, [waiter])
        else:
            lane = self._lane(key)
            with lane.wake:
                lane.queue.append(waiter)
                if not lane.running:
                    lane.running = True
                    threading.Thread(
                        target=self._drain, args=(key, lane), daemon=True, name=f"commit-{key}"
                    ).start()
                lane.wake.notify()
        if not waiter.done.wait(max(0.0, waiter.deadline - time.monotonic())):
            raise ChargeTimeout(f"{key} could not be charged within {timeout:.1f}s")
        if waiter.error is not None:
            raise waiter.error
        result: T = waiter.result
        return result

    def _lane(self, key: BudgetKey) -> _Lane:
        with self._lanes_lock:
            return self._lanes.setdefault(key, _Lane())

    def _drain(self, key: BudgetKey, lane: _Lane) -> None:
        """The writer of one budget: take everything queued, commit it as one batch, repeat."""
        while True:
            with lane.wake:
                if not lane.queue:
                    lane.wake.wait(IDLE_WRITER_SECONDS)
                if not lane.queue:
                    lane.running = False
                    return
                batch, lane.queue = lane.queue, []
            try:
                self._commit(key, batch)
            except BaseException as error:  # never leave a waiter hanging
                for waiter in batch:
                    if not waiter.done.is_set():
                        waiter.answer(error=error)

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        cached = None if fresh else self.cache.get(key)
        if cached is None:
            return RESOURCES[key.kind].model.model_validate(self._fetch(key))
        return cached.model_copy(deep=True)

    @staticmethod
    def _apply(
        pending: builtins.list[_Waiter], budget: Budget
    ) -> builtins.list[tuple[_Waiter, Any]]:
        """Run each change in order on `budget`; answer those that need no write right away."""
        writers = []
        for waiter in pending:
            try:
                result = waiter.change(budget)
            except Exception as error:
                waiter.answer(error=error)
                continue
            if waiter.needs_write(result):
                writers.append((waiter, result))
            else:
                waiter.answer(result)
        return writers

    def _commit(self, key: BudgetKey, batch: builtins.list[_Waiter]) -> None:
        pending = batch
        fresh = False
        for _ in range(MAX_ATTEMPTS):
            now = time.monotonic()
            for waiter in pending:
                if waiter.deadline <= now:
                    waiter.answer(error=ChargeTimeout(f"{key} could not be charged in time"))
            pending = [w for w in pending if not w.done.is_set()]
            if not pending:
                return
            try:
                budget = self._snapshot(key, fresh=fresh)
            except NotFound as missing:
                for waiter in pending:
                    waiter.answer(error=missing)
                return
            writers = self._apply(pending, budget)
            if not writers:
                return
            if self._write(key, budget):
                self.stats.count(written=len(writers))
                for waiter, result in writers:
                    waiter.answer(result)
                return
            self.stats.count(conflicts=1)
            pending = [waiter for waiter, _ in writers]
            fresh = True
        for waiter in pending:
            waiter.answer(error=ChargeTimeout(f"{key}: too many write conflicts; try again"))

    def _write(self, key: BudgetKey, budget: Budget) -> bool:
        """Replace /status with the resourceVersion it was computed from; False on 409."""
        plural = RESOURCES[key.kind].plural
        body = budget.to_wire()
        try:
            if key.namespace:
                written = self.api.replace_namespaced_custom_object_status(
                    GROUP, VERSION, key.namespace, plural, key.name, body
                )
            else:
                written = self.api.replace_cluster_custom_object_status(
                    GROUP, VERSION, plural, key.name, body
                )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self.cache.put(_document(written))
        return True

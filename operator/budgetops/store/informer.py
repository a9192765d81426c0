"""The informer the in-cluster store reads from: every budget, kept current by list and watch.

Python has no client-go informer, so BudgetOps keeps its own: one list per kind, then a
watch resumed from the last resourceVersion seen (bookmarks included), a re-list only on
410, readiness from how lately the API server was heard, and parsed budgets cached per
resourceVersion (and per spec, for classification). A watch event is parsed once, and not at
all when it is the echo of the store's own write: the API server sends the object it
answered that write with, byte for byte, and the cache already holds it (`put(answer=)`).

`KubeStore` owns the one `BudgetCache` and writes through it. Everyone else reads it as an
`Informer`: which budgets are held, at which version, and word of each change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from budgetops.adapters.rest import REQUEST_TIMEOUT, stream
from budgetops.apis.common import GROUP, VERSION
from budgetops.apis.resources import RESOURCES, Budget, BudgetKey, Kind
from budgetops.store.parsed import Parsed

log = logging.getLogger("budgetops.store")


class Informer(Protocol):
    """What readers outside the store need of its cache: the scheduler (which budgets,
    and a listener woken by each change) and the reconciler (a budget's resourceVersion,
    to skip an idle look without parsing it). Writing through the cache is the store's."""

    listeners: list[Callable[[BudgetKey], None]]
    """Called (on a watch thread) with the key of every budget that changed."""

    def budget_keys(self) -> list[BudgetKey]: ...

    def version(self, key: BudgetKey) -> str | None:
        """The resourceVersion held for `key`, without parsing it (None: not held)."""
        ...


WATCH_SECONDS = 60
"""Server-side length of one watch. Each watch that ends on time, each event and each
bookmark is word from the API server: readiness asks that one came recently."""

READ_SLACK = 15.0
"""Seconds a watch's read may wait beyond its server-side length before the client gives
up on it: a half-open connection then fails instead of blocking forever."""


def _newer(candidate: str, current: str) -> bool:
    """resourceVersions are opaque; etcd's are integers, so compare those, else trust order."""
    if candidate.isdigit() and current.isdigit():
        return int(candidate) >= int(current)
    return True


def json_object(value: object) -> dict[str, Any]:
    """The client returns JSON objects as `object`; a custom object is always a dict."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(value).__name__}")
    return value


def _key_of(document: dict[str, Any]) -> BudgetKey:
    meta = document["metadata"]
    return BudgetKey(document["kind"], meta["name"], meta.get("namespace") or "")


class _Expired(Exception):
    """The watch's resourceVersion is gone (410): only a new list can go on from here."""


class BudgetCache:
    """Every budget, kept current by one informer per kind: list once, then watch, resuming
    each watch from the last resourceVersion seen (bookmarks included). A re-list happens
    only at start and when the API server says that version is gone (410); it wakes the
    listeners of every budget it found changed, added or removed. `kinds`: those it keeps
    (a command reads no BudgetApprovals, so it needs no RBAC on them)."""

    def __init__(
        self,
        api: client.CustomObjectsApi,
        *,
        watch_seconds: int = WATCH_SECONDS,
        read_slack: float = READ_SLACK,
        kinds: Collection[Kind] = tuple(RESOURCES),
    ) -> None:
        self.api = api
        self.watch_seconds = watch_seconds
        self.read_slack = read_slack
        self._lock = threading.Lock()
        self._raw: dict[BudgetKey, dict[str, Any]] = {}
        self._parsed: Parsed[str] = Parsed()  # by resourceVersion
        self._specs: Parsed[tuple[str, int]] = Parsed()  # by uid and generation
        self._synced = {kind: threading.Event() for kind in kinds}
        self._heard = dict.fromkeys(kinds, -math.inf)
        self._stop = threading.Event()
        self._watches: dict[Kind, urllib3.BaseHTTPResponse] = {}
        self._echoes: dict[str, tuple[BudgetKey, str]] = {}
        """The watch line each of our last writes will come back as, with its key and
        version; one per budget at most (`_echo_of`)."""
        self._echo_of: dict[BudgetKey, str] = {}
        self._threads: list[threading.Thread] = []
        self.listeners: list[Callable[[BudgetKey], None]] = []
        """Called (on a watch thread) with the key of every budget that changed."""
        self.lists = 0
        """LISTs made so far: one per kind at start, then one per 410."""
        self.echoes = 0
        """Watch events recognized as the echo of our own write, and not parsed."""

    def start(self, *, timeout: float = 30.0) -> None:
        for kind in self._synced:
            thread = threading.Thread(
                target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        for kind, synced in self._synced.items():
            if not synced.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"could not list {kind} objects in {timeout:.0f}s")

    def stop(self, *, timeout: float = 5.0) -> None:
        """End every watch (its connection is shut, so no thread stays blocked in a read)
        and wait a bounded time for the watch threads."""
        self._stop.set()
        with self._lock:
            watches = list(self._watches.values())
        for running in watches:  # shut its socket: a read blocked in it returns at once
            sock = getattr(getattr(running, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def fresh_watch(self) -> bool:
        """Whether every kind's watch heard from the API server within a watch's length and
        its read slack: an event, a bookmark, or a watch that ended on time. A watch stuck
        on a half-open connection, or one that cannot reconnect, makes this False."""
        limit = self.watch_seconds + self.read_slack
        now = time.monotonic()
        return all(now - heard <= limit for heard in self._heard.values())

    def _hear(self, kind: Kind) -> None:
        self._heard[kind] = time.monotonic()

    def _run(self, kind: Kind) -> None:
        plural = RESOURCES[kind].plural
        backoff = 0.5
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(kind, plural)
                version = self._follow(kind, plural, version)
            except _Expired:
                log.info("watching %s: version expired; listing again", plural)
                version = None
                continue
            except (HTTPError, OSError, ApiException) as error:  # gone away, restarting, slow
                if self._stop.is_set():  # stopped meanwhile: nobody is waiting for this watch
                    return
                log.warning("watching %s: %s; resuming in %.1fs", plural, error, backoff)
            except Exception:
                log.exception("watching %s failed; listing again in %.1fs", plural, backoff)
                version = None
            else:
                backoff = 0.5
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _list(self, kind: Kind, plural: str) -> str:
        """List every object of `kind` into the cache; the version to watch from."""
        self.lists += 1
        listing = json_object(
            self.api.list_cluster_custom_object(
                GROUP, VERSION, plural, _request_timeout=REQUEST_TIMEOUT
            )
        )
        for key in self._replace(kind, listing["items"]):
            self._tell(key)
        self._hear(kind)
        self._synced[kind].set()
        version: str = listing["metadata"]["resourceVersion"]
        return version

    def _follow(self, kind: Kind, plural: str, version: str) -> str:
        """Apply watch events from `version` until the server ends the watch on time; the
        last version seen (a bookmark's too), to resume from. Raises _Expired on 410."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", str(self.watch_seconds)),
            ("allowWatchBookmarks", "true"),
        ]
        try:
            response = stream(
                self.api.api_client,
                f"/apis/{GROUP}/{VERSION}/{plural}",
                query=query,
                timeout=(REQUEST_TIMEOUT, self.watch_seconds + self.read_slack),
            )
        except ApiException as error:
            if error.status == 410:
                raise _Expired from error
            raise
        with self._lock:
            self._watches[kind] = response
        try:
            if self._stop.is_set():  # stopped before `stop` could see this watch
                return version
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    return version
                if line:
                    self._hear(kind)
                    version = self._event(kind, line) or version
        finally:
            with self._lock:
                self._watches.pop(kind, None)
            response.close()
            response.release_conn()
        self._hear(kind)  # the watch ended on time: the API server is there
        return version

    def _event(self, kind: Kind, line: str) -> str | None:
        """Apply one watch event (a line of JSON); the resourceVersion it carries, if any.
        Raises _Expired on a 410 ERROR event, ApiException on any other."""
        with self._lock:
            echo = self._echoes.pop(line, None)
            if echo is not None:
                del self._echo_of[echo[0]]
        if echo is not None:  # the cache holds this very version, or a newer one
            self.echoes += 1
            return echo[1]
        event = json_object(json.loads(line))
        document = json_object(event["object"])
        if event["type"] == "ERROR":
            code = document.get("code")
            if code == 410:
                raise _Expired
            raise ApiException(
                status=code, reason=f"{document.get('reason')}: {document.get('message')}"
            )
        version: str | None = document.get("metadata", {}).get("resourceVersion")
        if event["type"] == "BOOKMARK":
            return version
        document.setdefault("kind", kind)
        if event["type"] == "DELETED":
            self.forget(_key_of(document))
        else:
            self.put(document)
        return version

    def _replace(self, kind: Kind, items: list[dict[str, Any]]) -> list[BudgetKey]:
        """Hold exactly `items` for `kind`, keeping what was parsed of unchanged objects;
        the keys that were added, changed or removed."""
        listed = {}
        for document in items:
            document.setdefault("kind", kind)
            listed[_key_of(document)] = document
        moved = []
        with self._lock:
            for key in [k for k in self._raw if k.kind == kind and k not in listed]:
                self._drop(key)
                moved.append(key)
            for key, document in listed.items():
                held = self._raw.get(key)
                version = document["metadata"].get("resourceVersion")
                if held is None or held["metadata"].get("resourceVersion") != version:
                    moved.append(key)
                self._raw[key] = document
        return sorted(moved)

    def _drop(self, key: BudgetKey) -> None:
        """Forget `key` (the lock held)."""
        self._raw.pop(key, None)
        self._echoes.pop(self._echo_of.pop(key, ""), None)
        self._parsed.forget(key)
        self._specs.forget(key)

    def _tell(self, key: BudgetKey) -> None:
        for listener in self.listeners:
            listener(key)

    def put(self, document: dict[str, Any], *, answer: bytes | None = None) -> None:
        """Keep `document` unless the cache already holds a newer version of it. `answer`:
        the bytes it was parsed from, the API server's answer to our write, which its watch
        sends again as an event: that event is then recognized without parsing it (unless
        the watch read it first; then it is parsed as any other)."""
        key = _key_of(document)
        version = document["metadata"].get("resourceVersion", "")
        with self._lock:
            held = self._raw.get(key)
            before = None if held is None else held["metadata"].get("resourceVersion", "")
            if before is not None and not _newer(version, before):
                return
            self._raw[key] = document
            self._echoes.pop(self._echo_of.pop(key, ""), None)  # passed, or never coming
            if answer is not None and version != before:  # else the watch was first
                line = f'{{"type":"MODIFIED","object":{answer.decode().rstrip()}}}'
                self._echoes[line] = (key, version)
                self._echo_of[key] = line
        if version != before:  # the watch's echo of our own write is no news
            self._tell(key)

    def forget(self, key: BudgetKey) -> None:
        """Drop `key`; its listeners hear of it if it was held (a deleted budget)."""
        with self._lock:
            held = key in self._raw
            self._drop(key)
        if held:
            self._tell(key)

    def fresh(self, key: BudgetKey) -> Budget | None:
        """A private copy of the cached budget, to change: parsed anew from the stored
        document, which costs a fraction of deep-copying the parsed model."""
        with self._lock:
            document = self._raw.get(key)
        return None if document is None else RESOURCES[key.kind].model.model_validate(document)

    def get(self, key: BudgetKey) -> Budget | None:
        """The cached budget, parsed once per resourceVersion (shared: do not mutate)."""
        with self._lock:
            document = self._raw.get(key)
            if document is None:
                return None
        version = document["metadata"].get("resourceVersion", "")
        budget = self._parsed.get(key, version)
        if budget is None:
            budget = RESOURCES[key.kind].model.model_validate(document)
            self._parsed.keep(key, version, budget)
        return budget

    def spec_only(self, key: BudgetKey) -> Budget | None:
        """The cached budget with an empty status, parsed once per spec (uid and generation):
        what classification needs. A busy budget's status changes with every batch, and a
        large one takes milliseconds to parse, on the webhook's event loop (shared: do not
        mutate; its metadata is that of the generation it was parsed at)."""
        with self._lock:
            document = self._raw.get(key)
            if document is None:
                return None
        meta = document["metadata"]
        stamp = (meta.get("uid", ""), meta.get("generation", 0))
        budget = self._specs.get(key, stamp)
        if budget is None:
            spec = {field: value for field, value in document.items() if field != "status"}
            budget = RESOURCES[key.kind].model.model_validate(spec)
            self._specs.keep(key, stamp, budget)
        return budget

    def version(self, key: BudgetKey) -> str | None:
        """The resourceVersion held for `key`, without parsing it (None: not held)."""
        with self._lock:
            document = self._raw.get(key)
        return None if document is None else document["metadata"].get("resourceVersion")

    def budget_keys(self) -> list[BudgetKey]:
        with self._lock:
            return sorted(self._raw)

"""The latest signed verdicts of each budget, in a ConfigMap of the operator's namespace.

The envelope of every verdict is in the audit trail; this is where a person fetches one by
workload or digest (`budgetops verdict`) without a log pipeline. One ConfigMap per budget,
bounded (VERDICTS_PER_MAP envelopes, MAP_BYTES_MAX bytes), newest kept. A background thread
writes them, at most once a second per budget, with compare-and-swap: admission never
waits for it. A verdict that could not be stored after a few tries is logged; its envelope
is still in the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from budgetops.engine.audit import Sealed
from budgetops.store.audit import Verdict, verdicts_in

log = logging.getLogger("budgetops.verdicts")

VERDICTS_PER_MAP = 100
MAP_BYTES_MAX = 900 * 1024
"""Under the API server's 1 MiB for a ConfigMap, with room for its metadata."""
FLUSH_SECONDS = 1.0
TRIES = 5
INDEX = "index"
BUDGET_ANNOTATION = "budgetops.dev/budget"


def map_name(budget: str) -> str:
    """The ConfigMap of a budget (`RiskBudget/payments/api`): hashed, since a budget's full
    name may be longer than an object name may be."""
    return "budgetops-verdicts-" + hashlib.sha256(budget.encode()).hexdigest()[:20]


def entry_name(digest: str) -> str:
    return digest.replace(":", "-")


def merged(data: dict[str, str], found: Sequence[Verdict]) -> dict[str, str]:
    """A ConfigMap's data with `found` added: the newest verdicts that fit, with an index of
    `[digest, at, object]` newest last. Pure, so the bound is tested without a cluster."""
    index: list[list[str]] = json.loads(data.get(INDEX, "[]"))
    envelopes = {name: text for name, text in data.items() if name != INDEX}
    for verdict in found:
        index.append([verdict.digest, verdict.at, verdict.object])
        envelopes[entry_name(verdict.digest)] = json.dumps(verdict.envelope)
    index = index[-VERDICTS_PER_MAP:]
    while True:
        kept = {entry_name(digest) for digest, _, _ in index}
        envelopes = {name: text for name, text in envelopes.items() if name in kept}
        size = sum(len(text) for text in envelopes.values()) + len(json.dumps(index))
        if size <= MAP_BYTES_MAX or len(index) <= 1:
            return {INDEX: json.dumps(index), **envelopes}
        index = index[1:]


class VerdictMaps:
    """A Sink of the audit trail that keeps the latest envelopes fetchable."""

    def __init__(
        self, api_client: client.ApiClient, namespace: str, *, flush_every: float = FLUSH_SECONDS
    ) -> None:
        self.api = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.flush_every = flush_every
        self._pending: dict[str, list[Verdict]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, records: Sequence[Sealed]) -> None:
        found = verdicts_in(records)
        if not found:
            return
        with self._lock:
            for verdict in found:
                self._pending.setdefault(verdict.budget, []).append(verdict)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="verdicts", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            self.flush()
            self._stopping.wait(self.flush_every)
        self.flush()

    def flush(self) -> None:
        """Write what is pending, one ConfigMap per budget."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for budget, found in pending.items():
            for _ in range(TRIES):
                try:
                    if self._store(budget, found):
                        break
                except ApiException as error:
                    log.warning("verdicts of %s not stored yet: %s", budget, error.reason)
            else:
                log.error(
                    "%d verdicts of %s were not stored in ConfigMap %s/%s; their envelopes "
                    "are in the audit trail",
                    len(found),
                    budget,
                    self.namespace,
                    map_name(budget),
                )

    def _store(self, budget: str, found: Sequence[Verdict]) -> bool:
        """One compare-and-swap of the budget's ConfigMap; False on a conflict."""
        name = map_name(budget)
        try:
            current = self.api.read_namespaced_config_map(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=name,
                    namespace=self.namespace,
                    labels={"app.kubernetes.io/part-of": "budgetops"},
                    annotations={BUDGET_ANNOTATION: budget},
                ),
                data=merged({}, found),
            )
            try:
                self.api.create_namespaced_config_map(self.namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        current.data = merged(current.data or {}, found)
        try:
            self.api.replace_namespaced_config_map(name, self.namespace, current)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def read(self, budget: str) -> tuple[list[list[str]], dict[str, Any]]:
        """A budget's index (newest last) and envelopes by digest; empty if it has none."""
        try:
            current = self.api.read_namespaced_config_map(map_name(budget), self.namespace)
        except ApiException as error:
            if error.status == 404:
                return [], {}
            raise
        data = current.data or {}
        index: list[list[str]] = json.loads(data.get(INDEX, "[]"))
        envelopes = {
            digest: json.loads(data[entry_name(digest)])
            for digest, _, _ in index
            if entry_name(digest) in data
        }
        return index, envelopes

    def index(self) -> list[tuple[str, str, str, str]]:
        """Every kept verdict of every budget as (budget, digest, at, object)."""
        found = self.api.list_namespaced_config_map(
            self.namespace, label_selector="app.kubernetes.io/part-of=budgetops"
        )
        kept = []
        for item in found.items:
            meta = item.metadata
            if meta is None or not str(meta.name).startswith("budgetops-verdicts-"):
                continue
            budget = (meta.annotations or {}).get(BUDGET_ANNOTATION)
            if not budget:
                continue
            for digest, at, described in json.loads((item.data or {}).get(INDEX, "[]")):
                kept.append((budget, digest, at, described))
        return kept

    def stop(self) -> None:
        """Write what is pending and stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

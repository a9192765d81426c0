"""The in-cluster store: budgets are custom resources, balances live in their status.

Reads come from a watch-fed cache, the informer in store/informer.py. A charge is a
compare-and-swap: the status is replaced with the resourceVersion it was computed from, so
a concurrent writer's change is never overwritten; on 409 the budget is read again and the
change decided again on fresh state.

Charges to one budget are group-committed (store.commit): one status write per batch. A
budget is one object, which etcd keeps under 1.5 MiB: a change that would make it larger
than OBJECT_LIMIT fails alone, with why, instead of every write of its batch failing with
"request is too large" until the status shrinks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from budgetops.adapters.rest import REQUEST_TIMEOUT, request_json
from budgetops.apis.common import GROUP, VERSION
from budgetops.apis.resources import RESOURCES, Budget, BudgetKey, Kind, field_errors
from budgetops.engine.audit import Sealed
from budgetops.store.attempt import Attempted
from budgetops.store.audit import AuditTrail
from budgetops.store.base import ChargeTimeout, NotFound, Unreadable, one_account
from budgetops.store.commit import GroupCommit
from budgetops.store.informer import BudgetCache, Informer, json_object

log = logging.getLogger("budgetops.store")

OBJECT_LIMIT = 1_500_000
"""Bytes of compact JSON one budget may take. etcd refuses a write past its request limit
(1.5 MiB by default: a status of 1,565,011 bytes was stored and one of 1,643,011 refused,
measured); this leaves about 70 KB for what the API server adds (managedFields) and its
own envelope."""


class KubeStore(Attempted):
    """A BudgetStore over the API server, with group commit per budget.

    A status change runs on the freshest status and is persisted by compare-and-swap; after
    it, the budget the change last ran on carries the resourceVersion its status was stored
    as (or read at, if not written).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        group_commit: bool = True,
        trail: AuditTrail | None = None,
        kinds: Collection[Kind] = tuple(RESOURCES),
        limit: int = OBJECT_LIMIT,
    ) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.trail = trail or AuditTrail()
        self._reported: dict[BudgetKey, str] = {}
        self._reported_lock = threading.Lock()
        self.cache = BudgetCache(self.api, kinds=kinds)
        self.commits = GroupCommit(self._attempt, enabled=group_commit, limit=limit)
        self.stats = self.commits.stats

    @property
    def informer(self) -> Informer:
        """The cache as readers outside the store see it: budget keys, their versions, and
        listeners woken by each change (the scheduler's and the reconciler's view)."""
        return self.cache

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
                    GROUP,
                    VERSION,
                    key.namespace,
                    plural,
                    key.name,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            else:
                document = self.api.get_cluster_custom_object(
                    GROUP, VERSION, plural, key.name, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiException as error:
            if error.status == 404:
                self.cache.forget(key)
                raise NotFound(str(key)) from None
            raise
        self.cache.put(json_object(document))
        return json_object(document)

    def get(self, key: BudgetKey, *, account: str | None = None) -> Budget:
        cached = self.cache.fresh(key)
        if cached is not None:
            return one_account(cached, account)
        document = self._fetch(key)
        return one_account(RESOURCES[key.kind].model.model_validate(document), account)

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        """Cached budgets, shared with the cache; without status, parsed once per spec.

        A budget that does not read (the API server accepted what the models refuse, or a
        status nobody but BudgetOps should write was edited) is left out, with an error
        logged once per version: what it governs is refused until it is fixed, and every
        other budget goes on being enforced. Reading it by key still raises, with the
        reason."""
        read = self.cache.get if with_status else self.cache.spec_only
        found = []
        for key in self.cache.budget_keys():
            if kind not in (None, key.kind):
                continue
            try:
                budget = read(key)
            except ValidationError as error:
                self._unreadable(key, error)
                continue
            if budget is not None:
                found.append(budget)
        return found

    def unreadable(self) -> dict[BudgetKey, str]:
        found = {}
        for key in self.cache.budget_keys():
            try:
                self.cache.get(key)
            except ValidationError as error:
                found[key] = field_errors(error)[0]
        return found

    def _unreadable(self, key: BudgetKey, error: ValidationError) -> None:
        version = self.cache.version(key) or ""
        with self._reported_lock:
            if self._reported.get(key) == version:
                return
            self._reported[key] = version
        log.error(
            "%s does not read (%s); what it governs is refused until it is fixed",
            key,
            field_errors(error)[0],
        )

    def _unread(self) -> str:
        return "cached budgets cannot be read"

    def _current(self) -> bool:
        """Every kind's watch heard from the API server lately."""
        if not self.cache.fresh_watch():
            log.warning("not ready: a budget watch has not heard from the API server lately")
            return False
        return True

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
        self.cache.put(json_object(created))
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

    # Status writes: compare-and-swap, group-committed (store.attempt).

    @contextlib.contextmanager
    def _attempting(self, key: BudgetKey) -> Iterator[None]:
        """An API server that does not answer makes an attempt a ChargeTimeout: a
        retriable refusal."""
        try:
            yield
        except HTTPError as error:  # no answer in time, or no connection
            raise ChargeTimeout(f"{key}: the API server did not answer ({error})") from error

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        """The cache's copy, or the API server's when `fresh` (or not cached)."""
        try:
            cached = None if fresh else self.cache.fresh(key)
            if cached is None:
                return RESOURCES[key.kind].model.model_validate(self._fetch(key))
        except ValidationError as error:
            raise Unreadable(f"{key} does not read ({field_errors(error)[0]})") from error
        return cached

    def _persist(self, key: BudgetKey, budget: Budget, sealed: Sequence[Sealed]) -> bool:
        """The status alone: the records are published, or held in it (`AuditTrail`)."""
        return self._write(key, budget)

    def _write(self, key: BudgetKey, budget: Budget) -> bool:
        """Replace /status with the resourceVersion it was computed from; False on 409."""
        plural = RESOURCES[key.kind].plural
        where = f"/namespaces/{key.namespace}" if key.namespace else ""
        path = f"/apis/{GROUP}/{VERSION}{where}/{plural}/{key.name}/status"
        body = budget.model_dump_json(by_alias=True, exclude_none=True)  # as `to_wire` has it
        status, data = request_json(
            self.api.api_client, "PUT", path, body=body.encode(), accept=(200, 409)
        )
        if status == 409:
            return False
        written = json_object(json.loads(data))
        budget.metadata.resource_version = written["metadata"]["resourceVersion"]
        self.cache.put(written, answer=data)  # its watch event is not parsed again
        return True

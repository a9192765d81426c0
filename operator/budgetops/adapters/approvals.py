"""BudgetApproval objects in the API server: those the operator has to record, its answers
on their status, and one made in the caller's own name by `kubectl budget approve`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from budgetops.apis.common import API_VERSION, GROUP, VERSION, format_time
from budgetops.apis.resources import Budget, BudgetApproval, BudgetKey
from budgetops.engine.clock import Clock
from budgetops.store.informer import json_object

PLURAL = "budgetapprovals"
WAITING_MAX = 50
"""Approvals of one budget recorded in one pass, oldest name first: each answer's status
write wakes the budget again, so the rest follow in the next passes."""


def approval_name(request: str, approver: str) -> str:
    """One object per request and approver: approving twice finds the first one."""
    return f"{request}-{hashlib.sha256(approver.encode()).hexdigest()[:10]}"


class Cached(Protocol):
    """The store's cache of every object (`store/informer.BudgetCache`)."""

    listeners: list[Callable[[BudgetKey], None]]

    def get(self, key: BudgetKey) -> Budget | None: ...

    def budget_keys(self) -> list[BudgetKey]: ...


class KubeApprovals:
    """The operator's side: approvals waiting in the store's cache, answered by a merge
    patch of their status (the reconciler, on one replica, is their only status writer).

    Which approvals wait, by budget, is kept as the cache hears of them: a reconcile of one
    of ten thousand budgets looks at its own approvals, not at every object held."""

    def __init__(self, api_client: client.ApiClient, cache: Cached, clock: Clock) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.cache = cache
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[str, set[BudgetKey]] = {}
        self._budget: dict[BudgetKey, str] = {}
        cache.listeners.append(self._heard)
        for key in cache.budget_keys():  # those listed before this desk listened
            self._heard(key)

    def _read(self, key: BudgetKey) -> BudgetApproval | None:
        try:
            found = self.cache.get(key)
        except ValidationError:  # the API server checked it; a newer schema may not
            return None
        return found if isinstance(found, BudgetApproval) else None

    def _heard(self, key: BudgetKey) -> None:
        """Keep `key` among its budget's waiting approvals while it is unanswered."""
        if key.kind != "BudgetApproval":
            return
        found = self._read(key)
        with self._lock:
            held = self._budget.pop(key, None)
            if held is not None:
                self._waiting[held].discard(key)
                if not self._waiting[held]:
                    del self._waiting[held]
            if found is not None and found.status.recorded is None:
                self._budget[key] = found.spec.budget
                self._waiting.setdefault(found.spec.budget, set()).add(key)

    def budget_of(self, key: BudgetKey) -> str | None:
        """The TrustBudget a BudgetApproval is for (None: gone, or not one)."""
        found = self._read(key)
        return None if found is None else found.spec.budget

    def waiting(self, budget: str) -> list[BudgetApproval]:
        with self._lock:
            keys = sorted(self._waiting.get(budget, ()))[:WAITING_MAX]
        found = [self._read(key) for key in keys]
        return [a for a in found if a is not None and a.status.recorded is None]

    def answer(self, approval: BudgetApproval, *, recorded: bool, message: str) -> None:
        status = {"recorded": recorded, "message": message[:1024], "at": format_time(self.clock())}
        self.api.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, approval.metadata.name, {"status": status}
        )


def whoami(api_client: client.ApiClient) -> tuple[str, list[str]]:
    """The caller's username and groups, as the API server authenticates them."""
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        client.V1SelfSubjectReview(), _request_timeout=10
    )
    user = review.status.user_info if review.status is not None else None
    if user is None or not user.username:
        raise LookupError("the API server did not say who you are (SelfSubjectReview)")
    return user.username, list(user.groups or [])


def submit(
    api_client: client.ApiClient, *, budget: str, request: str, approver: str, groups: list[str]
) -> dict[str, Any]:
    """Create the caller's BudgetApproval of `request` (or find the one made before)."""
    api = client.CustomObjectsApi(api_client)
    name = approval_name(request, approver)
    body = {
        "apiVersion": API_VERSION,
        "kind": "BudgetApproval",
        "metadata": {"name": name},
        "spec": {"budget": budget, "request": request, "approver": approver, "groups": groups},
    }
    try:
        made = api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, _request_timeout=10)
    except ApiException as error:
        if error.status != 409:
            raise
        return read(api_client, name)
    return json_object(made)


def read(api_client: client.ApiClient, name: str) -> dict[str, Any]:
    return json_object(
        client.CustomObjectsApi(api_client).get_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, _request_timeout=10
        )
    )

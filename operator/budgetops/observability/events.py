"""Kubernetes Events about budgets: what an operator sees in `kubectl describe`.

An Event is a notice, not a record: BudgetOps' records are in status. Failing to write one
is logged and never fails the admission that caused it.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from kubernetes import client

from budgetops.apis.common import API_VERSION
from budgetops.apis.resources import Budget
from budgetops.engine.clock import Clock, system_clock

log = logging.getLogger("budgetops.events")

EventType = Literal["Normal", "Warning"]
COMPONENT = "budgetops"


class EventRecorder(Protocol):
    def emit(self, budget: Budget, *, type: EventType, reason: str, message: str) -> None:
        """Tell people something happened to `budget`."""
        ...


class LogEvents:
    """Where there is no API server (the embedded ledger): Events go to the log."""

    def emit(self, budget: Budget, *, type: EventType, reason: str, message: str) -> None:
        log.info("%s %s/%s: %s: %s", type, budget.kind, budget.metadata.name, reason, message)


class KubeEvents:
    """core/v1 Events on the budget object, in its namespace (`default` for TrustBudgets)."""

    def __init__(self, api_client: client.ApiClient, *, clock: Clock = system_clock) -> None:
        self.api = client.CoreV1Api(api_client)
        self.clock = clock

    def emit(self, budget: Budget, *, type: EventType, reason: str, message: str) -> None:
        meta = budget.metadata
        namespace = meta.namespace or "default"
        now = self.clock()
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta.name}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION,
                kind=budget.kind,
                name=meta.name,
                namespace=meta.namespace,
                uid=meta.uid,
            ),
            reason=reason,
            message=message[:1024],
            type=type,
            source=client.V1EventSource(component=COMPONENT),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.api.create_namespaced_event(namespace, event)
        except Exception:
            log.exception("could not record Event %s on %s/%s", reason, budget.kind, meta.name)

"""Kubernetes Events about budgets, posted to the API server (`kubectl describe` shows them).

The recorder protocol and the queue in front of it are in `observability.events`.
"""

from __future__ import annotations

import logging
from datetime import datetime

from kubernetes import client

from budgetops.adapters.rest import request_json
from budgetops.apis.common import API_VERSION, format_time
from budgetops.apis.resources import Subject
from budgetops.engine.clock import Clock, system_clock

log = logging.getLogger("budgetops.events")

COMPONENT = "budgetops"


class KubeEvents:
    """core/v1 Events on the budget object, in its namespace (`default` for TrustBudgets)."""

    def __init__(self, api_client: client.ApiClient, *, clock: Clock = system_clock) -> None:
        self.api = api_client
        self.clock = clock

    def emit(
        self,
        subject: Subject,
        *,
        type: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        meta = subject.metadata
        namespace = meta.namespace or "default"
        now = format_time(at or self.clock())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": subject.kind,
                "name": meta.name,
                **({"namespace": meta.namespace} if meta.namespace else {}),
                **({"uid": meta.uid} if meta.uid else {}),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type,
            "source": {"component": COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{namespace}/events"
        try:
            request_json(self.api, "POST", path, body=event, accept=(201,))
        except Exception:
            log.exception("could not record Event %s on %s/%s", reason, subject.kind, meta.name)

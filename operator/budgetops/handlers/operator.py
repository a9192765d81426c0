"""kopf wiring: one daemon per budget, peering so that one replica reconciles.

Every replica serves admission; kopf peering pauses the daemons of all but the replica with
the highest priority. Daemons (not timers) because a daemon sleeps until its budget's next
due instant (a reset, a window end, a reservation's expiry) instead of polling on a fixed
beat, and wakes early when the budget's status changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client

from budgetops.apis.common import GROUP, VERSION
from budgetops.apis.resources import RESOURCES, Kind
from budgetops.handlers.reconciler import Reconciler
from budgetops.store.base import BudgetKey

log = logging.getLogger("budgetops.operator")

FINALIZER = "budgetops.dev/reconciler"
PEERING = "budgetops"
RECONCILED_KINDS: tuple[Kind, ...] = ("TrustBudget", "RiskBudget")
WORKER_LIMIT = 32


class Wakeups:
    """Budgets whose status changed since their daemon last looked (set from watch threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[BudgetKey] = set()

    def mark(self, key: BudgetKey) -> None:
        with self._lock:
            self._dirty.add(key)

    def take(self, key: BudgetKey) -> bool:
        with self._lock:
            if key in self._dirty:
                self._dirty.discard(key)
                return True
            return False


def login_with(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration the stores use."""
    config = api.configuration
    token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
    scheme, _, value = (token or "").partition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        scheme=scheme or None,
        token=value or None,
    )


def build_registry(
    reconciler: Reconciler, wakeups: Wakeups, pool: ThreadPoolExecutor
) -> kopf.OperatorRegistry:
    """A registry with one daemon per reconciled kind, all calling `reconciler`."""
    registry = kopf.OperatorRegistry()
    poll = reconciler.timing.poll.total_seconds()

    for kind in RECONCILED_KINDS:

        async def keep(
            name: str,
            namespace: str | None,
            stopped: kopf.DaemonStopped,
            kind: Kind = kind,
            **_: Any,
        ) -> None:
            key = BudgetKey(kind, name, namespace or "")
            loop = asyncio.get_running_loop()
            while not stopped:
                wakeups.take(key)
                try:
                    delay = await loop.run_in_executor(pool, reconciler.reconcile, key)
                except Exception:
                    log.exception("reconciling %s failed; trying again in %.0fs", key, poll)
                    reconciler.metrics.failures.labels(kind).inc()
                    delay = reconciler.timing.poll
                if delay is None:
                    return
                deadline = loop.time() + delay.total_seconds()
                while not stopped and loop.time() < deadline:
                    await stopped.wait(min(poll, max(deadline - loop.time(), 0.0)))
                    if wakeups.take(key):
                        break

        kopf.daemon(
            GROUP,
            VERSION,
            RESOURCES[kind].plural,
            id=f"keep-{kind.lower()}",
            cancellation_timeout=10.0,
            registry=registry,
        )(keep)
    return registry


def settings(*, peering: bool) -> kopf.OperatorSettings:
    """Quiet, with our own finalizer name and a bounded number of kopf workers."""
    chosen = kopf.OperatorSettings()
    chosen.persistence.finalizer = FINALIZER
    chosen.posting.level = logging.WARNING
    # kopf starts one worker per object with pending watch events; at start-up that is every
    # budget at once, each holding its object while it patches the finalizer on. A worker
    # keeps its slot until it has idled `idle_timeout`, so the limit needs a short one.
    chosen.queueing.worker_limit = WORKER_LIMIT
    chosen.queueing.idle_timeout = 0.5
    chosen.peering.standalone = not peering
    chosen.peering.clusterwide = True
    chosen.peering.name = PEERING
    chosen.peering.priority = random.randint(1, 1_000_000)  # distinct per replica
    chosen.peering.mandatory = peering
    return chosen


def run_operator(
    reconciler: Reconciler,
    api: client.ApiClient,
    *,
    wakeups: Wakeups,
    peering: bool,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    workers: int = 16,
) -> None:
    """Run the daemons until `stop` is set, or SIGTERM when run in the main thread.

    Pass no `stop` from the main thread: kopf waits for a threading.Event in an executor
    thread, and an Event nobody sets would keep the process alive after SIGTERM.
    """
    registry = build_registry(reconciler, wakeups, pool := ThreadPoolExecutor(workers))

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login_with(api)

    try:
        asyncio.run(
            kopf.operator(
                registry=registry,
                settings=settings(peering=peering),
                clusterwide=True,
                stop_flag=stop,
                ready_flag=ready,
            )
        )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

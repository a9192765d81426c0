"""Who reconciles: with peering, the one replica kopf elects; without, this process.

Every replica serves admission. kopf peering pauses all but the replica with the highest
priority; its only handler is a daemon on the peering object itself, so the daemon runs
exactly while this replica leads, and it runs the scheduler that reconciles every budget.
kopf handles no budget directly: it neither watches them a second time nor puts a
finalizer on each.

The peering object is the operator's, not the chart's: every replica makes it when it is
missing and keeps looking, so a `helm uninstall` (which removes the ServiceAccount before
kopf can take its finalizer off) or a stray delete never leaves the replicas with nothing
to elect a leader on. Whether this replica leads is a gauge; summed, it says whether any does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from typing import Any, Protocol

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Gauge
from urllib3.exceptions import HTTPError

from budgetops.apis.crds import PEERING_GROUP
from budgetops.apis.resources import BudgetKey, Kind
from budgetops.reconciling.schedule import Scheduler
from budgetops.usecases.reconciling import Reconciler

log = logging.getLogger("budgetops.operator")

FINALIZER = "budgetops.dev/reconciler"
PEERING = "budgetops"
PEERING_PLURAL = "clusterkopfpeerings"
PEERING_CHECK = 5.0
"""Seconds between looks at the peering object: how soon a deleted one is made again."""
RECONCILED_KINDS: tuple[Kind, ...] = ("TrustBudget", "RiskBudget")


class Watched(Protocol):
    """Budgets and a way to hear of their changes: the in-cluster store's informer, or the
    embedded ledger's version poll."""

    listeners: list[Callable[[BudgetKey], None]]

    def budget_keys(self) -> list[BudgetKey]: ...


def keep_budgets(reconciler: Reconciler, watched: Watched, *, workers: int = 16) -> Scheduler:
    """A scheduler over every TrustBudget and RiskBudget in `watched`, woken by its changes
    and by those of the BudgetApprovals of a TrustBudget."""

    def kept() -> list[BudgetKey]:
        return [key for key in watched.budget_keys() if key.kind in RECONCILED_KINDS]

    def failed(key: BudgetKey) -> None:
        reconciler.metrics.failures.labels(key.kind).inc()

    poll = reconciler.timing.poll  # `--reconcile-poll`: wakes no closer, retries after
    scheduler = Scheduler(
        reconciler.reconcile, kept, workers=workers, spacing=poll, retry=poll, failed=failed
    )

    def changed(key: BudgetKey) -> None:
        if key.kind in RECONCILED_KINDS:
            scheduler.wake(key)
        elif key.kind == "BudgetApproval" and reconciler.approvals is not None:
            budget = reconciler.approvals.budget_of(key)  # a new approval: record it now
            if budget:
                scheduler.wake(BudgetKey("TrustBudget", budget))

    watched.listeners.append(changed)
    return scheduler


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


def ensure_peering(api: client.ApiClient) -> None:
    """Make the peering object if it is missing; say so when it is going away. Never raises:
    a replica that cannot look logs why and looks again."""
    objects = client.CustomObjectsApi(api)
    try:
        found = objects.get_cluster_custom_object(
            PEERING_GROUP, "v1", PEERING_PLURAL, PEERING, _request_timeout=10
        )
    except ApiException as error:
        if error.status == 404:
            _make_peering(objects)
        else:
            log.warning(
                "cannot read the peering object %s: %s %s", PEERING, error.status, error.reason
            )
        return
    except (HTTPError, OSError) as error:
        log.warning("cannot read the peering object %s: %s", PEERING, error)
        return
    if isinstance(found, dict) and found.get("metadata", {}).get("deletionTimestamp"):
        log.warning(
            "the peering object %s is being deleted: it is made again once it is gone", PEERING
        )


def _make_peering(objects: client.CustomObjectsApi) -> None:
    body = {
        "apiVersion": f"{PEERING_GROUP}/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING, "labels": {"app.kubernetes.io/part-of": "budgetops"}},
    }
    try:
        objects.create_cluster_custom_object(
            PEERING_GROUP, "v1", PEERING_PLURAL, body, _request_timeout=10
        )
    except ApiException as error:
        if error.status != 409:  # 409: another replica made it first
            log.error(
                "no replica reconciles: the peering object %s is missing and cannot be made: %s %s",
                PEERING,
                error.status,
                error.reason,
            )
        return
    except (HTTPError, OSError) as error:
        log.error("the peering object %s is missing and could not be made: %s", PEERING, error)
        return
    log.warning("the peering object %s was missing: made it", PEERING)


def build_registry(scheduler: Scheduler, leading: Gauge | None = None) -> kopf.OperatorRegistry:
    """One daemon, on our peering object: kopf runs it while this replica leads."""
    registry = kopf.OperatorRegistry()

    def lead(stopped: kopf.DaemonStopped, **_: Any) -> None:
        log.info("leading: reconciling every budget")
        if leading is not None:
            leading.set(1)
        try:
            scheduler.run(stopped)
        finally:
            if leading is not None:
                leading.set(0)
        log.info("no longer leading (%s)", stopped.reason)

    kopf.daemon(
        PEERING_GROUP,
        "v1",
        PEERING_PLURAL,
        id="lead",
        when=lambda name, **_: name == PEERING,
        cancellation_timeout=30.0,
        registry=registry,
    )(lead)
    return registry


def settings() -> kopf.OperatorSettings:
    """Quiet, peering mandatory, with our own finalizer name (kopf puts it on the peering
    object, so the daemon is stopped before that object goes)."""
    chosen = kopf.OperatorSettings()
    chosen.persistence.finalizer = FINALIZER
    chosen.posting.level = logging.WARNING
    chosen.peering.clusterwide = True
    chosen.peering.name = PEERING
    chosen.peering.priority = random.randint(1, 1_000_000)  # distinct per replica
    chosen.peering.mandatory = True
    return chosen


def run_operator(
    scheduler: Scheduler,
    api: client.ApiClient,
    *,
    peering: bool,
    stop: threading.Event,
    ready: threading.Event | None = None,
    leading: Gauge | None = None,
) -> None:
    """Reconcile until `stop` is set: always (no peering), or while elected."""
    if not peering:
        if ready is not None:
            ready.set()
        if leading is not None:
            leading.set(1)
        scheduler.run(stop)
        return
    registry = build_registry(scheduler, leading)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login_with(api)

    asyncio.run(_operate(registry, api, stop=stop, ready=ready))


async def _operate(
    registry: kopf.OperatorRegistry,
    api: client.ApiClient,
    *,
    stop: threading.Event,
    ready: threading.Event | None,
) -> None:
    """kopf until `stop` is set (or until its own SIGTERM handler, in the main thread), and
    the peering object kept in existence meanwhile.

    kopf waits for a threading.Event in a thread of the loop's default executor, which
    `asyncio.run` joins at exit: an Event that kopf's own signal handler never sets would
    then hang the process. An asyncio.Event, relayed from `stop` here, has no thread.
    """
    stopping = asyncio.Event()

    async def relay() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
        stopping.set()

    async def keep_peering() -> None:
        while True:
            await asyncio.to_thread(ensure_peering, api)
            await asyncio.sleep(PEERING_CHECK)

    await asyncio.to_thread(ensure_peering, api)  # before kopf looks for it
    relaying = asyncio.create_task(relay())
    keeping = asyncio.create_task(keep_peering())
    try:
        await kopf.operator(
            registry=registry,
            settings=settings(),
            clusterwide=True,
            stop_flag=stopping,
            ready_flag=ready,
        )
    finally:
        relaying.cancel()
        keeping.cancel()

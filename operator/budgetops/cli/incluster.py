"""`budgetops run`: the product in a cluster. Every replica serves admission; the replica
kopf peering elects also reconciles (resets, windows, confirmations, transitions)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TextIO

from kubernetes import client
from prometheus_client import CollectorRegistry

from budgetops.adapters.approvals import Cached, KubeApprovals
from budgetops.adapters.events import KubeEvents
from budgetops.adapters.leaseobjects import KubeLeaseObjects
from budgetops.adapters.objects import KubeObjects
from budgetops.adapters.secrets import KubeSecrets
from budgetops.adapters.verdictmaps import VerdictMaps
from budgetops.adapters.vulnerabilityreports import KubeVulnerabilityReports
from budgetops.adapters.webhooktls import WebhookTLS
from budgetops.apis.resources import BudgetKey
from budgetops.crypto.webhookcerts import service_names
from budgetops.engine.clock import Clock, system_clock
from budgetops.notify import Notifier
from budgetops.observability.events import EventRecorder, QueuedEvents
from budgetops.observability.metrics import (
    BudgetCollector,
    EventsCollector,
    ReconcileMetrics,
    StoreCollector,
)
from budgetops.reconciling.leases import LeaseMirror
from budgetops.reconciling.operator import keep_budgets, run_operator
from budgetops.store import BudgetStore
from budgetops.store.audit import StreamSink
from budgetops.usecases.leasing import signing_key
from budgetops.usecases.reconciling import Announcer, Reconciler, Timing

from . import stores
from .serving import attestation, log_to_stderr, serve_until_stopped
from .settings import ClusterSettings
from .target import EXIT_UNREACHABLE, ClusterUnreachable, api_client, probe

log = logging.getLogger("budgetops.run")


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the validating webhook in a cluster and, unless told not to, reconcile.

    Its stdout is the audit stream, JSON lines only, so what it says of itself goes to stderr.
    """
    return run_in_cluster(ClusterSettings.from_args(args))


def run_in_cluster(settings: ClusterSettings) -> int:
    """`cmd_run` once its settings are built: see there."""
    log_to_stderr(json_lines=True)
    api = api_client(settings.kubeconfig)
    try:  # credentials the API server refuses: one line, not a watch's traceback
        probe(api, settings.kubeconfig or "this pod's service account")
    except ClusterUnreachable as error:
        log.error("cannot start: %s", error)
        return EXIT_UNREACHABLE
    if settings.makes_tls:
        settings = bootstrap_tls(api, settings)
    secrets = KubeSecrets(api)
    verdict_maps = VerdictMaps(api, settings.namespace)
    attestor, trail = attestation(
        secrets, settings.namespace, [StreamSink(sys.stdout), verdict_maps], settings.audit_file
    )
    stack = contextlib.ExitStack()
    store = stack.enter_context(stores.cluster_store(api, trail))
    stack.callback(verdict_maps.stop)
    registry = CollectorRegistry()
    registry.register(StoreCollector(store.stats))
    registry.register(BudgetCollector(store))
    events = QueuedEvents(KubeEvents(api), busy=store.commits.busy)
    registry.register(EventsCollector(events))
    try:
        signing_key(secrets, settings.namespace)  # agents' tokens need it; made once per cluster
    except LookupError as error:
        log.warning("the lease API cannot sign or verify agent tokens yet: %s", error)
    try:
        if not settings.reconcile:
            return serve_until_stopped(
                store,
                settings,
                None,
                registry=registry,
                events=events,
                secrets=secrets,
                attestor=attestor,
                reports=KubeVulnerabilityReports(api),
            )
        notifier = Notifier(secrets=secrets, registry=registry, clock=system_clock)
        notifier.start()
        stack.callback(notifier.stop)
        reconciler = kube_reconciler(
            api,
            store,
            events,
            registry,
            versions=store.informer.version,
            announcer=notifier,
            namespace=settings.namespace,
            poll=settings.reconcile_poll,
            cache=store.cache,
        )
        scheduler = keep_budgets(reconciler, store.informer)

        def reconcile(stop: threading.Event) -> None:
            run_operator(
                scheduler,
                api,
                peering=settings.peering,
                stop=stop,
                leading=reconciler.metrics.leading,
            )

        return serve_until_stopped(
            store,
            settings,
            None,
            registry=registry,
            events=events,
            until=reconcile,
            secrets=secrets,
            attestor=attestor,
            reports=KubeVulnerabilityReports(api),
        )
    finally:
        stack.close()


TLS_CHECK = timedelta(hours=12)


def bootstrap_tls(api: client.ApiClient, settings: ClusterSettings) -> ClusterSettings:
    """`settings` serving the CA and certificate of `--tls-secret`, made or reissued as
    needed, and looked at again twice a day (the server reloads the files when they change)."""
    if not settings.tls_secret:
        raise ValueError("bootstrap_tls serves the certificate of --tls-secret: give one")
    names = [
        *service_names(settings.tls_service, settings.namespace),
        *settings.tls_extra_names,
    ]
    tls = WebhookTLS(
        api,
        namespace=settings.namespace,
        secret=settings.tls_secret,
        names=names,
        configuration=settings.webhook_configuration,
        folder=settings.tls_dir,
    )
    served = tls.ensure(system_clock())

    def renew() -> None:
        while True:
            time.sleep(TLS_CHECK.total_seconds())
            try:
                tls.ensure(system_clock())
            except Exception:
                log.exception("could not check the webhook's certificate; trying again later")

    threading.Thread(target=renew, name="tls-renew", daemon=True).start()
    return replace(settings, tls_cert_file=str(served.cert_file), tls_key_file=str(served.key_file))


def kube_reconciler(
    api: client.ApiClient,
    store: BudgetStore,
    events: EventRecorder,
    registry: CollectorRegistry,
    *,
    versions: Callable[[BudgetKey], str | None],
    clock: Clock = system_clock,
    announcer: Announcer | None = None,
    namespace: str = "budgetops-system",
    poll: timedelta = Timing.poll,
    cache: Cached | None = None,
) -> Reconciler:
    """The reconciler `run` keeps budgets with (and the reconcile benchmark measures):
    witnesses looked up in the API server, idle looks answered from `versions`, the
    resourceVersion the store's informer holds for a budget, and with the store's `cache`
    the BudgetApprovals waiting in it recorded."""
    return Reconciler(
        store=store,
        objects=KubeObjects(api),
        clock=clock,
        events=events,
        metrics=ReconcileMetrics(registry),
        announcer=announcer,
        operator_namespace=namespace,
        timing=Timing(poll=poll),
        versions=versions,
        leases=LeaseMirror(KubeLeaseObjects(api), namespace=namespace, clock=clock),
        approvals=KubeApprovals(api, cache, clock) if cache is not None else None,
    )

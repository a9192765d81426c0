"""Serving the admission webhook until told to stop: shared by `serve` and `run`."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry

from budgetops.adapters.keyring import KeyFiles, key_name, verdict_keyring
from budgetops.admission.classify import Identity
from budgetops.admission.server import raise_descriptor_limit, serve
from budgetops.admission.webhook import Admission
from budgetops.engine.clock import system_clock
from budgetops.leaseapi.app import PREFIX as LEASE_PREFIX
from budgetops.leaseapi.app import lease_app
from budgetops.observability.events import EventRecorder
from budgetops.observability.metrics import AdmissionMetrics
from budgetops.store import BudgetStore
from budgetops.store.audit import AuditTrail, Checkpoints, FileSink, Sink
from budgetops.usecases.attest import Attestor
from budgetops.usecases.leasing import LeaseService, LeaseSettings, SecretSource

from .settings import ServeSettings

log = logging.getLogger("budgetops.serve")


def log_to_stderr() -> None:
    """A server's log, Events included where there is no API server to post them to."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def attestation(
    secrets: KeyFiles, namespace: str, sinks: list[Sink], audit_file: str | None
) -> tuple[Attestor, AuditTrail]:
    """The signer of verdicts and the audit trail of a server, from its keyring (made now if
    there is none): one key signs verdicts and the trail's checkpoints. A keyring that
    cannot be read or made leaves decisions audited but unsigned, loudly: admission must
    not stop for it."""
    if audit_file:
        sinks = [*sinks, FileSink(Path(audit_file))]
    try:
        keyring = verdict_keyring(secrets, namespace, first_key=key_name())
    except (LookupError, ValueError, OSError) as error:
        log.error("verdicts and audit checkpoints are NOT signed: %s", error)
        return Attestor(), AuditTrail(sinks=sinks)
    log.info("signing verdicts with key %s", keyring.active.keyid)
    return Attestor(keyring), AuditTrail(checkpoints=Checkpoints.by(keyring), sinks=sinks)


def serve_until_stopped(
    store: BudgetStore,
    settings: ServeSettings,
    out: TextIO,
    *,
    registry: CollectorRegistry | None = None,
    events: EventRecorder | None = None,
    until: Callable[[threading.Event], None] | None = None,
    secrets: SecretSource | None = None,
    attestor: Attestor | None = None,
) -> int:
    """Run the webhook over `store` until SIGTERM or Ctrl-C, running `until(stop)` meanwhile
    if given (it must return once `stop` is set)."""
    tls = settings.tls
    admission = Admission(
        store,
        clock=system_clock,
        identity=Identity(own_service_account=settings.own_service_account),
        ttl=settings.ttl,
        metrics=AdmissionMetrics(registry or CollectorRegistry()),
        events=events,
        attestor=attestor,
    )
    mounted = {}
    if secrets is not None:
        lease = LeaseSettings(
            issuer=settings.issuer, ttl=settings.lease_ttl, namespace=settings.namespace
        )
        service = LeaseService(store, secrets, clock=system_clock, settings=lease)
        mounted[LEASE_PREFIX] = lease_app(service)
    log.info("open-file limit: %d", raise_descriptor_limit())
    server = serve(admission, host=settings.host, port=settings.port, tls=tls, mounted=mounted)
    scheme = "https" if tls else "http"
    out.write(f"serving POST {scheme}://{settings.listen}/validate\n")
    if mounted:
        out.write(f"serving the lease API at {scheme}://{settings.listen}{LEASE_PREFIX}\n")
    out.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        if until is not None:
            until(stop)
        else:
            stop.wait()
    server.close()
    return 0

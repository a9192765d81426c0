"""Serving the admission webhook until told to stop: shared by `serve` and `run`."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry

from budgetops.adapters.keyring import KeyFiles, key_name, verdict_keyring
from budgetops.admission.classify import Identity
from budgetops.admission.scans import VulnerabilityReports
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


def log_to_stderr(*, json_lines: bool = False) -> None:
    """A server's log, Events included where there is no API server to post them to.

    `json_lines`: one JSON object per line, warnings and uncaught exceptions included, for
    a pod, whose stdout and stderr a log pipeline reads as one stream (the audit records are
    told apart by their `hash`, the log lines by their `level`)."""
    if not json_lines:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    uncaught = logging.getLogger("budgetops.uncaught")
    sys.excepthook = lambda kind, error, trace: uncaught.critical(
        "uncaught exception", exc_info=(kind, error, trace)
    )
    threading.excepthook = lambda hook: uncaught.critical(
        "uncaught exception in thread %s",
        hook.thread.name if hook.thread else "?",
        exc_info=(hook.exc_type, hook.exc_value or hook.exc_type(), hook.exc_traceback),
    )


class JsonLines(logging.Formatter):
    """A log record as one line of JSON: time (UTC), level, logger, message, and the
    traceback, if any, as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


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
    out: TextIO | None,
    *,
    registry: CollectorRegistry | None = None,
    events: EventRecorder | None = None,
    until: Callable[[threading.Event], None] | None = None,
    secrets: SecretSource | None = None,
    attestor: Attestor | None = None,
    reports: VulnerabilityReports | None = None,
) -> int:
    """Run the webhook over `store` until SIGTERM or Ctrl-C, running `until(stop)` meanwhile
    if given (it must return once `stop` is set). What it serves is said on `out`, or
    logged if None; `reports` are the cluster's VulnerabilityReports, if it has any."""
    tls = settings.tls
    admission = Admission(
        store,
        clock=system_clock,
        identity=Identity(own_service_account=settings.own_service_account),
        ttl=settings.ttl,
        metrics=AdmissionMetrics(registry or CollectorRegistry()),
        events=events,
        attestor=attestor,
        reports=reports,
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
    serving = [f"serving POST {scheme}://{settings.listen}/validate"]
    if mounted:
        serving.append(f"serving the lease API at {scheme}://{settings.listen}{LEASE_PREFIX}")
    for line in serving:
        if out is None:
            log.info("%s", line)
        else:
            out.write(f"{line}\n")
            out.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        if until is not None:
            until(stop)
        else:
            stop.wait()
        delay = settings.shutdown_delay.total_seconds()
        if delay:
            # A deleted pod leaves the Service's endpoints a moment after SIGTERM; what the
            # API server sends meanwhile is answered, not cut off (a webhook call that gets
            # EOF fails the user's request).
            log.info("stopping: still answering for %gs", delay)
            time.sleep(delay)
    server.close()
    return 0

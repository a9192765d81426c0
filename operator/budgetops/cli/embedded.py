"""`budgetops serve`: the webhook on the embedded ledger, kept current by its reconciler."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry

from budgetops.engine.clock import system_clock
from budgetops.handlers.embedded import LedgerWatch, embedded_reconciler, keep_ledger
from budgetops.observability.events import LogEvents
from budgetops.observability.metrics import BudgetCollector, StoreCollector
from budgetops.store import SQLiteStore
from budgetops.store.secrets import FileSecrets
from budgetops.store.sqlite import SERVING_CHECKPOINT_SECONDS

from .agents import secrets_dir
from .serving import attestation, log_to_stderr, serve_until_stopped


def serve_embedded(path: str, args: argparse.Namespace, out: TextIO) -> int:
    """Serve admission on the ledger at `path`; settle, reset and roll windows meanwhile."""
    log_to_stderr()
    secrets = FileSecrets(secrets_dir(Path(path), args.secrets_dir))
    attestor, trail = attestation(secrets, "", [], args.audit_file)
    # Concurrent webhook requests share transactions: one status write per batch.
    store = SQLiteStore(
        path, group_commit=True, checkpoint_every=SERVING_CHECKPOINT_SECONDS, trail=trail
    )
    registry = CollectorRegistry()
    registry.register(StoreCollector(store.commits.stats))
    registry.register(BudgetCollector(store))
    events = LogEvents()
    reconciler = embedded_reconciler(store, events, registry, clock=system_clock)
    try:
        return serve_until_stopped(
            store,
            args,
            out,
            registry=registry,
            events=events,
            until=keep_ledger(reconciler, LedgerWatch(store)),
            secrets=secrets,
            attestor=attestor,
        )
    finally:
        store.close()

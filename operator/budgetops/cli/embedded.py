"""`budgetops serve`: the webhook on the embedded ledger, kept current by its reconciler."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry

from budgetops.adapters.filesecrets import FileSecrets
from budgetops.adapters.keyring import embedded_keys
from budgetops.engine.clock import system_clock
from budgetops.observability.events import LogEvents
from budgetops.observability.metrics import BudgetCollector, StoreCollector
from budgetops.reconciling.embedded import LedgerWatch, embedded_reconciler, keep_ledger
from budgetops.store.errors import LedgerError

from . import stores
from .serving import attestation, log_to_stderr, serve_until_stopped
from .settings import EmbeddedSettings


def cmd_serve(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    """`budgetops serve`: the validating webhook on the embedded ledger until interrupted."""
    return serve_embedded(EmbeddedSettings.from_args(args, ledger), out)


def serve_embedded(settings: EmbeddedSettings, out: TextIO) -> int:
    """Serve admission on the ledger at `settings.db`; settle, reset and roll windows meanwhile.

    The ledger must exist and hold a budget (only `apply` makes one): served on a missing
    or empty ledger, a typo in `--db` would admit everything. Nothing, not even a keyring,
    is made beside a ledger that is refused."""
    path = settings.db
    keys = embedded_keys(path, settings.verdict_keys)
    with stores.serving_ledger(path) as store:
        if not store.versions():
            raise LedgerError(
                f"the ledger {path} holds no budgets, so serving it would admit everything: "
                f"load budgets into it with `budgetops apply -f <manifests> --db {path}`"
            )
        out.write(f"ledger: {path}\n")
        log_to_stderr()
        secrets = FileSecrets(settings.secrets_dir)
        attestor, store.trail = attestation(keys, "", [], settings.audit_file)
        registry = CollectorRegistry()
        registry.register(StoreCollector(store.commits.stats))
        registry.register(BudgetCollector(store))
        events = LogEvents()
        reconciler = embedded_reconciler(store, events, registry, clock=system_clock)
        return serve_until_stopped(
            store,
            settings,
            out,
            registry=registry,
            events=events,
            until=keep_ledger(reconciler, LedgerWatch(store)),
            secrets=secrets,
            attestor=attestor,
        )

"""The stores the CLI builds: the one module of `budgetops.cli` that imports a store
implementation (`store.sqlite`, `store.kube`), which import-linter holds.

Every command and server is handed what is built here and reads it as a `BudgetStore`;
which class that is, and how it is constructed, is decided in this module alone, so a change
to a store's constructor is one edit. Each function imports its implementation when called:
`budgetops status` on the embedded ledger loads no cluster client, and a command in a
cluster loads no SQLite store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from budgetops.store.audit import AuditTrail
    from budgetops.store.kube import KubeStore
    from budgetops.store.sqlite import Mode, SQLiteStore

Use = Literal["read", "write", "create"]
"""How a command opens the embedded ledger: only read it (nothing is created, and a ledger
the user may not write reads all the same), write to one that exists, or create it."""

_MODES: dict[Use, Mode] = {"read": "ro", "write": "rw", "create": "rwc"}


@contextlib.contextmanager
def ledger(path: Path, use: Use = "read") -> Iterator[SQLiteStore]:
    """The embedded ledger at `path` for one command, closed when it is done. A command
    that writes reads each status back whole before writing it (a server checks only what
    each change added)."""
    from budgetops.store.sqlite import SQLiteStore

    store = SQLiteStore(path, mode=_MODES[use], check_writes=use != "read")
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def serving_ledger(path: Path) -> Iterator[SQLiteStore]:
    """The embedded ledger `budgetops serve` admits from, which must exist: concurrent
    webhook requests share transactions (one status write per batch), and the WAL is
    checkpointed in the background rather than inside a request's commit."""
    from budgetops.store.sqlite import SERVING_CHECKPOINT_SECONDS, SQLiteStore

    store = SQLiteStore(
        path, mode="rw", group_commit=True, checkpoint_every=SERVING_CHECKPOINT_SECONDS
    )
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def cluster_store(api: Any, trail: AuditTrail, *, approvals: bool = True) -> Iterator[KubeStore]:
    """The budgets of the cluster `api` reaches, read from a watch-fed cache (started here,
    stopped when done) and written by compare-and-swap, each write's audit records sealed
    into `trail`: the store the webhook and the reconciler use, and every command in a
    cluster. Without `approvals` it keeps no BudgetApprovals (which only the reconciler
    records), so a command needs no RBAC on them."""
    from budgetops.apis.resources import RESOURCES
    from budgetops.store.kube import KubeStore

    kinds = [kind for kind in RESOURCES if approvals or kind != "BudgetApproval"]
    store = KubeStore(api, trail=trail, kinds=kinds).start()
    try:
        yield store
    finally:
        store.stop()

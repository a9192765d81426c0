"""A BudgetStore in memory, for unit tests that need a store but not a ledger file.

It implements the protocol itself rather than subclassing a real store: each budget is kept
as the JSON a ledger row holds (its object without status, and its status) and read back
through the same models, so no caller ever holds an object the store or another caller
also holds. Status changes go through the same GroupCommit as SQLiteStore and KubeStore;
only how one budget is read and written differs. Each write seals its audit records into
the budget's chain through an AuditTrail, as SQLiteStore does, and keeps their lines in
`audit`. No versions, no watch, no verdict index: a test that needs those needs a real store.

Fault injection, for tests of what GroupCommit and its callers do when a write goes wrong,
is by public attributes only (each documented where it is set): `conflicts` and `rival` make
writes lose to another writer's, `before_write` makes them wait, slow or fail, and `reads`
records whether each attempt read afresh.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import ValidationError

from budgetops.apis.resources import RESOURCES, Budget, BudgetKey, Kind, field_errors
from budgetops.engine.audit import Sealed
from budgetops.store.attempt import Attempted
from budgetops.store.audit import AuditTrail
from budgetops.store.base import NotFound, Unreadable, one_account
from budgetops.store.commit import GroupCommit

Row = tuple[str, str]
"""The budget without its status, and its status: JSON, as SQLite keeps them."""


class MemStore(Attempted):
    """A BudgetStore over a dict; `group_commit` and `trail` as for SQLiteStore."""

    def __init__(self, *, group_commit: bool = False, trail: AuditTrail | None = None) -> None:
        self._rows: dict[BudgetKey, Row] = {}
        self._lock = threading.RLock()
        self.commits = GroupCommit(self._attempt, enabled=group_commit)
        self.trail = trail or AuditTrail()
        self.audit: list[str] = []
        """Every sealed audit line, in the order written."""
        self.reads: list[bool] = []
        """Every read of an attempt, in order: whether it was asked to be fresh (a retry)."""
        self.conflicts = 0
        """So many of the next writes lose to another writer's: nothing written, a conflict."""
        self.rival: Budget | None = None
        """Another writer's budget: its status is stored in place of the next write, which
        then loses to it (a conflict), so the retry reads the rival's."""
        self.before_write: Callable[[BudgetKey, Budget], None] | None = None
        """Called with each budget about to be written, under the store's lock: it may
        wait, sleep, or raise (a write that fails; nothing is written)."""

    def _decode(self, key: BudgetKey, row: Row, *, with_status: bool = True) -> Budget:
        obj, status = row
        try:
            document: dict[str, Any] = json.loads(obj)
            document["status"] = json.loads(status) if with_status else {}
            return RESOURCES[key.kind].model.model_validate(document)
        except (ValueError, KeyError, TypeError) as error:
            why = field_errors(error)[0] if isinstance(error, ValidationError) else str(error)
            raise Unreadable(f"{key} does not read back ({why})") from error

    def apply(self, budget: Budget) -> Budget:
        key = BudgetKey.of(budget)
        document = budget.to_wire()
        status = document.pop("status", {})
        with self._lock:
            held = self._rows.get(key)
            if held is None:
                # a new object: its uid, as SQLiteStore gives one, or the one a test pairing
                # this store with another gives it (a verdict's digest covers it)
                generation, uid = 1, document["metadata"].get("uid") or str(uuid.uuid4())
            else:
                before = json.loads(held[0])
                generation, uid = before["metadata"]["generation"], before["metadata"]["uid"]
                if before["spec"] != document["spec"]:
                    generation += 1
                status = json.loads(held[1])
            document["metadata"].update(generation=generation, uid=uid)
            self._rows[key] = (json.dumps(document), json.dumps(status))
        return self.get(key)

    def get(self, key: BudgetKey, *, account: str | None = None) -> Budget:
        with self._lock:
            row = self._rows.get(key)
        if row is None:
            raise NotFound(str(key))
        return one_account(self._decode(key, row), account)

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        with self._lock:
            rows = sorted(self._rows.items())
        budgets = []
        for key, row in rows:
            if kind is not None and key.kind != kind:
                continue
            try:
                budgets.append(self._decode(key, row, with_status=with_status))
            except Unreadable:
                continue  # named by `unreadable`, as SQLiteStore leaves it out
        return budgets

    def unreadable(self) -> dict[BudgetKey, str]:
        with self._lock:
            rows = sorted(self._rows.items())
        found = {}
        for key, row in rows:
            try:
                self._decode(key, row)
            except Unreadable as error:
                found[key] = str(error)
        return found

    def delete(self, key: BudgetKey) -> bool:
        with self._lock:
            return self._rows.pop(key, None) is not None

    @contextlib.contextmanager
    def _attempting(self, key: BudgetKey) -> Iterator[None]:
        """Read, apply and write under one lock: an attempt conflicts only as `conflicts` or
        `rival` say (`fresh` is moot, every read is)."""
        with self._lock:
            yield

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        self.reads.append(fresh)
        row = self._rows.get(key)
        if row is None:
            raise NotFound(str(key))
        return self._decode(key, row)

    def _persist(self, key: BudgetKey, budget: Budget, sealed: Sequence[Sealed]) -> bool:
        if self.before_write is not None:
            self.before_write(key, budget)
        if self.rival is not None:
            rival, self.rival = self.rival, None
            status = rival.status.model_dump_json(by_alias=True, exclude_none=True)
            self._rows[key] = (self._rows[key][0], status)
            return False
        if self.conflicts:
            self.conflicts -= 1
            return False
        status = budget.status.model_dump_json(by_alias=True, exclude_none=True)
        self._rows[key] = (self._rows[key][0], status)
        self.audit.extend(record.line for record in sealed)
        return True

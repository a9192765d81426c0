"""The embedded store: budgets and their ledgers in one SQLite file.

Each status change is one short `BEGIN IMMEDIATE` transaction, which takes SQLite's write
lock before reading, so concurrent writers (threads or processes) queue instead of
overwriting each other. WAL lets readers go on meanwhile.

A server moves the WAL into the database file from a background thread (`checkpoint_every`).
Left to SQLite, that copy and its fsync run inside whichever commit crosses the WAL's size
threshold: measured on the webhook, one admission in a hundred waited 17 to 19 ms for it.

A store opened with `mode="ro"` only reads: it creates nothing, works on a ledger the user
may not write, and leaves no `-shm` file behind there (see `_uri`). A file that cannot serve
as a ledger (missing where it must exist, a folder, read-only for a writer, not a SQLite
database, a budget that no longer reads back) raises LedgerError, whose message names the
file and what to do; `explain` words any other sqlite3.Error or OSError the same way.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError

from budgetops.apis.resources import RESOURCES, Budget, BudgetKey, Kind, field_errors
from budgetops.engine.audit import Sealed
from budgetops.store.attempt import Attempted
from budgetops.store.audit import AuditTrail, verdicts_in
from budgetops.store.base import ChargeTimeout, NotFound, Unreadable, one_account
from budgetops.store.commit import GroupCommit
from budgetops.store.errors import LedgerError, explain
from budgetops.store.parsed import Parsed
from budgetops.store.rows import Rows, Stored, read

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (
    kind       TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    object     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name)
)
"""

_ROWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS status_rows (
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    map       TEXT NOT NULL,
    key       TEXT NOT NULL,
    row       TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name, map, key)
) WITHOUT ROWID
"""
"""One row per entry of a status's big maps (store.rows): an account, a settled key, a
release id, an alerting account. The budget's own `status` column holds the rest."""

_RECORD_UID = (
    "CASE WHEN json_valid(record) AND json_type(record, '$.uid') = 'text' "
    "THEN json_extract(record, '$.uid') ELSE '' END"
)
"""A record's uid as engine.audit.chain_of reads it: "" when it has none, or does not read."""

_AUDIT_SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS audit (
    budget TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    record TEXT    NOT NULL,
    uid    TEXT    NOT NULL GENERATED ALWAYS AS ({_RECORD_UID}) VIRTUAL
)
""",
    "CREATE UNIQUE INDEX IF NOT EXISTS audit_chains ON audit (budget, uid, seq)",
    """
CREATE TABLE IF NOT EXISTS verdicts (
    digest   TEXT NOT NULL PRIMARY KEY,
    budget   TEXT NOT NULL,
    at       TEXT NOT NULL,
    object   TEXT NOT NULL,
    envelope TEXT NOT NULL
)
""",
)
"""The audit chain of every budget, in full, and the latest signed verdicts (VERDICTS_KEPT).
A chain is a budget object's (engine.audit.ChainKey), unique by (budget, uid, seq): a budget
deleted and applied again gets a new uid, and its chain starts again at seq 1 beside the
old one. The uid is read from the record, so a BudgetOps from before, which inserts
(budget, seq, record), still writes this table (rolled back, or another install's CLI)."""

VERDICTS_KEPT = 10_000
"""Envelopes the embedded ledger keeps to fetch by digest; the audit table keeps them all."""

_KEY = "kind = ? AND namespace = ? AND name = ?"

SERVING_CHECKPOINT_SECONDS = 0.1
"""Background checkpoints for a server. A status write adds 10 to 20 pages to the WAL, so at
hundreds of writes a second a checkpoint each 0.1 s copies a few MB. Measured with one client
on a hot budget: p99 4 ms at 0.1 s, 5.6 ms at 0.2 s, 17 to 19 ms left to SQLite."""

SAFETY_NET_PAGES = 10_000
"""With background checkpoints, SQLite still checkpoints inside a commit once the WAL holds
this many pages (about 40 MB): only if the background thread falls far behind."""

log = logging.getLogger("budgetops.sqlite")

Mode = Literal["rwc", "rw", "ro"]
"""As SQLite's `mode=`: read, write and create the file; read and write one that exists;
only read one that exists."""


class UnreadableBudget(LedgerError, Unreadable):
    """A budget in the ledger that does not read back; `why` is what is wrong with it."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _uri(path: Path, mode: Mode) -> str:
    """The URI SQLite opens. A reader of a ledger it may not write (or in a folder it may not
    write) with no WAL file beside it opens it `immutable`: SQLite would otherwise need a
    `-shm` file, which it cannot create in a read-only folder, and which it would leave
    read-only beside a read-only file, breaking writes once the file is made writable again.
    Without a WAL file, the database file holds every committed write."""
    uri = f"file:{quote(str(path.absolute()))}?mode={mode}"
    if mode != "ro" or Path(f"{path}-wal").exists():
        return uri
    if _writable(path) and _writable(path.absolute().parent):
        return uri
    return f"{uri}&immutable=1"


def _new_version() -> int:
    """A fresh row version: random, so a kept copy matches only the very write that made it,
    even after the row was deleted and created again by another process."""
    return secrets.randbits(62)


def _params(key: BudgetKey) -> tuple[str, str, str]:
    return (key.kind, key.namespace, key.name)


def _audit_columns(db: sqlite3.Connection) -> set[str]:
    """The audit table's columns, generated ones included (none: no table)."""
    return {row[1] for row in db.execute("PRAGMA table_xinfo(audit)")}


def _key_chains_by_uid(db: sqlite3.Connection) -> None:
    """An audit table made before chains were told apart by uid, keyed by (budget, seq), is
    made again as _AUDIT_SCHEMA has it, every record kept in the order written, in the
    caller's transaction: a budget deleted and applied again could not be written before."""
    columns = _audit_columns(db)
    if not columns or "uid" in columns:
        return
    db.execute("ALTER TABLE audit RENAME TO audit_by_seq")
    db.execute(_AUDIT_SCHEMA[0])
    db.execute(
        "INSERT INTO audit (budget, seq, record) "
        "SELECT budget, seq, record FROM audit_by_seq ORDER BY rowid"
    )
    db.execute("DROP TABLE audit_by_seq")


def _keep(db: sqlite3.Connection, sealed: Sequence[Sealed]) -> None:
    """Store sealed audit records and their verdicts in the transaction of their write."""
    if not sealed:
        return
    db.executemany(
        "INSERT INTO audit (budget, seq, record) VALUES (?, ?, ?)",
        [(s.record["budget"], s.record["seq"], s.line) for s in sealed],
    )
    found = verdicts_in(sealed)
    if found:
        db.executemany(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
            [(v.digest, v.budget, v.at, v.object, json.dumps(v.envelope)) for v in found],
        )
        db.execute(
            "DELETE FROM verdicts WHERE rowid <= (SELECT max(rowid) FROM verdicts) - ?",
            (VERDICTS_KEPT,),
        )


def _checkpoint(store: weakref.ref[SQLiteStore], every: float, closed: threading.Event) -> None:
    """Every `every` seconds, copy what the WAL holds into the database file, until the store
    is closed or gone. PASSIVE never waits for readers or writers: what it cannot copy now
    it copies next time."""
    while not closed.wait(every):
        current = store()
        if current is None:
            return
        try:
            current._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:
            log.warning("background checkpoint of %s failed: %s", current.path, error)
        del current


class SQLiteStore(Attempted):
    """A BudgetStore over a SQLite file, safe from many threads and processes.

    A status change is read, changed and written inside one write transaction; with
    `group_commit`, changes waiting at the same time share it (see store.commit). Waiting for
    the write lock is bounded by the connection's busy timeout; past it the charge is refused
    with ChargeTimeout.
    """

    log = log

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = 10_000,
        group_commit: bool = False,
        checkpoint_every: float | None = None,
        mode: Mode = "rwc",
        check_writes: bool = False,
        trail: AuditTrail | None = None,
    ) -> None:
        """`checkpoint_every`: seconds between background WAL checkpoints, for a process that
        serves requests; None leaves them to SQLite, inside commits (fine for the CLI).
        `mode`: see Mode; only "rwc" creates the file (and its folder). `check_writes`: read
        the whole status back before each write, where a server checks only what each
        change added (GroupCommit's `whole`; no status is written that does not read back
        either way). `trail`
        seals each write's audit records into the budget's chain (stored in the `audit`
        table of the same transaction) and publishes them to its sinks once committed."""
        self.path = Path(path)
        self.mode: Mode = mode
        self._prepare()
        self._busy_timeout_ms = busy_timeout_ms
        self._autocheckpoint = 1000 if checkpoint_every is None else SAFETY_NET_PAGES
        self._closed = threading.Event()
        self._local = threading.local()
        self._decoded: Parsed[int] = Parsed()  # by row version: the last one written
        self._rows: dict[BudgetKey, Rows] = {}  # what the budget handed out last was read as
        self._specs: Parsed[str] = Parsed(most=1024)  # by stored object (spec)
        self._reported: dict[BudgetKey, int] = {}  # left out of `list`, at this row version
        self._reported_lock = threading.Lock()
        self._writer = threading.Lock()
        self.commits = GroupCommit(
            self._attempt,
            enabled=group_commit,
            whole=check_writes,
            readback=lambda key, budget: self._rows[key].check(key, budget),
        )
        self.trail = trail or AuditTrail()
        if mode == "ro":
            self._check_schema(self._connection())
        else:
            with self._transaction() as db:
                self._check_schema(db)
                db.execute(_SCHEMA)
                db.execute(_ROWS_SCHEMA)
                _key_chains_by_uid(db)
                for table in _AUDIT_SCHEMA:
                    db.execute(table)
        if checkpoint_every is not None:
            threading.Thread(
                target=_checkpoint,
                args=(weakref.ref(self), checkpoint_every, self._closed),
                name="sqlite-checkpoint",
                daemon=True,
            ).start()

    def _prepare(self) -> None:
        """Refuse, before SQLite touches anything, a file that cannot serve in this mode."""
        path = self.path
        if path.is_dir():
            raise LedgerError(explain(path, IsADirectoryError(path)))
        if self.mode != "rwc" and (not path.exists() or path.stat().st_size == 0):
            there = (
                "there is no ledger at" if not path.exists() else "there is only an empty file at"
            )
            raise LedgerError(
                f"{there} {path}: load budgets into one with "
                f"`budgetops apply -f <manifests> --db {path}`"
            )
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        if self.mode == "ro":
            return
        if path.exists() and not _writable(path):
            raise LedgerError(explain(path, PermissionError("the file is read-only")))
        if not _writable(path.absolute().parent):
            raise LedgerError(
                explain(path, PermissionError("its folder is read-only, and SQLite writes there"))
            )

    def _check_schema(self, db: sqlite3.Connection) -> None:
        """A SQLite file other than a ledger is never read as one, nor written into; only a
        store that may create a ledger ("rwc", which `apply` uses) makes an empty file one."""
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "budgets" in tables or (not tables and self.mode == "rwc"):
            return
        raise LedgerError(
            f"{self.path} is not a BudgetOps ledger (a SQLite file without a budgets table): "
            "point --db at a ledger, or at a new file for `budgetops apply`"
        )

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                _uri(self.path, self.mode), isolation_level=None, timeout=0, uri=True
            )
            try:
                connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
                if self.mode != "ro":
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.execute("PRAGMA synchronous = NORMAL")
                    connection.execute(f"PRAGMA wal_autocheckpoint = {self._autocheckpoint}")
            except BaseException:
                connection.close()
                raise
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. Writers in this process take turns on a mutex first, so
        SQLite's lock (whose busy handler sleeps in growing steps) only arbitrates between
        processes; with many threads on one hot budget that is the difference between
        milliseconds and seconds."""
        db = self._connection()
        with self._writer:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (other threads close theirs when they end) and
        stop background checkpoints."""
        self._closed.set()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _decode(self, kind: str, obj: str, status: str, rows: Sequence[Stored] = ()) -> Budget:
        return self._read(kind, obj, status, rows)[0]

    def _read(
        self, kind: str, obj: str, status: str, rows: Sequence[Stored]
    ) -> tuple[Budget, Rows]:
        """The budget from its row and its maps' rows, and those maps as read."""
        try:
            document: dict[str, Any] = json.loads(obj)
            document["status"], found = read(status, list(rows))
            budget = RESOURCES[kind].model.model_validate(document)  # type: ignore[index]
        except (ValueError, KeyError, TypeError) as error:
            raise self._unreadable(kind, obj, error) from error
        found.track(budget.status)
        return budget, found

    def _rows_of(self, db: sqlite3.Connection, key: BudgetKey) -> list[Stored]:
        return db.execute(
            f"SELECT map, key, row FROM status_rows WHERE {_KEY}", _params(key)
        ).fetchall()

    def _all_rows(self, kind: Kind | None) -> dict[tuple[str, str, str], list[Stored]]:
        """Every budget's maps' rows (of one kind if given), by (kind, namespace, name)."""
        query = "SELECT kind, namespace, name, map, key, row FROM status_rows"
        rows = (
            self._connection().execute(f"{query} WHERE kind = ?", (kind,))
            if kind
            else self._connection().execute(query)
        )
        found: dict[tuple[str, str, str], list[Stored]] = {}
        for kind_, namespace, name, map_, entry, row in rows:
            found.setdefault((kind_, namespace, name), []).append((map_, entry, row))
        return found

    def _unreadable(self, kind: str, obj: str, error: Exception) -> UnreadableBudget:
        try:
            metadata = json.loads(obj)["metadata"]
            name = f"{kind}/{metadata.get('namespace') or ''}/{metadata['name']}"
        except (ValueError, KeyError, TypeError):
            name = f"a {kind}"
        why = field_errors(error)[0] if isinstance(error, ValidationError) else str(error)
        return UnreadableBudget(
            f"the ledger {self.path} holds {name.replace('//', '/')}, which does not read "
            f"back ({why}): restore the ledger from a backup",
            why,
        )

    def _encode_status(self, budget: Budget) -> str:
        return budget.status.model_dump_json(by_alias=True, exclude_none=True)

    def apply(self, budget: Budget) -> Budget:
        """Store the budget's spec and metadata, keeping its status if it exists. A new one
        gets a uid, as the API server gives one, which names its audit chain; one applied
        again keeps the uid it has (none, if stored before the ledger gave uids)."""
        key = BudgetKey.of(budget)
        document = budget.to_wire()
        document.pop("status", None)
        metadata = document["metadata"]
        with self._transaction() as db:
            row = db.execute(
                f"SELECT object, generation FROM budgets WHERE {_KEY}", _params(key)
            ).fetchone()
            if row is None:
                generation = 1
                metadata["generation"] = generation
                metadata["uid"] = str(uuid.uuid4())
                db.execute(
                    "INSERT INTO budgets VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        *_params(key),
                        generation,
                        _new_version(),
                        json.dumps(document),
                        self._encode_status(budget),
                    ),
                )
            else:
                generation = row[1]
                stored = json.loads(row[0])
                if stored["spec"] != document["spec"]:
                    generation += 1
                metadata["generation"] = generation
                metadata.pop("uid", None)
                if stored["metadata"].get("uid"):
                    metadata["uid"] = stored["metadata"]["uid"]
                db.execute(
                    f"UPDATE budgets SET object = ?, generation = ?, version = ? WHERE {_KEY}",
                    (json.dumps(document), generation, _new_version(), *_params(key)),
                )
        self._forget(key)
        return self.get(key)

    def get(self, key: BudgetKey, *, account: str | None = None) -> Budget:
        """The budget from its row and its maps' rows; with `account`, from its row and that
        account's row alone (one indexed read, whatever the budget's size)."""
        db = self._connection()
        row = db.execute(
            f"SELECT object, status FROM budgets WHERE {_KEY}", _params(key)
        ).fetchone()
        if row is None:
            raise NotFound(str(key))
        if account is None:
            return self._decode(key.kind, row[0], row[1], self._rows_of(db, key))
        rows = db.execute(
            f"SELECT map, key, row FROM status_rows WHERE {_KEY} AND map = 'accounts' AND key = ?",
            (*_params(key), account),
        ).fetchall()
        return one_account(self._decode(key.kind, row[0], row[1], rows), account)

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        """Every budget that reads. One that does not is left out, as KubeStore leaves it
        out, with an error logged once per version of its row: every other budget goes on
        being enforced. `unreadable` says which and why; `get` raises, and so do charges."""
        status = "status" if with_status else "'{}'"
        query = f"SELECT kind, namespace, name, version, object, {status} FROM budgets"
        rows = (
            self._connection().execute(f"{query} WHERE kind = ?", (kind,))
            if kind
            else self._connection().execute(query)
        ).fetchall()
        maps = self._all_rows(kind) if with_status else {}
        budgets = []
        for kind_, namespace, name, version, obj, state in rows:
            try:
                budgets.append(
                    self._decode(kind_, obj, state, maps.get((kind_, namespace, name), ()))
                    if with_status
                    else self._spec_only(BudgetKey(kind_, name, namespace), obj)
                )
            except UnreadableBudget as error:
                self._left_out(BudgetKey(kind_, name, namespace), version, error.why)
        return sorted(budgets, key=BudgetKey.of)

    def _left_out(self, key: BudgetKey, version: int, why: str) -> None:
        with self._reported_lock:
            if self._reported.get(key) == version:
                return
            self._reported[key] = version
        log.error("%s does not read (%s); what it governs is refused until it is fixed", key, why)

    def unreadable(self) -> dict[BudgetKey, str]:
        rows = self._connection().execute(
            "SELECT kind, namespace, name, object, status FROM budgets"
        )
        maps = self._all_rows(None)
        found = {}
        for kind, namespace, name, obj, status in rows:
            try:
                self._decode(kind, obj, status, maps.get((kind, namespace, name), ()))
            except UnreadableBudget as error:
                found[BudgetKey(kind, name, namespace)] = error.why
        return dict(sorted(found.items()))

    def _spec_only(self, key: BudgetKey, obj: str) -> Budget:
        """A budget with an empty status, parsed once per distinct stored object (spec)."""
        kept = self._specs.get(key, obj)
        if kept is None:
            kept = self._decode(key.kind, obj, "{}")
            self._specs.keep(key, obj, kept)
        return kept

    def _unread(self) -> str:
        return f"the ledger {self.path} cannot be read"

    def delete(self, key: BudgetKey) -> bool:
        with self._transaction() as db:
            deleted = db.execute(f"DELETE FROM budgets WHERE {_KEY}", _params(key)).rowcount
            db.execute(f"DELETE FROM status_rows WHERE {_KEY}", _params(key))
        self._forget(key)
        return deleted > 0

    def _forget(self, key: BudgetKey) -> None:
        self._decoded.forget(key)

    def audit_lines(self) -> tuple[str, ...]:
        """The audit trail of every budget as JSON Lines, each chain in order (none from a
        ledger made before the trail existed; a table made before chains were told apart
        by uid, which only a writer makes again, is read as it is)."""
        try:
            db = self._connection()
            uid = "uid" if "uid" in _audit_columns(db) else _RECORD_UID
            rows = db.execute(f"SELECT record FROM audit ORDER BY budget, {uid}, seq")
            return tuple(record for (record,) in rows)
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return ()
            raise

    def verdict_index(self) -> tuple[tuple[str, str, str, str], ...]:
        """Every kept verdict as (budget, digest, at, object), oldest first."""
        try:
            rows = self._connection().execute(
                "SELECT budget, digest, at, object FROM verdicts ORDER BY rowid"
            )
            return tuple((b, d, a, o) for b, d, a, o in rows)
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return ()
            raise

    def verdict(self, digest: str) -> dict[str, Any] | None:
        """The envelope of a verdict the ledger still keeps (VERDICTS_KEPT), by digest."""
        try:
            row = (
                self._connection()
                .execute("SELECT envelope FROM verdicts WHERE digest = ?", (digest,))
                .fetchone()
            )
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return None
            raise
        return None if row is None else dict(json.loads(row[0]))

    def versions(self) -> dict[BudgetKey, int]:
        """Every budget's row version, read without its spec or status: cheap enough to
        poll every second, which is how a server notices what other processes wrote."""
        rows = self._connection().execute("SELECT kind, namespace, name, version FROM budgets")
        return {
            BudgetKey(kind, name, namespace): version for kind, namespace, name, version in rows
        }

    # Status writes: one transaction an attempt (store.attempt).

    @contextmanager
    def _attempting(self, key: BudgetKey) -> Iterator[None]:
        """One transaction. SQLite's write lock serializes writers, so an attempt never
        conflicts; a lock held past the busy timeout makes it a ChargeTimeout."""
        try:
            with self._transaction():
                yield
        except sqlite3.OperationalError as error:
            if "locked" in str(error):
                raise ChargeTimeout(f"{key}: the ledger stayed locked; try again") from error
            raise

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        """The kept copy if the row has not moved, else the row read and decoded.

        The last budget written is kept per key with the row version it was written as,
        which keeps a hot budget cheap to charge. Taking it drops it, so a batch with
        nothing to write leaves none: it may hold changes that were not persisted."""
        db = self._connection()
        row = db.execute(f"SELECT version FROM budgets WHERE {_KEY}", _params(key)).fetchone()
        if row is None:
            raise NotFound(str(key))
        kept = self._decoded.take(key, row[0])
        if kept is not None and key in self._rows:
            self._rows[key].version = row[0]
            return kept
        # someone else wrote it: only now fetch the large columns
        obj, status = db.execute(
            f"SELECT object, status FROM budgets WHERE {_KEY}", _params(key)
        ).fetchone()
        budget, self._rows[key] = self._read(key.kind, obj, status, self._rows_of(db, key))
        self._rows[key].version = row[0]
        return budget

    def _unwritten(self, key: BudgetKey, budget: Budget) -> None:
        """A batch that wrote nothing keeps its budget if it still equals what is stored, so
        a replay or a dry run does not make the next charge read every account again."""
        rows = self._rows.get(key)
        if rows is not None and rows.version is not None and rows.unchanged(budget):
            self._decoded.keep(key, rows.version, budget)

    def _persist(self, key: BudgetKey, budget: Budget, sealed: Sequence[Sealed]) -> bool:
        """What the batch changed under a new row version: the budget's row, its maps' rows
        that changed, and the sealed records, in the attempt's transaction; the budget is
        kept as of that version. (Should the commit then fail, the row keeps its old
        version, which the kept copy never matches.)"""
        version = _new_version()
        rows = self._rows[key]
        # Group commit checked these rows once the batch's changes ran (its `readback`);
        # since then only the audit trail sealed the batch's records into the head.
        found = rows.changes(budget)
        db = self._connection()
        db.execute(
            f"UPDATE budgets SET status = ?, version = ? WHERE {_KEY}",
            (found.head, version, *_params(key)),
        )
        if found.drop:
            db.executemany(
                f"DELETE FROM status_rows WHERE {_KEY} AND map = ? AND key = ?",
                [(*_params(key), name, entry) for name, entry in found.drop],
            )
        if found.put:
            db.executemany(
                "INSERT OR REPLACE INTO status_rows VALUES (?, ?, ?, ?, ?, ?)",
                [(*_params(key), name, entry, row) for name, entry, row in found.put],
            )
        _keep(db, sealed)
        rows.wrote(found, budget.status)
        rows.version = version
        self._decoded.keep(key, version, budget)
        return True

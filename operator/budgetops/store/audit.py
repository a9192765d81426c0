"""Where sealed audit records go once the write that holds their chain head succeeded.

A store seals a batch's records into the budget's chain just before it writes the status
(`AuditTrail.seal`, which also signs the moved head), and publishes them once that write
succeeded: to stdout as JSON Lines for a cluster's log pipeline, to an optional file, and
(the embedded store) into its SQLite file inside the same transaction. The stream and file
also get each signed head after its records: kept where the ledger's writer cannot reach,
they are the witness `budgetops verify --audit` compares a ledger with. A sink that fails
is logged and never fails the charge: the chain head in the status shows any record that
went missing.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from budgetops.apis.audit import AuditHead
from budgetops.apis.ledger import HELD_AUDIT_MAX, Ledger
from budgetops.apis.resources import Budget, BudgetKey
from budgetops.engine import audit
from budgetops.engine.audit import Sealed
from budgetops.engine.clock import system_clock

if TYPE_CHECKING:  # the signing code (and cryptography) loads with a keyring, not here
    from budgetops.crypto.dsse import Keyring

log = logging.getLogger("budgetops.audit")


class Sink(Protocol):
    """Takes sealed records, oldest first, after their write succeeded."""

    def publish(self, records: Sequence[Sealed]) -> None: ...


class StreamSink:
    """JSON Lines to a text stream (stdout in a pod); one write per batch, so the lines of
    concurrent batches never interleave mid-line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def publish(self, records: Sequence[Sealed]) -> None:
        text = "".join(
            f"{sealed.line}\n{sealed.head}\n" if sealed.head else f"{sealed.line}\n"
            for sealed in records
        )
        with self._lock:
            self.stream.write(text)
            self.stream.flush()


class FileSink(StreamSink):
    """JSON Lines appended to a file, opened once; flushed per batch, not fsynced: the chain
    head in the status, not the file, is what a lost tail shows against."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path.open("a", encoding="utf-8"))


@dataclass(frozen=True)
class Checkpoints:
    """How checkpoints and heads are signed, `sign(payload_type, payload)`, and dated."""

    sign: audit.Sign
    clock: Callable[[], datetime]

    @classmethod
    def by(cls, keyring: Keyring) -> Checkpoints:
        """Signed by the keyring's active key, dated by the system clock."""

        def sign(payload_type: str, payload: bytes) -> dict[str, Any]:
            return keyring.sign(payload, payload_type=payload_type).to_json()

        return cls(sign, system_clock)


class AuditTrail:
    """Seals records into each budget's chain and hands them to the sinks.

    `checkpoints` signs and dates checkpoints and signs each moved head; without it the
    chain has neither (which the tests of other parts use, and which `budgetops verify`
    reports).

    A command in a cluster (`kubectl budget consume`) `hold`s: the lines it seals stay in
    the budget's status, written in the same compare-and-swap as its change, so none can
    be lost between the two. The operator's trail takes them out with its next write of
    that budget and publishes them before its own, in chain order, signing the head they
    leave where the command could not: every record of a chain reaches the operator's
    stream, whoever wrote it.
    """

    def __init__(
        self,
        *,
        checkpoints: Checkpoints | None = None,
        sinks: Sequence[Sink] = (),
        hold: bool = False,
    ) -> None:
        self.checkpoints = checkpoints
        self.sinks = list(sinks)
        self.hold = hold

    def seal(self, key: BudgetKey, budget: Budget) -> list[Sealed]:
        status = budget.status
        if not isinstance(status, Ledger):
            return []
        held = [] if self.hold else _take_held(status)
        signing = self.checkpoints
        # Never sign over held records that do not lead to the head, whether this write adds
        # records of its own or not: `verify` then reports the unsigned head.
        if held and not _ends_at(held, status.audit_head):
            log.error("%s: its held audit records do not end at its head; not signed", key)
            signing = None
        uid = budget.metadata.uid or ""
        sealed = audit.seal(
            status,
            budget=str(key),
            uid=uid,
            now=signing.clock() if signing else None,
            sign=signing.sign if signing else None,
        )
        if self.hold:
            _hold(status, sealed)
        elif held and not sealed and signing is not None and status.audit_head.signature is None:
            line = audit.sign_head(status, budget=str(key), uid=uid, sign=signing.sign)
            held[-1] = Sealed(held[-1].record, held[-1].line, line)
        return [*held, *sealed]

    def publish(self, records: Sequence[Sealed]) -> None:
        if not records:
            return
        for sink in self.sinks:
            try:
                sink.publish(records)
            except Exception as error:
                log.error(
                    "audit records %s-%s of %s did not reach %s: %s",
                    records[0].record["seq"],
                    records[-1].record["seq"],
                    records[0].record["budget"],
                    type(sink).__name__,
                    error,
                )


def _hold(status: Ledger, sealed: Sequence[Sealed]) -> None:
    """Keep `sealed` (and its signed head, if any) in the status for the operator."""
    lines = [line for s in sealed for line in (s.line, s.head) if line]
    if len(status.audit_held) + len(lines) > HELD_AUDIT_MAX:
        raise ValueError(
            f"{len(status.audit_held)} audit records of this budget wait for the operator to "
            "publish them; try again once it runs (kubectl get pods -n <its namespace>)"
        )
    status.audit_held = [*status.audit_held, *lines]


def _ends_at(held: Sequence[Sealed], head: AuditHead) -> bool:
    """Whether held records are unchanged, linked one to the next, and end at `head`: the
    least the operator checks before it signs a head a writer without the key left."""
    records = [sealed.record for sealed in held]
    for before, after in itertools.pairwise(records):
        linked = (before.get("seq", 0) + 1, before.get("hash"))
        if (after.get("seq"), after.get("prev")) != linked:
            return False
    if any(audit.digest(record) != record.get("hash") for record in records):
        return False
    return (records[-1].get("seq"), records[-1].get("hash")) == (head.seq, head.hash)


def _take_held(status: Ledger) -> list[Sealed]:
    """The held lines as sealed records, each followed by its signed head, if it had one;
    the status holds none after this."""
    taken: list[Sealed] = []
    for line in status.audit_held:
        parsed = json.loads(line)
        if "head" in parsed and "prev" not in parsed and taken:
            taken[-1] = Sealed(taken[-1].record, taken[-1].line, line)
        else:
            taken.append(Sealed(parsed, line))
    status.audit_held = []
    return taken


def queued(budget: object) -> int:
    """How many audit records a change has queued on `budget` so far (none on anything
    without a ledger: group commit serves other objects too)."""
    status = getattr(budget, "status", None)
    return len(status.queued_audit()) if isinstance(status, Ledger) else 0


@dataclass(frozen=True)
class Verdict:
    """A signed verdict as a store keeps it to be fetched: by digest, budget or object."""

    digest: str
    budget: str
    at: str
    object: str
    envelope: dict[str, Any]


def verdicts_in(records: Sequence[Sealed]) -> list[Verdict]:
    """The signed verdicts among sealed records (decision records that carry an envelope)."""
    found = []
    for sealed in records:
        record = sealed.record
        detail = record.get("detail") or {}
        if record["action"] == "decision" and "envelope" in detail:
            found.append(
                Verdict(
                    digest=detail["verdict"],
                    budget=record["budget"],
                    at=record["at"],
                    object=record.get("object", ""),
                    envelope=detail["envelope"],
                )
            )
    return found

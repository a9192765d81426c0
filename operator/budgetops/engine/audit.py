"""The audit trail: every ledger movement and decision, hash-chained per budget. Pure.

A change queues plain records on the ledger (`note`); the store seals them into the budget's
chain (`seal`) inside the write that stores the change, so the chain head in the status and
the records agree, and publishes them once that write succeeded. A record's hash covers its
canonical JSON (sorted keys, no white space, UTF-8), including the previous record's hash;
every so often a checkpoint record carries a signature over the head so far.

`verify_chain` reads records back (a log of any number of budgets, interleaved) and reports
every break with its line: an edited record, one missing, one out of order, a checkpoint or
verdict whose signature does not verify, a chain that stops short of its budget's head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from budgetops.apis.audit import GENESIS, AuditHead
from budgetops.apis.common import format_time
from budgetops.apis.ledger import Ledger, MovementAction
from budgetops.engine.canonical import compact_json, compact_text

AuditAction = Literal[MovementAction, "adjust", "reliability", "decision", "checkpoint"]

CHECKPOINT_EVERY = 100
"""Records between two signed checkpoints of a busy budget, at most."""
CHECKPOINT_AFTER = timedelta(minutes=10)
"""Time between two signed checkpoints of a quiet budget, at most (while it has records)."""
CHECKPOINT_TYPE = "application/vnd.budgetops.audit-checkpoint+json"

Sign = Callable[[str, bytes], dict[str, Any]]
"""sign(payload_type, payload): a DSSE envelope (as JSON) over `payload`."""
Check = Callable[[Any, bytes | None], str | None]
"""check(envelope, payload): why the envelope does not verify (or does not carry exactly
`payload` when one is given), or None when it does."""


def encode(record: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a record (it holds strings, integers, lists and mappings)."""
    return compact_json(record)


def digest(record: Mapping[str, Any]) -> str:
    """`sha256:` and the hex digest of a record's canonical JSON without its own hash."""
    body = {name: value for name, value in record.items() if name != "hash"}
    return "sha256:" + hashlib.sha256(encode(body)).hexdigest()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A record chained into its budget's chain, and the JSON line it is published as (its
    hash last, after the canonical body it covers: one encoding serves both)."""

    record: dict[str, Any]
    line: str


def _sealed(record: dict[str, Any]) -> Sealed:
    body = compact_text(record)
    hashed = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    record["hash"] = hashed
    return Sealed(record, f'{body[:-1]},"hash":"{hashed}"}}')


def _amount(value: Decimal) -> str:
    return f"{value:f}"


def note(
    ledger: Ledger,
    *,
    at: datetime,
    action: AuditAction,
    account: str = "",
    amount: Decimal | None = None,
    key: str = "",
    ref: str = "",
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Queue one record of the change being made, with the account's balance after it."""
    record: dict[str, Any] = {"at": format_time(at), "action": action}
    if account:
        record["account"] = account
        target = ledger.accounts.get(account)
        if target is not None:
            record["balance"] = _amount(target.balance)
            record["allocation"] = _amount(target.allocation)
    if amount is not None:
        record["amount"] = _amount(amount)
    if key:
        record["key"] = key
    if ref:
        record["object"] = ref
    if detail:
        record["detail"] = dict(detail)
    ledger.queue_audit(record)


def checkpoint_payload(budget: str, uid: str, seq: int, head: str) -> bytes:
    """What a checkpoint signs: the budget and its chain up to and including record `seq`."""
    return encode({"budget": budget, "uid": uid, "seq": seq, "hash": head})


def _due(head: AuditHead, seq: int, now: datetime) -> bool:
    if seq - head.checkpoint_seq >= CHECKPOINT_EVERY:
        return True
    return head.checkpoint_at is None or now - head.checkpoint_at >= CHECKPOINT_AFTER


def seal(
    ledger: Ledger, *, budget: str, uid: str, now: datetime | None, sign: Sign | None
) -> list[Sealed]:
    """Chain the queued records to the ledger's head, add a checkpoint signed at `now` when
    one is due (and `sign` given), move the head, and return the sealed records (the queue
    is emptied)."""
    queued = ledger.queued_audit()
    if not queued:
        return []
    head = ledger.audit_head
    seq, prev = head.seq, head.hash
    sealed = []
    for body in queued:
        seq += 1
        done = _sealed({"budget": budget, "uid": uid, "seq": seq, **body, "prev": prev})
        prev = done.record["hash"]
        sealed.append(done)
    queued.clear()
    if sign is not None and now is not None and _due(head, seq, now):
        envelope = sign(CHECKPOINT_TYPE, checkpoint_payload(budget, uid, seq, prev))
        seq += 1
        done = _sealed(
            {
                "budget": budget,
                "uid": uid,
                "seq": seq,
                "at": format_time(now),
                "action": "checkpoint",
                "detail": {"envelope": envelope},
                "prev": prev,
            }
        )
        prev = done.record["hash"]
        sealed.append(done)
        head.checkpoint_seq, head.checkpoint_at = seq, now
    head.seq, head.hash = seq, prev
    return sealed


@dataclass(frozen=True)
class Problem:
    """One break in a chain, where it shows: a 1-based line of the log read."""

    line: int
    budget: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.budget}: {self.message}"


@dataclass
class _Chain:
    seq: int = 0
    hash: str = GENESIS
    line: int = 0
    checkpoints: int = 0
    records: int = 0


@dataclass
class ChainReport:
    """What a log held, per budget, and every problem found, in the order of the log."""

    chains: dict[str, _Chain] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    other_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, dict[str, int]]:
        """Per budget: records read, the last seq and the signed checkpoints among them."""
        return {
            name: {"records": c.records, "lastSeq": c.seq, "checkpoints": c.checkpoints}
            for name, c in sorted(self.chains.items())
        }


def _parse(text: str) -> dict[str, Any] | Literal[False] | None:
    """The record on a line; None for a line that is no record (a log line); False for a
    line that looks like a record and does not read."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        document = json.loads(stripped)
    except (ValueError, RecursionError):
        return False if '"prev"' in stripped else None
    if not isinstance(document, dict) or "prev" not in document or "hash" not in document:
        return None
    return document


def _well_formed(record: dict[str, Any]) -> str | None:
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "its seq is not a positive integer"
    for name in ("budget", "hash", "prev", "action", "at"):
        if not isinstance(record.get(name), str):
            return f"its {name} is not a string"
    return None


def _signatures(record: dict[str, Any], check: Check) -> str | None:
    """Why a checkpoint's or a verdict's signature does not hold, or None."""
    detail = record.get("detail")
    envelope = detail.get("envelope") if isinstance(detail, dict) else None
    if record["action"] == "checkpoint":
        if envelope is None:
            return "the checkpoint carries no signature"
        uid = record.get("uid", "")
        payload = checkpoint_payload(record["budget"], uid, record["seq"] - 1, record["prev"])
        problem = check(envelope, payload)
        return None if problem is None else f"the checkpoint's signature does not hold: {problem}"
    if envelope is not None:
        problem = check(envelope, None)
        return None if problem is None else f"the verdict's signature does not hold: {problem}"
    return None


def _follow(chain: _Chain, record: dict[str, Any]) -> str | None:
    """Why `record` does not come next in `chain`, or None."""
    seq, expected = record["seq"], chain.seq + 1
    if seq > expected:
        missing = f"record {expected}" if seq == expected + 1 else f"records {expected}-{seq - 1}"
        return f"record {seq} follows record {chain.seq}: {missing} missing or out of order"
    if seq < expected:
        return f"record {seq} comes after record {chain.seq}: out of order or repeated"
    if record["prev"] != chain.hash:
        return f"record {seq} does not follow the record before it (its prev hash differs)"
    return None


def verify_chain(
    lines: Iterable[str],
    *,
    heads: Mapping[str, AuditHead] | None = None,
    check: Check | None = None,
    budgets: Collection[str] | None = None,
    partial: bool = False,
) -> ChainReport:
    """Check every chain in a log; `heads` (budget → its status's head) catches records
    missing at the end, `check` verifies checkpoint and verdict signatures, `budgets` limits
    the check to those chains. `partial` takes a log that may begin in the middle of a chain
    (one pod's stdout since it started): each chain's first record is then not checked
    against the one before it, which the log does not hold."""
    report = ChainReport()
    for number, text in enumerate(lines, start=1):
        record = _parse(text)
        if record is None:
            report.other_lines += 1
            continue
        if record is False:
            report.problems.append(Problem(number, "?", "a record that is not valid JSON"))
            continue
        budget = str(record.get("budget", "?"))
        if budgets is not None and budget not in budgets:
            report.other_lines += 1
            continue
        malformed = _well_formed(record)
        if malformed is not None:
            report.problems.append(Problem(number, budget, f"not an audit record: {malformed}"))
            continue
        seq = record["seq"]
        if budget not in report.chains and partial:
            report.chains[budget] = _Chain(seq=seq - 1, hash=record["prev"])
        chain = report.chains.setdefault(budget, _Chain())
        if digest(record) != record["hash"]:
            report.problems.append(
                Problem(number, budget, f"record {seq} was changed: its hash does not match")
            )
        out_of_line = _follow(chain, record)
        if out_of_line is not None:
            report.problems.append(Problem(number, budget, out_of_line))
        if check is not None:
            unsigned = _signatures(record, check)
            if unsigned is not None:
                report.problems.append(Problem(number, budget, f"record {seq}: {unsigned}"))
        chain.seq, chain.hash, chain.line = seq, record["hash"], number
        chain.records += 1
        chain.checkpoints += record["action"] == "checkpoint"
    for budget, head in sorted((heads or {}).items()):
        _against_head(report, budget, head)
    return report


def _against_head(report: ChainReport, budget: str, head: AuditHead) -> None:
    chain = report.chains.get(budget, _Chain())
    if chain.seq < head.seq:
        what = "no record" if chain.seq == 0 else f"record {chain.seq}"
        report.problems.append(
            Problem(
                chain.line,
                budget,
                f"the log ends at {what}, and the budget's head is record {head.seq}: "
                f"records {chain.seq + 1}-{head.seq} are missing",
            )
        )
    elif chain.seq == head.seq and chain.hash != head.hash:
        report.problems.append(
            Problem(chain.line, budget, f"record {chain.seq} differs from the budget's head")
        )
    elif chain.seq > head.seq:
        report.problems.append(
            Problem(
                chain.line,
                budget,
                f"the log goes on to record {chain.seq}, past the budget's head (record "
                f"{head.seq}): its status was restored from before them, or they were forged",
            )
        )

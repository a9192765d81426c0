"""The audit trail: every ledger movement and decision, hash-chained per budget. Pure.

A chain belongs to one budget object, named by the budget and its uid (`ChainKey`): a budget
deleted and created again is a new object with a new uid, so its chain starts again at
record 1 from GENESIS, and the old one stays as it was, read and checked on its own.

A change queues plain records on the ledger (`note`); the store seals them into the budget's
chain (`seal`) inside the write that stores the change, so the chain head in the status and
the records agree, and publishes them once that write succeeded. A record's hash covers its
canonical JSON (sorted keys, no white space, UTF-8), including the previous record's hash;
every so often a checkpoint record carries a signature over the head so far, and the head
itself is signed each time it moves (once per write, so once per group-commit batch): one
who may write the ledger but not read the key cannot relink a rewritten chain to a head
that verifies. The signed head is published after its records (a `head` line), so a copy
of the trail kept where the ledger's writer cannot reach (a witness) shows any later
rewrite of the ledger, even by one who holds the key.

`verify_chain` reads records back (a log of any number of chains, interleaved) and reports
every break with its line: an edited record, one missing, one out of order, a checkpoint,
verdict or head whose signature does not verify, a chain that stops short of its budget's
head or holds fewer checkpoints than the head names.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from budgetops.apis.audit import GENESIS, AuditHead, HeadSignature
from budgetops.apis.common import format_time
from budgetops.apis.ledger import Ledger, MovementAction
from budgetops.engine.canonical import compact_json, compact_text

AuditAction = Literal[
    MovementAction,
    "adjust",
    "reliability",
    "decision",
    "checkpoint",
    "break-glass",
    "break-glass-refused",
    "break-glass-approved",
    "grant",
    "grant-expired",
]

CHECKPOINT_EVERY = 100
"""Records between two signed checkpoints of a busy budget, at most."""
CHECKPOINT_AFTER = timedelta(minutes=10)
"""Time between two signed checkpoints of a quiet budget, at most (while it has records)."""
CHECKPOINT_TYPE = "application/vnd.budgetops.audit-checkpoint+json"
HEAD_TYPE = "application/vnd.budgetops.audit-head+json"

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
    hash last, after the canonical body it covers: one encoding serves both). The last
    record of a signed batch carries the signed head's line, published after it."""

    record: dict[str, Any]
    line: str
    head: str = ""


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


def head_payload(budget: str, uid: str, head: AuditHead) -> bytes:
    """What a head's signature covers: the budget, where its chain ends, and its checkpoints
    (the last one's seq and how many), so that none can be dropped without breaking it."""
    return encode(
        {
            "budget": budget,
            "uid": uid,
            "seq": head.seq,
            "hash": head.hash,
            "checkpointSeq": head.checkpoint_seq,
            "checkpoints": head.checkpoints,
        }
    )


def head_envelope(budget: str, uid: str, head: AuditHead) -> dict[str, Any] | None:
    """The DSSE envelope of a head's signature (None when unsigned), as `Check` reads it."""
    if head.signature is None:
        return None
    payload = base64.b64encode(head_payload(budget, uid, head)).decode("ascii")
    signed = {"keyid": head.signature.keyid, "sig": head.signature.sig}
    return {"payloadType": HEAD_TYPE, "payload": payload, "signatures": [signed]}


def head_line(budget: str, uid: str, head: AuditHead) -> str:
    """The line a signed head is published as: no `prev`, so no record, and read apart."""
    return compact_text({"budget": budget, "uid": uid, "head": head.to_wire()})


def sign_head(ledger: Ledger, *, budget: str, uid: str, sign: Sign) -> str:
    """Sign the ledger's head where it stands (one a writer without the key left unsigned)
    and return the line it is published as."""
    _sign_head(budget, uid, ledger.audit_head, sign)
    return head_line(budget, uid, ledger.audit_head)


def _sign_head(budget: str, uid: str, head: AuditHead, sign: Sign) -> None:
    head.signature = None
    envelope = sign(HEAD_TYPE, head_payload(budget, uid, head))
    signed = envelope["signatures"][0]
    head.signature = HeadSignature(keyid=signed["keyid"], sig=signed["sig"])


def _due(head: AuditHead, seq: int, now: datetime) -> bool:
    if seq - head.checkpoint_seq >= CHECKPOINT_EVERY:
        return True
    return head.checkpoint_at is None or now - head.checkpoint_at >= CHECKPOINT_AFTER


def seal(
    ledger: Ledger, *, budget: str, uid: str, now: datetime | None, sign: Sign | None
) -> list[Sealed]:
    """Chain the queued records to the ledger's head, add a checkpoint signed at `now` when
    one is due (and `sign` given), move the head and sign it (an unsigned trail leaves it
    unsigned), and return the sealed records (the queue is emptied); the last one carries
    the signed head's line."""
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
        head.checkpoints += 1
    head.seq, head.hash, head.signature = seq, prev, None
    if sign is not None:
        _sign_head(budget, uid, head, sign)
        last = sealed[-1]
        sealed[-1] = Sealed(last.record, last.line, head_line(budget, uid, head))
    return sealed


ChainKey = tuple[str, str]
"""A chain: its budget (`Kind/namespace/name`) and the uid of the object it belongs to ("" in
an embedded ledger for a budget applied before budgets had one there)."""


def chain_of(line: Mapping[str, Any]) -> ChainKey:
    """The chain a record or a published head belongs to."""
    uid = line.get("uid", "")
    return str(line.get("budget", "?")), uid if isinstance(uid, str) else ""


def chain_names(keys: Iterable[ChainKey]) -> dict[ChainKey, str]:
    """How people read each chain: as its budget, unless the budget has more than one
    (deleted and created again), then with the start of its uid, all of it if that is not
    enough to tell the chains apart."""
    found = sorted(set(keys))
    count = Counter(budget for budget, _ in found)
    names: dict[ChainKey, str] = {}
    for budget, uid in found:
        name = budget
        if count[budget] > 1:
            name = f"{budget} (uid {uid[:8]})" if uid else f"{budget} (no uid)"
            if name in names.values():
                name = f"{budget} (uid {uid})"
        names[budget, uid] = name
    return names


@dataclass(frozen=True)
class Problem:
    """One break in a chain, where it shows: a 1-based line of the log read. `budget` names
    the chain as `chain_names` does; `uid` is the chain's uid."""

    line: int
    budget: str
    message: str
    uid: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.budget}: {self.message}"


@dataclass
class _Chain:
    seq: int = 0
    hash: str = GENESIS
    line: int = 0
    checkpoints: int = 0
    records: int = 0
    first: int = 1
    """The seq the log begins this chain at (after the first record of a partial log)."""
    last_checkpoint: int = 0
    witnessed: AuditHead | None = None
    """The latest signed head the log itself published (a `head` line)."""


@dataclass
class ChainReport:
    """What a log held, per chain, and every problem found, in the order of the log."""

    chains: dict[ChainKey, _Chain] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    other_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def found(self, number: int, chain: ChainKey, message: str) -> None:
        """A problem of `chain` at line `number` (named once the whole log is read)."""
        self.problems.append(Problem(number, chain[0], message, chain[1]))

    def summary(self) -> dict[str, dict[str, int]]:
        """Per chain (named as `chain_names` does): records read, the last seq, the signed
        checkpoints among them and the seq of the latest signed head the log published (0:
        none)."""
        names = chain_names(self.chains)
        return {
            names[key]: {
                "records": c.records,
                "lastSeq": c.seq,
                "checkpoints": c.checkpoints,
                "signedHead": c.witnessed.seq if c.witnessed is not None else 0,
            }
            for key, c in sorted(self.chains.items())
        }

    def _name_problems(self) -> None:
        """Name each problem's chain as the summary does (known once the whole log is read)."""
        names = chain_names([*self.chains, *((p.budget, p.uid) for p in self.problems)])
        self.problems = [
            replace(p, budget=names.get((p.budget, p.uid), p.budget)) for p in self.problems
        ]


def _parse(text: str) -> dict[str, Any] | Literal[False] | None:
    """The record (or published head) on a line; None for a line that is neither (a log
    line); False for a line that looks like one and does not read."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        document = json.loads(stripped)
    except (ValueError, RecursionError):
        return False if '"prev"' in stripped or '"head"' in stripped else None
    if not isinstance(document, dict):
        return None
    if "prev" in document and "hash" in document:
        return document
    return document if "head" in document and "budget" in document else None


def _well_formed(record: dict[str, Any]) -> str | None:
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "its seq is not a positive integer"
    for name in ("budget", "hash", "prev", "action", "at"):
        if not isinstance(record.get(name), str):
            return f"its {name} is not a string"
    if not isinstance(record.get("uid", ""), str):
        return "its uid is not a string"
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


def merge_logs(logs: Sequence[Sequence[str]]) -> list[tuple[int, int, str]]:
    """Several replicas' logs as one, for `verify_chain`: every replica publishes only its
    own writes, so each log holds every chain it wrote with gaps the others fill. Each
    chain's records come in seq order, a published head right after the record it names;
    each log's own order is kept, so a log out of order still shows. Lines that are neither
    are left out. Items: (the log's index, the 1-based line in it, the line)."""
    broken: list[tuple[int, int, str]] = []
    chains: dict[ChainKey, list[list[tuple[tuple[int, int], tuple[int, int, str]]]]] = {}
    for index, lines in enumerate(logs):
        for number, text in enumerate(lines, start=1):
            record = _parse(text)
            if record is None:
                continue
            if record is False:
                broken.append((index, number, text))
                continue
            streams = chains.setdefault(chain_of(record), [[] for _ in logs])
            streams[index].append((_position(record), (index, number, text)))
    merged = list(broken)
    for _, streams in sorted(chains.items()):
        merged += [item for _, item in heapq.merge(*streams, key=lambda entry: entry[0])]
    return merged


def _position(line: dict[str, Any]) -> tuple[int, int]:
    """Where a record, or a published head (after the record it names), goes in its chain."""
    if "prev" in line:
        seq = line.get("seq")
    else:
        head = line.get("head")
        seq = head.get("seq") if isinstance(head, dict) else None
    return (seq if isinstance(seq, int) else 0, 0 if "prev" in line else 1)


def verify_chain(
    lines: Iterable[str],
    *,
    heads: Mapping[str, tuple[str, AuditHead]] | None = None,
    check: Check | None = None,
    budgets: Collection[str] | None = None,
    partial: bool = False,
) -> ChainReport:
    """Check every chain in a log; `heads` (budget → its uid and its status's head) catches, in
    the chain of that uid, records missing at the end, checkpoints missing anywhere and (with
    `check`) a head not signed (a chain of another uid, of the budget before it was deleted,
    is checked on its own), `check` verifies checkpoint, verdict and head signatures,
    `budgets` limits the check to those budgets' chains. Records past the last signed head
    the log published are reported: with a key, every write publishes one. `partial` takes
    a log that may begin in the middle of a chain (one pod's stdout since it started): each
    chain's first record is then not checked against the one before it, which the log does
    not hold, nor are the checkpoints before it counted."""
    report = ChainReport()
    for number, text in enumerate(lines, start=1):
        record = _parse(text)
        if record is None:
            report.other_lines += 1
            continue
        if record is False:
            report.problems.append(Problem(number, "?", "a record that is not valid JSON"))
            continue
        key = chain_of(record)
        if budgets is not None and key[0] not in budgets:
            report.other_lines += 1
            continue
        if "prev" not in record:
            _witness(report, number, key, record, check)
            continue
        _read_record(report, number, key, record, check=check, partial=partial)
    for key, chain in sorted(report.chains.items()):
        if chain.witnessed is not None and chain.seq > chain.witnessed.seq:
            report.found(
                chain.line,
                key,
                f"records {chain.witnessed.seq + 1}-{chain.seq} follow the last signed "
                "head the log published: appended after it, or its head line was lost",
            )
    for budget, (uid, head) in sorted((heads or {}).items()):
        _against_head(report, (budget, uid), head, check=check, partial=partial)
    report._name_problems()
    return report


def _read_record(
    report: ChainReport,
    number: int,
    key: ChainKey,
    record: dict[str, Any],
    *,
    check: Check | None,
    partial: bool,
) -> None:
    """One record: well formed, unchanged, next in its chain, its signatures holding."""
    malformed = _well_formed(record)
    if malformed is not None:
        report.found(number, key, f"not an audit record: {malformed}")
        return
    seq = record["seq"]
    if key not in report.chains and partial:
        report.chains[key] = _Chain(seq=seq - 1, hash=record["prev"], first=seq)
    chain = report.chains.setdefault(key, _Chain())
    if digest(record) != record["hash"]:
        report.found(number, key, f"record {seq} was changed: its hash does not match")
    out_of_line = _follow(chain, record)
    if out_of_line is not None:
        report.found(number, key, out_of_line)
    if check is not None:
        unsigned = _signatures(record, check)
        if unsigned is not None:
            report.found(number, key, f"record {seq}: {unsigned}")
    chain.seq, chain.hash, chain.line = seq, record["hash"], number
    chain.records += 1
    if record["action"] == "checkpoint":
        chain.checkpoints += 1
        chain.last_checkpoint = seq


def _witness(
    report: ChainReport, number: int, key: ChainKey, line: dict[str, Any], check: Check | None
) -> None:
    """A published signed head: it must verify and name the record just read."""
    try:
        head = AuditHead.model_validate(line["head"])
    except ValueError:
        report.found(number, key, "a head line that does not read")
        return
    chain = report.chains.setdefault(key, _Chain())
    if check is not None:
        unsigned = _head_signature(key, head, check)
        if unsigned is not None:
            report.found(number, key, f"the published head {unsigned}")
            return
    if (chain.seq, chain.hash) != (head.seq, head.hash):
        report.found(
            number,
            key,
            f"the published head names record {head.seq}, and the chain read so far "
            f"ends at record {chain.seq}{' (another hash)' if chain.seq == head.seq else ''}",
        )
    chain.witnessed = head


def _head_signature(key: ChainKey, head: AuditHead, check: Check) -> str | None:
    """Why a head's signature does not hold (or it has none), or None."""
    envelope = head_envelope(*key, head)
    if envelope is None:
        return f"(record {head.seq}) is not signed"
    problem = check(envelope, head_payload(*key, head))
    return None if problem is None else f"(record {head.seq}) signature does not hold: {problem}"


def _against_head(
    report: ChainReport,
    key: ChainKey,
    head: AuditHead,
    *,
    check: Check | None,
    partial: bool,
) -> None:
    """The chain of the budget's current uid against the head in its status."""
    chain = report.chains.get(key, _Chain())
    if check is not None and head.seq > 0:
        unsigned = _head_signature(key, head, check)
        if unsigned is not None:
            report.found(chain.line, key, f"the budget's head {unsigned}")
    if chain.seq < head.seq:
        what = "no record" if chain.seq == 0 else f"record {chain.seq}"
        report.found(
            chain.line,
            key,
            f"the log ends at {what}, and the budget's head is record {head.seq}: "
            f"records {chain.seq + 1}-{head.seq} are missing",
        )
        return
    if chain.seq > head.seq:
        report.found(
            chain.line,
            key,
            f"the log goes on to record {chain.seq}, past the budget's head (record "
            f"{head.seq}): its status was restored from before them, or they were forged",
        )
        return
    if chain.hash != head.hash:
        report.found(chain.line, key, f"record {chain.seq} differs from the budget's head")
    if not partial and chain.checkpoints < head.checkpoints:
        report.found(
            chain.line,
            key,
            f"the chain holds {chain.checkpoints} checkpoints, and the budget's head "
            f"names {head.checkpoints}: checkpoints were removed",
        )
    if head.checkpoint_seq >= chain.first and chain.last_checkpoint != head.checkpoint_seq:
        report.found(
            chain.line,
            key,
            f"the budget's head names a checkpoint at record {head.checkpoint_seq}, and "
            f"the chain's last is at record {chain.last_checkpoint}",
        )


def compare(
    witness: Iterable[str], ledger: Iterable[str], *, budgets: Collection[str] | None = None
) -> list[Problem]:
    """Where a ledger's records differ from a copy kept apart from it (the audit file or
    stream, a witness), by the witness's lines: every record the witness holds must be in
    the ledger, in the same chain, with the same hash. The ledger may have gone on since
    (records written where the witness was not told): those its own head vouches for."""
    kept: dict[tuple[ChainKey, object], object] = {}
    for text in ledger:
        record = _parse(text)
        if record and "prev" in record:  # by what it holds, not the hash it states
            kept[chain_of(record), record.get("seq")] = digest(record)
    problems = []
    for number, text in enumerate(witness, start=1):
        record = _parse(text)
        if not record or "prev" not in record:
            continue
        key, seq = chain_of(record), record.get("seq")
        if budgets is not None and key[0] not in budgets:
            continue
        if (key, seq) not in kept:
            problems.append(
                Problem(number, key[0], f"record {seq} of this copy is not in the ledger", key[1])
            )
        elif kept[key, seq] != record.get("hash"):
            problems.append(
                Problem(
                    number, key[0], f"the ledger's record {seq} differs from this copy's", key[1]
                )
            )
    names = chain_names([*(key for key, _ in kept), *((p.budget, p.uid) for p in problems)])
    return [replace(p, budget=names[p.budget, p.uid]) for p in problems]

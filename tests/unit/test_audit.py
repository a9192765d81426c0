"""The audit chain: sealed in order, checkpointed with a signature, and every kind of
tampering found and reported with its line."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetops.apis.ledger import Ledger
from budgetops.apis.resources import BudgetKey, RiskBudget
from budgetops.cli.attestation import envelope_check
from budgetops.crypto import dsse
from budgetops.engine import audit, ledger
from budgetops.engine.canonical import canonical_json, config_hash
from budgetops.engine.verdicts import risk_config
from budgetops.store.audit import AuditTrail, Checkpoints

from .test_decisions import risk_budget

T0 = datetime(2026, 3, 1, tzinfo=UTC)
BUDGET = "TrustBudget/certs"
KEY = dsse.SigningKey.from_pem(dsse.Keyring.new("k1")["k1.pem"])


def sign_with(key: dsse.SigningKey) -> audit.Sign:
    def sign(payload_type: str, payload: bytes) -> dict[str, Any]:
        return dsse.sign(payload, key, payload_type=payload_type).to_json()

    return sign


def chain(
    batches: int = 3, per_batch: int = 4, key: dsse.SigningKey = KEY
) -> tuple[Ledger, list[str]]:
    """A ledger and its log: `batches` sealed batches of reservations, an hour apart (so each
    batch is checkpointed), the second carrying a signed verdict."""
    book = Ledger()
    ledger.open_account(book, key="a", allocation=Decimal(1000), window_start=T0, resets_at=None)
    lines = []
    for batch in range(batches):
        now = T0 + timedelta(hours=batch)
        for n in range(per_batch):
            ledger.reserve(
                book,
                account="a",
                key=f"k{batch}-{n}",
                amount=Decimal(1),
                now=now,
                ttl=timedelta(minutes=5),
            )
        if batch == 1:
            envelope = dsse.sign(b'{"verdict":1}', key).to_json()
            audit.note(
                book,
                at=now,
                action="decision",
                account="a",
                detail={"envelope": envelope, "verdict": "x"},
            )
        sealed = audit.seal(book, budget=BUDGET, uid="u1", now=now, sign=sign_with(key))
        lines += [s.line for s in sealed]
    return book, lines


def check(lines: list[str], book: Ledger | None = None) -> audit.ChainReport:
    heads = {BUDGET: ("u1", book.audit_head)} if book is not None else None
    return audit.verify_chain(lines, heads=heads, check=envelope_check([KEY.public]))


def messages(report: audit.ChainReport) -> list[str]:
    return [str(problem) for problem in report.problems]


def test_an_untouched_chain_verifies_against_its_head() -> None:
    book, lines = chain()
    report = check(["a log line", *lines, ""], book)
    assert report.ok, messages(report)
    assert report.summary() == {
        BUDGET: {"records": 16, "lastSeq": 16, "checkpoints": 3, "signedHead": 0}
    }
    assert book.audit_head.seq == 16
    assert book.audit_head.checkpoint_seq == 16
    assert report.other_lines == 2


def test_an_edited_record_is_found_at_its_line() -> None:
    book, lines = chain()
    record = json.loads(lines[2])
    record["amount"] = "0"
    lines[2] = json.dumps(record)
    assert messages(check(lines, book)) == [
        f"line 3: {BUDGET}: record 3 was changed: its hash does not match"
    ]


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link() -> None:
    book, lines = chain()
    record = json.loads(lines[2])
    record["amount"] = "0"
    record["hash"] = audit.digest(record)
    lines[2] = json.dumps(record)
    assert messages(check(lines, book)) == [
        f"line 4: {BUDGET}: record 4 does not follow the record before it (its prev hash differs)"
    ]


def test_a_deleted_record_is_found_where_it_is_missing() -> None:
    book, lines = chain()
    del lines[6]
    assert messages(check(lines, book)) == [
        f"line 7: {BUDGET}: record 8 follows record 6: record 7 missing or out of order"
    ]


def test_reordered_records_are_found() -> None:
    book, lines = chain()
    lines[3], lines[4] = lines[4], lines[3]
    found = messages(check(lines, book))
    assert (
        found[0] == f"line 4: {BUDGET}: record 5 follows record 3: record 4 missing or out of order"
    )
    assert f"line 5: {BUDGET}: record 4 comes after record 5: out of order or repeated" in found


def test_records_missing_at_the_end_show_against_the_head() -> None:
    book, lines = chain()
    assert messages(check(lines[:-3], book)) == [
        f"line 13: {BUDGET}: the log ends at record 13, and the budget's head is record 16: "
        "records 14-16 are missing"
    ]
    assert check(lines[:-3]).ok  # without the head, a cut tail is a shorter valid chain


def test_a_flipped_byte_in_a_signed_verdict_is_found() -> None:
    book, lines = chain()
    index = next(i for i, line in enumerate(lines) if '"decision"' in line)
    record = json.loads(lines[index])
    envelope = record["detail"]["envelope"]
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[2] ^= 1
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    record["hash"] = audit.digest(record)  # a forger recomputes the hash, and the link breaks
    lines[index] = json.dumps(record)
    found = messages(check(lines, book))
    assert found[0].startswith(
        f"line {index + 1}: {BUDGET}: record {index + 1}: the verdict's signature does not hold"
    )
    assert len(found) == 2  # and the next record no longer follows it


def test_a_checkpoint_signed_by_another_key_is_found() -> None:
    other = dsse.SigningKey.generate()
    book, lines = chain(key=other)
    found = messages(check(lines, book))
    assert found[0].startswith(
        f"line 5: {BUDGET}: record 5: the checkpoint's signature does not hold: "
        "no signature by a known key"
    )


def test_a_checkpoint_moved_to_another_head_is_found() -> None:
    """A valid signature over another point of the chain does not vouch for this one."""
    book, lines = chain()
    first, second = [i for i, line in enumerate(lines) if '"checkpoint"' in line][:2]
    moved = json.loads(lines[second])
    moved["detail"] = json.loads(lines[first])["detail"]
    moved["hash"] = audit.digest(moved)
    lines[second] = json.dumps(moved)
    found = messages(check(lines, book))
    assert found[0] == (
        f"line {second + 1}: {BUDGET}: record {second + 1}: the checkpoint's signature does "
        "not hold: it signs another chain head than the record states"
    )


def test_a_line_that_is_a_broken_record_is_reported() -> None:
    book, lines = chain()
    lines[0] = lines[0][:-5]
    found = messages(check(lines, book))
    assert found[0] == "line 1: ?: a record that is not valid JSON"


def test_chains_of_several_budgets_interleave() -> None:
    book_a, lines_a = chain(batches=2)
    book_b = Ledger()
    ledger.open_account(book_b, key="b", allocation=Decimal(5), window_start=T0, resets_at=None)
    ledger.reserve(
        book_b, account="b", key="x", amount=Decimal(1), now=T0, ttl=timedelta(minutes=5)
    )
    lines_b = [
        s.line
        for s in audit.seal(book_b, budget="RiskBudget/p/q", uid="", now=T0, sign=sign_with(KEY))
    ]
    mixed = [lines_a[0], *lines_b, *lines_a[1:]]
    report = audit.verify_chain(
        mixed,
        heads={BUDGET: ("u1", book_a.audit_head), "RiskBudget/p/q": ("", book_b.audit_head)},
        check=envelope_check([KEY.public]),
    )
    assert report.ok, messages(report)
    assert set(report.summary()) == {BUDGET, "RiskBudget/p/q"}


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text())
records = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), records, max_size=6))
def test_the_record_encoder_is_canonical_json(record: dict[str, Any]) -> None:
    assert audit.encode(record) == canonical_json(record)


def test_config_hash_vectors_are_fixed() -> None:
    """The same configuration hashes the same in every run and Python version: these
    literals were computed once and must never change, or every old verdict would drift."""
    limits = {"maxUnknownCount": 10, "maxCumulativeUncertainty": Decimal("2.50")}
    assert canonical_json(limits) == b'{"maxCumulativeUncertainty":2.5,"maxUnknownCount":10}'
    assert config_hash(limits) == (
        "sha256:f20d0c0fc6beba87497c863ad40d18bf1fd63fb1ee90e84bca80ba5be10ba417"
    )
    unknowns = {"maxUnknownCount": 10, "maxCumulativeUncertainty": "2.5"}
    spec = risk_budget(allocation=120, unknowns=unknowns).spec
    assert canonical_json(risk_config(spec)) == (
        b'{"allocation":120,"bands":{"exhausted":["security-fix","incident"],'
        b'"green":["standard","low-risk","security-fix","incident"],'
        b'"red":["low-risk","security-fix","incident"],'
        b'"yellow":["standard","low-risk","security-fix","incident"]},"carryOver":false,'
        b'"enforcement":"enforce","serviceId":"payments-api",'
        b'"thresholds":{"exhausted":100,"red":70,"yellow":40},'
        b'"unknowns":{"action":"warn","maxCumulativeUncertainty":2.5,"maxUnknownCount":10,'
        b'"reasonLimits":{}},"window":{"cadence":"monthly"}}'
    )
    assert config_hash(risk_config(spec)) == (
        "sha256:6fe8b3001b45ae70a7d4ec5596a691b9cb6a6fc3084bcd2205aeb0c3dd320dcd"
    )


@pytest.mark.parametrize("text", ["", "{}", "[1,2]", "serving POST https://0.0.0.0:8443"])
def test_lines_that_are_no_records_are_passed_over(text: str) -> None:
    report = audit.verify_chain([text])
    assert (report.ok, report.other_lines, report.chains) == (True, 1, {})


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"prev": 1, "hash": 2}, "its seq is not a positive integer"),
        ({"prev": "p", "hash": "h", "seq": 1, "budget": "b", "at": "t"}, "its action is not"),
        ({"prev": "p", "hash": "h", "seq": True}, "its seq is not a positive integer"),
    ],
)
def test_a_malformed_record_is_a_problem_not_a_crash(record: dict[str, Any], says: str) -> None:
    [problem] = audit.verify_chain([json.dumps(record)]).problems
    assert problem.line == 1
    assert f"not an audit record: {says}" in problem.message


def test_a_published_line_reads_back_as_the_record_it_hashes() -> None:
    """The line puts the hash after the canonical body it covers; parsed, it is the record."""
    book, _ = chain(batches=1, per_batch=1)
    audit.note(book, at=T0, action="adjust", account="a", amount=Decimal("1.50"))
    (sealed,) = audit.seal(book, budget=BUDGET, uid="u1", now=None, sign=None)
    assert json.loads(sealed.line) == sealed.record
    assert audit.digest(sealed.record) == sealed.record["hash"]
    assert sealed.line.endswith(f',"hash":"{sealed.record["hash"]}"}}')


def test_records_past_the_head_show_as_a_restored_or_forged_status() -> None:
    book, lines = chain()
    restored = book.audit_head.model_copy(update={"seq": 12, "hash": json.loads(lines[11])["hash"]})
    found = audit.verify_chain(lines, heads={BUDGET: ("u1", restored)}).problems
    assert [str(p) for p in found] == [
        f"line 16: {BUDGET}: the log goes on to record 16, past the budget's head (record 12): "
        "its status was restored from before them, or they were forged"
    ]


def published(book: Ledger, batches: int = 3) -> list[str]:
    """A trail as the stream and file sinks publish it: each batch's signed head after it."""
    lines = []
    for batch in range(batches):
        now = T0 + timedelta(hours=batch)
        ledger.reserve(
            book, account="a", key=f"p{batch}", amount=Decimal(1), now=now, ttl=timedelta(1)
        )
        for sealed in audit.seal(book, budget=BUDGET, uid="u1", now=now, sign=sign_with(KEY)):
            lines += [sealed.line, *([sealed.head] if sealed.head else [])]
    return lines


def fresh() -> Ledger:
    book = Ledger()
    ledger.open_account(book, key="a", allocation=Decimal(100), window_start=T0, resets_at=None)
    return book


def test_each_sealed_batch_signs_the_head_once() -> None:
    book = fresh()
    lines = published(book)
    heads = [json.loads(line) for line in lines if '"prev"' not in line]
    assert len(heads) == 3
    assert heads[-1]["head"] == book.audit_head.to_wire()
    assert book.audit_head.checkpoints == 3
    report = check(lines, book)
    assert report.ok, messages(report)
    assert report.summary()[BUDGET]["signedHead"] == book.audit_head.seq


def test_an_unsigned_seal_leaves_no_stale_signature() -> None:
    book = fresh()
    published(book, batches=1)
    ledger.reserve(book, account="a", key="x", amount=Decimal(1), now=T0, ttl=timedelta(1))
    audit.seal(book, budget=BUDGET, uid="u1", now=None, sign=None)
    assert book.audit_head.signature is None
    assert (
        "(record 3) is not signed"
        in messages(
            audit.verify_chain(
                [], heads={BUDGET: ("u1", book.audit_head)}, check=envelope_check([KEY.public])
            )
        )[0]
    )


def test_a_head_naming_more_checkpoints_than_the_chain_holds_is_refused() -> None:
    book, lines = chain()
    without = [line for line in lines if '"checkpoint"' not in line]
    relinked, prev = [], audit.GENESIS
    for seq, line in enumerate(without, start=1):
        record = json.loads(line)
        record.pop("hash")
        record.update(seq=seq, prev=prev)
        record["hash"] = prev = audit.digest(record)
        relinked.append(json.dumps(record))
    head = book.audit_head.model_copy(update={"seq": len(relinked), "hash": prev})
    found = messages(audit.verify_chain(relinked, heads={BUDGET: ("u1", head)}))
    assert found == [
        f"line 13: {BUDGET}: the chain holds 0 checkpoints, and the budget's head names 3: "
        "checkpoints were removed",
        f"line 13: {BUDGET}: the budget's head names a checkpoint at record 16, and the "
        "chain's last is at record 0",
    ]


def test_a_head_signed_for_another_budget_or_chain_does_not_hold() -> None:
    book = fresh()
    published(book)
    moved = book.audit_head.model_copy(update={"seq": book.audit_head.seq - 1})
    for uid, head in (("other-uid", book.audit_head), ("u1", moved)):
        report = audit.verify_chain(
            [], heads={BUDGET: (uid, head)}, check=envelope_check([KEY.public])
        )
        assert f"(record {head.seq}) signature does not hold" in messages(report)[0]


def test_a_published_head_must_name_the_record_before_it() -> None:
    book = fresh()
    lines = published(book)
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]  # a head line before its records
    found = messages(check(swapped))
    assert any(
        "the published head names record 2, and the chain read so far ends at record 1" in m
        for m in found
    ), found
    appended = [*lines, lines[-2].replace('"seq":6', '"seq":7')]
    assert any(
        "follow the last signed head the log published" in m for m in messages(check(appended))
    )


def test_a_witness_shows_where_a_ledger_differs_from_it() -> None:
    book = fresh()
    lines = published(book)
    records = [line for line in lines if '"prev"' in line]
    assert audit.compare(lines, records) == []
    assert audit.compare(lines, [*records, "later records the witness never saw"]) == []
    edited = [records[0].replace('"amount":"1"', '"amount":"3"'), *records[1:]]
    assert [str(p) for p in audit.compare(lines, edited)] == [
        f"line 1: {BUDGET}: the ledger's record 1 differs from this copy's"
    ]
    assert [str(p) for p in audit.compare(lines, records[:-1])] == [
        f"line {len(lines) - 1}: {BUDGET}: record 6 of this copy is not in the ledger"
    ]


def test_the_operator_never_signs_a_head_held_records_do_not_lead_to() -> None:
    """A writer of the status without the key holds its records for the operator to publish
    and sign; one who edits them, or moves the head past them, gets no signature for it."""
    keyring = dsse.Keyring.from_files(dsse.Keyring.new("k1"))
    for tamper in ("edit", "move"):
        budget = risk_budget()
        key = BudgetKey.of(budget)
        audit.note(budget.status, at=T0, action="reserve", account="payments-api", key="x")
        AuditTrail(hold=True).seal(key, budget)
        if tamper == "edit":
            record = json.loads(budget.status.audit_held[0])
            record["key"] = "y"  # its hash no longer matches
            budget.status.audit_held = [json.dumps(record)]
        else:
            budget.status.audit_head.seq += 1
        assert isinstance(budget, RiskBudget)
        AuditTrail(checkpoints=Checkpoints.by(keyring)).seal(key, budget)
        assert budget.status.audit_head.signature is None, tamper

"""Signed verdicts from the webhook, over the embedded ledger: what they attest, where they
are kept, and that a verifier written here from the DSSE and in-toto specifications alone
accepts them. The audit trail's tamper tests are in test_audit.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from budgetops.admission.classify import Identity
from budgetops.admission.webhook import Admission
from budgetops.apis.resources import BudgetKey, RiskBudget, TrustBudget
from budgetops.cli.attestation import check_verdict
from budgetops.cli.main import main
from budgetops.crypto import dsse
from budgetops.engine import ledger as engine_ledger
from budgetops.engine.canonical import config_hash
from budgetops.engine.verdicts import RISK_PREDICATE, TRUST_PREDICATE, risk_config
from budgetops.store.audit import AuditTrail, Checkpoints
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases.attest import Attestor

from .test_admission import NOW, break_glass_budget, deployment, request
from .test_decisions import risk_budget, trust_budget

DEPLOYMENTS = {"group": "apps", "version": "v1", "resource": "deployments"}
RISK = BudgetKey("RiskBudget", "payments-api", "payments")
CERTS = BudgetKey("TrustBudget", "certs")
PINNED = "registry.example/app@sha256:" + "ab" * 32


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def keyring(request: pytest.FixtureRequest) -> dsse.Keyring:
    return dsse.Keyring.from_files(dsse.Keyring.new("k1", request.param))


@pytest.fixture
def ledger(tmp_path: Path, keyring: dsse.Keyring) -> Iterator[SQLiteStore]:
    def sign(payload_type: str, payload: bytes) -> dict[str, Any]:
        return dsse.sign(payload, keyring.active, payload_type=payload_type).to_json()

    trail = AuditTrail(checkpoints=Checkpoints(sign, lambda: NOW))
    store = SQLiteStore(tmp_path / "ledger.sqlite3", trail=trail)
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}, allocation=20))
    store.apply(trust_budget(initialBalance=1))
    yield store
    store.close()


def admission(store: SQLiteStore, keyring: dsse.Keyring) -> Admission:
    return Admission(
        store,
        clock=lambda: NOW,
        identity=Identity(),
        ttl=timedelta(minutes=5),
        attestor=Attestor(keyring),
    )


def ship(
    webhook: Admission,
    *,
    uid: str,
    points: int,
    image: str = PINNED,
    dry_run: bool = False,
    name: str = "api",
    release_id: str = "",
) -> dict[str, Any]:
    annotations = {"budgetops.dev/risk-points": str(points)}
    if release_id:
        annotations["budgetops.dev/release-id"] = release_id
    obj = deployment(image=image, **annotations)
    obj["metadata"] |= {"uid": uid, "name": name}
    body = request(
        kind="Deployment",
        resource=DEPLOYMENTS,
        namespace="payments",
        obj=obj,
        uid=uid,
        dry_run=dry_run,
    )
    answer = asyncio.run(webhook.review(json.dumps(body).encode()))
    assert answer.status == 200, answer.body
    response: dict[str, Any] = answer.body["response"]
    return response


def independent_verify(envelope: dict[str, Any], public_pem: bytes) -> dict[str, Any]:
    """DSSE v1 from its specification: PAE = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP
    body, signatures over PAE, fields base64; then the in-toto Statement v1 shape."""
    body = base64.b64decode(envelope["payload"], validate=True)
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" "
    pae += str(len(body)).encode() + b" " + body
    key = load_pem_public_key(public_pem)
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, pae)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, pae, ec.ECDSA(SHA256()))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement: dict[str, Any] = json.loads(body)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert all(set(s) == {"name", "digest"} for s in statement["subject"])
    return statement


def latest_entry(store: SQLiteStore, key: BudgetKey) -> Any:
    return store.get(key).status.entries[-1]


def test_an_admitted_release_has_a_verdict_that_verifies_independently(
    ledger: SQLiteStore, keyring: dsse.Keyring
) -> None:
    answer = ship(admission(ledger, keyring), uid="dep-1", points=5)
    assert answer["allowed"]
    entry = latest_entry(ledger, RISK)
    assert (entry.action, entry.object) == ("reserve", "Deployment payments/api")
    envelope = ledger.verdict(entry.verdict)
    assert envelope is not None
    statement = independent_verify(envelope, keyring.active.public.to_pem())
    payload = base64.b64decode(envelope["payload"])
    assert entry.verdict == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert statement["predicateType"] == RISK_PREDICATE
    template = {"spec": {"containers": [{"name": "a", "image": PINNED}]}}
    template_digest = hashlib.sha256(
        json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert statement["subject"] == [
        {"name": "apps/deployments/payments/api", "digest": {"sha256": template_digest}},
        {"name": "registry.example/app", "digest": {"sha256": "ab" * 32}},
    ]
    predicate = statement["predicate"]
    budget = ledger.get(RISK)
    assert isinstance(budget, RiskBudget)
    check = predicate["budgetCheck"]
    assert check["result"] == "pass"
    assert check["configHash"] == config_hash(risk_config(budget.spec))
    assert check["environment"] == "payments"
    assert check["evaluatedAt"] == "2026-01-01T15:30:00Z"
    assert check["violations"] == []
    assert check["actualCounts"] == {"total": 0, "cumulativeUncertainty": 0, "byReason": {}}
    assert predicate["subject"] == {
        "kind": "Deployment",
        "namespace": "payments",
        "name": "api",
        "uid": "dep-1",
        "images": [PINNED],
    }
    assert predicate["ledger"] == {
        "account": "payments-api",
        "action": "reserve",
        "amount": 5,
        "key": "dep-1",
        "balanceBefore": 20,
        "balanceAfter": 15,
        "allocation": 20,
        "window": "2026-01",
        "bandBefore": "Green",
        "bandAfter": "Green",
    }
    assert predicate["decision"]["allowed"] is True


def test_a_denied_release_has_a_failing_verdict_and_charges_nothing(
    ledger: SQLiteStore, keyring: dsse.Keyring
) -> None:
    webhook = admission(ledger, keyring)
    ship(webhook, uid="dep-1", points=15)  # 75%: Red, where standard changes freeze
    answer = ship(webhook, uid="dep-2", points=1)
    assert not answer["allowed"]
    entry = latest_entry(ledger, RISK)
    assert (entry.action, entry.amount, entry.key) == ("deny", 0, "dep-2")
    budget = ledger.get(RISK)
    assert budget.status.accounts["payments-api"].balance == 5
    envelope = ledger.verdict(entry.verdict)
    assert envelope is not None
    predicate = independent_verify(envelope, keyring.active.public.to_pem())["predicate"]
    assert predicate["budgetCheck"]["result"] == "fail"
    assert predicate["decision"]["reason"] == "BandFrozen"
    assert predicate["budgetCheck"]["violations"] == [
        {
            "type": "band",
            "band": "Red",
            "changeClass": "standard",
            "allowed": ["low-risk", "security-fix", "incident"],
        }
    ]
    assert predicate["ledger"]["action"] == "none"


def test_dry_runs_and_replays_record_no_verdict(ledger: SQLiteStore, keyring: dsse.Keyring) -> None:
    webhook = admission(ledger, keyring)
    ship(webhook, uid="dep-1", points=5, dry_run=True)
    assert ledger.get(RISK).status.entries == []
    assert ledger.audit_lines() == ()
    ship(webhook, uid="dep-1", points=5)
    records = len(ledger.audit_lines())
    ship(webhook, uid="dep-1", points=5)  # the API server calls again: already charged
    assert len(ledger.audit_lines()) == records
    assert [e.action for e in ledger.get(RISK).status.entries] == ["reserve"]


def test_a_trust_denial_is_attested_and_a_charge_is_audited(
    ledger: SQLiteStore, keyring: dsse.Keyring
) -> None:
    webhook = admission(ledger, keyring)
    body = request(uid="csr-1")
    assert asyncio.run(webhook.review(json.dumps(body).encode())).body["response"]["allowed"]
    denied = asyncio.run(webhook.review(json.dumps(request(uid="csr-2")).encode()))
    assert not denied.body["response"]["allowed"]
    entry = latest_entry(ledger, CERTS)
    assert (entry.action, entry.key) == ("deny", "csr-2")
    envelope = ledger.verdict(entry.verdict)
    assert envelope is not None
    statement = independent_verify(envelope, keyring.active.public.to_pem())
    assert statement["predicateType"] == TRUST_PREDICATE
    check = statement["predicate"]["budgetCheck"]
    assert check["result"] == "fail"
    assert check["violations"] == [{"type": "balance", "limit": 0, "actual": 1}]
    actions = [json.loads(line)["action"] for line in ledger.audit_lines()]
    trust = [
        json.loads(line)["action"]
        for line in ledger.audit_lines()
        if json.loads(line)["budget"] == "TrustBudget/certs"
    ]
    assert trust[:2] == ["reserve", "checkpoint"]
    assert trust[2:] == ["decision"]
    assert len(actions) == len(trust)


def test_a_changed_configuration_is_reported_as_drift(
    ledger: SQLiteStore, keyring: dsse.Keyring
) -> None:
    ship(admission(ledger, keyring), uid="dep-1", points=5)
    envelope = ledger.verdict(latest_entry(ledger, RISK).verdict)
    keys = list(keyring.verifiers.values())
    unchanged = check_verdict(envelope, keys, ledger)
    assert not unchanged.drifted
    budget = ledger.get(RISK)
    assert isinstance(budget, RiskBudget)
    ledger.apply(risk_budget(selector={"matchLabels": {"app": "api"}}, allocation=40))
    changed = check_verdict(envelope, keys, ledger)
    assert changed.drifted
    assert (changed.attested, changed.current) == (
        unchanged.attested,
        # the spec's allocation is 40 now; this window still applies the 20 it opened with
        config_hash(risk_config(ledger.get(RISK).spec, Decimal(20))),  # type: ignore[arg-type]
    )


def test_a_verdict_survives_a_rotation_and_a_forged_one_does_not(
    ledger: SQLiteStore, keyring: dsse.Keyring
) -> None:
    ship(admission(ledger, keyring), uid="dep-1", points=5)
    envelope = ledger.verdict(latest_entry(ledger, RISK).verdict)
    assert envelope is not None
    files = dsse.Keyring.rotate(
        {"k1.pem": keyring.active.to_pem(), "active": b"k1"}, "k2", "ed25519"
    )
    rotated = dsse.Keyring.from_files(files)
    assert rotated.active.keyid != keyring.active.keyid
    assert check_verdict(envelope, list(rotated.verifiers.values()), ledger).keyid == (
        keyring.active.keyid
    )
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b'"allowed":true')] ^= 1
    forged = envelope | {"payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises(dsse.BadSignature):
        check_verdict(forged, list(rotated.verifiers.values()), ledger)
    other = dsse.SigningKey.generate()
    resigned = dsse.sign(base64.b64decode(envelope["payload"]), other).to_json()
    with pytest.raises(dsse.BadSignature, match="no signature by a known key"):
        check_verdict(resigned, list(rotated.verifiers.values()), ledger)
    with pytest.raises(InvalidSignature):
        independent_verify(resigned, keyring.active.public.to_pem())


def test_a_budget_without_a_keyring_still_audits_its_decisions(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget(initialBalance=1))
    webhook = Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))
    for uid in ("csr-1", "csr-2"):
        asyncio.run(webhook.review(json.dumps(request(uid=uid)).encode()))
    records = [json.loads(line) for line in store.audit_lines()]
    assert [r["action"] for r in records] == ["reserve", "decision"]
    assert "envelope" not in records[1]["detail"]
    assert records[1]["detail"]["verdict"] == latest_entry(store, CERTS).verdict
    assert isinstance(store.get(CERTS), TrustBudget)


def test_an_adjusted_allocation_is_attested_and_reported_as_drift(
    ledger: SQLiteStore, keyring: dsse.Keyring
) -> None:
    """Before, after `budgetops adjust` verify said "configuration unchanged" while later
    verdicts attested `config.allocation: 20` beside `ledger.allocation: 30`."""
    webhook = admission(ledger, keyring)
    ship(webhook, uid="dep-1", points=5)
    before = ledger.verdict(latest_entry(ledger, RISK).verdict)
    keys = list(keyring.verifiers.values())

    def adjust(budget: Any) -> bool:
        account = budget.status.accounts[budget.spec.service_id]
        engine_ledger.resize(
            budget.status,
            account=budget.spec.service_id,
            allocation=account.allocation + 10,
            at=NOW,
        )
        return True

    ledger.update_status(RISK, adjust)
    assert check_verdict(before, keys, ledger).drifted
    ship(webhook, uid="dep-2", points=5)
    after = ledger.verdict(latest_entry(ledger, RISK).verdict)
    found = check_verdict(after, keys, ledger)
    predicate = found.statement["predicate"]
    assert predicate["budgetCheck"]["config"]["appliedAllocation"] == 30
    assert Decimal(str(predicate["ledger"]["allocation"])) == 30
    assert not found.drifted


def test_break_glass_uses_and_refusals_are_their_own_records_in_the_chain(
    tmp_path: Path, keyring: dsse.Keyring
) -> None:
    """Before, the chained records carried no break-glass action, user or reason, and a
    refused attempt was a plain `Exhausted` denial."""
    trail = AuditTrail(checkpoints=Checkpoints.by(keyring))
    store = SQLiteStore(tmp_path / "ledger.sqlite3", trail=trail)
    store.apply(break_glass_budget())
    webhook = admission(store, keyring)

    def csr(uid: str, groups: tuple[str, ...]) -> dict[str, Any]:
        obj = {
            "metadata": {
                "name": uid,
                "uid": uid,
                "annotations": {"budgetops.dev/break-glass": "INC-7"},
            },
            "spec": {"expirationSeconds": 900},
        }
        body = json.dumps(request(uid=uid, groups=groups, obj=obj)).encode()
        return asyncio.run(webhook.review(body)).body["response"]

    assert csr("normal", ("developers",))["allowed"]
    assert not csr("dev", ("developers",))["allowed"]
    assert csr("oncall", ("developers", "oncall"))["allowed"]
    records = [json.loads(line) for line in store.audit_lines()]
    store.close()
    kinds = [
        (r["action"], r.get("object")) for r in records if r["action"].startswith("break-glass")
    ]
    assert kinds == [
        ("break-glass-refused", "CertificateSigningRequest/dev"),
        ("break-glass", "CertificateSigningRequest/oncall"),
    ]
    refused, used = (r["detail"] for r in records if r["action"].startswith("break-glass"))
    assert refused == {
        "user": "alice",
        "reason": "INC-7",
        "ttlSeconds": 900,
        "refused": "alice is not among this budget's break-glass subjects",
    }
    assert used == {"user": "alice", "reason": "INC-7", "ttlSeconds": 900}
    shown = io.StringIO()
    assert (
        main(
            ["audit", "--kind", "break-glass", "--db", str(tmp_path / "ledger.sqlite3")], out=shown
        )
        == 0
    )
    assert [json.loads(line)["action"] for line in shown.getvalue().splitlines()] == [
        "break-glass-refused",
        "break-glass",
    ]


def test_a_reused_release_id_in_a_warn_budget_is_attested_as_a_warning(
    tmp_path: Path, keyring: dsse.Keyring
) -> None:
    store = SQLiteStore(tmp_path / "warn.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}, enforcement="warn"))
    webhook = admission(store, keyring)
    for uid, name in (("dep-1", "api"), ("dep-2", "copy")):
        assert ship(webhook, uid=uid, points=5, name=name, release_id="v1")["allowed"]
    entry = latest_entry(store, RISK)
    envelope = store.verdict(entry.verdict)
    assert envelope is not None
    predicate = independent_verify(envelope, keyring.active.public.to_pem())["predicate"]
    assert predicate["decision"]["reason"] == "ReleaseReused"
    assert predicate["budgetCheck"]["result"] == "warn"
    store.close()

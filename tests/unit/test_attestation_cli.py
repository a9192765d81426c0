"""`budgetops serve` signs, and `budgetops verdict | verify`, `verify --audit`, `audit` and
`keys` prove it, run as a user runs them: processes over an embedded ledger."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetops.adapters.keyring import (
    VERDICT_KEYS_ENV,
    VERDICT_KEYS_SECRET,
    KeyFolder,
    read_keyring,
)
from budgetops.adapters.secrets import FileSecrets
from budgetops.adapters.verdictmaps import MAP_BYTES_MAX, VERDICTS_PER_MAP, merged
from budgetops.apis.audit import AuditHead, HeadSignature
from budgetops.apis.resources import BudgetKey
from budgetops.cli.serving import attestation
from budgetops.crypto import dsse
from budgetops.engine import audit
from budgetops.engine.canonical import config_hash
from budgetops.store.audit import Verdict
from budgetops.store.sqlite import SQLiteStore
from tests.conftest import EXAMPLES
from tests.ports import free_port

from .test_admission import deployment, request

DEPLOYMENTS = {"group": "apps", "version": "v1", "resource": "deployments"}


def keys_of(db: Path) -> Path:
    """A ledger's keyring in these tests: a folder outside the ledger's, as it must be."""
    return db.parent.with_name(db.parent.name + "-keys")


def witness_of(db: Path) -> Path:
    """The audit file `serve` appends to, outside the ledger's folder (the witness)."""
    return db.parent.with_name(db.parent.name + "-witness.jsonl")


def budgetops(*args: str, db: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", *args, "--db", str(db)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, VERDICT_KEYS_ENV: str(keys_of(db))},
    )


def release(port: int, uid: str, points: int) -> dict[str, Any]:
    obj = deployment(**{"budgetops.dev/risk-points": str(points)})
    obj["metadata"]["labels"] = {"app.kubernetes.io/name": "payments-api"}
    obj["metadata"]["uid"] = uid
    body = request(kind="Deployment", resource=DEPLOYMENTS, namespace="payments", obj=obj, uid=uid)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            "/validate",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer: dict[str, Any] = json.loads(connection.getresponse().read())["response"]
    finally:
        connection.close()
    return answer


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples on a ledger, two releases through `budgetops serve`, then stopped."""
    db = tmp_path_factory.mktemp("served") / "ledger.sqlite3"
    assert budgetops("apply", "-f", str(EXAMPLES), db=db).returncode == 0
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "budgetops.cli.main",
            "serve",
            "--db",
            str(db),
            "--listen",
            f"127.0.0.1:{port}",
            "--audit-file",
            str(witness_of(db)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, VERDICT_KEYS_ENV: str(keys_of(db))},
    )
    try:
        assert server.stdout is not None
        while not server.stdout.readline().startswith("serving POST"):
            pass
        assert release(port, "dep-1", 30)["allowed"]
        assert not release(port, "dep-2", 500)["allowed"]
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=30)
    assert server.returncode == 0, log
    assert "signing verdicts with key sha256:" in log
    return db


@pytest.fixture
def served(made: Path, tmp_path: Path) -> Path:
    """A copy of that ledger, its keys and its witness, for a test to change."""
    copy = tmp_path / "copy" / made.name
    shutil.copytree(made.parent, copy.parent)
    shutil.copytree(keys_of(made), keys_of(copy))
    shutil.copy(witness_of(made), witness_of(copy))
    return copy


def test_a_verdict_is_found_from_the_workload_and_verifies(served: Path) -> None:
    shown = budgetops("verdict", "deployment/api", "-n", "payments", db=served)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    digest = shown.stdout.splitlines()[0]
    assert "Deployment payments/api: deny by RiskBudget/payments/payments-api" in shown.stdout
    assert "decision: Exhausted, check fail" in shown.stdout
    envelope = budgetops("verdict", "deployment/api", "-n", "payments", "-o", "json", db=served)
    checked = budgetops("verify", "-", db=served, stdin=envelope.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"verified: {digest}" in checked.stdout
    assert "denied (Exhausted) by RiskBudget/payments/payments-api" in checked.stdout


def test_a_rotation_keeps_old_verdicts_verifiable_and_drift_is_exit_3(
    served: Path, tmp_path: Path
) -> None:
    envelope = budgetops("verdict", "deployment/api", "-n", "payments", "-o", "json", db=served)
    before = budgetops("keys", "list", db=served).stdout.split()[0]
    rotated = budgetops("keys", "rotate", "--algorithm", "ecdsa-p256", db=served)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    listed = budgetops("keys", "list", db=served).stdout
    assert f"{before} ed25519 verifies" in listed
    assert "ecdsa-p256 signs" in listed
    assert budgetops("verify", "-", db=served, stdin=envelope.stdout).returncode == 0
    manifest = (EXAMPLES / "riskbudget-payments.yaml").read_text().replace("tier: 2", "tier: 1")
    (tmp_path / "changed.yaml").write_text(manifest)
    assert budgetops("apply", "-f", str(tmp_path / "changed.yaml"), db=served).returncode == 0
    drifted = budgetops("verify", "-", db=served, stdin=envelope.stdout)
    assert drifted.returncode == 3, drifted.stdout
    assert "drift: the configuration changed since" in drifted.stdout
    exported = budgetops("keys", "export", db=served).stdout
    blocks = [f"-----BEGIN{b}" for b in exported.split("-----BEGIN")[1:]]
    keys = {dsse.VerifyKey.from_pem(b.encode()).keyid: b for b in blocks}
    assert len(keys) == 2
    assert before in keys
    for keyid, pem in keys.items():
        (tmp_path / "one.pem").write_text(pem)
        alone = budgetops(
            "verify",
            "-",
            "--public-key",
            str(tmp_path / "one.pem"),
            db=served,
            stdin=envelope.stdout,
        )
        assert alone.returncode == (3 if keyid == before else 1), alone.stdout


def test_the_audit_trail_verifies_and_an_edit_is_found_at_its_line(served: Path) -> None:
    checked = budgetops("verify", "--audit", "db", db=served)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "RiskBudget/payments/payments-api: " in checked.stdout
    printed = budgetops("audit", db=served).stdout.splitlines()
    actions = [json.loads(line)["action"] for line in printed]
    assert actions == ["reserve", "decision", "checkpoint", "decision"]
    (served.parent / "trail.jsonl").write_text("\n".join(printed[1:]) + "\n")
    cut = budgetops("verify", "--audit", str(served.parent / "trail.jsonl"), db=served)
    assert cut.returncode == 1
    assert "record 2 follows record 0: record 1 missing" in cut.stdout
    partial = budgetops(
        "verify", "--audit", str(served.parent / "trail.jsonl"), "--partial", db=served
    )
    assert partial.returncode == 0, partial.stdout
    with sqlite3.connect(served) as db:
        record = json.loads(db.execute("SELECT record FROM audit WHERE seq = 1").fetchone()[0])
        record["amount"] = "3"
        db.execute("UPDATE audit SET record = ? WHERE seq = 1", (json.dumps(record),))
    broken = budgetops("verify", "--audit", "db", db=served)
    assert broken.returncode == 1
    assert "BROKEN: line 1: RiskBudget/payments/payments-api: record 1 was changed" in broken.stdout


def test_nothing_to_find_is_a_clear_exit_2(served: Path) -> None:
    missing = budgetops("verdict", "deployment/other", "-n", "payments", db=served)
    assert missing.returncode == 2
    assert "no verdict on deployment/other" in missing.stdout
    garbage = budgetops("verify", "-", db=served, stdin="{not json")
    assert garbage.returncode == 2
    assert "is not JSON" in garbage.stdout
    malformed = budgetops("verify", "-", db=served, stdin=json.dumps({"payload": "x"}))
    assert malformed.returncode == 2, malformed.stdout
    assert "invalid: not a DSSE envelope: payloadType is missing" in malformed.stdout


def test_a_server_that_cannot_make_its_keyring_audits_unsigned(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / VERDICT_KEYS_SECRET).write_text("a file where the folder should be")
    attestor, trail = attestation(FileSecrets(folder), "", [], None)
    assert attestor.keyring is None
    assert trail.checkpoints is None


def test_the_keyring_is_made_once_and_read_back(tmp_path: Path) -> None:
    secrets = FileSecrets(tmp_path)
    first, _ = attestation(secrets, "", [], None)
    second, _ = attestation(secrets, "", [], None)
    assert first.keyring is not None
    assert second.keyring is not None
    assert first.keyring.active.keyid == second.keyring.active.keyid
    files = secrets.read_all("", VERDICT_KEYS_SECRET)
    assert sorted(files) == ["active", f"{files['active'].decode()}.pem"]


def test_a_verdict_configmap_keeps_the_newest_that_fit() -> None:
    def verdict(n: int, size: int = 10) -> Verdict:
        return Verdict(f"sha256:{n:064x}", "b", "t", "o", {"payload": "x" * size})

    data = merged({}, [verdict(n) for n in range(VERDICTS_PER_MAP + 5)])
    index = json.loads(data["index"])
    assert len(index) == VERDICTS_PER_MAP
    assert index[-1][0] == f"sha256:{VERDICTS_PER_MAP + 4:064x}"
    assert len(data) == VERDICTS_PER_MAP + 1
    big = merged(data, [verdict(1000 + n, size=200_000) for n in range(6)])
    assert sum(len(text) for text in big.values()) <= MAP_BYTES_MAX + 10_000
    assert json.loads(big["index"])[-1][0] == f"sha256:{1005:064x}"
    assert f"sha256-{1005:064x}" in big
    assert f"sha256-{1000:064x}" not in big


def test_a_verdict_outlasts_the_entries_a_busy_budget_rolls_over(served: Path) -> None:
    """Before, the verdict of a workload was found only while its entry was among the
    budget's latest 50; a busy budget rolled it over within seconds."""
    store = SQLiteStore(served)
    key = BudgetKey("RiskBudget", "payments-api", "payments")

    def roll_over(budget: Any) -> bool:
        budget.status.entries = []
        return True

    store.update_status(key, roll_over)
    store.close()
    shown = budgetops("verdict", "deployment/api", "-n", "payments", db=served)
    assert shown.returncode == 0, shown.stdout
    assert "Deployment payments/api: deny by RiskBudget/payments/payments-api" in shown.stdout


RISK = "RiskBudget/payments/payments-api"


def relink(
    db: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], *, key: Any = None
) -> None:
    """Rewrite a budget's trail as one who may write the ledger would: change its records,
    then relink the chain and move `auditHead` to its new end; with the signing `key` (one
    who holds both), re-sign every checkpoint and the head too."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT record FROM audit WHERE budget = ? ORDER BY seq", (RISK,)
        ).fetchall()
        obj, status = connection.execute(
            "SELECT object, status FROM budgets WHERE kind = 'RiskBudget'"
        ).fetchone()
        uid = json.loads(obj)["metadata"].get("uid", "")
        records, prev = [], audit.GENESIS
        for seq, record in enumerate(change([json.loads(row) for (row,) in rows]), start=1):
            record.pop("hash")
            record.update(seq=seq, prev=prev)
            if record["action"] == "checkpoint" and key is not None:
                payload = audit.checkpoint_payload(RISK, uid, seq - 1, prev)
                envelope = dsse.sign(payload, key, payload_type=audit.CHECKPOINT_TYPE)
                record["detail"] = {"envelope": envelope.to_json()}
            record["hash"] = prev = audit.digest(record)
            records.append(record)
        connection.execute("DELETE FROM audit WHERE budget = ?", (RISK,))
        connection.executemany(
            "INSERT INTO audit VALUES (?, ?, ?)",
            [(RISK, r["seq"], json.dumps(r)) for r in records],
        )
        stored = json.loads(status)
        checkpoints = [r["seq"] for r in records if r["action"] == "checkpoint"]
        head = AuditHead.model_validate(stored["auditHead"]).model_copy(
            update={
                "seq": len(records),
                "hash": prev,
                "checkpoints": len(checkpoints),
                "checkpoint_seq": checkpoints[-1] if checkpoints else 0,
            }
        )
        if key is not None:
            envelope = dsse.sign(
                audit.head_payload(RISK, uid, head), key, payload_type=audit.HEAD_TYPE
            )
            head.signature = HeadSignature(
                keyid=key.keyid, sig=envelope.to_json()["signatures"][0]["sig"]
            )
        stored["auditHead"] = head.to_wire()
        connection.execute(
            "UPDATE budgets SET status = ? WHERE kind = 'RiskBudget'", (json.dumps(stored),)
        )


def edit_a_charge(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert records[0]["action"] == "reserve"
    records[0]["amount"] = "3"
    return records


def erase_the_denial(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert records[-1]["detail"]["allowed"] is False
    return records[:-1]


def roll_back_the_tail(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records[:2]


def delete_the_only_checkpoint(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert [r["action"] for r in records].count("checkpoint") == 1
    return [r for r in records if r["action"] != "checkpoint"]


REWRITES = [edit_a_charge, erase_the_denial, roll_back_the_tail, delete_the_only_checkpoint]


@pytest.mark.parametrize("rewrite", REWRITES, ids=lambda f: f.__name__)
def test_a_rewritten_ledger_fails_verify_without_the_key(
    served: Path, rewrite: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    """Before, relinking the chain and moving `auditHead` passed `verify --audit db`: the
    head was unsigned, and a chain without its only checkpoint passed as "0 signed"."""
    assert budgetops("verify", "--audit", "db", db=served).returncode == 0
    if rewrite is erase_the_denial:
        with sqlite3.connect(served) as connection:
            connection.execute("DELETE FROM verdicts WHERE object LIKE '%payments/api'")
    relink(served, rewrite)
    checked = budgetops("verify", "--audit", "db", db=served)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"{RISK}: the budget's head (record" in checked.stdout
    assert "signature does not hold" in checked.stdout


@pytest.mark.parametrize("rewrite", REWRITES, ids=lambda f: f.__name__)
def test_the_witness_catches_a_rewrite_by_one_who_holds_the_key(
    served: Path, rewrite: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    """One who may write the ledger and read the key re-signs it so that the ledger alone
    verifies; the audit file kept apart (the witness) still shows the rewrite."""
    key = read_keyring(KeyFolder(keys_of(served)), "").active
    assert budgetops("verify", "--audit", str(witness_of(served)), db=served).returncode == 0
    relink(served, rewrite, key=key)
    alone = budgetops("verify", "--audit", "db", db=served)
    assert alone.returncode == 0, alone.stdout  # what holding both still allows
    witnessed = budgetops("verify", "--audit", str(witness_of(served)), db=served)
    assert witnessed.returncode == 1, witnessed.stdout
    assert "BROKEN" in witnessed.stdout
    assert f"{RISK}: " in witnessed.stdout


def test_every_write_signs_the_head_and_publishes_it(served: Path) -> None:
    lines = witness_of(served).read_text().splitlines()
    heads = [json.loads(line) for line in lines if '"prev"' not in line]
    assert [h["head"]["seq"] for h in heads] == [3, 4]  # one per write, not per record
    assert all(h["head"]["signature"]["keyid"].startswith("sha256:") for h in heads)
    with sqlite3.connect(served) as connection:
        (status,) = connection.execute(
            "SELECT status FROM budgets WHERE kind = 'RiskBudget'"
        ).fetchone()
    assert json.loads(status)["auditHead"] == heads[-1]["head"]
    verified = budgetops("verify", "--audit", str(witness_of(served)), db=served)
    assert f"{RISK}: 4 records through 4, 1 signed checkpoints, signed head at 4" in (
        verified.stdout
    )


def test_an_unsigned_head_is_refused(served: Path) -> None:
    with sqlite3.connect(served) as connection:
        (status,) = connection.execute(
            "SELECT status FROM budgets WHERE kind = 'RiskBudget'"
        ).fetchone()
        stored = json.loads(status)
        del stored["auditHead"]["signature"]
        connection.execute(
            "UPDATE budgets SET status = ? WHERE kind = 'RiskBudget'", (json.dumps(stored),)
        )
    checked = budgetops("verify", "--audit", "db", db=served)
    assert checked.returncode == 1
    assert f"{RISK}: the budget's head (record 4) is not signed" in checked.stdout


def test_the_keyring_is_kept_apart_from_the_ledger(made: Path) -> None:
    """Before, the keyring was made in `<ledger>.secrets`, beside the ledger: whoever could
    rewrite the ledger could re-sign it."""
    assert sorted(p.name for p in made.parent.iterdir() if "secrets" in p.name) == []
    assert (keys_of(made) / "active").is_file()


def test_keys_of_a_ledger_without_a_keyring_is_a_clear_exit_2(tmp_path: Path) -> None:
    """Before, `keys list` and `keys export` on a ledger made by `apply` printed a
    traceback."""
    db = tmp_path / "ledger" / "l.sqlite3"
    assert budgetops("apply", "-f", str(EXAMPLES), db=db).returncode == 0
    for action in ("list", "export"):
        shown = budgetops("keys", action, db=db)
        assert shown.returncode == 2, shown.stdout + shown.stderr
        assert "Traceback" not in shown.stderr
        assert f"no verdict keyring in {keys_of(db)}" in shown.stdout


def test_the_first_key_has_the_algorithm_asked_for(tmp_path: Path) -> None:
    """Before, `keys rotate --algorithm ecdsa-p256` with no key yet made an Ed25519 key."""
    db = tmp_path / "ledger" / "l.sqlite3"
    assert budgetops("apply", "-f", str(EXAMPLES), db=db).returncode == 0
    made = budgetops("keys", "rotate", "--algorithm", "ecdsa-p256", db=db)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "(ecdsa-p256)" in made.stdout
    assert read_keyring(KeyFolder(keys_of(db)), "").active.algorithm == "ecdsa-p256"


def test_an_exported_keyring_verifies_verdicts_of_every_key(served: Path) -> None:
    """Before, `--public-key` read the first key of the file `keys export` writes, so after
    a rotation every older verdict failed."""
    envelope = budgetops("verdict", "deployment/api", "-n", "payments", "-o", "json", db=served)
    assert budgetops("keys", "rotate", db=served).returncode == 0
    exported = served.parent / "public.pem"
    exported.write_text(budgetops("keys", "export", db=served).stdout)
    checked = budgetops(
        "verify", "-", "--public-key", str(exported), db=served, stdin=envelope.stdout
    )
    assert checked.returncode == 0, checked.stdout


def test_a_ci_gate_answer_is_a_signed_verdict_verify_accepts(tmp_path: Path) -> None:
    """Before, `check -o json` printed an unsigned statement `verify` refused, with
    `maxCumulativeUncertainty` as a string, so its configHash was not its config's."""
    db = tmp_path / "ledger" / "l.sqlite3"
    assert budgetops("apply", "-f", str(EXAMPLES), db=db).returncode == 0
    answer = budgetops("check", "--service", "payments-api", "--points", "5", "-o", "json", db=db)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    envelope = json.loads(answer.stdout)
    statement = json.loads(base64.b64decode(envelope["payload"]), parse_float=Decimal)
    check = statement["predicate"]["budgetCheck"]
    assert check["config"]["unknowns"]["maxCumulativeUncertainty"] == Decimal("2.5")
    assert check["configHash"] == config_hash(check["config"])
    checked = budgetops("verify", "-", db=db, stdin=answer.stdout)
    assert checked.returncode == 0, checked.stdout
    assert "configuration unchanged" in checked.stdout
    with sqlite3.connect(db) as connection:  # nothing charged, nothing written
        assert connection.execute("SELECT count(*) FROM audit").fetchone() == (0,)


def test_a_key_file_without_a_public_key_is_a_clear_exit_2(served: Path) -> None:
    (served.parent / "empty.pem").write_text("not a key\n")
    shown = budgetops(
        "verify", "-", "--public-key", str(served.parent / "empty.pem"), db=served, stdin="{}"
    )
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "holds no PEM public key" in shown.stdout


def test_an_empty_key_folder_is_made_into_a_keyring(tmp_path: Path) -> None:
    """A folder made ahead (by an installer, or a test) is no keyring yet, not a broken one."""
    folder = tmp_path / "keys"
    folder.mkdir()
    with pytest.raises(LookupError, match="no verdict keyring in"):
        read_keyring(KeyFolder(folder), "")
    first, _ = attestation(KeyFolder(folder), "", [], None)
    assert first.keyring is not None
    assert (folder / "active").is_file()

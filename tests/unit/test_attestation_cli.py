"""`budgetops serve` signs, and `budgetops verdict | verify`, `verify --audit`, `audit` and
`keys` prove it, run as a user runs them: processes over an embedded ledger."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from budgetops.cli.serving import attestation
from budgetops.crypto import dsse
from budgetops.store import BudgetKey, SQLiteStore
from budgetops.store.audit import Verdict
from budgetops.store.keyring import VERDICT_KEYS_SECRET
from budgetops.store.secrets import FileSecrets
from budgetops.store.verdictmaps import MAP_BYTES_MAX, VERDICTS_PER_MAP, merged
from tests.conftest import EXAMPLES
from tests.ports import free_port

from .test_admission import deployment, request

DEPLOYMENTS = {"group": "apps", "version": "v1", "resource": "deployments"}


def budgetops(*args: str, db: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", *args, "--db", str(db)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
    """A copy of that ledger and its keys, for a test to change."""
    shutil.copytree(made.parent, tmp_path / "copy")
    return tmp_path / "copy" / made.name


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
    with sqlite3.connect(served) as db:
        record = json.loads(db.execute("SELECT record FROM audit WHERE seq = 1").fetchone()[0])
        record["amount"] = "3"
        db.execute("UPDATE audit SET record = ? WHERE seq = 1", (json.dumps(record),))
    broken = budgetops("verify", "--audit", "db", db=served)
    assert broken.returncode == 1
    assert "BROKEN: line 1: RiskBudget/payments/payments-api: record 1 was changed" in broken.stdout
    (served.parent / "trail.jsonl").write_text("\n".join(printed[1:]) + "\n")
    cut = budgetops("verify", "--audit", str(served.parent / "trail.jsonl"), db=served)
    assert cut.returncode == 1
    assert "record 2 follows record 0: record 1 missing" in cut.stdout
    partial = budgetops(
        "verify", "--audit", str(served.parent / "trail.jsonl"), "--partial", db=served
    )
    assert partial.returncode == 0, partial.stdout


def test_nothing_to_find_is_a_clear_exit_2(served: Path) -> None:
    missing = budgetops("verdict", "deployment/other", "-n", "payments", db=served)
    assert missing.returncode == 2
    assert "no verdict on deployment/other" in missing.stdout
    garbage = budgetops("verify", "-", db=served, stdin="{not json")
    assert garbage.returncode == 2
    assert "is not JSON" in garbage.stdout
    unsigned = budgetops("verify", "-", db=served, stdin=json.dumps({"payload": "x"}))
    assert unsigned.returncode == 1
    assert "NOT VERIFIED" in unsigned.stdout


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

"""Through the real API server: a TrustBudget charged, deleted, created again (a new object,
with a new uid) and charged again leaves two chains in the operator's stdout, one per
object, and `budgetops verify --audit` reads both with nothing broken. Before, the verifier
read them as one chain of the budget's name, broken and out of order at the second life."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cluster.conftest import CSR_CREATE
from tests.cluster.test_verdicts_incluster import (
    OPERATOR_NAMESPACE,
    admission_replica,
    budgetops,
)

NAME = "recreated-certs"
BUDGET = f"TrustBudget/{NAME}"
LABEL = "budgetops.dev/test-recreated"


def trust_budget() -> str:
    return json.dumps(
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "TrustBudget",
            "metadata": {"name": NAME},
            "spec": {
                "subjects": {"users": ["admin"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 10,
                "resetInterval": "24h",
            },
        }
    )


def csr(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    return json.dumps(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "labels": {LABEL: "yes"}},
            "spec": {
                "request": base64.b64encode(pem).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["client auth"],
                "expirationSeconds": 600,
            },
        }
    )


@pytest.fixture(scope="module")
def trail(budget_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One replica charging CSRs; its stdout is the audit trail."""
    control_plane = budget_crds
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    folder = tmp_path_factory.mktemp("recreated")
    try:
        with admission_replica(
            control_plane, folder, hook="budgetops-recreated", namespace=NAME, rules=[CSR_CREATE]
        ) as stdout:
            yield stdout
    finally:
        control_plane.kubectl("delete", "csr", "-l", LABEL, check=False)
        control_plane.kubectl("delete", "tb", NAME, "--ignore-not-found", check=False)


def budget(control_plane: Any) -> dict[str, Any]:
    return dict(json.loads(control_plane.kubectl("get", "tb", NAME, "-o", "json").stdout))


def charged(control_plane: Any, life: str, stdout: Path, *, records: int) -> str:
    """Create CSRs until the budget's current object has `records` audit records and the
    operator's stdout holds them (the replica's cache may still hold the object before it
    for a moment); its uid."""
    deadline = time.monotonic() + 30
    for n in range(100):
        control_plane.kubectl("create", "-f", "-", input=csr(f"{life}-{n}"), check=False)
        found = budget(control_plane)
        head = found.get("status", {}).get("auditHead", {})
        uid = str(found["metadata"]["uid"])
        published = [
            json.loads(line)
            for line in stdout.read_text().splitlines()
            if f'"uid":"{uid}"' in line and '"prev"' in line
        ]
        if head.get("seq", 0) >= records and published and published[-1]["hash"] == head["hash"]:
            return uid
        assert time.monotonic() < deadline, f"{life}: the budget's head is {head}"
        time.sleep(0.2)
    raise AssertionError(f"{life}: no charge reached the budget")


def test_a_trustbudget_deleted_and_created_again_leaves_two_chains_that_verify(
    budget_crds: Any, trail: Path
) -> None:
    control_plane = budget_crds
    control_plane.kubectl("apply", "-f", "-", input=trust_budget())
    first = charged(control_plane, "first", trail, records=2)
    control_plane.kubectl("delete", "tb", NAME, "--wait=true")
    control_plane.kubectl("apply", "-f", "-", input=trust_budget())
    second = charged(control_plane, "second", trail, records=2)
    assert first != second, "a budget created again is a new object"

    checked = budgetops(control_plane, "verify", "--audit", str(trail), "--budget", BUDGET)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "BROKEN" not in checked.stdout
    summary = [line for line in checked.stdout.splitlines() if line.startswith(BUDGET)]
    assert sorted(line.split(":")[0] for line in summary) == sorted(
        [f"{BUDGET} (uid {first[:8]})", f"{BUDGET} (uid {second[:8]})"]
    ), checked.stdout
    assert all("signed head at" in line for line in summary), checked.stdout
    assert "audit trail verified" in checked.stdout

    lines = trail.read_text().splitlines()
    last = max(
        n for n, line in enumerate(lines) if f'"uid":"{second}"' in line and '"prev"' in line
    )
    cut = trail.with_name("cut.jsonl")
    cut.write_text("".join(line + "\n" for n, line in enumerate(lines) if n != last))
    broken = budgetops(control_plane, "verify", "--audit", str(cut), "--budget", BUDGET)
    assert broken.returncode == 1, broken.stdout
    assert f"{BUDGET} (uid {second[:8]}): " in broken.stdout, broken.stdout
    assert f"{BUDGET} (uid {first[:8]}): " not in broken.stdout.split("BROKEN", 1)[1]

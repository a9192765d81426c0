"""Break-glass with a quorum through the real API server (issue 24 item 1).

A `budgetops run` replica serves the webhook and reconciles; the chart's BudgetApproval
policy and approver ClusterRole are applied as Helm renders them; bob, carol and dave are
people the API server authenticates by client certificate, with only that role. An
exhausted TrustBudget's break-glass CSR is denied with a request id; approvals in someone
else's name are refused by the API server; `kubectl budget approve` as bob and carol (and
dave, whom the quorum does not name) is recorded by the operator and answered; then the
same ask passes once, the next is refused, and the audit stream names the approvers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import CSR_CREATE, webhook_configuration
from tests.cluster.test_helm import render
from tests.cluster.test_incluster_admission import _wait_healthy, budgetops_run
from tests.cluster.test_webhook_roundtrip import csr_manifest
from tests.ports import free_port
from tests.tls import Pair, client_pair, loopback_server_pair
from tests.waiting import eventually

BUDGET = "glass-certs"
LABEL = {"budgetops.dev/test": "quorum"}
PEOPLE = ("bob", "carol", "dave")
REFUSED_AS_SOMEONE_ELSE = "spec.approver must be bob, not carol"
TRUST_BUDGET = {
    "apiVersion": "budgetops.dev/v1alpha1",
    "kind": "TrustBudget",
    "metadata": {"name": BUDGET},
    "spec": {
        "subjects": {"users": ["alice"]},
        "match": [{"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}],
        "initialBalance": 1,
        "breakGlass": {
            "subjects": {"users": ["alice"]},
            "maxCertificateTTL": "1h",
            "rateLimit": {"count": 5, "per": "24h"},
            "quorum": {
                "required": 2,
                "approvers": {"users": ["alice", "bob", "carol"]},
                "approvalWindow": "30m",
            },
        },
    },
}


@dataclass
class Quorum:
    control_plane: Any
    kubeconfigs: dict[str, Path]
    audit: Path

    def approve(self, person: str, request: str) -> tuple[int, str]:
        """`kubectl budget approve` as `person`."""
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(self.kubeconfigs[person]),
        }
        done = subprocess.run(
            [str(self.control_plane.binaries.kubectl), "budget", "approve", BUDGET, request],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    def ask(self, name: str) -> subprocess.CompletedProcess[str]:
        """alice creates a CSR asking to break the glass."""
        document = yaml.safe_load(csr_manifest(name, labels=LABEL))
        document["metadata"]["annotations"] = {"budgetops.dev/break-glass": "INC-7 prod down"}
        return self.control_plane.kubectl(
            "create", "--as=alice", "--as-group=system:masters", "-f", "-",
            input=json.dumps(document), check=False,
        )  # fmt: skip

    def approval_as(
        self, person: str, approver: str, **spec: Any
    ) -> subprocess.CompletedProcess[str]:
        document = {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "BudgetApproval",
            "metadata": {"name": f"by-{person}-for-{approver}"},
            "spec": {"budget": BUDGET, "request": "bg-0123456789", "approver": approver, **spec},
        }
        return self.control_plane.kubectl(
            "--kubeconfig", str(self.kubeconfigs[person]), "create", "-f", "-",
            input=json.dumps(document), check=False,
        )  # fmt: skip


def _kubeconfig(path: Path, server: str, ca: Path, pair: Pair) -> Path:
    user = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server,
                                                       "certificate-authority": str(ca)}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def quorum(
    budget_crds: Any, binaries: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Quorum]:
    control_plane = budget_crds
    folder: Path = tmp_path_factory.mktemp("quorum")
    wanted = {
        ("ValidatingAdmissionPolicy", "demo-budgetops-approvals"),
        ("ValidatingAdmissionPolicyBinding", "demo-budgetops-approvals"),
        ("ClusterRole", "demo-budgetops-approver"),
    }
    documents = [d for d in render(binaries) if (d["kind"], d["metadata"]["name"]) in wanted]
    assert len(documents) == len(wanted)
    documents.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "quorum-approvers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "demo-budgetops-approver"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": p}
                         for p in PEOPLE],
        }
    )  # fmt: skip
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    control_plane.kubectl("apply", "-f", "-", input=listed)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(TRUST_BUDGET))
    pki = control_plane.pki
    ca = Pair(pki.ca_cert, pki.ca_key)
    kubeconfigs = {
        person: _kubeconfig(
            folder / f"{person}.kubeconfig", control_plane.server, pki.ca_cert,
            client_pair(folder, ca, person, ("people",)),
        )
        for person in PEOPLE
    }  # fmt: skip
    webhook_ca, serving = loopback_server_pair(folder)
    port = free_port()
    audit = folder / "audit.jsonl"
    with audit.open("wb") as out, (folder / "replica.log").open("wb") as log:
        process = subprocess.Popen(
            budgetops_run(control_plane.kubeconfig, port, serving, "--no-peering"),
            stdout=out, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        configuration = webhook_configuration(
            "budgetops-quorum", port=port, ca=webhook_ca.cert.read_bytes(), rules=[CSR_CREATE],
            objectSelector={"matchLabels": LABEL}, timeoutSeconds=10,
        )  # fmt: skip
        found = Quorum(control_plane, kubeconfigs, audit)
        try:
            _wait_healthy(port, webhook_ca.cert)
            control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
            deadline = time.monotonic() + 30  # the API server loads a new policy within seconds
            while REFUSED_AS_SOMEONE_ELSE not in found.approval_as("bob", "carol").stderr:
                assert time.monotonic() < deadline, "the approvals policy never took effect"
                control_plane.kubectl("delete", "ba", "by-bob-for-carol", check=False)
                time.sleep(0.3)
            yield found
        finally:
            control_plane.kubectl("delete", "validatingwebhookconfiguration",
                                  "budgetops-quorum", check=False)  # fmt: skip
            process.terminate()
            process.wait(timeout=15)
            control_plane.kubectl("delete", "-f", "-", input=listed, check=False)
            control_plane.kubectl("delete", "tb", BUDGET, "--wait=false", check=False)
            control_plane.kubectl("delete", "ba", "--all", check=False)
            control_plane.kubectl("delete", "csr", "-l", "budgetops.dev/test=quorum", check=False)


def _request_of(denial: str) -> str:
    found = re.search(rf"kubectl budget approve {BUDGET} (bg-[0-9a-f]{{10}})", denial)
    assert found is not None, denial
    return found.group(1)


def _status(control_plane: Any) -> dict[str, Any]:
    document = control_plane.kubectl("get", "tb", BUDGET, "-o", "json").stdout
    return json.loads(document)["status"]  # type: ignore[no-any-return]


def _audit(quorum: Quorum, action: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in quorum.audit.read_text().splitlines() if line]
    return [r for r in records if r.get("budget") == f"TrustBudget/{BUDGET}"
            and r.get("action") == action]  # fmt: skip


def test_a_quorum_of_two_approvers_lets_break_glass_pass_once(quorum: Quorum) -> None:
    control_plane = quorum.control_plane
    plain = yaml.safe_load(csr_manifest("quorum-first", labels=LABEL))
    made = control_plane.kubectl(
        "create", "--as=alice", "--as-group=system:masters", "-f", "-", input=json.dumps(plain)
    )
    assert made.returncode == 0, "the balance covers the first"

    denied = quorum.ask("quorum-ask-1")
    assert denied.returncode != 0
    assert "Trust budget exhausted." in denied.stderr
    assert "Break-glass needs approval: this budget requires 2 approvals from alice, bob or " \
        "carol." in " ".join(denied.stderr.split())  # fmt: skip
    request = _request_of(denied.stderr)
    [opened] = _status(control_plane)["breakGlassRequests"]
    assert (opened["id"], opened["user"], opened["approvals"]) == (request, "alice", [])

    refused = quorum.approval_as("bob", "carol")
    assert REFUSED_AS_SOMEONE_ELSE in refused.stderr, "nobody approves in someone else's name"
    groups = quorum.approval_as("bob", "bob", groups=["system:masters"])
    assert "spec.groups may name only groups the creator is in" in groups.stderr
    assert control_plane.kubectl("get", "ba", "-o", "name").stdout.strip() == ""

    code, out = quorum.approve("bob", request)
    assert code == 0, out
    assert f"bob's approval of {request} recorded (1 of 2): 1 more needed by" in out
    code, out = quorum.approve("dave", request)
    assert code == 1, out
    assert "dave is not among the approvers of TrustBudget glass-certs (alice, bob or carol)" in out
    still = quorum.ask("quorum-ask-1")  # the same CSR again
    assert f"request {request} has 1 of the 2 approvals it needs (bob)" in still.stderr
    code, out = quorum.approve("carol", request)
    assert code == 0, out
    assert f"carol's approval of {request} recorded (2 of 2): it may pass once" in out

    other = quorum.ask("quorum-other")  # approved for quorum-ask-1, not for anything else
    assert other.returncode != 0
    assert _request_of(other.stderr) != request
    passed = quorum.ask("quorum-ask-1")
    assert passed.returncode == 0, passed.stderr
    assert f"(request {request}, approved by bob, carol)" in passed.stderr  # kubectl's warning
    again = quorum.ask("quorum-ask-4")
    assert again.returncode != 0, "a request passes once"
    assert _request_of(again.stderr) != request

    status = _status(control_plane)
    [use] = status["breakGlassUses"]
    assert (use["user"], use["approvers"]) == ("alice", ["bob", "carol"])
    approvals = json.loads(control_plane.kubectl("get", "ba", "-o", "json").stdout)["items"]
    answered = {a["spec"]["approver"]: a["status"]["recorded"] for a in approvals}
    assert answered == {"bob": True, "carol": True, "dave": False}

    def audited() -> bool:
        return bool(_audit(quorum, "break-glass"))

    eventually(audited)
    [record] = _audit(quorum, "break-glass")
    assert (record["detail"]["approvers"], record["detail"]["request"]) == (
        ["bob", "carol"],
        request,
    )
    recorded = [r["detail"]["approver"] for r in _audit(quorum, "break-glass-approved")]
    assert recorded == ["bob", "carol"]


def test_the_api_server_bounds_the_window_and_keeps_an_approval_as_made(quorum: Quorum) -> None:
    control_plane = quorum.control_plane
    too_long = json.loads(json.dumps(TRUST_BUDGET))
    too_long["metadata"]["name"] = "glass-too-long"
    too_long["spec"]["breakGlass"]["quorum"]["approvalWindow"] = "25h"
    tried = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(too_long), check=False
    )
    assert "approvalWindow must be from 1m to 24h" in tried.stderr
    code, out = quorum.approve("bob", "bg-00000000ff")
    assert code == 1, out
    name = out.rsplit("BudgetApproval ", 1)[1].rstrip(")\n")
    changed = control_plane.kubectl(
        "patch",
        "ba",
        name,
        "--type=merge",
        "-p",
        '{"spec": {"request": "bg-00000000fe"}}',
        check=False,
    )
    assert "a BudgetApproval cannot be changed" in changed.stderr

"""Three `budgetops run` replicas, 400 concurrent CSR creates, a balance of 100.

Each replica is its own process with its own watch cache and group-commit writer; they
meet only at the API server, through 409 conflicts on the budget's status. Each replica
has its own ValidatingWebhookConfiguration, selecting a third of the objects by label,
since the test has no Service to load-balance through.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from budgetops.apis.resources import TrustBudget
from budgetops.engine.ledger import audit
from tests.cluster.conftest import CSR_CREATE, webhook_configuration
from tests.ports import free_port
from tests.tls import Pair, loopback_server_pair

REPLICAS = 3
LABEL = "budgetops.dev/test-replica"


def _apply(control_plane: Any, document: dict[str, Any]) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(document))


def budgetops_run(kubeconfig: Path, port: int, serving: Pair, *options: str) -> list[str]:
    """The command line of one `budgetops run` replica serving TLS on loopback `port`."""
    return [
        *(sys.executable, "-m", "budgetops.cli.main", "run", *options),
        *("--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{port}"),
        *("--tls-cert-file", str(serving.cert), "--tls-key-file", str(serving.key)),
    ]


@pytest.fixture(scope="module")
def replicas(budget_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    control_plane = budget_crds
    _apply(
        control_plane,
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "TrustBudget",
            "metadata": {"name": "incluster-certificates"},
            "spec": {
                "subjects": {"users": ["admin"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 100,
                "resetInterval": "24h",
            },
        },
    )
    folder: Path = tmp_path_factory.mktemp("incluster")
    ca, serving = loopback_server_pair(folder)
    ports = [free_port() for _ in range(REPLICAS)]
    logs = [(folder / f"replica-{n}.log").open("wb") for n in range(REPLICAS)]
    processes = [
        subprocess.Popen(
            budgetops_run(control_plane.kubeconfig, port, serving),
            stdout=subprocess.DEVNULL,
            stderr=logs[n],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for n, port in enumerate(ports)
    ]
    try:
        for port in ports:
            _wait_healthy(port, ca.cert)
        for n, port in enumerate(ports):
            control_plane.kubectl(
                "apply", "-f", "-", input=json.dumps(_configuration(n, port, ca.cert.read_bytes()))
            )
        yield ports
    finally:
        for n in range(REPLICAS):
            control_plane.kubectl(
                "delete", "validatingwebhookconfiguration", f"budgetops-replica-{n}", check=False
            )
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)
        for log in logs:
            log.close()
        assert all(p.returncode == 0 for p in processes), "replicas stop cleanly on SIGTERM"


def _wait_healthy(port: int, ca: Path) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/readyz", context=context, timeout=2
            ) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"replica on port {port} never became ready")


def _configuration(replica: int, port: int, ca: bytes) -> dict[str, Any]:
    return webhook_configuration(
        f"budgetops-replica-{replica}",
        port=port,
        ca=ca,
        rules=[CSR_CREATE],
        objectSelector={"matchLabels": {LABEL: str(replica)}},
        timeoutSeconds=10,
    )


def _csr_body(name: str, replica: int, request: str) -> client.V1CertificateSigningRequest:
    return client.V1CertificateSigningRequest(
        metadata=client.V1ObjectMeta(name=name, labels={LABEL: str(replica)}),
        spec=client.V1CertificateSigningRequestSpec(
            request=request,
            signer_name="kubernetes.io/kube-apiserver-client",
            usages=["client auth"],
            expiration_seconds=600,
        ),
    )


def test_exactly_the_balance_is_admitted_across_three_replicas(
    control_plane: Any, replicas: list[int]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "load")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    request = base64.b64encode(pem).decode()
    api_client = config.new_client_from_config(str(control_plane.kubeconfig))
    api_client.configuration.connection_pool_maxsize = 48
    certificates = client.CertificatesV1Api(api_client)

    dry = certificates.create_certificate_signing_request(
        _csr_body("load-dry", 0, request), dry_run="All"
    )
    assert dry.metadata.name == "load-dry"

    def create(n: int) -> int:
        try:
            certificates.create_certificate_signing_request(
                _csr_body(f"load-{n}", n % REPLICAS, request)
            )
        except ApiException as error:
            return int(error.status)
        return 201

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(create, range(400)))
    assert statuses.count(201) == 100, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(403) == 300, "every other request is a budget denial, not an error"

    def budget() -> TrustBudget:
        live = control_plane.kubectl("get", "tb", "incluster-certificates", "-o", "json").stdout
        found = TrustBudget.model_validate(json.loads(live))
        assert audit(found.status) == []
        return found

    account = budget().status.accounts["user:admin"]
    assert (account.spent + account.reserved, account.balance) == (100, 0)
    created = json.loads(control_plane.kubectl("get", "csr", "-l", LABEL, "-o", "json").stdout)[
        "items"
    ]
    uids = {item["metadata"]["uid"] for item in created}
    # The replica kopf peering elected sees each CSR and confirms its reservation.
    deadline = time.monotonic() + 30
    while budget().status.accounts["user:admin"].reserved and time.monotonic() < deadline:
        time.sleep(0.5)
    settled = budget()
    assert settled.status.accounts["user:admin"].spent == 100
    # A created object, once seen, cannot be admitted again: its key is not kept (before,
    # every one of these uids stayed in the status for two minutes).
    assert not uids & set(settled.status.settled)


def test_a_single_replica_without_peering_reconciles_and_stops_on_sigterm(
    budget_crds: Any, tmp_path: Path
) -> None:
    """`budgetops run --no-peering`: no kopf at all; the scheduler runs in the main thread."""
    control_plane = budget_crds
    ca, serving = loopback_server_pair(tmp_path)
    port = free_port()
    name = "standalone-risk"
    _apply(
        control_plane,
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "RiskBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"serviceId": name, "tier": 1},
        },
    )
    with (tmp_path / "replica.log").open("wb") as log:
        process = subprocess.Popen(
            budgetops_run(control_plane.kubeconfig, port, serving, "--no-peering"),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_healthy(port, ca.cert)
            deadline = time.monotonic() + 30
            ready = ""
            while ready != "True" and time.monotonic() < deadline:
                ready = control_plane.kubectl(
                    "get",
                    "rb",
                    name,
                    "-n",
                    "default",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                ).stdout
                time.sleep(0.2)
            assert ready == "True", "the standalone replica reconciled the budget"
        finally:
            process.terminate()
            process.wait(timeout=15)
            control_plane.kubectl("delete", "rb", name, "-n", "default", "--wait=false")
    assert process.returncode == 0, (tmp_path / "replica.log").read_text()[-2000:]

"""TLS without manual steps, through the real API server: `budgetops run --tls-secret` makes
its CA and certificate in a Secret, gives the CA to its webhook configuration, and the API
server then calls it; a due certificate is reissued by the same CA, so the caBundle stays."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from budgetops.adapters.webhooktls import WebhookTLS
from budgetops.crypto import webhookcerts
from budgetops.engine.clock import system_clock
from tests.cluster.conftest import CSR_CREATE
from tests.ports import free_port

NAMESPACE = "tls-operator"
HOOK = "budgetops-tls-test"


def configuration(port: int) -> dict[str, Any]:
    """A webhook configuration without a caBundle: BudgetOps must give it one."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": HOOK},
        "webhooks": [
            {
                "name": "tls.budgetops.dev",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate"},
                "rules": [CSR_CREATE],
                "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "objectSelector": {"matchLabels": {"budgetops.dev/tls-test": "yes"}},
            }
        ],
    }


def bundle(control_plane: Any) -> str:
    live = json.loads(
        control_plane.kubectl("get", "validatingwebhookconfiguration", HOOK, "-o", "json").stdout
    )
    return str(live["webhooks"][0]["clientConfig"].get("caBundle", ""))


@pytest.fixture
def hook(budget_crds: Any) -> Any:
    control_plane = budget_crds
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    yield control_plane
    control_plane.kubectl("delete", "validatingwebhookconfiguration", HOOK, check=False)
    control_plane.kubectl("delete", "secret", "-n", NAMESPACE, "webhook-tls", check=False)


def test_run_makes_its_certificates_and_the_api_server_trusts_them(
    hook: Any, tmp_path: Path
) -> None:
    control_plane = hook
    port = free_port()
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration(port)))
    command = [
        *(sys.executable, "-m", "budgetops.cli.main", "run", "--no-reconcile"),
        *("--kubeconfig", str(control_plane.kubeconfig), "--namespace", NAMESPACE),
        *("--listen", f"127.0.0.1:{port}", "--tls-secret", "webhook-tls"),
        *("--tls-extra-name", "127.0.0.1", "--webhook-configuration", HOOK),
        *("--tls-dir", str(tmp_path / "tls")),
    ]
    with (tmp_path / "run.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while not bundle(control_plane) and time.monotonic() < deadline:
                time.sleep(0.2)
            secret = json.loads(
                control_plane.kubectl(
                    "get", "secret", "-n", NAMESPACE, "webhook-tls", "-o", "json"
                ).stdout
            )
            assert secret["type"] == "kubernetes.io/tls"
            assert bundle(control_plane) == secret["data"]["ca.crt"]
            csr = {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"name": "tls-test-csr", "labels": {"budgetops.dev/tls-test": "yes"}},
                "spec": {
                    "request": base64.b64encode(_csr_pem()).decode(),
                    "signerName": "example.com/tls-test",
                    "usages": ["digital signature"],
                },
            }
            deadline = time.monotonic() + 20
            while True:  # the API server calls the webhook over TLS it now trusts
                created = control_plane.kubectl(
                    "create", "-f", "-", "--dry-run=server", input=json.dumps(csr), check=False
                )
                if "failed calling webhook" not in created.stderr:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            # The webhook answered: it admitted the request, or a budget left by another
            # test of the session refused it. What it may not be is a call that failed.
            answered = created.returncode == 0 or 'webhook "tls.budgetops.dev" denied' in (
                created.stderr
            )
            assert answered, created.stderr + (tmp_path / "run.log").read_text()[-2000:]
        finally:
            process.terminate()
            process.wait(timeout=15)
    assert process.returncode == 0, (tmp_path / "run.log").read_text()[-2000:]


def _csr_pem() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls-test")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def test_a_due_certificate_is_reissued_by_the_same_ca(hook: Any, tmp_path: Path) -> None:
    control_plane = hook
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration(free_port())))
    api = config.new_client_from_config(str(control_plane.kubeconfig))
    names = webhookcerts.service_names("budgetops", NAMESPACE)
    tls = WebhookTLS(
        api, namespace=NAMESPACE, secret="webhook-tls", names=names, configuration=HOOK,
        folder=tmp_path,
    )  # fmt: skip
    now = system_clock()
    first = tls.ensure(now)
    cert = first.cert_file.read_bytes()
    assert bundle(control_plane) == base64.b64encode(first.ca).decode()
    again = WebhookTLS(
        api, namespace=NAMESPACE, secret="webhook-tls", names=names, configuration=HOOK,
        folder=tmp_path / "other-replica",
    ).ensure(now)  # fmt: skip
    assert again.cert_file.read_bytes() == cert, "a second replica uses what the first made"
    later = tls.ensure(now + timedelta(days=70))
    assert later.cert_file.read_bytes() != cert
    assert later.ca == first.ca
    assert bundle(control_plane) == base64.b64encode(first.ca).decode()
    wider = WebhookTLS(
        api, namespace=NAMESPACE, secret="webhook-tls", names=[*names, "budgetops.example"],
        configuration=HOOK, folder=tmp_path,
    ).ensure(now + timedelta(days=70))  # fmt: skip
    assert "budgetops.example" in webhookcerts.names_of(wider.cert_file.read_bytes())
    client.CoreV1Api(api).patch_namespaced_secret(
        "webhook-tls", NAMESPACE, {"data": {"ca.key": None}}
    )
    with pytest.raises(ValueError, match=r"lacks ca\.key: delete it"):
        tls.ensure(now)


def test_the_ca_is_given_when_the_configuration_changed_since_it_was_read(
    hook: Any, tmp_path: Path
) -> None:
    """Two replicas of a fresh install start together: the one whose read of the webhook
    configuration the other's patch made stale reads it again (it used to crash on the
    API server's 422, and its pod restarted)."""
    control_plane = hook
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration(free_port())))
    api = config.new_client_from_config(str(control_plane.kubeconfig))
    tls = WebhookTLS(
        api, namespace=NAMESPACE, secret="webhook-tls",
        names=webhookcerts.service_names("budgetops", NAMESPACE), configuration=HOOK,
        folder=tmp_path,
    )  # fmt: skip
    read = tls.admission.read_validating_webhook_configuration
    reads = []

    def stale_first(name: str) -> Any:
        found = read(name)
        if not reads:  # another writer moves it on before this replica's patch
            control_plane.kubectl("label", "validatingwebhookconfiguration", HOOK, "moved=yes")
        reads.append(found)
        return found

    tls.admission.read_validating_webhook_configuration = stale_first  # type: ignore[method-assign]
    served = tls.ensure(system_clock())
    assert len(reads) == 2
    assert bundle(control_plane) == base64.b64encode(served.ca).decode()

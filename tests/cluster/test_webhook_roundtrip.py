"""The API server really calls a validating webhook of ours over HTTPS on 127.0.0.1.

The server here is a stand-in that records what it is sent and denies on request; the
admission issue replaces it with BudgetOps' own. What this pins down are the facts the
design rests on: the call happens for CSRs and Deployments, `metadata.uid` is already set
on CREATE, `dryRun` is passed, and a denial's message reaches the kubectl user.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cluster.conftest import CSR_CREATE, DEPLOYMENT_WRITES, webhook_configuration
from tests.tls import loopback_server_pair

DENY_LABEL = "budgetops.dev/test-deny"


class Recorder(ThreadingHTTPServer):
    reviews: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.reviews.append(review)
        request = review["request"]
        labels = (request.get("object") or {}).get("metadata", {}).get("labels", {})
        response: dict[str, Any] = {"uid": request["uid"], "allowed": DENY_LABEL not in labels}
        if not response["allowed"]:
            response["status"] = {"code": 403, "message": "Trust budget exhausted (test)."}
        else:
            response["warnings"] = ["receipt from the test webhook"]
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on what was recorded, not on access logs."""


@pytest.fixture(scope="module")
def webhook(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    folder: Path = tmp_path_factory.mktemp("webhook")
    ca, serving = loopback_server_pair(folder)
    server = Recorder(("127.0.0.1", 0), Handler)
    server.reviews = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(serving.cert, serving.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    configuration = webhook_configuration(
        "budgetops-roundtrip-test",
        port=port,
        ca=ca.cert.read_bytes(),
        rules=[CSR_CREATE, DEPLOYMENT_WRITES],
        matchConditions=[
            {"name": "not-nodes", "expression": "!('system:nodes' in request.userInfo.groups)"}
        ],
    )
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
    yield server
    control_plane.kubectl("delete", "validatingwebhookconfiguration", "budgetops-roundtrip-test")
    server.shutdown()
    server.server_close()


def csr_manifest(name: str, labels: dict[str, str] | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return yaml.safe_dump(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "request": base64.b64encode(
                    request.public_bytes(serialization.Encoding.PEM)
                ).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["client auth"],
                "expirationSeconds": 3600,
            },
        }
    )


def deployment_manifest(name: str, image: str = "example/app:1") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": "default",
                "annotations": {"budgetops.dev/risk-points": "25"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": image}]},
                },
            },
        }
    )


def reviews_for(server: Recorder, kind: str, name: str) -> list[dict[str, Any]]:
    return [
        r["request"]
        for r in server.reviews
        if r["request"]["kind"]["kind"] == kind and r["request"].get("name") == name
    ]


def test_csr_creation_calls_the_webhook_with_uid_and_user(
    control_plane: Any, webhook: Recorder
) -> None:
    result = control_plane.kubectl("create", "-f", "-", input=csr_manifest("roundtrip-csr"))
    assert "receipt from the test webhook" in result.stderr, "allowed warnings reach kubectl"
    [request] = reviews_for(webhook, "CertificateSigningRequest", "roundtrip-csr")
    assert request["operation"] == "CREATE"
    assert request["userInfo"]["username"] == "admin"
    assert request["object"]["metadata"]["uid"], "uid is assigned before validating admission"
    assert request["dryRun"] is False
    assert request["object"]["spec"]["expirationSeconds"] == 3600


def test_a_denial_reaches_the_user_and_nothing_is_created(
    control_plane: Any, webhook: Recorder
) -> None:
    manifest = csr_manifest("denied-csr", labels={DENY_LABEL: "yes"})
    result = control_plane.kubectl("create", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    assert "Trust budget exhausted (test)." in result.stderr
    assert control_plane.kubectl("get", "csr", "denied-csr", check=False).returncode != 0


def test_deployment_create_dry_run_and_update(control_plane: Any, webhook: Recorder) -> None:
    name = "roundtrip-app"
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=deployment_manifest(name))
    control_plane.kubectl("apply", "-f", "-", input=deployment_manifest(name))
    before_scale = len(reviews_for(webhook, "Deployment", name))
    control_plane.kubectl("scale", "deployment", name, "--replicas=3")
    assert len(reviews_for(webhook, "Deployment", name)) == before_scale, (
        "the scale subresource does not match a rule on deployments: scaling is never seen"
    )
    control_plane.kubectl(
        "patch", "deployment", name, "--type=merge", "-p", '{"spec": {"replicas": 2}}'
    )
    control_plane.kubectl(
        "apply", "-f", "-", input=deployment_manifest(name, image="example/app:2")
    )
    requests = reviews_for(webhook, "Deployment", name)
    assert [(r["operation"], r["dryRun"]) for r in requests[:2]] == [
        ("CREATE", True),
        ("CREATE", False),
    ]
    updates = [r for r in requests if r["operation"] == "UPDATE"]
    same_template = [
        r["oldObject"]["spec"]["template"] == r["object"]["spec"]["template"] for r in updates
    ]
    assert same_template == [True, False], "a replica patch keeps the template; an image changes it"
    assert requests[1]["object"]["metadata"]["annotations"]["budgetops.dev/risk-points"] == "25"

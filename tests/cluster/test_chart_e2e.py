"""The chart, installed for real: it installs its CRDs, routes admission to the operator,
is upgraded, and leaves the budgets behind when uninstalled.

No kubelet runs pods here, so the operator runs as a process on loopback (`budgetops run`,
as each replica runs it) and the chart points its webhook at it (webhook.url, with the
provided TLS mode). Everything else (CRDs, RBAC, the webhook configuration)
is the chart's. The session's control plane already has the CRDs, applied from crds/
outside Helm; the chart must create, upgrade and keep its own, so this module starts a
control plane of its own (about 4 s) where nothing else exists.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cluster.conftest import harness
from tests.cluster.test_helm import CHART, helm
from tests.conftest import EXAMPLES
from tests.ports import free_port
from tests.tls import Pair, loopback_server_pair

RELEASE = "budgetops"
NAMESPACE = "budgetops-e2e"
CONFIGURATION = f"{RELEASE}-budgetops"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:budgetops"
CRDS = {"trustbudgets.budgetops.dev", "riskbudgets.budgetops.dev", "budgetleases.budgetops.dev"}
PEERING_CRD = "clusterkopfpeerings.kopf.dev"  # in the chart's crds/: never deleted
# Who docs/examples/trustbudget-certificates.yaml budgets: members of "developers", one
# account per user, 100 CSRs a day.
DEVELOPER = ("--as=alice", "--as-group=developers")
BALANCE = 100


@pytest.fixture(scope="module")
def plane(binaries: Any) -> Iterator[Any]:
    with harness.ControlPlane(binaries) as control_plane:
        yield control_plane


def test_install_denies_upgrade_changes_uninstall_keeps_the_budgets(
    plane: Any, binaries: Any, tmp_path: Path
) -> None:
    kubeconfig = str(plane.kubeconfig)
    ca, serving = loopback_server_pair(tmp_path)
    port = free_port()
    release = [
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--set",
        "webhook.tls.mode=provided",
        "--set",
        f"webhook.url=https://127.0.0.1:{port}/validate",
        "--set",
        f"webhook.tls.caBundle={base64.b64encode(ca.cert.read_bytes()).decode()}",
    ]
    # Ignore until the operator answers: the configuration exists before the process does.
    out = helm(
        binaries,
        "install",
        *release,
        "--create-namespace",
        "--set",
        "webhook.failurePolicy=Ignore",
        kubeconfig=kubeconfig,
    )
    try:
        notes = out.split("NOTES:", 1)[1]
        assert "failurePolicy is Ignore" in notes
        assert "kept on helm uninstall" in notes
        assert "TLS: provided" in notes
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd", PEERING_CRD,
            *sorted(CRDS),
        )  # fmt: skip
        with _operator(plane, port, serving, tmp_path / "operator.log"):
            context = ssl.create_default_context(cafile=str(ca.cert))
            _wait_for(port, context, "/readyz", lambda body: True)
            # The replicas make the peering object they elect the leader on.
            plane.kubectl("wait", "--for=create", "--timeout=30s", "clusterkopfpeering/budgetops")
            peering = _live(plane, "clusterkopfpeering", "budgetops")
            _spend_until_denied(plane, port, context)

            helm(
                binaries,
                "upgrade",
                *release,
                "--set",
                "webhook.failurePolicy=Fail",
                "--set",
                "webhook.timeoutSeconds=9",
                kubeconfig=kubeconfig,
            )
            [hook] = _live(plane, "validatingwebhookconfiguration", CONFIGURATION)["webhooks"]
            assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 9)
            again = plane.kubectl(
                "create", *DEVELOPER, "-f", "-", input=_csrs("again", 1), check=False
            )
            assert "Trust budget exhausted" in again.stderr, again.stderr
            # Upgrades leave the peering, where the leader was elected, alone.
            now = _live(plane, "clusterkopfpeering", "budgetops")
            assert now["metadata"]["uid"] == peering["metadata"]["uid"]

            helm(binaries, "uninstall", RELEASE, "-n", NAMESPACE, kubeconfig=kubeconfig)
        gone = plane.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION, check=False)
        assert gone.returncode != 0
        live_crds = set(plane.kubectl("get", "crd", "-o", "name").stdout.split())
        assert {
            f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in {*CRDS, PEERING_CRD}
        } <= live_crds
        kept = _live(plane, "tb", "developer-certificates")  # and the balances with them
        assert Decimal(kept["status"]["accounts"]["user:alice"]["balance"]) == 0
    finally:
        # Whatever failed, nothing may stay to call a webhook that is gone.
        plane.kubectl(
            "delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found"
        )
        subprocess.run(
            [
                *(str(binaries.helm), "uninstall", RELEASE, "-n", NAMESPACE),
                *("--ignore-not-found", "--kubeconfig", kubeconfig),
            ],
            capture_output=True,
            check=False,
            timeout=120,
        )


@contextlib.contextmanager
def _operator(
    plane: Any,
    port: int,
    serving: Pair | list[str],
    log_path: Path,
    *,
    kubeconfig: Path | None = None,
    clean_exit: bool = True,
    audit: Path | None = None,
) -> Iterator[None]:
    """`budgetops run` as a replica of the release runs it, serving TLS on loopback (with
    `serving`, or the TLS arguments given instead): with the administrator's credentials,
    or `kubeconfig` (the chart's ServiceAccount's). Its exit code is checked unless
    `clean_exit` is False (its credentials were taken away). Its stdout, the audit trail, goes
    to `audit` if given."""
    if isinstance(serving, Pair):
        serving = ["--tls-cert-file", str(serving.cert), "--tls-key-file", str(serving.key)]
    with log_path.open("wb") as log, (audit or Path(os.devnull)).open("ab") as trail:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "budgetops.cli.main", "run"),
                *("--kubeconfig", str(kubeconfig or plane.kubeconfig), "--namespace", NAMESPACE),
                *("--listen", f"127.0.0.1:{port}", "--own-service-account", OPERATOR),
                *serving,
            ],
            stdout=trail,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield
        finally:
            process.terminate()
            process.wait(timeout=60)
    if clean_exit:
        assert process.returncode == 0, log_path.read_text()[-4000:]


def _spend_until_denied(plane: Any, port: int, context: ssl.SSLContext) -> None:
    """Alice, a developer, creates CSRs: the 101st is refused through kubectl, calmly, and
    its verdict is where NOTES.txt says."""
    plane.kubectl("create", "clusterrole", "csr-creator", "--verb=create", "--resource=csr")
    plane.kubectl(
        "create", "clusterrolebinding", "developers-csr", "--clusterrole=csr-creator",
        "--group=developers",
    )  # fmt: skip
    plane.kubectl("apply", "-f", str(EXAMPLES / "trustbudget-certificates.yaml"))
    # The replica charges only the budgets its watch has seen.
    _wait_for(port, context, "/metrics", lambda body: 'name="developer-certificates"' in body)
    created = plane.kubectl(
        "create", *DEVELOPER, "-f", "-", input=_csrs("dev", BALANCE + 1), check=False
    )
    assert created.stdout.count("created") == BALANCE, created.stderr
    lines = created.stderr.strip().splitlines()
    # Each admitted request carries a warning with what is left; the 101st is refused.
    assert lines[BALANCE - 1].startswith("Warning: Trust budget user:alice: cost 1, remaining 0 of")
    [denial] = [line for line in lines if not line.startswith("Warning: ")]
    assert denial.startswith('Error from server (Forbidden): error when creating "STDIN": ')
    assert 'admission webhook "charge.budgetops.dev" denied the request: ' in denial
    assert "Trust budget exhausted. This request requires 1 points; 0 remain." in denial
    assert "Traceback" not in created.stderr
    account = _live(plane, "tb", "developer-certificates")["status"]["accounts"]["user:alice"]
    spent = Decimal(account["spent"]) + Decimal(account["reserved"])  # amounts are strings
    assert (Decimal(account["balance"]), spent) == (0, BALANCE)
    verdict = subprocess.run(
        [
            *(sys.executable, "-m", "budgetops.cli.main", "verdict"),
            *(f"certificatesigningrequest/dev-{BALANCE}", "--kubeconfig", str(plane.kubeconfig)),
            *("--operator-namespace", NAMESPACE),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.startswith("sha256:")
    assert "deny" in verdict.stdout


def test_crds_go_with_the_release_when_not_kept(plane: Any, binaries: Any) -> None:
    """An upgrade to crds.keep=false drops the annotation, and uninstall then deletes the
    CRDs. The install adopts CRDs an earlier release of the same name and namespace kept
    (their ownership annotations are its own), or creates them."""
    kubeconfig = str(plane.kubeconfig)
    release = [
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--set",
        "reconciler.enabled=false",
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.timeoutSeconds=1",
    ]
    helm(binaries, "install", *release, "--create-namespace", kubeconfig=kubeconfig)
    try:
        for name in CRDS:
            annotations = _live(plane, "crd", name)["metadata"]["annotations"]
            assert annotations["helm.sh/resource-policy"] == "keep", name
        helm(binaries, "upgrade", *release, "--set", "crds.keep=false", kubeconfig=kubeconfig)
        for name in CRDS:
            annotations = _live(plane, "crd", name)["metadata"]["annotations"]
            assert "helm.sh/resource-policy" not in annotations, name
    finally:
        helm(binaries, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", kubeconfig=kubeconfig)
    plane.kubectl("wait", "--for=delete", "--timeout=60s", "crd", *sorted(CRDS), check=False)
    left = plane.kubectl("get", "crd", "-o", "name").stdout
    assert not [name for name in CRDS if name in left], left
    assert PEERING_CRD in left  # crds/: Helm never deletes it


def test_budgetops_is_repaired_with_no_replica_up(plane: Any, binaries: Any) -> None:
    """failurePolicy Fail and no replica answering: elsewhere the outage refuses what the
    webhook matches, but in BudgetOps' own namespace the runbook's recovery passes, a new
    token for its ServiceAccount and a `helm upgrade` that changes its Deployment."""
    kubeconfig = str(plane.kubeconfig)
    release = [
        *(RELEASE, str(CHART), "-n", NAMESPACE),
        *("--set", "webhook.tls.mode=provided", "--set", "reconciler.enabled=false"),
        *("--set", f"webhook.url=https://127.0.0.1:{free_port()}/validate"),  # nothing listens
        *("--set", "webhook.failurePolicy=Fail", "--set", "webhook.timeoutSeconds=2"),
    ]
    helm(binaries, "install", *release, "--create-namespace", kubeconfig=kubeconfig)
    try:
        plane.kubectl("create", "namespace", "elsewhere", check=False)
        plane.kubectl("create", "serviceaccount", "worker", "-n", "elsewhere", check=False)
        refused = plane.kubectl("create", "token", "worker", "-n", "elsewhere", check=False)
        assert refused.returncode != 0
        assert 'failed calling webhook "charge.budgetops.dev"' in refused.stderr, refused.stderr
        own = plane.kubectl("create", "token", "budgetops", "-n", NAMESPACE, check=False)
        assert own.returncode == 0, own.stderr
        helm(binaries, "upgrade", *release, "--set", "image.tag=0.1.1", kubeconfig=kubeconfig)
        deployment = _live(plane, "deployment", CONFIGURATION, "-n", NAMESPACE)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "budgetops:0.1.1"
    finally:
        plane.kubectl(
            "delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found"
        )
        helm(binaries, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", kubeconfig=kubeconfig)


LEADING = "budgetops_reconciler_leading 1.0"


def test_a_reinstall_reconciles_again_and_says_who_leads(
    plane: Any, binaries: Any, tmp_path: Path
) -> None:
    """`helm uninstall` while a replica leads removes its ServiceAccount before kopf can take
    its finalizer off the peering object. The peering is the replicas', not the release's:
    uninstall leaves it alone, the next install's replica leads again, and one deleted by
    hand is made again. budgetops_reconciler_leading says whether this replica leads. Run
    with the chart's own ServiceAccount, nothing it does is refused (kopf lists CRDs)."""
    kubeconfig = str(plane.kubeconfig)
    ca, serving = loopback_server_pair(tmp_path)
    port = free_port()
    context = ssl.create_default_context(cafile=str(ca.cert))
    release = [
        *(RELEASE, str(CHART), "-n", NAMESPACE, "--set", "webhook.tls.mode=provided"),
        *("--set", f"webhook.url=https://127.0.0.1:{port}/validate"),
        *("--set", f"webhook.tls.caBundle={base64.b64encode(ca.cert.read_bytes()).decode()}"),
        *("--set", "webhook.failurePolicy=Ignore", "--set", "webhook.timeoutSeconds=2"),
    ]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    try:
        helm(binaries, "install", *release, "--create-namespace", kubeconfig=kubeconfig)
        token = _service_account_kubeconfig(plane, tmp_path / "first.kubeconfig")
        with _operator(plane, port, serving, logs[0], kubeconfig=token, clean_exit=False):
            _wait_for(port, context, "/metrics", lambda body: LEADING in body, within=60)
            peering = _live(plane, "clusterkopfpeering", "budgetops")
            # helm returns once the API server accepted every DELETE it sends: a chart that
            # owned the peering would have marked it for deletion by now.
            helm(binaries, "uninstall", RELEASE, "-n", NAMESPACE, kubeconfig=kubeconfig)
        left = _live(plane, "clusterkopfpeering", "budgetops")
        assert left["metadata"]["uid"] == peering["metadata"]["uid"]
        assert "deletionTimestamp" not in left["metadata"], left["metadata"]

        helm(binaries, "install", *release, kubeconfig=kubeconfig)
        token = _service_account_kubeconfig(plane, tmp_path / "second.kubeconfig")
        with _operator(plane, port, serving, logs[1], kubeconfig=token):
            _wait_for(port, context, "/metrics", lambda body: LEADING in body, within=60)
            # Deleted by hand: the leader lets go of it, and a replica makes it again.
            plane.kubectl("delete", "clusterkopfpeering", "budgetops", "--wait=false")
            _wait_for(port, context, "/metrics", lambda body: LEADING not in body, within=60)
            _wait_for(port, context, "/metrics", lambda body: LEADING in body, within=60)
            again = _live(plane, "clusterkopfpeering", "budgetops")
            assert again["metadata"]["uid"] != peering["metadata"]["uid"]
        second = logs[1].read_text()
        assert second.count("leading: reconciling every budget") == 2, second[-4000:]
        assert "peering object budgetops was missing: made it" in second
        # The first replica lost its credentials with the uninstall; this one never did.
        assert "Forbidden" not in second
    finally:
        plane.kubectl(
            "delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found"
        )
        subprocess.run(
            [
                *(str(binaries.helm), "uninstall", RELEASE, "-n", NAMESPACE),
                *("--ignore-not-found", "--wait", "--kubeconfig", kubeconfig),
            ],
            capture_output=True,
            check=False,
            timeout=120,
        )


def test_a_webhook_url_is_served_with_the_operators_own_certificate(
    plane: Any, binaries: Any, tmp_path: Path
) -> None:
    """The default TLS mode with webhook.url: the replica's certificate names the URL's host
    (an IP SAN here), so the API server's calls verify and a matched request is admitted.
    The replica runs with the TLS arguments of the chart's own Deployment."""
    kubeconfig = str(plane.kubeconfig)
    port = free_port()
    release = [
        *(RELEASE, str(CHART), "-n", NAMESPACE, "--set", "reconciler.enabled=false"),
        *("--set", f"webhook.url=https://127.0.0.1:{port}/validate"),
        *("--set", "webhook.timeoutSeconds=3"),
    ]
    ignore = ["--set", "webhook.failurePolicy=Ignore"]  # until the ServiceAccount's token
    helm(binaries, "install", *release, "--create-namespace", *ignore, kubeconfig=kubeconfig)
    try:
        token = _service_account_kubeconfig(plane, tmp_path / "operator.kubeconfig")
        # Fail from here on: a call that does not verify refuses the request.
        helm(
            binaries,
            "upgrade",
            *release,
            "--set",
            "webhook.failurePolicy=Fail",
            kubeconfig=kubeconfig,
        )
        manifest = helm(
            binaries, "get", "manifest", RELEASE, "-n", NAMESPACE, kubeconfig=kubeconfig
        )
        [deployment] = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        tls = [
            f"--tls-dir={tmp_path / 'tls'}" if arg.startswith("--tls-dir=") else arg
            for arg in container["args"]
            if arg.startswith(("--tls-", "--webhook-configuration="))
        ]
        with _operator(
            plane, port, [*tls, "--no-reconcile"], tmp_path / "operator.log", kubeconfig=token
        ):
            deadline = time.monotonic() + 30
            while "caBundle" not in _live_hook(plane)["clientConfig"]:
                assert time.monotonic() < deadline, "the replica never injected its CA"
                time.sleep(0.2)
            injected = base64.b64decode(_live_hook(plane)["clientConfig"]["caBundle"])
            context = ssl.create_default_context(cadata=injected.decode())
            context.check_hostname = False  # the API server checks the name; here, the port
            _wait_for(port, context, "/readyz", lambda body: True)
            created = plane.kubectl("create", "-f", "-", input=_csrs("by-url", 1), check=False)
            assert created.returncode == 0, created.stderr  # not "doesn't contain any IP SANs"
        assert "--tls-extra-name=127.0.0.1" in tls
    finally:
        plane.kubectl(
            "delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found"
        )
        helm(binaries, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", kubeconfig=kubeconfig)


def test_a_commands_records_reach_the_operators_audit_trail(
    plane: Any, binaries: Any, tmp_path: Path
) -> None:
    """`kubectl budget consume` by a CI ServiceAccount that may write budgets' status and
    read nothing else: its records are held in the status, the operator publishes them on
    its stdout in chain order and signs the head the command could not, and `verify
    --audit` over what the operator published holds."""
    kubeconfig = str(plane.kubeconfig)
    ca, serving = loopback_server_pair(tmp_path)
    port = free_port()
    release = [
        *(RELEASE, str(CHART), "-n", NAMESPACE, "--set", "webhook.tls.mode=provided"),
        *("--set", f"webhook.url=https://127.0.0.1:{port}/validate"),
        *("--set", f"webhook.tls.caBundle={base64.b64encode(ca.cert.read_bytes()).decode()}"),
        *("--set", "webhook.failurePolicy=Ignore", "--set", "webhook.timeoutSeconds=2"),
    ]
    trail = tmp_path / "operator-stdout.jsonl"
    helm(binaries, "install", *release, "--create-namespace", kubeconfig=kubeconfig)
    try:
        plane.kubectl("create", "namespace", "payments", check=False)
        plane.kubectl("apply", "-f", str(EXAMPLES / "riskbudget-payments.yaml"))
        plane.kubectl("create", "serviceaccount", "ci", "-n", "payments", check=False)
        plane.kubectl(
            "create", "clusterrole", "budget-writer", "--verb=get,list,watch",
            "--resource=trustbudgets,riskbudgets,budgetleases", check=False,
        )  # fmt: skip
        plane.kubectl(
            "create", "clusterrolebinding", "ci-budget-reader", "--clusterrole=budget-writer",
            "--serviceaccount=payments:ci", check=False,
        )  # fmt: skip
        plane.kubectl(
            "create", "role", "status-writer", "-n", "payments", "--verb=get,update",
            "--resource=riskbudgets/status", check=False,
        )  # fmt: skip
        plane.kubectl(
            "create", "rolebinding", "ci-status-writer", "-n", "payments",
            "--role=status-writer", "--serviceaccount=payments:ci", check=False,
        )  # fmt: skip
        ci = _service_account_kubeconfig(plane, tmp_path / "ci.kubeconfig", "payments", "ci")
        token = _service_account_kubeconfig(plane, tmp_path / "operator.kubeconfig")
        with _operator(
            plane, port, serving, tmp_path / "operator.log", kubeconfig=token, audit=trail
        ):
            deadline = time.monotonic() + 60
            while "leading: reconciling" not in (tmp_path / "operator.log").read_text():
                assert time.monotonic() < deadline, "the operator never led"
                time.sleep(0.2)
            consumed = _budgetops(
                "consume", "--service", "payments-api", "-n", "payments", "--points", "5",
                "--release-id", "ci-release-1", "--kubeconfig", str(ci),
                "--operator-namespace", NAMESPACE,
            )  # fmt: skip
            assert consumed.returncode == 0, consumed.stdout + consumed.stderr
            deadline = time.monotonic() + 30
            while '"key":"ci-release-1"' not in trail.read_text():
                assert time.monotonic() < deadline, "the operator never published the records"
                time.sleep(0.2)
            status = _live(plane, "riskbudget", "payments-api", "-n", "payments")["status"]
            assert not status.get("auditHeld")
            assert status["auditHead"]["signature"]  # the command's head, signed by the operator
        verified = _budgetops(
            "verify", "--audit", str(trail), "--budget", "RiskBudget/payments/payments-api",
            "--kubeconfig", kubeconfig, "--operator-namespace", NAMESPACE,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "audit trail verified" in verified.stdout
        lines = [line for line in trail.read_text().splitlines() if line.startswith("{")]
        actions = [json.loads(line).get("action") for line in lines]
        assert {"reserve", "confirm"} <= set(actions)
    finally:
        plane.kubectl(
            "delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found"
        )
        helm(binaries, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", kubeconfig=kubeconfig)


def _budgetops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _live_hook(plane: Any) -> dict[str, Any]:
    [hook] = _live(plane, "validatingwebhookconfiguration", CONFIGURATION)["webhooks"]
    found: dict[str, Any] = hook
    return found


def _live(plane: Any, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(plane.kubectl("get", *what, "-o", "json").stdout)
    return found


def _service_account_kubeconfig(
    plane: Any, path: Path, namespace: str = NAMESPACE, name: str = "budgetops"
) -> Path:
    """A kubeconfig holding a token of a ServiceAccount, by default the chart's: what a
    replica runs as."""
    token = plane.kubectl("create", "token", name, "-n", namespace).stdout.strip()
    cluster = {"server": plane.server, "certificate-authority": str(plane.ca_file)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "plane", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "plane", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_for(
    port: int, context: ssl.SSLContext, path: str, ok: Any, *, within: float = 30
) -> None:
    """Until GET `path` answers 200 with a body `ok` accepts (at most `within` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            url = f"https://127.0.0.1:{port}{path}"
            with urllib.request.urlopen(url, context=context, timeout=2) as reply:
                if reply.status == 200 and ok(reply.read().decode()):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the operator on port {port} never answered {path} as expected")


def _csrs(prefix: str, count: int) -> str:
    """A List of `count` client-certificate CSRs named `<prefix>-<n>`, created in order."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    request = base64.b64encode(pem).decode()
    items = [
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": f"{prefix}-{n}"},
            "spec": {
                "request": request,
                "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["client auth"],
                "expirationSeconds": 600,
            },
        }
        for n in range(count)
    ]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})

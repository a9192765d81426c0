"""The chart lints, renders, installs into the real API server and grants what it says.

Rendering tests run `helm template` (no cluster); the install test uses the session's
control plane, whose CRDs the `budget_crds` fixture applied from crds/ outside Helm, so it
installs with crds.enabled=false. The CRD templates' lifecycle (install, upgrade, keep or
delete on uninstall) is tested on a control plane of its own in test_chart_e2e.py.
kopf's peering CRD is in the chart's crds/, which Helm installs before the templates: the
chart's ClusterKopfPeering could not be resolved on a first install otherwise.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.conftest import ROOT

CHART = ROOT / "charts" / "budgetops"
TRIVY_CRD = ROOT / "tests" / "cluster" / "fixtures" / "trivy-operator-vulnerabilityreports.yaml"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def helm(binaries: Any, *args: str, kubeconfig: str | None = None) -> str:
    command = [str(binaries.helm), *args]
    if kubeconfig:
        command += ["--kubeconfig", kubeconfig]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(binaries: Any, *values: str, **json_values: Any) -> list[dict[str, Any]]:
    """`helm template demo -n ops` with `--set` for each of `values`, and `--set-json` for
    each of `json_values` (its key with `__` for the dots)."""
    sets = [arg for value in values for arg in ("--set", value)]
    for key, value in json_values.items():
        sets += ["--set-json", f"{key.replace('__', '.')}={json.dumps(value)}"]
    out = helm(binaries, "template", "demo", str(CHART), "-n", "ops", *sets)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refusal(binaries: Any, *values: str) -> str:
    """What helm says when it refuses to render with these values."""
    sets = [arg for value in values for arg in ("--set", value)]
    result = subprocess.run(
        [str(binaries.helm), "template", "demo", str(CHART), "-n", "ops", *sets],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0, f"rendered with {values}"
    return result.stderr


def one(rendered: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [doc for doc in rendered if doc["kind"] == kind]
    return found


def hook_of(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    [hook] = one(rendered, "ValidatingWebhookConfiguration")["webhooks"]
    return hook


def test_helm_is_the_pinned_version(binaries: Any) -> None:
    assert helm(binaries, "version", "--short").startswith("v3.22.0")


def test_chart_lints_strictly(binaries: Any) -> None:
    assert "0 chart(s) failed" in helm(binaries, "lint", "--strict", str(CHART))
    everything = [
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true",
    ]
    assert "0 chart(s) failed" in helm(binaries, "lint", "--strict", str(CHART), *everything)


def test_chart_renders_every_kind_by_default(binaries: Any) -> None:
    rendered = render(binaries)
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == [
        *["ClusterRole"] * 2,  # the operator's, and the one to bind break-glass approvers to
        "ClusterRoleBinding",
        "ConfigMap",  # the RiskBudget tier table
        *["CustomResourceDefinition"] * 4,
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        # BudgetLeases are the operator's to write; a RiskBudget's tier is in the table; a
        # BudgetApproval is in its creator's own name.
        *["ValidatingAdmissionPolicy"] * 3,
        *["ValidatingAdmissionPolicyBinding"] * 3,
        "ValidatingWebhookConfiguration",
    ]
    hook = hook_of(rendered)
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert (hook["timeoutSeconds"], hook["failurePolicy"]) == (5, "Fail")
    assert hook["clientConfig"]["service"] == {
        "name": "demo-budgetops",
        "namespace": "ops",
        "path": "/validate",
        "port": 443,
    }
    conditions = " ".join(c["expression"] for c in hook["matchConditions"])
    assert "system:nodes" in conditions
    assert "system:serviceaccount:ops:budgetops" in conditions
    args = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run"
    assert "--own-service-account=system:serviceaccount:ops:budgetops" in args
    assert "--listen=0.0.0.0:8443" in args


def test_crds_are_templates_kept_on_uninstall(binaries: Any) -> None:
    """The chart's copies render as they were generated, plus the release's labels and
    helm.sh/resource-policy: keep; crds.keep=false drops the annotation, crds.enabled=false
    every CRD of the templates. kopf's is the generated one too."""
    generated = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(p.read_text()) for p in (CHART / "crd-files").glob("*.yaml"))
    }
    peering_crd = generated.pop("clusterkopfpeerings.kopf.dev")
    assert set(generated) == {
        "trustbudgets.budgetops.dev",
        "riskbudgets.budgetops.dev",
        "budgetleases.budgetops.dev",
        "budgetapprovals.budgetops.dev",
    }
    [installed_first] = (CHART / "crds").glob("*.yaml")
    assert yaml.safe_load(installed_first.read_text()) == peering_crd
    rendered = {
        doc["metadata"]["name"]: doc
        for doc in render(binaries)
        if doc["kind"] == "CustomResourceDefinition"
    }
    assert set(rendered) == set(generated)
    for name, crd in rendered.items():
        assert crd["spec"] == generated[name]["spec"], name
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        labels = crd["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "budgetops"  # what kubectl wait selects
        assert labels["app.kubernetes.io/instance"] == "demo"
    for crd in render(binaries, "crds.keep=false"):
        if crd["kind"] == "CustomResourceDefinition":
            assert "annotations" not in crd["metadata"]
    kinds = {doc["kind"] for doc in render(binaries, "crds.enabled=false")}
    assert "CustomResourceDefinition" not in kinds


def test_pods_are_restricted_spread_and_probed(binaries: Any) -> None:
    rendered = render(binaries)
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts == {
        "tmp": "/tmp",  # operator TLS: the certificate is written under /tmp
        "tiers": "/etc/budgetops/tiers",  # read only: the tier table's ConfigMap
    }
    assert "emptyDir" in volumes["tmp"]
    mounted = one(render(binaries, "webhook.tls.mode=selfSigned"), "Deployment")
    tls = {v["name"]: v for v in mounted["spec"]["template"]["spec"]["volumes"]}["tls"]
    assert tls["secret"]["secretName"] == "budgetops-webhook-tls"
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    probes = {
        probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["scheme"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "HTTPS"),
        "readinessProbe": ("/readyz", "HTTPS"),
        "livenessProbe": ("/healthz", "HTTPS"),
    }
    assert container["env"] == [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    ]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    [preferred] = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": selector},
    }
    assert deployment["spec"]["template"]["metadata"]["labels"] == selector
    budget = one(rendered, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    # One replica: a PDB of minAvailable 1 would block every drain, so there is none.
    assert "PodDisruptionBudget" not in {doc["kind"] for doc in render(binaries, "replicas=1")}
    assert "must be below replicas" in refusal(binaries, "podDisruptionBudget.minAvailable=2")
    zoned = render(binaries, "affinity.nodeAffinity.x=y")
    assert one(zoned, "Deployment")["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {"x": "y"}
    }


def test_network_policy_admits_the_webhook_port_and_reaches_the_api_server(
    binaries: Any,
) -> None:
    policy = one(render(binaries), "NetworkPolicy")
    selector = one(render(binaries), "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "https", "protocol": "TCP"}]}]
    api_server, dns = policy["spec"]["egress"]
    assert api_server == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    }
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    narrowed = one(
        render(
            binaries,
            "networkPolicy.ingressFrom[0].ipBlock.cidr=10.0.0.0/8",
            "networkPolicy.egress.apiServer.cidrs={192.168.0.10/32}",
            "networkPolicy.egress.apiServer.ports={6443}",
            "networkPolicy.egress.dns=false",
            "networkPolicy.egress.extra[0].ports[0].port=587",
        ),
        "NetworkPolicy",
    )
    assert narrowed["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert narrowed["spec"]["egress"] == [
        {
            "ports": [{"port": 6443, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "192.168.0.10/32"}}],
        },
        {"ports": [{"port": 587}]},
    ]
    assert "NetworkPolicy" not in {
        doc["kind"] for doc in render(binaries, "networkPolicy.enabled=false")
    }


def test_operator_tls_is_made_renewed_and_injected_by_budgetops(binaries: Any) -> None:
    """The default: no Secret in the release; the operator makes it, reissues the serving
    certificate there and writes the CA into this webhook only, which RBAC scopes by name."""
    rendered = render(binaries)
    assert "Secret" not in {doc["kind"] for doc in rendered}
    assert "caBundle" not in hook_of(rendered)["clientConfig"], "injected by the operator"
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert {
        "--tls-secret=budgetops-webhook-tls",
        "--tls-service=demo-budgetops",
        "--webhook-configuration=demo-budgetops",
        "--tls-dir=/tmp/budgetops-tls",
    } <= set(args)
    assert not any(a.startswith("--tls-cert-file") for a in args)
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "tiers"]  # no TLS Secret mounted
    scoped = [
        rule
        for doc in rendered
        if doc["kind"] in ("Role", "ClusterRole")
        for rule in doc["rules"]
        if "resourceNames" in rule
    ]
    assert scoped == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": ["demo-budgetops"],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["budgetops-webhook-tls"],
            "verbs": ["update"],
        },
    ]
    assert not any(
        "resourceNames" in rule
        for doc in render(binaries, "webhook.tls.mode=selfSigned")
        if doc["kind"] in ("Role", "ClusterRole")
        for rule in doc["rules"]
    )


def test_self_signed_tls_is_a_ca_and_a_certificate_for_the_service(binaries: Any) -> None:
    rendered = render(binaries, "webhook.tls.mode=selfSigned")
    secret = one(rendered, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "budgetops-webhook-tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert hook_of(rendered)["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "demo-budgetops",
        "demo-budgetops.ops",
        "demo-budgetops.ops.svc",
        "demo-budgetops.ops.svc.cluster.local",
    }


def test_cert_manager_tls_issues_a_certificate_and_injects_its_ca(binaries: Any) -> None:
    rendered = render(binaries, "webhook.tls.mode=certManager", "webhook.tls.secretName=hook-tls")
    assert "Secret" not in {doc["kind"] for doc in rendered}
    issuer = one(rendered, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    certificate = one(rendered, "Certificate")
    assert (certificate["metadata"]["name"], certificate["metadata"]["namespace"]) == (
        "demo-budgetops-webhook",
        "ops",
    )
    assert certificate["spec"]["secretName"] == "hook-tls"
    assert "demo-budgetops.ops.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "Issuer",
        "name": issuer["metadata"]["name"],
    }
    configuration = one(rendered, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "ops/demo-budgetops-webhook"
    }
    assert "caBundle" not in hook_of(rendered)["clientConfig"]  # the injector's to write
    deployment = one(rendered, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "hook-tls"
    own = render(
        binaries,
        "webhook.tls.mode=certManager",
        "webhook.tls.certManager.issuerRef.name=corp-ca",
        "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert "Issuer" not in {doc["kind"] for doc in own}
    assert one(own, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
    }


def test_certificates_name_the_host_of_webhook_url_and_extra_names(binaries: Any) -> None:
    """The API server checks the serving certificate against webhook.url's host: each mode
    that makes the certificate names it (an IP as an IP SAN), and webhook.tls.extraNames."""
    extra = ("webhook.url=https://10.0.0.5:8443/validate", "webhook.tls.extraNames={hook.example}")
    args = one(render(binaries, *extra), "Deployment")["spec"]["template"]["spec"]
    assert {"--tls-extra-name=10.0.0.5", "--tls-extra-name=hook.example"} <= set(
        args["containers"][0]["args"]
    )
    secret = one(render(binaries, *extra, "webhook.tls.mode=selfSigned"), "Secret")
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert "hook.example" in names.get_values_for_type(x509.DNSName)
    spec = one(render(binaries, *extra, "webhook.tls.mode=certManager"), "Certificate")["spec"]
    assert spec["ipAddresses"] == ["10.0.0.5"]
    assert "hook.example" in spec["dnsNames"]
    assert "extraNames" in refusal(binaries, "webhook.tls.extraNames={not a name}")


def test_provided_tls_takes_the_ca_as_pem_or_base64(binaries: Any) -> None:
    encoded = base64.b64encode(PEM.encode()).decode()
    for given in (PEM, encoded):
        rendered = render(binaries, "webhook.tls.mode=provided", f"webhook.tls.caBundle={given}")
        assert "Secret" not in {doc["kind"] for doc in rendered}
        assert hook_of(rendered)["clientConfig"]["caBundle"] == encoded
    assert "needs webhook.tls.caBundle" in refusal(binaries, "webhook.tls.mode=provided")


def test_webhook_routes_extra_rules_and_calls_a_url(binaries: Any) -> None:
    builtin = hook_of(render(binaries))["rules"]
    extra = {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["configmaps"],
        "operations": ["CREATE"],
        "scope": "Namespaced",
    }
    rendered = render(binaries, webhook__extraRules=[extra])
    assert hook_of(rendered)["rules"] == [*builtin, extra]
    encoded = base64.b64encode(PEM.encode()).decode()
    local = hook_of(
        render(
            binaries,
            "webhook.url=https://127.0.0.1:8443/validate",
            "webhook.tls.mode=provided",
            f"webhook.tls.caBundle={encoded}",
        )
    )
    assert local["clientConfig"] == {"url": "https://127.0.0.1:8443/validate", "caBundle": encoded}


def test_monitoring_is_opt_in_and_ships_the_rules_and_dashboard(binaries: Any) -> None:
    kinds = {doc["kind"] for doc in render(binaries)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert not [d for d in render(binaries) if "grafana_dashboard" in d["metadata"]["labels"]]
    rendered = render(
        binaries,
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
        "prometheusRule.enabled=true",
        "dashboard.enabled=true",
    )
    monitor = one(rendered, "ServiceMonitor")
    service = one(rendered, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert [p["name"] for p in service["spec"]["ports"]] == [endpoint["port"]]
    assert (endpoint["scheme"], endpoint["path"], endpoint["honorLabels"]) == (
        "https",
        "/metrics",
        True,
    )
    assert endpoint["tlsConfig"] == {
        "serverName": "demo-budgetops.ops.svc",
        "ca": {"secret": {"name": "budgetops-webhook-tls", "key": "ca.crt"}},
    }
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert one(rendered, "PrometheusRule")["spec"] == {"groups": rules["groups"]}
    [dashboard] = [d for d in rendered if "grafana_dashboard" in d["metadata"]["labels"]]
    assert dashboard["kind"] == "ConfigMap"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    [text] = dashboard["data"].values()
    assert json.loads(text) == json.loads((CHART / "files" / "dashboard.json").read_text())


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (["replica=3"], "additional properties 'replica' not allowed"),
        (["webhook.tls.secret=x"], "additional properties 'secret' not allowed"),
        (["webhook.failurePolicy=Sometimes"], "/webhook/failurepolicy"),
        (["webhook.tls.mode=manual"], "value must be one of 'operator', 'selfsigned'"),
        (["webhook.tls.mode=provided", "webhook.tls.caBundle=not-base64"], "cabundle"),
        (["webhook.url=http://127.0.0.1:8443/validate"], "/webhook/url"),
        (["webhook.extraRules[0].resources={pods}"], "missing propert"),
        (
            [
                "reconciler.extraWitnessRules[0].apiGroups={}",
                "reconciler.extraWitnessRules[0].resources={*}",
                "reconciler.extraWitnessRules[0].verbs={list}",
            ],
            "extrawitnessrules",
        ),
        (
            [
                "reconciler.extraWitnessRules[0].apiGroups={}",
                "reconciler.extraWitnessRules[0].resources={pods}",
                "reconciler.extraWitnessRules[0].verbs={delete}",
            ],
            "extrawitnessrules",
        ),
        (["networkPolicy.ingressFrom[0].everyone=true"], "additional properties 'everyone'"),
        (["crds.enabled=maybe"], "/crds/enabled"),
    ],
)
def test_schema_refuses_what_the_chart_does_not_take(
    binaries: Any, values: list[str], says: str
) -> None:
    assert says in refusal(binaries, *values).lower()


def test_notes_say_what_to_do_next(control_plane: Any, binaries: Any) -> None:
    notes = helm(
        binaries,
        "install",
        "demo",
        str(CHART),
        "-n",
        "ops",
        "--dry-run=client",
        "--set",
        "webhook.failurePolicy=Ignore",
        # Even a client dry run refuses CRDs Helm does not own, as the session's are; the
        # NOTES of an install with CRDs are checked in test_chart_e2e.py.
        "--set",
        "crds.enabled=false",
        "--set",
        "reconciler.enabled=false",  # a dry run installs no crds/, so no peering either
        kubeconfig=str(control_plane.kubeconfig),  # nothing is installed
    ).split("NOTES:", 1)[1]
    for expected in (
        "kubectl -n ops rollout status deployment/demo-budgetops",
        "kubectl create namespace payments && kubectl apply -f docs/examples/",
        "kind: TrustBudget",
        "Trust budget exhausted.",
        "budgetops verdict certificatesigningrequest/<name>",
        "--operator-namespace ops",
        "failurePolicy is Ignore",
        "docs/admission.md",
        "TLS: operator",
    ):
        assert expected in notes, expected
    assert "https://" not in notes
    # The inline budget is one a user can apply as it stands.
    inline = notes.split("<<'YAML'\n", 1)[1].split("     YAML", 1)[0]
    budget = yaml.safe_load("\n".join(line.removeprefix("     ") for line in inline.splitlines()))
    assert budget["kind"] == "TrustBudget"
    assert budget["spec"]["initialBalance"] == 3


def test_helm_install_grants_status_writes_to_the_operator(budget_crds: Any, binaries: Any) -> None:
    control_plane = budget_crds
    kubeconfig = str(control_plane.kubeconfig)
    install = [
        str(CHART),
        "-n",
        "budgetops",
        # The session's CRDs were applied from crds/ by the budget_crds fixture.
        "--set",
        "crds.enabled=false",
        # No kubelet runs pods here, so nothing waits for the Deployment; and Ignore keeps
        # other tests' CSRs from waiting on a Service with no endpoints for long.
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.timeoutSeconds=2",
        # The session's other tests run their own peering object; the chart's is checked by
        # the rendering test above and in test_chart_e2e.py.
        "--set",
        "reconciler.enabled=false",
        # No pod runs to make the operator's certificate: the chart makes one here.
        "--set",
        "webhook.tls.mode=selfSigned",
        # Where a RiskBudget's notification Secrets may be read, beyond the release's namespace.
        "--set",
        "rbac.secretNamespaces={payments}",
    ]
    control_plane.kubectl("create", "namespace", "payments", check=False)
    helm(binaries, "install", "budgetops", *install, "--create-namespace", kubeconfig=kubeconfig)
    try:
        _grants_what_it_says(control_plane)
        # selfSigned: the chart's CA and serving pair, kept by `helm upgrade`.
        secret = _live(control_plane, "secret", "budgetops-webhook-tls", "-n", "budgetops")
        assert secret["type"] == "kubernetes.io/tls"
        bundle = _live_hook(control_plane)["clientConfig"]["caBundle"]
        assert bundle == secret["data"]["ca.crt"]
        helm(
            binaries,
            "upgrade",
            "budgetops",
            *install,
            "--set",
            "webhook.timeoutSeconds=3",
            kubeconfig=kubeconfig,
        )
        upgraded = _live_hook(control_plane)
        assert upgraded["timeoutSeconds"] == 3
        assert upgraded["clientConfig"]["caBundle"] == bundle, "upgrade rotated the CA"
        again = _live(control_plane, "secret", "budgetops-webhook-tls", "-n", "budgetops")
        assert again["data"] == secret["data"], "upgrade rotated the serving pair"
    finally:
        helm(binaries, "uninstall", "budgetops", "-n", "budgetops", "--wait", kubeconfig=kubeconfig)
    assert "trustbudgets.budgetops.dev" in control_plane.kubectl("get", "crd", "-o", "name").stdout
    assert (
        control_plane.kubectl(
            "get", "validatingwebhookconfiguration", "budgetops-budgetops", check=False
        ).returncode
        != 0
    )


def _live(control_plane: Any, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(control_plane.kubectl("get", *what, "-o", "json").stdout)
    return found


def _live_hook(control_plane: Any) -> dict[str, Any]:
    configuration = _live(control_plane, "validatingwebhookconfiguration", "budgetops-budgetops")
    [hook] = configuration["webhooks"]
    found: dict[str, Any] = hook
    return found


def _grants_what_it_says(control_plane: Any) -> None:
    operator = "system:serviceaccount:budgetops:budgetops"
    # kubectl resolves a resource through discovery: Trivy Operator's must be served.
    control_plane.kubectl("apply", "--server-side", "-f", str(TRIVY_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/vulnerabilityreports.aquasecurity.github.io"
    )
    for verb, resource, subresource, expected in (
        ("update", "trustbudgets.budgetops.dev", "status", "yes"),
        ("update", "trustbudgets.budgetops.dev", "", "no"),
        ("watch", "riskbudgets.budgetops.dev", "", "yes"),
        ("delete", "trustbudgets.budgetops.dev", "", "no"),
        ("patch", "riskbudgets.budgetops.dev", "", "no"),  # status is replaced, never patched
        ("patch", "clusterkopfpeerings.kopf.dev", "", "yes"),
        ("create", "clusterkopfpeerings.kopf.dev", "", "yes"),  # made again when missing
        ("delete", "clusterkopfpeerings.kopf.dev", "", "no"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", "", "yes"),  # kopf
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", "", "yes"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", "", "no"),
        ("get", "secrets", "", "no"),  # in no namespace but its own
        ("list", "secrets", "", "no"),
        ("create", "budgetleases.budgetops.dev", "", "yes"),
        ("patch", "budgetleases.budgetops.dev", "status", "yes"),
        ("update", "budgetleases.budgetops.dev", "", "no"),
        ("list", "vulnerabilityreports.aquasecurity.github.io", "", "yes"),  # riskPointsFrom
        ("watch", "vulnerabilityreports.aquasecurity.github.io", "", "yes"),
        ("update", "vulnerabilityreports.aquasecurity.github.io", "", "no"),
    ):
        answer = control_plane.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            f"--subresource={subresource}",
            "--as",
            operator,
            check=False,
        ).stdout.strip()
        assert answer == expected, f"{verb} {resource} {subresource}: {answer}"
    # The keys are created, and verdicts kept, in the release's namespace, and only there.
    for verb, resource, namespace, expected in (
        ("get", "secrets", "budgetops", "yes"),
        ("get", "secrets", "kube-system", "no"),
        ("get", "secrets", "default", "no"),
        ("get", "secrets", "payments", "yes"),  # rbac.secretNamespaces
        ("list", "secrets", "payments", "no"),
        ("create", "secrets", "payments", "no"),
        ("create", "secrets", "budgetops", "yes"),
        ("create", "secrets", "default", "no"),
        ("update", "secrets", "budgetops", "no"),
        ("update", "configmaps", "budgetops", "yes"),
        ("create", "configmaps", "default", "no"),
        ("delete", "configmaps", "budgetops", "no"),
    ):
        answer = control_plane.kubectl(
            "auth", "can-i", verb, resource, "-n", namespace, "--as", operator, check=False
        ).stdout.strip()
        assert answer == expected, f"{verb} {resource} -n {namespace}: {answer}"
    # No wildcard anywhere in what the chart grants.
    role = _live(control_plane, "clusterrole", "budgetops-budgetops")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]

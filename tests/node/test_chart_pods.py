"""The chart as a user installs it, with real pods: `helm install` with the default values
(the default TLS mode; only the image's name and `pullPolicy: Never`, since the node has no
registry), two Ready replicas, the examples applied, then alice through kubectl.

What only pods show is checked too: the image runs under the chart's security context (uid
65532, read-only root, no capabilities, seccomp), the probes answer, the pods find the API
server with their own ServiceAccount token and the API server reaches the webhook through its
Service, the logs are JSON lines with the audit records in them, two replicas elect one
reconciler, losing the leader loses and doubles no charge, a rolling upgrade keeps admission
answering and the PodDisruptionBudget holds, and uninstall keeps the budgets.

The tests share one release and run in this order, each from where the one before left it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_chart_e2e import _csrs
from tests.cluster.test_helm import CHART, helm
from tests.conftest import EXAMPLES

RELEASE = "budgetops"
NAMESPACE = "budgetops"
APP = f"{RELEASE}-budgetops"  # the Deployment, Service and webhook configuration
SELECTOR = "app.kubernetes.io/name=budgetops"
DEVELOPERS = "developers"  # whom docs/examples/trustbudget-certificates.yaml budgets: 100 each
BALANCE = 100
VALUES = ["--set", "image.repository=budgetops", "--set", "image.tag=test"]
VALUES += ["--set", "image.pullPolicy=Never"]  # the node has no registry to pull from
READY_WITHIN = "180s"
# Run in a pod (the image's own python): what the container sees of itself and its server.
INSIDE = """
import errno, json, os, ssl, urllib.request
def written(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return "ok"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
context = ssl._create_unverified_context()  # as kubelet's probes: HTTPS, unverified
def get(path):
    try:
        with urllib.request.urlopen("https://127.0.0.1:8443" + path, context=context,
                                    timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
health, ready, metrics = get("/healthz"), get("/readyz"), get("/metrics")
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "root": written("/budgetops-probe"), "opt": written("/opt/budgetops/probe"),
    "tmp": written("/tmp/budgetops-probe"),
    "capEff": status["CapEff"].strip(), "capBnd": status["CapBnd"].strip(),
    "noNewPrivs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
    "healthz": health[0], "readyz": ready[0], "metrics": metrics[1],
}))
"""
METRICS = (
    "import ssl, urllib.request; print(urllib.request.urlopen('https://127.0.0.1:8443/metrics',"
    " context=ssl._create_unverified_context(), timeout=5).read().decode())"
)
LEADING = "budgetops_reconciler_leading 1.0"
TERMINATION_GRACE = 40  # the chart's terminationGracePeriodSeconds
MEMORY_LIMIT = 256 * 1024 * 1024  # the chart's resources.limits.memory


@pytest.fixture(scope="module")
def release(node_cluster: Any, node_image: str) -> Iterator[Any]:
    """The chart installed with its defaults, both replicas Ready, the examples applied and
    every replica's watch holding them; developers may create CSRs, alice Deployments in
    payments. Uninstalled at the end whatever happened (the last test uninstalls it)."""
    cluster = node_cluster
    kubeconfig = str(cluster.kubeconfig)
    started = time.monotonic()
    helm(
        cluster.binaries,
        *("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", *VALUES),
        kubeconfig=kubeconfig,
    )
    try:
        _rolled_out(cluster)
        print(f"2 replicas Ready {time.monotonic() - started:.1f} s after helm install")
        cluster.kubectl("create", "namespace", "payments")
        for example in sorted(EXAMPLES.glob("*.yaml")):
            cluster.kubectl("apply", "-f", str(example))
        cluster.kubectl("create", "clusterrole", "csr-creator", "--verb=create", "--resource=csr")
        cluster.kubectl(
            "create", "clusterrolebinding", "developers-csr", "--clusterrole=csr-creator",
            f"--group={DEVELOPERS}",
        )  # fmt: skip
        cluster.kubectl(
            "create", "role", "deployer", "-n", "payments", "--verb=create,get,update",
            "--resource=deployments",
        )  # fmt: skip
        cluster.kubectl(
            "create", "rolebinding", "alice-deploys", "-n", "payments", "--role=deployer",
            "--user=alice",
        )  # fmt: skip
        # A replica charges only the budgets its watch has seen.
        _until(
            lambda: all(
                'name="developer-certificates"' in body and 'name="payments-api"' in body
                for body in _metrics(cluster).values()
            ),
            "every replica's watch has the examples",
        )
        yield cluster
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", APP, "--ignore-not-found")
        subprocess.run(
            [str(cluster.binaries.helm), "uninstall", RELEASE, "-n", NAMESPACE],
            capture_output=True,
            check=False,
            timeout=120,
        )


def test_the_pods_run_as_the_chart_says(release: Any) -> None:
    cluster = release
    pods = _pods(cluster)
    assert len(pods) == 2
    seen = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        [container] = pod["status"]["containerStatuses"]
        if container["restartCount"]:
            previous = cluster.kubectl("logs", "-n", NAMESPACE, name, "--previous", check=False)
            pytest.fail(f"{name} restarted: {container}\n{previous.stdout[-6000:]}")
        seen[name] = json.loads(_exec(cluster, name, "python3", "-c", INSIDE))
    for name, inside in seen.items():
        assert (inside["uid"], inside["gid"]) == (65532, 65532), name
        assert set(inside["groups"]) <= {65532}, inside["groups"]  # its own group only
        # Read-only root (as root would write there too, the error is the filesystem's).
        assert (inside["root"], inside["opt"], inside["tmp"]) == ("EROFS", "EROFS", "ok"), name
        assert int(inside["capEff"], 16) == int(inside["capBnd"], 16) == 0, inside
        assert inside["noNewPrivs"] == "1", inside
        assert inside["seccomp"] == "2", inside  # a filter: RuntimeDefault
        assert (inside["healthz"], inside["readyz"]) == (200, 200), inside
    # Two replicas, one reconciler.
    assert sorted(LEADING in inside["metrics"] for inside in seen.values()) == [False, True]
    # The default TLS mode bootstrapped from inside: a CA and certificate in the Secret, the
    # CA in the webhook configuration.
    secret = _live(cluster, "secret", "budgetops-webhook-tls", "-n", NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    [hook] = _live(cluster, "validatingwebhookconfiguration", APP)["webhooks"]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert hook["clientConfig"]["service"]["name"] == APP
    for name in seen:
        logged = [line for line in _log_lines(cluster, name) if "level" in line]
        assert any(
            line["message"] == "serving POST https://0.0.0.0:8443/validate" for line in logged
        )
        assert _problems(cluster, name) == [], name


def test_alice_spends_until_denied_calmly_and_the_pods_publish_the_records(
    release: Any, tmp_path: Path
) -> None:
    cluster = release
    created = cluster.kubectl(
        "create", "--as=alice", f"--as-group={DEVELOPERS}", "-f", "-",
        input=_csrs("dev", BALANCE + 1), check=False,
    )  # fmt: skip
    assert created.stdout.count("created") == BALANCE, created.stderr
    [denial] = [line for line in created.stderr.splitlines() if not line.startswith("Warning: ")]
    assert 'admission webhook "charge.budgetops.dev" denied the request: ' in denial
    assert "Trust budget exhausted. This request requires 1 points; 0 remain." in denial
    assert "Traceback" not in created.stderr
    account = _account(cluster, "alice")
    assert account["balance"] == 0, account
    assert account["spent"] + account["reserved"] == BALANCE, account
    # The signed verdict of the denial, found where NOTES.txt says.
    verdict = _budgetops(
        "verdict", f"certificatesigningrequest/dev-{BALANCE}",
        "--kubeconfig", str(cluster.kubeconfig), "--operator-namespace", NAMESPACE,
    )  # fmt: skip
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.startswith("sha256:")
    assert "deny" in verdict.stdout
    # Each charge is published once, by the replica that made it, on its stdout.
    records = [
        line
        for pod in _pods(cluster)
        for line in _log_lines(cluster, pod["metadata"]["name"])
        if "hash" in line and line.get("account") == "user:alice"
    ]
    reserved = [r for r in records if r["action"] == "reserve"]
    assert len(reserved) == BALANCE
    assert len({r["object"] for r in reserved}) == BALANCE
    # docs/quickstart.md: the plugin finds BudgetOps' namespace from its webhook's Service.
    status = _plugin(cluster, "status", "developer-certificates")
    assert status.returncode == 0, status.stdout + status.stderr
    envelope = _plugin(cluster, "verdict", f"certificatesigningrequest/dev-{BALANCE}", "-o", "json")
    assert envelope.returncode == 0, envelope.stdout + envelope.stderr
    checked = _plugin(cluster, "verify", "-", input=envelope.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The trail verifies from the pods' logs, as docs/verdicts.md says: one file per pod,
    # since each replica publishes its own writes only.
    logs = []
    for pod in _pods(cluster):
        logs.append(tmp_path / f"{pod['metadata']['name']}.jsonl")
        logs[-1].write_text(
            cluster.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"]).stdout
        )
    verified = _budgetops(
        "verify", *(f"--audit={log}" for log in logs), "--partial",
        "--budget", "TrustBudget/developer-certificates",
        "--kubeconfig", str(cluster.kubeconfig), "--operator-namespace", NAMESPACE,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit trail verified" in verified.stdout


def test_a_deployment_under_a_risk_budget_and_kubectl_budget_status(release: Any) -> None:
    cluster = release
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "payments-api",
            "namespace": "payments",
            "labels": {"app.kubernetes.io/name": "payments-api"},
            "annotations": {
                "budgetops.dev/risk-points": "30",
                "budgetops.dev/release-id": "payments-v1",
            },
        },
        "spec": {
            "replicas": 0,  # charged on create; nothing to run
            "selector": {"matchLabels": {"app.kubernetes.io/name": "payments-api"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "payments-api"}},
                "spec": {"containers": [{"name": "api", "image": "budgetops:test"}]},
            },
        },
    }
    created = cluster.kubectl(
        "create", "--as=alice", "-f", "-", input=json.dumps(deployment), check=False
    )
    assert created.returncode == 0, created.stderr
    assert "Risk budget payments-api: 30 RP" in created.stderr, created.stderr
    status = _plugin(cluster, "status", "--service", "payments-api", "-n", "payments")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Budget: 30 / 120 RP (25.0%)" in status.stdout, status.stdout
    # AT ACCOUNT ACTION AMOUNT OBJECT VERDICT: the charge, with its signed verdict, confirmed
    # by the reconciler once it sees the Deployment (within its poll).
    rows: list[list[str]] = []

    def receipts() -> bool:
        done = _plugin(cluster, "receipts", "--service", "payments-api", "-n", "payments")
        assert done.returncode == 0, done.stdout + done.stderr
        rows[:] = [line.split()[2:] for line in done.stdout.splitlines()[1:]]
        return len(rows) == 2

    _until(receipts, "the charge is confirmed", within=30)
    reserve, confirm = rows
    assert reserve[:4] == ["reserve", "30", "Deployment", "payments/payments-api"], reserve
    assert reserve[4].startswith("sha256:"), reserve
    assert confirm == ["confirm", "30", "Deployment", "payments/payments-api"], confirm


def test_deleting_the_leader_while_charging_loses_and_doubles_nothing(release: Any) -> None:
    cluster = release
    [leader] = [name for name, body in _metrics(cluster).items() if LEADING in body]
    stream = Stream(cluster, "carol", count=40, every=0.2)
    stream.start()
    time.sleep(2)
    cluster.kubectl("delete", "pod", leader, "-n", NAMESPACE, "--wait=false")
    deleted = time.monotonic()
    _until(lambda: not _exists(cluster, leader), "the leader pod is gone", within=60)
    # Within the grace period: its process stopped on SIGTERM, it was not killed.
    assert time.monotonic() - deleted < TERMINATION_GRACE, time.monotonic() - deleted
    stream.join()
    _rolled_out(cluster)
    _until(
        lambda: sorted(LEADING in body for body in _metrics(cluster).values()) == [False, True],
        "exactly one replica reconciles again",
        within=120,
    )
    assert leader not in _metrics(cluster)
    assert stream.unexplained() == [], stream.unexplained()
    _settled(cluster, "carol", len(stream.admitted()))


def test_helm_upgrade_under_admissions_keeps_answering_and_the_pdb_holds(
    release: Any,
) -> None:
    cluster = release
    before = {pod["metadata"]["name"] for pod in _pods(cluster)}
    available: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            live = _live(cluster, "deployment", APP, "-n", NAMESPACE)["status"]
            available.append(live.get("availableReplicas", 0))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch)
    stream = Stream(cluster, "dave", count=60, every=0.25)
    watcher.start()
    stream.start()
    try:
        time.sleep(1)
        # A changed value that changes the pod template: every pod is replaced.
        helm(
            cluster.binaries,
            *("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, *VALUES),
            *("--set", "reconciler.poll=3s", "--wait", "--timeout", READY_WITHIN),
            kubeconfig=str(cluster.kubeconfig),
        )
        stream.join()
    finally:
        watching.set()
        watcher.join()
    after = {pod["metadata"]["name"] for pod in _pods(cluster)}
    assert not before & after, "the upgrade replaced every pod"
    assert stream.unexplained() == [], stream.unexplained()
    assert min(available) >= 1, available
    _settled(cluster, "dave", len(stream.admitted()))
    # The PodDisruptionBudget: one replica may be evicted, not the second while the first's
    # replacement is not Ready.
    first, second = sorted(after)
    _until(
        lambda: (
            _live(cluster, "pdb", APP, "-n", NAMESPACE)["status"].get("disruptionsAllowed") == 1
        ),
        "the PodDisruptionBudget counts both new replicas",
    )
    evicted = _evict(cluster, first)
    assert evicted.returncode == 0, evicted.stderr
    refused = _evict(cluster, second)
    assert refused.returncode != 0
    assert "disruption budget" in refused.stderr, refused.stderr
    _rolled_out(cluster)
    for pod in _pods(cluster):
        name = pod["metadata"]["name"]
        assert _problems(cluster, name) == [], name
        # The chart's memory limit (256Mi) leaves room above what a replica has used.
        peak = _exec(cluster, name, "sed", "-n", "s/^VmHWM: *//p", "/proc/1/status").split()
        assert int(peak[0]) * 1024 < 0.75 * MEMORY_LIMIT, peak


def test_a_replica_deleted_while_it_starts_stops_at_once(release: Any) -> None:
    """The container's first process is PID 1 of its namespace: a SIGTERM it has no
    handler for yet is dropped, and the pod used to be killed only after its grace period."""
    cluster = release
    before = {pod["metadata"]["name"] for pod in _pods(cluster)}
    cluster.kubectl("delete", "pod", "-n", NAMESPACE, sorted(before)[0], "--wait=false")
    starting: list[str] = []

    def started() -> bool:
        starting[:] = [
            pod["metadata"]["name"]
            for pod in _pods(cluster)
            if pod["metadata"]["name"] not in before
            and any("running" in c["state"] for c in pod["status"].get("containerStatuses", []))
        ]
        return bool(starting)

    _until(started, "the replacement's container runs", within=60)
    # Once budgetops' own code runs (it has logged): the interpreter's start before that, a
    # few tens of milliseconds, is before any handler can exist.
    _until(
        lambda: bool(cluster.kubectl("logs", "-n", NAMESPACE, starting[0], check=False).stdout),
        "the replacement logs",
    )
    deleted = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", NAMESPACE, starting[0], "--timeout=60s")
    assert time.monotonic() - deleted < TERMINATION_GRACE / 2, time.monotonic() - deleted
    _rolled_out(cluster)


def test_uninstall_keeps_the_budgets(release: Any) -> None:
    cluster = release
    helm(
        cluster.binaries,
        *("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", READY_WITHIN),
        kubeconfig=str(cluster.kubeconfig),
    )
    gone = cluster.kubectl("get", "validatingwebhookconfiguration", APP, check=False)
    assert gone.returncode != 0
    assert _pods(cluster) == []
    assert _account(cluster, "alice")["balance"] == 0
    risk = _live(cluster, "riskbudget", "payments-api", "-n", "payments")["status"]
    assert risk["consumed"] == 30, risk
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout
    for kind in ("trustbudgets", "riskbudgets", "budgetleases"):
        assert f"{kind}.budgetops.dev" in crds


# --- helpers ----------------------------------------------------------------------------------


@dataclass
class Stream:
    """`count` CSRs created one by one as `user` (a developer), one every `every` s, by
    kubectl in a thread: a steady, bounded stream of admissions."""

    cluster: Any
    user: str
    count: int
    every: float
    results: list[tuple[str, subprocess.CompletedProcess[str]]] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=self.count * (self.every + 15))
        assert not self.thread.is_alive(), "the stream of admissions did not finish"

    def admitted(self) -> list[str]:
        return [name for name, done in self.results if done.returncode == 0]

    def unexplained(self) -> list[str]:
        """The failures the budget does not explain (it never runs out here)."""
        return [
            f"{name}: {done.stderr.strip()}"
            for name, done in self.results
            if done.returncode != 0 and "Trust budget exhausted" not in done.stderr
        ]

    def _run(self) -> None:
        for n in range(self.count):
            started = time.monotonic()
            name = f"{self.user}-{n}"  # the CSR is named <name>-0
            done = self.cluster.kubectl(
                "create", f"--as={self.user}", f"--as-group={DEVELOPERS}", "-f", "-",
                input=_csrs(name, 1), check=False,
            )  # fmt: skip
            self.results.append((name, done))
            time.sleep(max(0.0, self.every - (time.monotonic() - started)))


def _settled(cluster: Any, user: str, admitted: int) -> None:
    """Every admitted CSR of `user` is charged once: the reconciler confirms them all (the
    CSRs exist), and what the account spent is what was admitted."""
    _until(
        lambda: _account(cluster, user)["reserved"] == 0,
        f"{user}'s reservations are confirmed",
        within=90,
    )
    account = _account(cluster, user)
    assert account["spent"] == admitted, account
    assert account["balance"] == BALANCE - admitted, account


def _account(cluster: Any, user: str) -> dict[str, Decimal]:
    status = _live(cluster, "trustbudget", "developer-certificates")["status"]
    found = status["accounts"][f"user:{user}"]
    return {key: Decimal(str(found[key])) for key in ("balance", "spent", "reserved")}


def _pods(cluster: Any) -> list[dict[str, Any]]:
    listed = _live(cluster, "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return [pod for pod in listed if "deletionTimestamp" not in pod["metadata"]]


def _rolled_out(cluster: Any) -> None:
    cluster.kubectl(
        "rollout", "status", f"deployment/{APP}", "-n", NAMESPACE, f"--timeout={READY_WITHIN}"
    )


def _metrics(cluster: Any) -> dict[str, str]:
    """Each running replica's /metrics, read inside its pod."""
    found = {}
    for pod in _pods(cluster):
        name = pod["metadata"]["name"]
        done = cluster.kubectl(
            "exec", "-n", NAMESPACE, name, "--", "python3", "-c", METRICS, check=False
        )
        found[name] = done.stdout if done.returncode == 0 else ""
    return found


def _exec(cluster: Any, pod: str, *command: str) -> str:
    stdout: str = cluster.kubectl("exec", "-n", NAMESPACE, pod, "--", *command).stdout
    return stdout


def _log_lines(cluster: Any, pod: str) -> list[dict[str, Any]]:
    """Every line `kubectl logs` gives of a replica (stderr and stdout), each a JSON object."""
    text = cluster.kubectl("logs", "-n", NAMESPACE, pod).stdout
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def _problems(cluster: Any, pod: str) -> list[dict[str, Any]]:
    """A replica's log lines that say something failed, or that it wrote where it may not."""
    return [
        line
        for line in _log_lines(cluster, pod)
        if line.get("level") in ("ERROR", "CRITICAL")
        or any(words in json.dumps(line) for words in ("Read-only file system", "EROFS"))
        or "Permission denied" in json.dumps(line)
    ]


def _exists(cluster: Any, pod: str) -> bool:
    got = cluster.kubectl("get", "pod", pod, "-n", NAMESPACE, "--ignore-not-found", "-o", "name")
    return bool(got.stdout.strip())


def _evict(cluster: Any, pod: str) -> subprocess.CompletedProcess[str]:
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NAMESPACE},
    }
    done: subprocess.CompletedProcess[str] = cluster.kubectl(
        "create", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction", "-f", "-",
        input=json.dumps(eviction), check=False,
    )  # fmt: skip
    return done


def _live(cluster: Any, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl("get", *what, "-o", "json").stdout)
    return found


def _plugin(cluster: Any, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`kubectl budget ARGS`, the plugin found on PATH as a user installs it."""
    plugin_dir = str(Path(sys.executable).parent)
    return subprocess.run(
        [str(cluster.binaries.kubectl), "budget", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": f"{plugin_dir}:/usr/bin:/bin", "KUBECONFIG": str(cluster.kubeconfig)},
    )


def _budgetops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _until(ok: Any, what: str, *, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not ok():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.5)

"""Real pods on the node: the paths every in-cluster BudgetOps feature stands on.

A pod reaches the API server through the `kubernetes` Service with its own ServiceAccount token
(in-cluster configuration, as `budgetops run` does); the API server reaches a pod through a
Service (as it calls the webhook); kubectl logs and exec reach kubelet; and a pod reaches
nothing outside the node's namespace.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

NAMESPACE = "node-smoke"
# The chart's container security context: a pod that runs here runs under the chart's rules.
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
SERVER = """
import http.server, socket
class Pong(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"pong from {socket.gethostname()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8080), Pong).serve_forever()
"""
# In-cluster configuration exactly as the operator loads it, then two attempts to leave the
# node's network: the host's link address on a port other than the API server's (dropped by
# the namespace's firewall: a timeout, where a refusal would mean the packet got through), and
# an address no route leads to.
CLIENT = """
import errno, json, os, socket
from kubernetes import client, config
config.load_incluster_config()
pods = client.CoreV1Api().list_namespaced_pod("node-smoke")
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
print(json.dumps({
    "host": client.Configuration.get_default_copy().host,
    "env": os.environ["KUBERNETES_SERVICE_HOST"],
    "pods": sorted(p.metadata.name for p in pods.items),
    "host_link_ssh": attempt(os.environ["HOST_LINK"], 22),
    "documentation_net": attempt("203.0.113.1", 80),
}))
"""


def _pod(name: str, image: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", textwrap.dedent(script)],
        "securityContext": RESTRICTED,
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
    }


@pytest.fixture(scope="module")
def pods(node_cluster: Any, node_image: str) -> Any:
    """An HTTP server behind a Service, and a client pod that has run to completion."""
    server = _pod(
        "server",
        node_image,
        SERVER,
        container={
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        },
    )
    client = _pod(
        "client",
        node_image,
        CLIENT,
        restartPolicy="Never",
        container={"env": [{"name": "HOST_LINK", "value": node_cluster.address}]},
    )
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "default-view", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": NAMESPACE},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        server,
    ]  # fmt: skip
    node_cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    node_cluster.kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", "pod/server",
                         "--timeout=60s")  # fmt: skip
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(client))
    node_cluster.kubectl("wait", "-n", NAMESPACE, "--for=jsonpath={.status.phase}=Succeeded",
                         "pod/client", "--timeout=60s")  # fmt: skip
    return node_cluster


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(pods: Any) -> None:
    report = json.loads(pods.kubectl("logs", "-n", NAMESPACE, "client").stdout)
    assert report["env"] == "10.96.0.1"
    assert report["host"] == "https://10.96.0.1:443"
    assert report["pods"] == ["client", "server"]


def test_a_pod_reaches_nothing_outside_the_node(pods: Any) -> None:
    report = json.loads(pods.kubectl("logs", "-n", NAMESPACE, "client").stdout)
    assert report["host_link_ssh"] == "timeout"
    assert report["documentation_net"] in {"EHOSTUNREACH", "ENETUNREACH"}


def test_the_api_server_reaches_a_pod_through_its_service(pods: Any) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/services/http:echo:80/proxy/"
    assert pods.kubectl("get", "--raw", path).stdout == "pong from server"


def test_kubectl_exec_reaches_the_container(pods: Any) -> None:
    done = pods.kubectl("exec", "-n", NAMESPACE, "server", "--", "python3", "-c", "print(6 * 7)")
    assert done.stdout.strip() == "42"

"""Credential refreshes of the kubernetes client, throttled (no API server needed)."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config

from budgetops.adapters.rest import refresh_credentials_at_most_every
from budgetops.cli.target import api_client

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: secret-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def _authorize(api: client.ApiClient) -> str:
    """Prepare one request the way every call does; the Authorization header it gets."""
    _, _, headers, _, _ = api.param_serialize("GET", "/api", auth_settings=["BearerToken"])
    return str(headers["authorization"])


def test_the_loader_re_applies_its_configuration_only_every_few_seconds(tmp_path: Path) -> None:
    # The kubeconfig loader re-applies host, certificates and token before each request;
    # a host changed in between shows whether it ran.
    (tmp_path / "config").write_text(KUBECONFIG)
    api = api_client(str(tmp_path / "config"))
    assert _authorize(api) == "Bearer secret-token"
    api.configuration.host = "https://moved:1"
    for _ in range(20):
        assert _authorize(api) == "Bearer secret-token"
    assert api.configuration.host == "https://moved:1", "refreshed on every request"


def test_the_throttle_survives_the_loader_installing_a_new_hook(tmp_path: Path) -> None:
    (tmp_path / "config").write_text(KUBECONFIG)
    api = config.new_client_from_config(str(tmp_path / "config"))
    refresh_credentials_at_most_every(api.configuration, seconds=0.0)
    ours = api.configuration.refresh_api_key_hook
    for _ in range(3):  # each refresh re-installs the loader's hook; ours must stay in front
        api.configuration.host = "https://moved:1"
        assert _authorize(api) == "Bearer secret-token"
        assert api.configuration.host == "https://127.0.0.1:6443", "the loader's hook ran"
        assert api.configuration.refresh_api_key_hook is ours

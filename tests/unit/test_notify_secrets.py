"""KubeSecrets against a fake API server: one key read and decoded, every failure a
LookupError that names the Secret and never the value."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from kubernetes import client

from budgetops.adapters.secrets import KubeSecrets

from .test_notify_targets import Receiver


@pytest.fixture
def api_server() -> Iterator[Receiver]:
    with Receiver() as served:
        yield served


def _secret(data: dict[str, str]) -> bytes:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "data": encoded}).encode()


def test_kube_secrets_reads_and_decodes_one_key(api_server: Receiver) -> None:
    missing = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}'
    api_server.script.extend(
        [
            (200, _secret({"url": "https://hooks.example/s3cr3t"})),
            (200, _secret({"other": "x"})),
            (404, missing),
            (403, b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":403}'),
        ]
    )
    with client.ApiClient(client.Configuration(host=api_server.url)) as api:
        secrets = KubeSecrets(api)
        assert secrets.read("payments", "hooks", "url") == "https://hooks.example/s3cr3t"
        with pytest.raises(LookupError, match=r"^secret payments/hooks has no key url$"):
            secrets.read("payments", "hooks", "url")
        with pytest.raises(LookupError, match=r"^secret payments/hooks not found$"):
            secrets.read("payments", "hooks", "url")
        with pytest.raises(LookupError, match=r"^secret payments/hooks could not be read: 403"):
            secrets.read("payments", "hooks", "url")
    assert api_server.requests[0].path == "/api/v1/namespaces/payments/secrets/hooks"

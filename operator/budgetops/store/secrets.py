"""Secret values for notification channels, read from the API server when a message is sent.

Read at each send rather than cached, so a rotated webhook URL or SMTP password applies to
the next message without a restart; notifications are few, so the reads are too.
"""

from __future__ import annotations

import base64
import binascii

from kubernetes import client
from kubernetes.client.exceptions import ApiException


class KubeSecrets:
    """Reads one key of a Secret; every failure is a LookupError that names the Secret and key
    and never carries the value."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = client.CoreV1Api(api_client)

    def read(self, namespace: str, name: str, key: str) -> str:
        where = f"secret {namespace}/{name}"
        try:
            secret = self.api.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"{where} not found") from None
            raise LookupError(f"{where} could not be read: {error.status} {error.reason}") from None
        encoded = (secret.data or {}).get(key)
        if encoded is None:
            raise LookupError(f"{where} has no key {key}")
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise LookupError(f"{where} key {key} is not base64-encoded UTF-8 text") from None

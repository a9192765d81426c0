"""Secret values (notification channels, agent signing and provider keys), read when used.

Read at each send rather than cached, so a rotated webhook URL or SMTP password applies to
the next message without a restart; notifications are few, so the reads are too.
"""

from __future__ import annotations

import base64
import binascii

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from budgetops.adapters.filesecrets import FileSecrets

__all__ = ["FileSecrets", "KubeSecrets"]  # FileSecrets lives apart: it needs no kubernetes


class KubeSecrets:
    """Reads one key of a Secret; every failure is a LookupError that names the Secret and key
    and never carries the value."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = client.CoreV1Api(api_client)

    def _data(self, namespace: str, name: str) -> dict[str, str]:
        where = f"secret {namespace}/{name}"
        try:
            secret = self.api.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"{where} not found") from None
            raise LookupError(f"{where} could not be read: {error.status} {error.reason}") from None
        return {key: str(value) for key, value in (secret.data or {}).items()}

    def read(self, namespace: str, name: str, key: str) -> str:
        where = f"secret {namespace}/{name}"
        encoded = self._data(namespace, name).get(key)
        if encoded is None:
            raise LookupError(f"{where} has no key {key}")
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise LookupError(f"{where} key {key} is not base64-encoded UTF-8 text") from None

    def read_all(self, namespace: str, name: str) -> dict[str, bytes]:
        """Every key of a Secret, decoded (a keyring: several keys, rotated over time)."""
        data = self._data(namespace, name)
        try:
            return {key: base64.b64decode(value, validate=True) for key, value in data.items()}
        except binascii.Error:
            raise LookupError(f"secret {namespace}/{name} holds a key that is not base64") from None

    def write_all(
        self, namespace: str, name: str, files: dict[str, bytes], *, replace: bool = False
    ) -> None:
        """Create the Secret with these keys; with `replace`, replace one that exists (a
        rotation), else leave it as it is (another replica made it first: read it back)."""
        data = {key: base64.b64encode(value).decode() for key, value in files.items()}
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace), data=data, type="Opaque"
        )
        try:
            try:
                self.api.create_namespaced_secret(namespace, body)
            except ApiException as error:
                if error.status != 409:
                    raise
                if replace:
                    self.api.replace_namespaced_secret(name, namespace, body)
        except ApiException as error:
            raise LookupError(
                f"secret {namespace}/{name} could not be written: {error.status} {error.reason}"
            ) from None

    def write(self, namespace: str, name: str, key: str, value: str) -> None:
        """Create the Secret with one key; one that exists already is left as it is (another
        replica made it first), so read it back rather than trusting `value`."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            string_data={key: value},
            type="Opaque",
        )
        try:
            self.api.create_namespaced_secret(namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise LookupError(
                    f"secret {namespace}/{name} could not be created: {error.status} {error.reason}"
                ) from None

"""Secret values (notification channels, agent signing and provider keys), read when used.

Read at each send rather than cached, so a rotated webhook URL or SMTP password applies to
the next message without a restart; notifications are few, so the reads are too.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException


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


class FileSecrets:
    """Secrets as files, `<root>/<name>/<key>`: the layout of a mounted Secret volume, and
    where the embedded ledger keeps its agent signing key and provider keys."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str, key: str) -> Path:
        for part in (name, key):
            if not part or "/" in part or part in (".", ".."):
                raise LookupError(f"{part!r} cannot name a secret file")
        return self.root / name / key

    def read(self, namespace: str, name: str, key: str) -> str:
        """`namespace` is ignored: the embedded ledger has one."""
        where = self.path(name, key)
        try:
            return where.read_text()
        except FileNotFoundError:
            raise LookupError(f"secret {name} has no key {key} (no file {where})") from None
        except (OSError, UnicodeDecodeError) as error:
            raise LookupError(f"secret file {where} could not be read: {error}") from None

    def write(self, namespace: str, name: str, key: str, value: str) -> None:
        """Create or replace a key, readable by the owner only (`namespace` is ignored)."""
        where = self.path(name, key)
        where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = where.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(value)
        temporary.replace(where)

    def read_all(self, namespace: str, name: str) -> dict[str, bytes]:
        """Every file of a secret folder (`namespace` is ignored)."""
        folder = self.path(name, "x").parent
        if not folder.is_dir():
            raise LookupError(f"secret {name} not found (no folder {folder})")
        try:
            return {
                entry.name: entry.read_bytes()
                for entry in sorted(folder.iterdir())
                if entry.is_file() and not entry.name.startswith(".")
            }
        except OSError as error:
            raise LookupError(f"secret folder {folder} could not be read: {error}") from None

    def write_all(
        self, namespace: str, name: str, files: dict[str, bytes], *, replace: bool = False
    ) -> None:
        """Write a secret folder's files; with `replace`, drop files not among them
        (`namespace` is ignored; one process makes an embedded ledger's keys)."""
        for key, value in files.items():
            self.write(namespace, name, key, value.decode())
        folder = self.path(name, "x").parent
        for entry in folder.iterdir() if replace else ():
            if entry.is_file() and entry.name not in files and not entry.name.startswith("."):
                entry.unlink()

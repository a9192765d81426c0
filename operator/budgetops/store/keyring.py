"""The verdict signing keyring, kept in a Secret (a folder beside the embedded ledger).

Made on first start when missing, by whichever replica gets there first (the others read
back what it wrote); rotated by `budgetops keys rotate`, which keeps every older key's public
half so verdicts signed before still verify. A running webhook signs with the key that was
active when it started: roll the Deployment after a rotation.
"""

from __future__ import annotations

from typing import Protocol

from budgetops.crypto.dsse import Algorithm, Keyring

VERDICT_KEYS_SECRET = "budgetops-verdict-keys"


class KeyFiles(Protocol):
    """A Secret read and written whole (KubeSecrets, FileSecrets)."""

    def read_all(self, namespace: str, name: str) -> dict[str, bytes]: ...

    def write_all(
        self, namespace: str, name: str, files: dict[str, bytes], *, replace: bool = False
    ) -> None: ...


def read_keyring(secrets: KeyFiles, namespace: str) -> Keyring:
    """The keyring as stored; LookupError when missing, ValueError when it does not read."""
    return Keyring.from_files(secrets.read_all(namespace, VERDICT_KEYS_SECRET))


def verdict_keyring(secrets: KeyFiles, namespace: str, *, first_key: str) -> Keyring:
    """The keyring, made with one new key named `first_key` if there is none yet."""
    try:
        return read_keyring(secrets, namespace)
    except LookupError:
        secrets.write_all(namespace, VERDICT_KEYS_SECRET, Keyring.new(first_key))
        return read_keyring(secrets, namespace)


def rotate_keyring(
    secrets: KeyFiles, namespace: str, *, name: str, algorithm: Algorithm = "ed25519"
) -> Keyring:
    """Make a new key active; older ones stay as public keys that still verify."""
    files = secrets.read_all(namespace, VERDICT_KEYS_SECRET)
    rotated = Keyring.rotate(files, name, algorithm)
    secrets.write_all(namespace, VERDICT_KEYS_SECRET, rotated, replace=True)
    return Keyring.from_files(rotated)

"""The verdict signing keyring: a Secret in a cluster, a folder of its own embedded.

Made on first start when missing, by whichever replica gets there first (the others read
back what it wrote); rotated by `budgetops keys rotate`, which keeps every older key's public
half so verdicts signed before still verify. A running webhook signs with the key that was
active when it started: roll the Deployment after a rotation.

The key signs verdicts, checkpoints and every audit head, so it is kept apart from what it
protects: in a cluster a Secret that those who may write budget statuses cannot read;
embedded a folder outside the ledger's (`--verdict-keys`, `$BUDGETOPS_VERDICT_KEYS`, else
the user's configuration folder), never beside the ledger, where whoever may rewrite the
ledger could re-sign it.
"""

from __future__ import annotations

from budgetops.adapters.keyfolder import (
    VERDICT_KEYS_ENV,
    VERDICT_KEYS_SECRET,
    KeyFiles,
    KeyFolder,
    embedded_keys,
    key_name,
    keys_folder,
)
from budgetops.crypto.dsse import Algorithm, Keyring

__all__ = [  # where the keyring's files are (adapters/keyfolder.py), as callers import it here
    "VERDICT_KEYS_ENV",
    "VERDICT_KEYS_SECRET",
    "KeyFiles",
    "KeyFolder",
    "embedded_keys",
    "key_name",
    "keys_folder",
    "read_keyring",
    "rotate_keyring",
    "verdict_keyring",
]


def read_keyring(secrets: KeyFiles, namespace: str) -> Keyring:
    """The keyring as stored; LookupError when missing, ValueError when it does not read."""
    return Keyring.from_files(secrets.read_all(namespace, VERDICT_KEYS_SECRET))


def verdict_keyring(
    secrets: KeyFiles, namespace: str, *, first_key: str, algorithm: Algorithm = "ed25519"
) -> Keyring:
    """The keyring, made with one new key named `first_key` if there is none yet."""
    try:
        return read_keyring(secrets, namespace)
    except LookupError:
        secrets.write_all(namespace, VERDICT_KEYS_SECRET, Keyring.new(first_key, algorithm))
        return read_keyring(secrets, namespace)


def rotate_keyring(
    secrets: KeyFiles, namespace: str, *, name: str, algorithm: Algorithm = "ed25519"
) -> Keyring:
    """Make a new key active; older ones stay as public keys that still verify."""
    files = secrets.read_all(namespace, VERDICT_KEYS_SECRET)
    rotated = Keyring.rotate(files, name, algorithm)
    secrets.write_all(namespace, VERDICT_KEYS_SECRET, rotated, replace=True)
    return Keyring.from_files(rotated)

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

import os
from pathlib import Path
from typing import Protocol

from budgetops.crypto.dsse import Algorithm, Keyring
from budgetops.engine.clock import system_clock
from budgetops.store.filesecrets import FileSecrets
from budgetops.store.sqlite import LedgerError

VERDICT_KEYS_SECRET = "budgetops-verdict-keys"
VERDICT_KEYS_ENV = "BUDGETOPS_VERDICT_KEYS"


class KeyFiles(Protocol):
    """A Secret read and written whole (KubeSecrets, FileSecrets, KeyFolder)."""

    def read_all(self, namespace: str, name: str) -> dict[str, bytes]: ...

    def write_all(
        self, namespace: str, name: str, files: dict[str, bytes], *, replace: bool = False
    ) -> None: ...


class KeyFolder:
    """An embedded keyring: the files of one folder, whatever its name (`namespace` and
    `name` are ignored: the folder is the keyring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files = FileSecrets(folder.parent)

    def read_all(self, namespace: str, name: str) -> dict[str, bytes]:
        """The folder's files; LookupError when it is missing or empty (made, not filled)."""
        try:
            files = self._files.read_all(namespace, self.folder.name)
        except LookupError:
            files = {}
        if not files:
            raise LookupError(f"no verdict keyring in {self.folder}")
        return files

    def write_all(
        self, namespace: str, name: str, files: dict[str, bytes], *, replace: bool = False
    ) -> None:
        self._files.write_all(namespace, self.folder.name, files, replace=replace)


def keys_folder(given: str | None) -> Path:
    """Where the embedded keyring lives: `given`, else $BUDGETOPS_VERDICT_KEYS, else
    `$XDG_CONFIG_HOME/budgetops/verdict-keys` (`~/.config/...`)."""
    chosen = given or os.environ.get(VERDICT_KEYS_ENV)
    if chosen:
        return Path(chosen).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "budgetops" / "verdict-keys"


def embedded_keys(ledger: Path, given: str | None) -> KeyFolder:
    """The keyring of the embedded ledger at `ledger` (see `keys_folder`).

    Older versions kept it beside the ledger. Such a keyring is not read, and while the new
    place holds none this refuses (LedgerError) rather than make a second key: verdicts
    signed with the first would then stop verifying, with nothing said.
    """
    folder = keys_folder(given)
    stranded = ledger.with_name(f"{ledger.name}.secrets") / VERDICT_KEYS_SECRET
    if _holds_files(stranded) and not _holds_files(folder):
        raise LedgerError(
            f"the verdict keyring is no longer kept beside the ledger: move {stranded} to "
            f"{folder} (or pass --verdict-keys {stranded}), ideally where the ledger's other "
            "writers cannot read it"
        )
    return KeyFolder(folder)


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(path.is_file() for path in folder.iterdir())


def key_name() -> str:
    """The name of a new key: when it was made."""
    return f"key-{system_clock():%Y%m%d%H%M%S}"


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

"""Where a verdict keyring's files are, and how they are read and written whole: a Secret in a
cluster, a folder of its own embedded (see `adapters/keyring.py` for what the keyring is).

Nothing here reads a key, so a command that only reads the ledger can find the keyring's
place without loading the signing code (`crypto.dsse`, and with it `cryptography`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from budgetops.adapters.filesecrets import FileSecrets
from budgetops.engine.clock import system_clock
from budgetops.store.errors import LedgerError

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

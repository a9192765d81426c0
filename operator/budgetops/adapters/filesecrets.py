"""Secrets as files, the embedded ledger's: kept apart from `secrets.KubeSecrets` so that
reading a ledger's keys (`adapters.keyring`) imports no Kubernetes client."""

from __future__ import annotations

import os
from pathlib import Path


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

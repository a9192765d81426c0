"""Records the control plane has not acknowledged yet, kept until it does.

The file form is JSON Lines, fsync'd on every change and replaced atomically, so what a runtime
queued survives its restart and the next run sends it. One client per file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from budgetops.client.errors import ProtocolError
from budgetops.client.records import UsageRecord
from budgetops.client.wire import dumps

log = logging.getLogger("budgetops.client")

Refused = tuple[UsageRecord, str]
"""A record the control plane refused, and its reason."""


class Backlog(Protocol):
    def load(self) -> list[UsageRecord]:
        """Every waiting record, in the order queued."""
        ...

    def append(self, records: Iterable[UsageRecord]) -> None: ...

    def remove(self, records: Iterable[UsageRecord]) -> None:
        """Forget records once acknowledged."""
        ...

    def reject(self, refused: Iterable[Refused]) -> None:
        """Set aside records the control plane refused, so they are not lost silently; the
        caller then removes them, so they are not sent forever."""
        ...


class MemoryBacklog:
    """Without a queue file: records wait in memory and die with the process."""

    def __init__(self) -> None:
        self._records: list[UsageRecord] = []

    def load(self) -> list[UsageRecord]:
        return list(self._records)

    def append(self, records: Iterable[UsageRecord]) -> None:
        self._records.extend(records)

    def remove(self, records: Iterable[UsageRecord]) -> None:
        gone = {record.key for record in records}
        self._records = [record for record in self._records if record.key not in gone]

    def reject(self, refused: Iterable[Refused]) -> None:
        for record, reason in refused:
            log.error("usage record %s/%d refused, dropped: %s", *record.key, reason)


class FileBacklog:
    """Records in a JSON Lines file; refused ones go to `<file>.rejected` with the reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected_path = path.with_name(path.name + ".rejected")

    def load(self) -> list[UsageRecord]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(UsageRecord.from_line(line))
            except (ValueError, ProtocolError):
                log.error("%s line %d is not a usage record; skipped", self.path, number)
        return records

    def append(self, records: Iterable[UsageRecord]) -> None:
        _append_lines(self.path, (dumps(record.to_fields()) for record in records))

    def remove(self, records: Iterable[UsageRecord]) -> None:
        gone = {record.key for record in records}
        if not gone:
            return
        kept = [dumps(record.to_fields()) for record in self.load() if record.key not in gone]
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", encoding="utf-8") as file:
            file.writelines(line + "\n" for line in kept)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path)
        _sync_folder(self.path.parent)

    def reject(self, refused: Iterable[Refused]) -> None:
        refused = list(refused)
        for record, reason in refused:
            log.error(
                "usage record %s/%d refused, moved to %s: %s",
                *record.key,
                self.rejected_path,
                reason,
            )
        lines = (dumps({**record.to_fields(), "reason": reason}) for record, reason in refused)
        _append_lines(self.rejected_path, lines)


def _append_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    with path.open("a", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in lines)
        file.flush()
        os.fsync(file.fileno())
    if created:
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a created or renamed file's name durable, not only its content."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""What is wrong with the embedded ledger's file, worded for the person who named it.

Apart from `store/sqlite.py` because those who catch these errors (the CLI's dispatch) or
raise them about a ledger's surroundings (the key folder beside it) must not need the store
that reads the file: they name a file that cannot be used as asked, not how it is read.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class LedgerError(Exception):
    """The ledger file cannot be used as asked; the message names it and says what to do."""


def explain(path: Path, error: sqlite3.Error | OSError) -> str:
    """One line on what went wrong with the ledger at `path` and what to do about it."""
    text = str(error)
    if path.is_dir():
        return f"{path} is a folder: give --db (or BUDGETOPS_DB) the path of a ledger file"
    if isinstance(error, PermissionError) or "readonly" in text:
        return (
            f"the ledger {path} is read-only ({text}): `budgetops status` can read it; to "
            "write to it, make the file and its folder writable, or point --db at a copy"
        )
    if isinstance(error, sqlite3.OperationalError) and "locked" in text:
        return f"the ledger {path} stayed locked by another process ({text}); try again"
    if isinstance(error, sqlite3.OperationalError) and "unable to open" in text:
        return (
            f"cannot open the ledger {path} ({text}): check that its folder exists and that "
            "you may read (and, to write, write) the file and its folder"
        )
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
        return (
            f"{path} is not a readable ledger ({text}): restore it from a backup, or point "
            "--db at another file"
        )
    return f"the ledger {path}: {text}"

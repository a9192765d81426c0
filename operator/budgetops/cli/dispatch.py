"""Run the verb `main` parsed, and turn the failures every command shares into an exit code.

Imported by `main` only once a verb is chosen (with the store's and the cluster's errors)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path
from typing import TextIO

from budgetops.store import ChargeTimeout, NotFound
from budgetops.store.errors import LedgerError, explain

from .commands import EXIT_INVALID, db_path
from .target import EXIT_UNREACHABLE, ClusterUnreachable


def dispatch(args: argparse.Namespace, stream: TextIO) -> int:
    """`args.run(args, stream)`: the verb's exit code, or the one its failure calls for."""
    ledger = db_path(args.db) if hasattr(args, "db") else None
    try:
        _use_tiers(args)
        code: int = args.run(args, stream)
    except ClusterUnreachable as error:
        stream.write(f"error: {error}\n")
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # `budgetops status | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except NotFound as error:
        hint = (
            "kubectl apply -f"
            if getattr(args, "kubeconfig", None) is not None
            else ("budgetops apply -f")
        )
        stream.write(f"not found: {error.args[0]} (load it with `{hint}`)\n")
        return EXIT_INVALID
    except LedgerError as error:
        stream.write(f"error: {error}\n")
        return EXIT_INVALID
    except ValueError as error:
        stream.write(f"invalid: {_first_line(error)}\n")
        return EXIT_INVALID
    except OverflowError as error:  # a date or duration past what datetime can hold
        stream.write(f"invalid: a date or duration is out of range ({error})\n")
        return EXIT_INVALID
    except ChargeTimeout as error:
        stream.write(f"error: {error}\n")
        return EXIT_INVALID
    except (sqlite3.Error, OSError) as error:
        if ledger is not None and _about(ledger, error):
            stream.write(f"error: {explain(ledger, error)}\n")
        else:
            stream.write(f"error: {error}\n")
        return EXIT_INVALID
    return code


def _use_tiers(args: argparse.Namespace) -> None:
    """The tier table, when one is given (`--tiers`, `$BUDGETOPS_TIERS`), before any budget
    is sized; `serve` and `run` keep looking at it for changes. Without one nothing loads."""
    path = getattr(args, "tiers", None) or os.environ.get("BUDGETOPS_TIERS")
    if not path:
        return
    from budgetops.adapters.tierfile import TierFile

    table = TierFile(Path(path))
    if hasattr(args, "tiers"):
        table.watch()


def _first_line(error: ValueError) -> str:
    """The message, on one line (pydantic's errors span several)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ({' '.join(lines[1].split())})"


def _about(ledger: Path, error: sqlite3.Error | OSError) -> bool:
    """Whether `error` concerns the ledger file (or its folder, its -wal or -shm file)."""
    if isinstance(error, sqlite3.Error):
        return True
    if error.filename is None:
        return False
    named = Path(os.fsdecode(error.filename))
    return named in ledger.parents or str(named).startswith(str(ledger))

"""The keyring a command's writes sign with, and the place such a command writes to.

Apart from `cli/target.py` so that a command that only reads a ledger (`status`, `list`)
never loads the signing code (`crypto.dsse`, and with it `cryptography`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from budgetops.adapters.keyring import KeyFiles, key_name, read_keyring, verdict_keyring
from budgetops.crypto.dsse import Keyring
from budgetops.store.audit import Checkpoints

from .target import Place, place


def writer_keyring(keys: KeyFiles, namespace: str, *, make: bool) -> Keyring | None:
    """The keyring a command's writes sign with (made if `make` and missing), or None, said
    on stderr, when it cannot be had: the heads it moves are then unsigned (`verify` reports
    such a head until a signing writer moves it) and its verdicts recorded by digest only."""
    try:
        return (
            verdict_keyring(keys, namespace, first_key=key_name())
            if make
            else read_keyring(keys, namespace)
        )
    except (LookupError, ValueError, OSError) as error:
        sys.stderr.write(
            "warning: this write's audit head (and any verdict it records) is NOT signed: "
            f"{error}\n"
        )
        return None


def head_signer(keys: KeyFiles, namespace: str, *, make: bool) -> Checkpoints | None:
    """How a command's writes sign the heads they move (see `writer_keyring`)."""
    ring = writer_keyring(keys, namespace, make=make)
    return None if ring is None else Checkpoints.by(ring)


@contextlib.contextmanager
def writing(args: argparse.Namespace, ledger: Path) -> Iterator[Place]:
    """`place` for a command that writes: its heads and verdicts signed (`writer_keyring`)."""
    with place(args, ledger, signer=writer_keyring) as where:
        yield where

"""`budgetops`: generate CRDs, validate manifests, and charge the embedded ledger by hand.

The embedded ledger is a SQLite file (`--db`, or `BUDGETOPS_DB`). `apply` loads the same
manifests users `kubectl apply`; `charge` and `consume` are the issuance and release paths
a non-Kubernetes caller (an SSH CA, a CI job) can use directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from . import commands


def parser(prog: str = "budgetops") -> argparse.ArgumentParser:
    """The command line, one sub-command per verb (built without importing any command)."""
    return commands.parser(prog, __doc__.split("\n")[0])


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, *, plugin: bool = False
) -> int:
    """Entry point of the `budgetops` console script; with `plugin`, of `kubectl budget`,
    which works on the current kubeconfig's cluster unless given `--db`."""
    if os.getpid() == 1:
        # A container's first process: the kernel drops a SIGTERM it has no handler for, so
        # a pod deleted while it starts would wait its whole grace period to be killed.
        # `run` replaces this with its graceful stop once it serves.
        signal.signal(signal.SIGTERM, _terminated)
    args = parser("kubectl budget" if plugin else "budgetops").parse_args(argv)
    args.prog = "kubectl budget" if plugin else "budgetops"  # what hints tell people to run
    stream = out or sys.stdout
    if plugin and getattr(args, "kubeconfig", "") is None and not getattr(args, "db", None):
        args.kubeconfig = ""  # the cluster kubectl would use
    # Only now that a verb is chosen is the code that runs it, and names its failures,
    # imported: `--version`, `--help` and a usage error load no store.
    from .dispatch import dispatch

    return dispatch(args, stream)


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def plugin() -> int:
    """Entry point of the `kubectl-budget` console script (`kubectl budget ...`)."""
    return main(plugin=True)


if __name__ == "__main__":
    sys.exit(main())

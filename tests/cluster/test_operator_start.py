"""`budgetops run` whose credentials the API server refuses: one line and exit code 4,
never a watch thread's traceback after a 30 s wait."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from budgetops.cli.target import EXIT_UNREACHABLE
from tests.kubeconfigs import pointing_at
from tests.ports import free_port


def test_a_rejected_token_stops_the_operator_with_one_line(
    control_plane: Any, tmp_path: Path
) -> None:
    kubeconfig = pointing_at(
        tmp_path / "rejected.kubeconfig",
        control_plane.server,
        token="not-a-token-it-knows",
        ca_file=control_plane.ca_file,
    )
    ran = subprocess.run(
        [
            *(sys.executable, "-m", "budgetops.cli.main", "run", "--kubeconfig", str(kubeconfig)),
            *("--listen", f"127.0.0.1:{free_port()}", "--no-reconcile"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert ran.returncode == EXIT_UNREACHABLE, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = ran.stderr.strip().splitlines()
    assert "cannot start: " in line
    assert "refused: 401 Unauthorized" in line
    assert ran.stdout == ""  # the audit stream stays clean

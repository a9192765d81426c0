"""Every bad input to the command line gets one line and exit code 2, never a traceback,
and leaves the ledger as readable as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from budgetops.cli.commands import EXIT_INVALID

from .test_cli import db, run

__all__ = ["db"]  # the fixture, shared with test_cli

CHARGE = ("charge", "developer-certificates", "--account", "user:alice")


def one_line_error(code: int, out: str) -> str:
    assert code == EXIT_INVALID, out
    assert out.count("\n") == 1, out
    return out


def test_yaml_nested_fifty_thousand_deep_is_a_one_line_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50_000 + "]" * 50_000, encoding="utf-8")
    out = one_line_error(*run("validate", "-f", str(deep)))
    assert "nested more than 64 levels deep" in out


@pytest.mark.parametrize("content", ["", "# only a comment\n"])
def test_applying_nothing_says_so(tmp_path: Path, content: str) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(content, encoding="utf-8")
    ledger = tmp_path / "ledger.sqlite3"
    assert "no budgets found" in one_line_error(
        *run("apply", "-f", str(empty), "--db", str(ledger))
    )
    folder = tmp_path / "nothing-here"
    folder.mkdir()
    assert "no budgets found" in one_line_error(*run("apply", "-f", str(folder)))


def test_status_of_a_missing_ledger_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ledger.sqlite3"
    out = one_line_error(*run("status", "--db", str(missing)))
    assert "there is no ledger at" in out
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("list",),
        ("receipts", "developer-certificates"),
        ("keys", "list"),
        ("agent", "list", "--budget", "llm-spend"),
        ("consume", "payments-api", "-n", "payments", "--points", "1"),
        (*CHARGE, "--id", "x"),
    ],
)
@pytest.mark.parametrize("missing", [True, False])
def test_only_apply_makes_a_ledger(tmp_path: Path, command: tuple[str, ...], missing: bool) -> None:
    """Before, a command that writes (charge, consume, agent) made an empty file a ledger."""
    path = tmp_path / "typo.sqlite3"
    if not missing:
        path.touch()
    out = one_line_error(*run(*command, "--db", str(path)))
    assert f"--db {path}`" in out
    assert "budgetops apply -f" in out
    assert [p.name for p in tmp_path.iterdir()] == ([] if missing else [path.name])
    assert missing or path.stat().st_size == 0


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_text("not a database, just text\n" * 100), "not a readable ledger"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_a_ledger_path_that_is_no_ledger_is_a_one_line_error(
    tmp_path: Path, make: object, says: str
) -> None:
    path = tmp_path / "ledger.sqlite3"
    make(path)  # type: ignore[operator]
    before = path.read_bytes() if path.is_file() else None
    assert says in one_line_error(*run("status", "--db", str(path)))
    assert (path.read_bytes() if path.is_file() else None) == before, "left as it was"


def test_a_truncated_ledger_is_a_one_line_error(db: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file itself
    whole = Path(db)
    whole.write_bytes(whole.read_bytes()[:5000])  # cut mid-page, as a failed copy leaves it
    out = one_line_error(*run("status", "--db", db))
    assert "is not a readable ledger" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--account", "alice", "--id", "x"), "is not an account of TrustBudget"),
        (("--id", ""), "the idempotency key must not be empty"),
        (("--id", "i" * 254), "at most 253 fit"),
        (("--id", "x", "--cost", "0.5"), "not a whole number of points"),
    ],
)
def test_charges_the_ledger_could_not_keep_are_refused_and_it_stays_readable(
    db: str, args: tuple[str, ...], says: str
) -> None:
    account = () if "--account" in args else ("--account", "user:alice")
    out = one_line_error(*run("charge", "developer-certificates", *account, *args, "--db", db))
    assert says in out
    code, status = run("status", "--db", db)
    assert code == 0
    assert "developer-certificates" in status


def test_negative_risk_points_are_refused_before_anything_is_charged(db: str) -> None:
    command = [sys.executable, "-m", "budgetops.cli.main", "consume", "payments-api"]
    command += ["-n", "payments", "--points", "-5", "--release-id", "v1", "--db", db]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_INVALID
    assert "Traceback" not in done.stderr
    assert "0 / " in run("status", "--db", db)[1]


def test_an_absurd_ttl_is_refused_without_a_traceback(db: str) -> None:
    command = [sys.executable, "-m", "budgetops.cli.main", *CHARGE, "--id", "x"]
    command += ["--ttl", "1000000000d", "--db", db]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_INVALID
    assert "Traceback" not in done.stderr
    assert "--ttl" in done.stderr


def test_a_read_only_ledger_can_be_read_and_says_why_it_cannot_be_written(db: str) -> None:
    """As a user who may not write the file or its folder: root may write anything, so a
    root test run drops every capability for these commands (it stays uid 0, the owner, so
    it still reaches the interpreter wherever the checkout lives)."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    folder = Path(tempfile.mkdtemp())
    ledger = folder / "ledger.sqlite3"
    shutil.copy(db, ledger)
    ledger.chmod(0o444)
    folder.chmod(0o555)
    prefix = ["setpriv", "--bounding-set=-all"] if os.geteuid() == 0 else []
    try:

        def budgetops(*args: str) -> subprocess.CompletedProcess[str]:
            command = [*prefix, sys.executable, "-m", "budgetops.cli.main", *args]
            return subprocess.run(
                [*command, "--db", str(ledger)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        read = budgetops("status")
        assert (read.returncode, read.stderr) == (0, "")
        assert "TrustBudget/developer-certificates" in read.stdout
        write = budgetops(*CHARGE, "--id", "x")
        assert write.returncode == EXIT_INVALID
        assert "is read-only" in write.stdout + write.stderr
        assert "Traceback" not in write.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["ledger.sqlite3"], "nothing left"
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_a_reader_that_hangs_up_is_no_error(db: str) -> None:
    """`budgetops status | head -1` printed a BrokenPipeError traceback."""
    command = [sys.executable, "-m", "budgetops.cli.main", "status", "--db", db]
    status = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert status.stdout is not None
    status.stdout.close()  # hung up before reading a line
    _, errors = status.communicate(timeout=60)
    assert status.returncode == 0
    assert b"Traceback" not in errors


@pytest.mark.parametrize("command", [("serve", "--listen", "127.0.0.1:0"), (*CHARGE, "--id", "x")])
def test_a_keyring_left_beside_the_ledger_is_not_replaced_by_a_new_one(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    """An older version kept the keyring in `<ledger>.secrets`: making a second key in the
    new place would leave every verdict signed with the first unverifiable."""
    stranded = Path(f"{db}.secrets") / "budgetops-verdict-keys"
    stranded.mkdir(parents=True)
    (stranded / "keyring.json").write_text("{}", encoding="utf-8")
    new_place = tmp_path / "keys"
    monkeypatch.setenv("BUDGETOPS_VERDICT_KEYS", str(new_place))
    out = one_line_error(*run(*command, "--db", db))
    assert f"move {stranded} to {new_place}" in out
    assert not new_place.exists(), "no second key was made"

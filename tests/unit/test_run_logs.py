"""`budgetops run` logs JSON lines: in a pod, `kubectl logs` and a log pipeline read its stderr
and its stdout (the audit records) as one stream, so every line of it must parse."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from budgetops.cli.serving import JsonLines
from tests.kubeconfigs import pointing_at
from tests.ports import free_port


def _lines(stderr: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stderr.splitlines()]
    assert all(isinstance(line, dict) for line in parsed), stderr
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in parsed), stderr
    return parsed


def test_run_refused_by_its_cluster_says_so_in_json_lines(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{free_port()}"  # nothing listens: refused at once
    kubeconfig = pointing_at(tmp_path / "kubeconfig", server)
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
    assert ran.returncode != 0
    assert ran.stdout == ""
    last = _lines(ran.stderr)[-1]
    assert (last["level"], last["logger"]) == ("ERROR", "budgetops.run")
    assert last["message"].startswith("cannot start: cannot reach the cluster of ")


def test_warnings_and_uncaught_exceptions_are_json_lines_too() -> None:
    program = (
        "import threading, warnings\n"
        "from budgetops.cli.serving import log_to_stderr\n"
        "log_to_stderr(json_lines=True)\n"
        "warnings.warn('careful')\n"
        "thread = threading.Thread(target=lambda: 1 / 0, name='worker')\n"
        "thread.start(); thread.join()\n"
        "raise SystemError('main thread')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert ran.returncode == 1
    warned, thread, main = _lines(ran.stderr)
    assert (warned["logger"], warned["level"]) == ("py.warnings", "WARNING")
    assert "careful" in warned["message"]
    assert thread["message"] == "uncaught exception in thread worker"
    assert "ZeroDivisionError" in thread["exception"]
    assert main["level"] == "CRITICAL"
    assert main["exception"].startswith("Traceback")
    assert main["exception"].endswith("SystemError: main thread")


def test_a_record_keeps_its_message_its_traceback_and_its_time_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord(
            "budgetops.x", logging.ERROR, __file__, 1, "a %s", ('quote"d',), sys.exc_info()
        )
    record.created = 1_700_000_000.25
    text = JsonLines().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line.pop("exception").endswith("ValueError: bad\nvalue")
    assert line == {
        "time": "2023-11-14T22:13:20.250+00:00",
        "level": "ERROR",
        "logger": "budgetops.x",
        "message": 'a quote"d',
    }

"""In a pod `budgetops run` is the container's first process (PID 1 of its namespace), and
the kernel drops any signal PID 1 has no handler for: a pod deleted while it started waited
its whole grace period (40 s) to be killed (measured on the node). SIGTERM must end it at
any moment, here while it waits on an API server that never answers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kubeconfigs import pointing_at


def test_a_starting_run_as_pid_1_stops_on_sigterm(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is not on this machine")
    silent = socket.socket()  # accepts connections and never answers: the start hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    server = f"https://127.0.0.1:{silent.getsockname()[1]}"
    kubeconfig = pointing_at(tmp_path / "kubeconfig", server)
    command = [sys.executable, "-m", "budgetops.cli.main", "run", "--kubeconfig", str(kubeconfig)]
    log = tmp_path / "stderr"
    with log.open("wb") as stderr:
        starter = subprocess.Popen(
            [unshare, "--pid", "--fork", "--kill-child", *command],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        children = Path(f"/proc/{starter.pid}/task/{starter.pid}/children")
        while not children.exists() or not children.read_text().split():
            assert starter.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "unshare started no process"
            time.sleep(0.05)
        [pid] = children.read_text().split()  # the namespace's PID 1, as the host sees it
        [namespaced] = [
            line
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("NSpid:")
        ]
        assert namespaced.split()[-1] == "1"
        silent.settimeout(deadline - time.monotonic())
        held, _ = silent.accept()  # run probes its API server, and waits for an answer
        os.kill(int(pid), signal.SIGTERM)
        starter.wait(timeout=3)  # it used to be ignored: a pod killed only after 40 s
        held.close()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        silent.close()

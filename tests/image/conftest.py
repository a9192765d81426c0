"""The container image, built once per test session by hack/image.sh (docs/image.md).

The build needs root, apt-get (for podman and debootstrap, when missing) and the package
archives this machine is configured for; where it cannot run, the image tests fail with the
build's own last lines. A developer who wants to run only the rest sets
BUDGETOPS_SKIP_IMAGE=1 to skip them instead (or deselects them with `-m "not image"`).
In CI (CI=true) they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

BUILD = ROOT / "hack" / "image.sh"
TAG = "budgetops:test"
BUILD_TIMEOUT = 1800
"""Seconds: the uncached build takes about 2.5 minutes on 2 cores (docs/image.md)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds and inspects the container image")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.image)


@dataclass(frozen=True)
class Image:
    """The built image: its id, its config as `podman image inspect` gives it, its build log."""

    id: str
    inspect: dict[str, Any]
    build_output: str
    build_seconds: float

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.inspect["Config"]
        return config

    @property
    def env(self) -> dict[str, str]:
        pairs = (entry.partition("=") for entry in self.config.get("Env") or [])
        return {name: value for name, _, value in pairs}


def _podman(*args: str) -> str:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=False, timeout=300
    )
    if done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="session")
def image() -> Image:
    if os.environ.get("BUDGETOPS_SKIP_IMAGE") == "1" and os.environ.get("CI") != "true":
        pytest.skip("BUDGETOPS_SKIP_IMAGE=1: the image is not built (bash hack/image.sh)")
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", str(BUILD)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT,
            env={**os.environ, "BUDGETOPS_IMAGE_TAG": TAG},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"bash hack/image.sh took over {BUILD_TIMEOUT} s")
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-30:])
        pytest.fail(
            f"bash hack/image.sh failed ({done.returncode}); it needs root, apt-get and this "
            f"machine's package archives, and podman build --isolation chroot:\n{tail}",
            pytrace=False,
        )
    inspect = json.loads(_podman("image", "inspect", TAG))[0]
    return Image(inspect["Id"], inspect, output, time.monotonic() - started)


@pytest.fixture(scope="session")
def rootfs(image: Image) -> Iterator[Path]:
    """The image's filesystem, mounted read-write by podman: tests only read it."""
    root = Path(_podman("image", "mount", image.id).strip())
    try:
        yield root
    finally:
        subprocess.run(["podman", "image", "unmount", image.id], capture_output=True, check=False)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on this machine (util-linux or coreutils)")
    return path


# Runs as root on the host, in a private mount (and pid) namespace that ends with it: the
# image's root bind-mounted on itself and made read-only (a write as root must fail), /proc
# and /dev as a kubelet gives them, then the command chrooted in as the image's user.
_ENTER = """
set -e
root="$1"; userspec="$2"; shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
if touch "$root/.budgetops-write-probe" 2>/dev/null; then
    rm -f "$root/.budgetops-write-probe"
    echo "the image's root is still writable" >&2
    exit 99
fi
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
exec chroot --userspec="$userspec" "$root" "$@"
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def run_in_image(image: Image, rootfs: Path) -> Any:
    """Run argv in the image as its USER, on its read-only root, with its ENV only."""
    user = image.config.get("User") or "0"
    uid, _, gid = user.partition(":")
    if not gid:
        gid = uid
        for line in (rootfs / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and uid in (fields[0], fields[2]):
                gid = fields[3]
    _tool("chroot")
    enter = [_tool("unshare"), "--mount", "--pid", "--fork", "--propagation", "private"]
    enter += [_tool("sh"), "-c", _ENTER, "enter", str(rootfs), f"{uid}:{gid}"]

    def run(*argv: str, timeout: float = 120) -> Run:
        done = subprocess.run(
            [*enter, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=image.env,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run

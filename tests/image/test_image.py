"""The container image as a kubelet would run it: the entrypoint, as uid 65532, on a
read-only root (the chart's readOnlyRootFilesystem), with nothing of the build left in it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

from .conftest import Image

VENV = Path("opt/budgetops")
MAX_SIZE = 450_000_000
"""Bytes; the image is about 310 MB, most of it the kubernetes client (docs/image.md)."""
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as", "cpp")
BUILD_PACKAGES = re.compile(
    r"^(build-essential|gcc(-\d+)?|g\+\+(-\d+)?|cpp(-\d+)?|binutils|make|libc6-dev|"
    r"python3(\.\d+)?-dev|python3-pip)$"
)


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def debian_packages(rootfs: Path) -> list[str]:
    """The packages dpkg has installed in the image (none on a base without dpkg)."""
    status = rootfs / "var" / "lib" / "dpkg" / "status"
    if not status.exists():
        return []
    names = []
    for stanza in status.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Status", "").endswith(" installed"):
            names.append(fields["Package"])
    return names


def test_config_runs_budgetops_as_non_root(image: Image) -> None:
    assert image.config.get("User") == "65532"
    assert image.config.get("Entrypoint") == ["budgetops"]
    assert image.config.get("Cmd") == ["run"]
    assert image.env["PATH"].split(":")[0] == f"/{VENV}/bin"


def test_entrypoint_answers_as_non_root_on_read_only_root(image: Image, run_in_image: Any) -> None:
    whoami = run_in_image("id", "-u")
    assert (whoami.returncode, whoami.stdout.strip()) == (0, "65532"), whoami.stderr
    done = run_in_image(*image.config["Entrypoint"], "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: budgetops"), done.stdout
    assert re.search(r"[{,]run[,}]", done.stdout), done.stdout


def test_version(image: Image, run_in_image: Any) -> None:
    done = run_in_image(*image.config["Entrypoint"], "--version")
    assert done.returncode == 0, done.stderr
    assert project_version() in done.stdout + done.stderr


def test_every_module_imports_and_crds_render(image: Image, run_in_image: Any) -> None:
    """What `budgetops run` and the other verbs import is in the image, and loads from
    read-only files (the bytecode was compiled at build time)."""
    walk = (
        "import importlib, pkgutil, sys, budgetops\n"
        "assert sys.version_info[:2] == (3, 11), sys.version\n"
        "names = [m.name for m in pkgutil.walk_packages(budgetops.__path__, 'budgetops.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "import kopf, kubernetes, aiohttp, cryptography, pydantic, jwt, prometheus_client, yaml\n"
        "print(len(names))\n"
    )
    done = run_in_image(f"/{VENV}/bin/python", "-c", walk)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10
    crds = run_in_image(*image.config["Entrypoint"], "crds")
    assert crds.returncode == 0, crds.stderr
    assert "kind: CustomResourceDefinition" in crds.stdout


def test_nothing_of_the_build_is_left(rootfs: Path) -> None:
    for folder in ("usr/bin", "usr/local/bin", "usr/sbin", f"{VENV}/bin"):
        found = [name for name in COMPILERS if (rootfs / folder / name).exists()]
        assert not found, f"/{folder}: {found}"
    assert not [name for name in debian_packages(rootfs) if BUILD_PACKAGES.match(name)]
    assert not (rootfs / "root" / ".cache" / "pip").exists()
    assert not list(rootfs.glob("home/*/.cache/pip"))
    site = next((rootfs / VENV / "lib").glob("python3*/site-packages"))
    assert not [p.name for p in site.iterdir() if re.match(r"(pip|setuptools|wheel)\b", p.name)]
    assert not (rootfs / VENV / "bin" / "pip").exists()
    assert (site / "budgetops" / "__pycache__").is_dir()
    assert not (rootfs / "src").exists()
    assert not [str(p) for p in (rootfs / "tmp").rglob("*")]
    assert not [str(p) for p in (rootfs / "opt").rglob("*.whl")]
    secrets = rootfs / "run" / "secrets"
    assert not (secrets.exists() and any(secrets.iterdir()))


def test_size_is_reported(image: Image, capsys: pytest.CaptureFixture[str]) -> None:
    size = int(image.inspect["Size"])
    steps = "\n".join(
        line for line in image.build_output.splitlines() if line.startswith(("==>", "    ("))
    )
    with capsys.disabled():
        print(
            f"\nimage {image.id[:12]}: {size / 1e6:.0f} MB; "
            f"hack/image.sh took {image.build_seconds:.0f} s this session:\n{steps}"
        )
    assert size < MAX_SIZE

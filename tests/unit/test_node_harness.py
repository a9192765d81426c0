"""hack/node.py's pure parts: how an image name is spelled for kubelet, and the pause image."""

from __future__ import annotations

import importlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
node = importlib.import_module("node")


@pytest.mark.parametrize(
    ("given", "kubelet"),
    [
        ("budgetops:test", "docker.io/library/budgetops:test"),
        ("budgetops", "docker.io/library/budgetops:latest"),
        ("team/budgetops:1", "docker.io/team/budgetops:1"),
        ("localhost/budgetops:test", "localhost/budgetops:test"),
        ("registry.local:5000/budgetops", "registry.local:5000/budgetops:latest"),
        ("budgetops.local/pause:1", "budgetops.local/pause:1"),
        ("budgetops@sha256:" + "0" * 64, "docker.io/library/budgetops@sha256:" + "0" * 64),
    ],
)
def test_image_names_are_spelled_as_kubelet_spells_them(given: str, kubelet: str) -> None:
    assert node.normalized(given) == kubelet


def _read(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    assert member is not None
    return member.read()


def test_the_pause_archive_is_one_layer_holding_the_binary(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    binary.chmod(0o755)
    with tarfile.open(fileobj=io.BytesIO(node._pause_archive(binary))) as archive:
        (manifest,) = json.loads(_read(archive, "manifest.json"))
        config = json.loads(_read(archive, manifest["Config"]))
        layer = _read(archive, "layer.tar")
    with tarfile.open(fileobj=io.BytesIO(layer)) as files:
        (entry,) = files.getmembers()
        assert (entry.name, entry.mode & 0o111, _read(files, "pause")) == (
            "pause",
            0o111,
            b"\x7fELF not really",
        )
    assert manifest["RepoTags"] == [node.PAUSE_IMAGE]
    assert config["config"]["Entrypoint"] == ["/pause"]

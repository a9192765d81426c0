"""Kubeconfigs for tests of what a command does when its cluster cannot be used."""

from __future__ import annotations

from pathlib import Path

import yaml


def unreachable(folder: Path) -> Path:
    """A kubeconfig whose API server is a closed loopback port: nothing ever answers."""
    path = folder / "unreachable-kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path

"""Kubeconfigs for tests of what a command does when its cluster cannot be used."""

from __future__ import annotations

from pathlib import Path

import yaml


def pointing_at(path: Path, server: str, *, token: str = "t", ca_file: Path | None = None) -> Path:
    """Write at `path` a kubeconfig for `server` with a bearer `token` (and the CA that
    signed the server's certificate, when given); returns `path`."""
    cluster: dict[str, str] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def unreachable(folder: Path) -> Path:
    """A kubeconfig whose API server is a closed loopback port: nothing ever answers."""
    return pointing_at(folder / "unreachable-kubeconfig", "https://127.0.0.1:1")

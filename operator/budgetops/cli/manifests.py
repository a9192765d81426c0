"""Reading budget manifests from YAML files and folders, as `kubectl apply -f` would."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from budgetops.apis.resources import Budget, ManifestError, parse_manifests

SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(path: Path) -> list[Path]:
    """The file itself, or the YAML/JSON files in a folder (not below it, as kubectl)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if not path.exists():
        raise ManifestError(str(path), ["no such file or folder"])
    return [path]


def documents(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every non-empty YAML document, named `file#index` for error messages."""
    for file in manifest_files(path):
        try:
            loaded = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except yaml.YAMLError as error:
            raise ManifestError(str(file), [f"not valid YAML: {error}"]) from error
        for index, document in enumerate(loaded):
            if document is None:
                continue
            source = f"{file}#{index}" if len(loaded) > 1 else str(file)
            if not isinstance(document, dict):
                raise ManifestError(source, ["a manifest must be a mapping"])
            yield source, document


def load(paths: list[Path]) -> list[Budget]:
    """Every budget in `paths`; all field errors are collected before failing."""
    found = [doc for path in paths for doc in documents(path)]
    return parse_manifests(found)

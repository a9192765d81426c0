"""The tier table from a file: `--tiers FILE` or `$BUDGETOPS_TIERS`, in a cluster the chart's
ConfigMap mounted into the operator's pod; for `kubectl budget`, that ConfigMap read through the
API server (`from_cluster`).

Read once at start, where a bad file stops the command with the reason; then, for `serve` and
`run`, looked at again every two seconds, so an edited ConfigMap (which the kubelet swaps into
the pod within a minute or so) applies without a restart. A bad edit keeps the table in force
and says why in the log: windows go on opening with the last good table.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from budgetops.adapters.yamltext import NoAliasLoader
from budgetops.apis import tiers
from budgetops.apis.resources import field_errors
from budgetops.apis.tiers import TierTable

MAX_BYTES = 64 * 1024
"""A tier table is a hundred short rows at most; anything longer is not one."""
TABLE_LABEL = "budgetops.dev/tier-table"
"""The label of the chart's tier table ConfigMap, by which `kubectl budget` finds it."""
TABLE_KEY = "tiers.yaml"
LOOK_EVERY = 2.0
"""Seconds between looks at the file for a change."""

log = logging.getLogger("budgetops.tiers")


def load(path: Path) -> TierTable:
    """The table in `path` (YAML or JSON); ValueError naming the file and every field wrong."""
    with path.open("rb") as file:
        return parse(file.read(MAX_BYTES + 1), where=str(path))


def parse(raw: bytes, *, where: str) -> TierTable:
    """A table's text, from a file or a ConfigMap named `where` in the errors."""
    if len(raw) > MAX_BYTES:
        raise ValueError(f"tier table {where}: longer than {MAX_BYTES} bytes")
    try:
        document = yaml.load(raw, Loader=NoAliasLoader)
    except (yaml.YAMLError, RecursionError) as error:
        raise ValueError(f"tier table {where}: not YAML: {error}") from None
    try:
        return TierTable.model_validate(document)
    except ValidationError as error:
        raise ValueError(f"tier table {where}: {'; '.join(field_errors(error))}") from None


def from_cluster(api: Any, namespace: str) -> TierTable | None:
    """The chart's table, found by its label in the operator's `namespace`; None when there
    is none (a cluster without the chart's table uses the built-in one). Raises ValueError
    when it cannot be read or does not validate: the caller says so and goes on."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        found = client.CoreV1Api(api).list_namespaced_config_map(
            namespace, label_selector=f"{TABLE_LABEL}=true", _request_timeout=5
        )
    except ApiException as error:
        raise ValueError(
            f"cannot list ConfigMaps in {namespace} to find the tier table ({error.status} "
            f"{error.reason})"
        ) from None
    if not found.items:
        return None
    names = [str(item.metadata.name if item.metadata else "") for item in found.items]
    if len(names) > 1:
        raise ValueError(f"more than one tier table in {namespace}: {', '.join(sorted(names))}")
    [table] = found.items
    where = f"ConfigMap {namespace}/{names[0]}"
    text = (table.data or {}).get(TABLE_KEY)
    if text is None:
        raise ValueError(f"tier table {where}: no key {TABLE_KEY}")
    return parse(text.encode(), where=where)


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when the file does; a mounted ConfigMap is a symlink swapped whole."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class TierFile:
    """A tier table file in use: `refresh` applies it again when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = _stamp(path)
        tiers.use(load(path))

    def refresh(self) -> bool:
        """Apply the file if it changed since the last look; whether a new table applies. A
        file that is gone or invalid keeps the table in force, and is logged."""
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            tiers.use(load(self.path))
        except (OSError, ValueError) as error:
            log.error("kept the tier table in force: %s", error)
            return False
        log.info("tier table %s applied: tiers %s", self.path, tiers.active().numbers())
        return True

    def watch(self, every: float = LOOK_EVERY) -> threading.Thread:
        """Look for changes every `every` seconds, on a daemon thread, for the process' life."""

        def looking() -> None:
            while True:
                time.sleep(every)
                self.refresh()

        thread = threading.Thread(target=looking, name="tier-table", daemon=True)
        thread.start()
        return thread

"""YAML read with bounds: what BudgetOps reads from files people write (manifests, the tier
table) is parsed by these loaders, never by a bare `yaml.safe_load`."""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64
"""Nesting a document may have; a budget needs a dozen levels at most. PyYAML composes
nodes recursively, so a document nested thousands deep would exhaust Python's stack."""


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                message = f"nested more than {MAX_DEPTH} levels deep"
                raise yaml.composer.ComposerError(None, None, message, mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class NoAliasLoader(BoundedLoader):
    """BoundedLoader that also refuses aliases (`*name`): a few KB of them can expand to
    gigabytes. For configuration read by a server, where no one needs them."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)

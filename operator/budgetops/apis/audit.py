"""The head of a budget's audit chain, as kept in its status.

Every ledger movement and decision becomes one audit record, hash-chained to the one before
it. The head (the last record's sequence number and hash, and the last signed checkpoint) is
written in the same compare-and-swap as the movements themselves, so records from any
replica form one chain per budget in the order the API server accepted them, and a record
that was lost or forged after the fact shows against the head.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from budgetops.apis.common import Model, Timestamp

HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
GENESIS = "sha256:" + "0" * 64
"""The `prev` of a chain's first record."""

Hash = Annotated[str, StringConstraints(pattern=HASH_PATTERN)]


class AuditHead(Model):
    """Where a budget's audit chain ends, and where it was last signed."""

    seq: int = Field(default=0, ge=0, description="Records in the chain so far")
    hash: Hash = Field(default=GENESIS, description="Hash of the last record")
    checkpoint_seq: int = Field(default=0, ge=0, description="Seq of the last signed checkpoint")
    checkpoint_at: Timestamp | None = None

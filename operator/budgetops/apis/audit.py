"""The head of a budget's audit chain, as kept in its status.

Every ledger movement and decision becomes one audit record, hash-chained to the one before
it. The head (the last record's sequence number and hash, the checkpoints so far, and a
signature over all of it) is written in the same compare-and-swap as the movements
themselves, so records from any replica form one chain per budget in the order the API
server accepted them, and a record that was lost or forged after the fact shows against the
head. The head is signed whenever it moves: whoever may write the status but cannot read the
signing key cannot move it to a rewritten chain.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from budgetops.apis.common import Model, Timestamp

HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
GENESIS = "sha256:" + "0" * 64
"""The `prev` of a chain's first record."""

Hash = Annotated[str, StringConstraints(pattern=HASH_PATTERN)]


class HeadSignature(Model):
    """A signature over the head (see `engine.audit.head_payload`), by the key of `keyid`."""

    keyid: Hash = Field(description="The signing key's id (sha256 of its public key)")
    sig: str = Field(
        pattern=r"^[A-Za-z0-9+/]*={0,2}$",
        max_length=256,
        description="The DSSE signature over the head, base64",
    )


class AuditHead(Model):
    """Where a budget's audit chain ends, where it was last checkpointed, and its signature."""

    seq: int = Field(default=0, ge=0, description="Records in the chain so far")
    hash: Hash = Field(default=GENESIS, description="Hash of the last record")
    checkpoint_seq: int = Field(default=0, ge=0, description="Seq of the last signed checkpoint")
    checkpoint_at: Timestamp | None = None
    checkpoints: int = Field(default=0, ge=0, description="Checkpoint records in the chain")
    signature: HeadSignature | None = Field(
        default=None, description="Signature over this head, made whenever it moves"
    )

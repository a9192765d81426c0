"""Provider keys sealed for one lease: AES-256-GCM under a key derived from the agent token.

`AES256:{iv}:{ciphertext}:{tag}`, each part standard base64; the key is HKDF-SHA256 of the
identity token with a per-handshake salt, and the lease id is the associated data, so a
sealed key opens only with that token, that salt and that lease.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"budgetops.dev/provider-key/v1"
SALT_BYTES = 16
IV_BYTES = 12
TAG_BYTES = 16
PREFIX = "AES256"


class SealError(ValueError):
    """The sealed text cannot be opened; the message says why."""


@dataclass(frozen=True)
class Sealed:
    text: str  # "AES256:{iv_b64}:{ciphertext_b64}:{tag_b64}", standard base64
    salt: bytes

    @property
    def salt_b64(self) -> str:
        return base64.b64encode(self.salt).decode()


def derive_key(identity_token: str, salt: bytes) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO)
    return kdf.derive(identity_token.encode())


def seal(
    secret: str,
    *,
    identity_token: str,
    lease_id: str,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> Sealed:
    """Fresh salt and IV unless given (only tests give them)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    iv = os.urandom(IV_BYTES) if iv is None else iv
    if len(iv) != IV_BYTES:
        raise ValueError(f"the IV must be {IV_BYTES} bytes: open_sealed takes no other")
    sealed = AESGCM(derive_key(identity_token, salt)).encrypt(
        iv, secret.encode(), lease_id.encode()
    )
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    parts = (base64.b64encode(part).decode() for part in (iv, ciphertext, tag))
    return Sealed(":".join((PREFIX, *parts)), salt)


def open_sealed(text: str, *, identity_token: str, lease_id: str, salt: bytes) -> str:
    parts = text.split(":")
    if len(parts) != 4:
        raise SealError("a sealed key has four parts: AES256:{iv}:{ciphertext}:{tag}")
    if parts[0] != PREFIX:
        raise SealError(f"a sealed key starts with {PREFIX}:")
    try:
        iv, ciphertext, tag = (base64.b64decode(part, validate=True) for part in parts[1:])
    except (binascii.Error, ValueError):
        raise SealError("a part of the sealed key is not base64") from None
    if len(iv) != IV_BYTES:
        raise SealError(f"the IV is {len(iv)} bytes, not {IV_BYTES}")
    if len(tag) != TAG_BYTES:
        raise SealError(f"the tag is {len(tag)} bytes, not {TAG_BYTES}")
    try:
        aead = AESGCM(derive_key(identity_token, salt))
        associated = lease_id.encode()
    except UnicodeEncodeError:
        raise SealError("the identity token or the lease id is not UTF-8 text") from None
    try:
        plain = aead.decrypt(iv, ciphertext + tag, associated)
    except InvalidTag:
        raise SealError(
            "the sealed key does not open: the tag does not match "
            "(tampered, another lease, or another token)"
        ) from None
    try:
        return plain.decode()
    except UnicodeDecodeError:
        raise SealError("the sealed key is not UTF-8 text") from None

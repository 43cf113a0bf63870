"""Opaque ids: internal row numbers (global sequences) shown to a tenant as a keyed permutation,
so that an id says nothing about how many rows other tenants have.

A 4-round Feistel network over 52 bits (two 26-bit halves), each round a keyed BLAKE2b of the
half, the kind of id and the round: a bijection of [0, 2^52) per kind, keyed from the token
secret. Shown values are 1 to 2^52: integers, as the API published them, and exact in a
JavaScript number (2^53).
Decoding any integer in that range gives some internal number: a forged cursor reads only the
caller's own rows (every query is also filtered by tenant)."""

from __future__ import annotations

import hashlib

_HALF = 26
_MASK = (1 << _HALF) - 1
_ROUNDS = 4
DOMAIN = 1 << (2 * _HALF)  # internal numbers 0 .. 2^52 - 1; shown 1 .. 2^52


class IdCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the id key must be at least 16 bytes")
        self._key = hashlib.sha256(b"ec-opaque-ids-v1" + key).digest()

    @classmethod
    def from_secret(cls, secret: str) -> IdCipher:
        return cls(secret.encode())

    def _round(self, kind: str, i: int, half: int) -> int:
        digest = hashlib.blake2b(f"{kind}:{i}:{half}".encode(), key=self._key,
                                 digest_size=4).digest()
        return int.from_bytes(digest, "big") & _MASK

    def encode(self, kind: str, number: int) -> int:
        """The id shown for internal ``number`` (0 <= number < 2^52) of this ``kind``."""
        if not 0 <= number < DOMAIN:
            raise ValueError("number out of range")
        left, right = number >> _HALF, number & _MASK
        for i in range(_ROUNDS):
            left, right = right, left ^ self._round(kind, i, right)
        return ((left << _HALF) | right) + 1

    def decode(self, kind: str, shown: int) -> int | None:
        """The internal number behind ``shown``; None outside 1 .. 2^52 (no id is)."""
        if not 1 <= shown <= DOMAIN:
            return None
        value = shown - 1
        left, right = value >> _HALF, value & _MASK
        for i in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(kind, i, left), left
        return (left << _HALF) | right

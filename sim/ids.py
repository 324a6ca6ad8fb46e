"""Deterministic randomness and provider ids.

Python's `hash()` of strings changes per process, so everything keyed by name goes
through blake2b salts and a splitmix64 mixer: the same seed gives the same bytes in any
process. Incident membership is a pure function of (seed, order, incident), so turning
one incident on never reshuffles the orders another one picks.
"""

from __future__ import annotations

import hashlib
import string
from functools import cache

MASK64 = (1 << 64) - 1
_TWO64 = float(1 << 64)
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
UPPER36 = string.digits + string.ascii_uppercase
_A = 6_364_136_223_846_793_003  # ends in 3: coprime with every 10**k, so idx -> number is 1:1


def splitmix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix(*parts: int) -> int:
    h = 0
    for p in parts:
        h = splitmix(h ^ (p & MASK64))
    return h


def salt(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def unit(*parts: int) -> float:
    """A uniform float in [0, 1) determined by its arguments."""
    return mix(*parts) / _TWO64


_TABLES: dict[str, bytes] = {}


def token(alphabet: str, n: int, *parts: int) -> str:
    """n characters of `alphabet` (ASCII), determined by parts: a keyed hash, byte-mapped."""
    table = _TABLES.get(alphabet)
    if table is None:
        table = _TABLES[alphabet] = bytes(ord(alphabet[b % len(alphabet)]) for b in range(256))
    key = ",".join(map(str, parts)).encode()
    return hashlib.blake2b(key, digest_size=n).digest().translate(table).decode("ascii")


@cache
def _offset(parts: tuple[int, ...]) -> int:
    return mix(*parts)


def digits(width: int, idx: int, *parts: int) -> str:
    """`width` decimal digits, distinct for distinct idx below 10**width (an affine bijection)."""
    return f"{(idx * _A + _offset(parts)) % 10**width:0{width}d}"


_T = salt("tracking")


def tracking_number(carrier: str, idx: int, seed: int) -> str:
    """A tracking number matching the carrier's pattern in ops/orderguard.yaml, unique per order."""
    if carrier == "sf":
        return "SF" + digits(13, idx, seed, _T, 1)  # SF + 13 digits (docs/providers-checked.md)
    if carrier == "zto":  # ^7[0-9]{11,14}$: most 15 long, some 12
        if (idx * 7 + _offset((seed, _T, 2))) % 10 < 3:
            return "7" + digits(11, idx, seed, _T, 3)
        return "7" + digits(14, idx, seed, _T, 4)
    if carrier == "yto":
        return "YT" + digits(10, idx, seed, _T, 5)
    if carrier == "jt":
        return "JT" + digits(13, idx, seed, _T, 6)
    if carrier == "dhl":
        return digits(10, idx, seed, _T, 7)
    if carrier == "ups":  # 1Z + shipper (6) + service (2) + package (8)
        return "1Z" + token(UPPER36, 6, seed, _T, 8) + "03" + digits(8, idx, seed, _T, 9)
    raise ValueError(f"unknown carrier {carrier!r}")


def uuid(*parts: int) -> str:
    """A version-4-shaped UUID determined by parts (WeChat Pay and AfterShip notification ids)."""
    h = token("0123456789abcdef", 32, *parts)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"

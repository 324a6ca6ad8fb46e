"""Byte bounds applied to values: cut text, excerpt raw bytes, refuse oversize input.

Pure helpers for `limits:` (schemas.config.Limits): the router, the normalizer, the
tracking index and the encoder use them so that no input makes a record Kafka refuses.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from schemas import errors
from schemas.event import DeadLetter

ELLIPSIS = "…"


def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (an ellipsis marks a cut)."""
    if len(text) * 4 <= max_bytes:  # fast path: no character is wider than 4 bytes
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", "ignore") + ELLIPSIS


def over(text: str, max_bytes: int) -> bool:
    """Whether `text` is longer than `max_bytes` of UTF-8."""
    if len(text) * 4 <= max_bytes:
        return False
    return len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes


def excerpt(raw: bytes, max_bytes: int) -> tuple[str, str, bool]:
    """(text, encoding, truncated): `raw` as UTF-8 text, else base64, at most `max_bytes`
    once written as a JSON string (escapes included: `"` doubles, a control byte is six)."""
    cut = raw[:max_bytes]
    text = _utf8(cut, cut=len(cut) < len(raw))
    # JSON writes a character in at most six bytes (\u001f): most inputs need no check
    if text is not None and (len(cut) * 6 <= max_bytes or len(orjson.dumps(text)) - 2 <= max_bytes):
        return text, "utf-8", len(cut) < len(raw)
    cut = raw[: max_bytes // 4 * 3]
    return base64.b64encode(cut).decode("ascii"), "base64", len(cut) < len(raw)


def _utf8(data: bytes, *, cut: bool) -> str | None:
    """`data` as text; a character cut in two at the end of a prefix is left out."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if cut and e.reason == "unexpected end of data":
            return data[: e.start].decode("utf-8")
        return None


def kept(raw: bytes, prefix: int) -> tuple[bytes, int | None, str | None]:
    """(bytes, size, SHA-256) to keep for a later dead letter: the prefix it embeds and
    the whole record's size and hash, or the record itself when it is no longer."""
    if len(raw) <= prefix:
        return raw, None, None
    return bytes(raw[:prefix]), len(raw), hashlib.sha256(raw).hexdigest()


def too_large(
    raw: bytes,
    limit: int,
    prefix: int,
    origin: dict[str, object],
    stream: str | None,
    seq: int,
) -> DeadLetter:
    """The dead letter of a record over `limits.input_record`: a prefix, size and hash."""
    return DeadLetter(
        reason=errors.TOO_LARGE,
        error=f"record of {len(raw)} bytes exceeds limits.input_record ({limit})",
        raw=bytes(raw[:prefix]),
        origin=origin,
        stream=stream,
        seq=seq,
        raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )

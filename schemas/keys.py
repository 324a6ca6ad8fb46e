"""The Kafka message key of an input envelope: its order id, else its tracking number.

The spec's rule for producers (the simulator's, the webhook gateway): one order's
events share a partition and keep their order. Consumers never rely on it. A notification
of several events (`each:`) is keyed by its first element's ids (or, in its flat form, by
the payload's own); a field still encoded (`decode:`) gives no key.
"""

from __future__ import annotations

import zlib
from typing import Any

from schemas.config import Settings
from schemas.normalize import _MISSING, _compile_path, _get
from schemas.paths import bind

DEFAULT_PARTITIONER = "consistent_random"
"""librdkafka's (so every confluent-kafka producer's) default `partitioner`; ours set none."""

CRC32_PARTITIONERS = ("consistent_random", "consistent")

KEY_FUNCTION = "schemas.keys.MessageKeys/1"
"""The key function's name and version, recorded in a recovery store's layout: bump the
version when `MessageKeys` picks a different key for the same payload, since one order's
events would then land on other partitions than the store's state expects."""


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's `consistent_random` picks for a non-empty key.

    `rd_crc32(key) % partition_cnt` (librdkafka src/rdkafka_msg.c,
    rd_kafka_msg_partitioner_consistent); rd_crc32 is zlib's CRC-32 (src/rdcrc32.h).
    """
    return zlib.crc32(key) % partitions


class MessageKeys:
    """Order id (else tracking number) from a payload, by the source registry's paths."""

    def __init__(self, settings: Settings) -> None:
        self._paths: dict[str, list[Any]] = {}
        for name, spec in settings.sources.items():
            compiled = []
            for s in (spec, *(spec.resolve(k) for k in spec.kinds)):
                for p in s.fields.order_id + s.fields.tracking_no:
                    compiled.append(_compile_path(p.replace("[*]", "[0]")))
                    level, tail = bind(p, s.each)
                    if level:  # the flat form: the payload is the one element
                        compiled.append(_compile_path(".".join(map(str, tail))))
            self._paths[name] = compiled

    def for_payload(self, source: str, payload: Any) -> bytes | None:
        if not isinstance(payload, dict):
            return None
        for path in self._paths.get(source, ()):
            value = _get(payload, path)
            if value is not _MISSING and value is not None and value != "":
                return str(value).encode()
        return None

    def key(self, envelope: dict[str, Any]) -> bytes | None:
        return self.for_payload(str(envelope.get("source")), envelope.get("payload"))

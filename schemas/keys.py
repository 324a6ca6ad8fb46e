"""The Kafka message key of an input envelope: its order id, else its tracking number.

The spec's rule for producers (the simulator's, the webhook gateway): one order's
events share a partition and keep their order. Consumers never rely on it.
"""

from __future__ import annotations

from typing import Any

from schemas.config import Settings
from schemas.normalize import _MISSING, _compile_path, _get


class MessageKeys:
    """Order id (else tracking number) from a payload, by the source registry's paths.

    A source with message kinds contributes every kind's paths, in the kinds' order; a
    path into a split list (`Body.WaybillRoute[*].mailno`) reads its first element. Text
    a source decodes first (J&T's `bizContent`) is not read here: such a payload may go
    without a key, which consumers never rely on.
    """

    def __init__(self, settings: Settings) -> None:
        self._paths: dict[str, list[Any]] = {}
        for name, spec in settings.sources.items():
            specs = [spec, *(spec.resolve(k) for k in spec.kinds)]
            paths = [p for s in specs for p in s.fields.order_id + s.fields.tracking_no]
            unique = dict.fromkeys(p.replace("[*]", ".0") for p in paths)
            self._paths[name] = [_compile_path(p) for p in unique]

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

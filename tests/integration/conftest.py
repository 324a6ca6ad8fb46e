"""One real Kafka-protocol broker (Tansu, memory storage) per test module on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b

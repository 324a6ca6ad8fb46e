"""One real Kafka-protocol broker (Tansu, memory storage) per test module on loopback,
and a private Redis for the modules that ask for one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.broker import EmbeddedBroker, free_port
from tests.helpers import PrivateRedis


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the module's own, for tests that stop it or must not share one."""
    server = PrivateRedis(free_port()).start()
    try:
        yield server
    finally:
        server.stop()

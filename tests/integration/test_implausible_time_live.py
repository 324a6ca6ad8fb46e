"""Implausible clocks, live: records stamped ahead of the wall clock freeze no breaker.

An envelope stamped 2099 and an operator command from a laptop a day ahead go to
Kafka before five failed carrier calls. `orderguard run` (real broker, real
subprocess, live wall clock) dead-letters both `implausible_time` and opens the
carrier breaker now; it is stopped after a snapshot that holds all of it and
restarted, and the breaker half-opens on time, `open_for` after it opened.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connectors.broker import ensure_topics
from connectors.kafka_envelopes import produce_envelopes
from schemas import errors
from schemas.timeparse import parse_rfc3339
from tests.helpers import settings_of
from tests.integration.test_live_clock import records, start, stop, wait_for
from tests.integration.test_operator_commands import produce_raw
from tests.integration.test_run_live import live_env
from tests.unit.test_implausible_time import FAR, call, command

OPEN_FOR_S = 30  # breakers.carrier.open_for: long enough that run 1 ends before it


def _decisions(bootstrap: str, topic: str) -> list[tuple[str, int]]:
    return [
        (d["state"], parse_rfc3339(d["at"]))
        for d in records(bootstrap, topic)
        if d["breaker"] == "carrier" and d["key"] == "sf"
    ]


def test_a_breaker_half_opens_on_time_after_a_future_record_and_a_restart(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    env["ORDERGUARD__BREAKERS__CARRIER__OPEN_FOR"] = f"{OPEN_FOR_S}s"
    settings = settings_of(env)
    kafka = settings.kafka
    ensure_topics(kafka.bootstrap_servers, kafka.topic_partitions())
    breakers = kafka.output_topics.breakers
    dead_letters = kafka.output_topics.dead_letters

    t0 = datetime.now(UTC)
    produce_raw(
        broker.bootstrap, kafka.control_topic, orjson.dumps(command(t0 + timedelta(days=1)))
    )
    calls: list[dict[str, Any]] = [call(FAR, True)]  # same carrier: same partition, first
    calls += [call(t0 + timedelta(milliseconds=i), False) for i in range(5)]
    assert produce_envelopes(settings, calls) == len(calls)

    def implausible() -> list[dict[str, Any]]:
        return [
            d
            for d in records(broker.bootstrap, dead_letters)
            if d["reason"] == errors.IMPLAUSIBLE_TIME
        ]

    proc = start(env)
    try:
        wait_for(
            proc, "the carrier breaker to open", lambda: _decisions(broker.bootstrap, breakers), 60
        )
        (state, opened), *_ = _decisions(broker.bootstrap, breakers)
        assert state == "OPEN"
        assert abs(opened - t0.timestamp() * 1000) < 60_000, f"opened at {opened}, not now"
        wait_for(proc, "two implausible_time dead letters", lambda: len(implausible()) == 2, 60)
        time.sleep(2.5)  # past a snapshot (interval 1 s) taken after both records
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _decisions(broker.bootstrap, breakers) == [("OPEN", opened)], (
        "half-opened before the restart: raise OPEN_FOR_S"
    )
    assert {d["source"] for d in implausible()} == {"carrier_api", "operator"}
    channel = [d for d in records(broker.bootstrap, breakers) if d["breaker"] == "channel"]
    assert not channel, "the day-ahead command was applied"

    proc = start(env)
    try:
        wait_for(
            proc,
            "the carrier breaker to half-open",
            lambda: len(_decisions(broker.bootstrap, breakers)) >= 2,
            OPEN_FOR_S + 60,
        )
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _decisions(broker.bootstrap, breakers)[:2] == [
        ("OPEN", opened),
        ("HALF_OPEN", opened + OPEN_FOR_S * 1000),
    ]
    assert len(implausible()) == 2  # the restart did not read them again as anything else

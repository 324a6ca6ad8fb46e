"""The demo's backlog goes to Kafka before its pipeline starts (`dataflows.demo`): the
envelopes split at the start of real time, in one pass."""

from __future__ import annotations

from connectors.kafka_envelopes import split_backlog

LIVE = 1_796_690_000_000  # 2026-12-08T00:33:20Z


def _env(i: int, at: str | None) -> dict:
    return {"stream": "orders", "n": i} | ({} if at is None else {"received_at": at})


def test_the_backlog_ends_at_the_first_envelope_of_real_time_and_the_rest_follows_it():
    envs = [
        _env(0, "2026-12-07T00:33:20Z"),
        _env(1, None),  # malformed: goes out with the backlog, as it would have
        _env(2, "2026-12-08T00:33:19.999Z"),
        _env(3, "2026-12-08T00:33:20Z"),  # the first of real time
        _env(4, "2026-12-08T00:34:00Z"),
        _env(5, "2026-12-08T00:35:00Z"),
    ]
    read: list[int] = []

    def source():
        for e in envs:
            read.append(e["n"])
            yield e

    backlog, live = split_backlog(source(), LIVE)
    assert [e["n"] for e in backlog] == [0, 1, 2]
    assert read == [0, 1, 2, 3]  # one envelope of real time read, held for `live`
    assert [e["n"] for e in live] == [3, 4, 5]


def test_all_backlog_or_all_live():
    past = [_env(i, "2026-12-07T00:00:00Z") for i in range(3)]
    backlog, live = split_backlog(past, LIVE)
    assert (len(list(backlog)), list(live)) == (3, [])
    future = [_env(i, "2026-12-09T00:00:00Z") for i in range(3)]
    backlog, live = split_backlog(future, LIVE)
    assert (list(backlog), len(list(live))) == ([], 3)

"""The Redis view's buffer: coalescing, its bound, and putting back what Redis did not take."""

from __future__ import annotations

from connectors.redis_view import CLAIM_REF, ViewBuffer, commands
from state.view import ViewUpdate


def at_zero(max_keys: int, timeline_max: int) -> ViewBuffer:
    """A buffer whose clock reads 0: each expiry instant it holds reads as its ttl."""
    return ViewBuffer(max_keys, timeline_max, now_ms=lambda: 0)


def orders(*docs: tuple[str, bytes], ttl: int = 1000) -> ViewUpdate:
    return ViewUpdate(orders=[(oid, doc, ttl) for oid, doc in docs])


def drain(buffer: ViewBuffer) -> dict:
    return dict(buffer.take(len(buffer) + 1))


def test_the_latest_value_per_key_wins_and_timelines_accumulate():
    buffer = at_zero(max_keys=100, timeline_max=10)
    buffer.add(
        ViewUpdate(
            orders=[("A", b"a1", 1000)],
            timeline=[("A", 5, b"e1")],
            breakers=[("channel", "taobao", b"open")],
            holds=[("C1", b"held", 500)],
        )
    )
    buffer.add(
        ViewUpdate(
            orders=[("A", b"a2", 2000)],
            timeline=[("A", 3, b"e0"), ("A", 5, b"e1")],
            breakers=[("channel", "taobao", b"closed")],
            holds=[("C1", None, 0)],
        )
    )
    assert len(buffer) == 4
    assert drain(buffer) == {
        ("order", "A"): (b"a2", 2000),
        ("timeline", "A"): ({b"e1": 5, b"e0": 3}, 2000),
        ("breaker", "channel", "taobao"): b"closed",
        ("hold", "C1"): (None, 0),
    }
    assert len(buffer) == 0 and buffer.dropped == 0


def test_a_timeline_keeps_only_its_newest_entries():
    buffer = at_zero(max_keys=100, timeline_max=3)
    for t in range(6):
        buffer.add(ViewUpdate(orders=[("A", b"a", 1)], timeline=[("A", t, b"e%d" % t)]))
    assert drain(buffer)[("timeline", "A")][0] == {b"e3": 3, b"e4": 4, b"e5": 5}


def test_a_full_buffer_drops_the_least_recently_updated_keys_and_counts_them():
    buffer = at_zero(max_keys=3, timeline_max=10)
    assert buffer.add(orders(("A", b"a"), ("B", b"b"), ("C", b"c"))) == 0
    assert buffer.add(orders(("A", b"a2"))) == 0  # A is now the newest
    assert buffer.add(orders(("D", b"d"), ("E", b"e"))) == 2
    assert buffer.dropped == 2
    assert list(drain(buffer)) == [("order", "A"), ("order", "D"), ("order", "E")]


def test_taking_is_oldest_first_and_bounded():
    buffer = at_zero(max_keys=100, timeline_max=10)
    buffer.add(orders(("A", b"a"), ("B", b"b"), ("C", b"c")))
    assert [k for k, _ in buffer.take(2)] == [("order", "A"), ("order", "B")]
    assert [k for k, _ in buffer.take(2)] == [("order", "C")]
    assert buffer.take(2) == []


def test_put_back_after_a_failure_keeps_newer_values_and_merges_timelines():
    buffer = at_zero(max_keys=100, timeline_max=10)
    buffer.add(
        ViewUpdate(
            orders=[("A", b"old", 1000), ("B", b"b", 1000)],
            timeline=[("A", 1, b"e1")],
            holds=[("C1", b"held", 500)],
        )
    )
    taken = buffer.take(10)
    # while the writer failed, newer updates came in
    buffer.add(
        ViewUpdate(
            orders=[("A", b"new", 3000)], timeline=[("A", 2, b"e2")], holds=[("C1", None, 0)]
        )
    )
    assert buffer.put_back(taken) == 0
    got = drain(buffer)
    assert got[("order", "A")] == (b"new", 3000)
    assert got[("order", "B")] == (b"b", 1000)  # nothing newer: the failed value again
    assert got[("timeline", "A")] == ({b"e1": 1, b"e2": 2}, 3000)
    assert got[("hold", "C1")] == (None, 0)  # a release after the hold wins


def test_put_back_goes_first_and_is_dropped_first_when_full():
    buffer = at_zero(max_keys=2, timeline_max=10)
    buffer.add(orders(("A", b"a")))
    taken = buffer.take(1)
    buffer.add(orders(("B", b"b"), ("C", b"c")))
    assert buffer.put_back(taken) == 1
    assert list(drain(buffer)) == [("order", "B"), ("order", "C")]
    buffer.add(orders(("D", b"d")))
    taken = buffer.take(1)
    buffer.add(orders(("E", b"e")))
    buffer.put_back(taken)
    assert list(drain(buffer)) == [("order", "D"), ("order", "E")]  # retried before newer keys


def test_a_forgotten_order_replaces_its_doc_and_pending_timeline_with_a_delete():
    buffer = at_zero(max_keys=100, timeline_max=10)
    buffer.add(ViewUpdate(orders=[("A", b"a", 1000)], timeline=[("A", 1, b"e1")]))
    buffer.add(ViewUpdate(forgotten=["A"]))
    assert drain(buffer) == {("order", "A"): (None, 0)}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args, **kw: self.calls.append((name, args, kw))


def test_each_entry_becomes_idempotent_commands_under_the_prefix():
    pipe = Recorder()
    commands(pipe, "og:", 50, ("order", "A"), (b"doc", 1000))
    commands(pipe, "og:", 50, ("order", "B"), (None, 0))
    commands(pipe, "og:", 50, ("timeline", "A"), ({b"e1": 5}, 1000))
    commands(pipe, "og:", 50, ("breaker", "carrier", "jt"), b"open")
    commands(pipe, "og:", 50, ("hold", "C1"), (b"held", 500))
    commands(pipe, "og:", 50, ("hold", "C2"), (None, 0))
    commands(pipe, "og:", 50, ("hold", "C3"), (b"held", 0))
    commands(pipe, "og:", 50, ("alias", "taobao:34567"), ("A", 1000))
    assert pipe.calls == [
        ("set", ("og:order:A", b"doc"), {"pxat": 1000}),
        ("delete", ("og:order:B", "og:order:B:timeline"), {}),
        ("zadd", ("og:order:A:timeline", {b"e1": 5}), {}),
        ("zremrangebyrank", ("og:order:A:timeline", 0, -51), {}),
        ("pexpireat", ("og:order:A:timeline", 1000), {}),
        ("hset", ("og:breaker:carrier", "jt", b"open"), {}),
        ("set", ("og:hold:C1", b"held"), {"pxat": 500}),
        ("delete", ("og:hold:C2",), {}),
        ("set", ("og:hold:C3", b"held"), {"pxat": None}),
        ("eval", (CLAIM_REF, 1, "og:ref:taobao:34567", "A", 1000), {}),
    ]


def test_a_pending_alias_is_not_handed_to_another_order():
    """The first link wins in the index; the view's buffer keeps the first claim as well."""
    buffer = at_zero(max_keys=100, timeline_max=10)
    buffer.add(ViewUpdate(aliases=[("taobao:1", "A", 1000), ("taobao:1", "B", 2000)]))
    buffer.add(ViewUpdate(aliases=[("taobao:1", "A", 3000), ("tracking:SF1", "B", 2000)]))
    assert drain(buffer) == {
        ("alias", "taobao:1"): ("A", 3000),
        ("alias", "tracking:SF1"): ("B", 2000),
    }


def test_a_time_to_live_becomes_one_expiry_instant_when_the_update_is_added():
    """Every key of an update expires at the instant its ttl ends, counted from when the
    update was added, not from when each command reaches Redis."""
    clock = iter([1_000_000, 5_000_000])
    buffer = ViewBuffer(max_keys=100, timeline_max=10, now_ms=lambda: next(clock))
    buffer.add(
        ViewUpdate(
            orders=[("A", b"a", 3_000)],
            aliases=[("taobao:1", "A", 3_000)],
            timeline=[("A", 1, b"e1")],
            holds=[("C1", b"held", 500), ("C2", b"held", 0)],
        )
    )
    buffer.add(ViewUpdate(timeline=[("B", 2, b"e2")]))  # no doc of B in it: it expires soon
    assert drain(buffer) == {
        ("order", "A"): (b"a", 1_003_000),
        ("alias", "taobao:1"): ("A", 1_003_000),
        ("timeline", "A"): ({b"e1": 1}, 1_003_000),
        ("hold", "C1"): (b"held", 1_000_500),
        ("hold", "C2"): (b"held", 0),  # no expiry known: none
        ("timeline", "B"): ({b"e2": 2}, 5_000_001),
    }

"""The Redis order view against what the pipeline wrote to Kafka, and `orderguard lookup`.

A real broker (Tansu) and a real Redis (`LocalRedis`: the machine's, or one started
here). Simulated traffic with incidents is produced, `orderguard run` reads it to its
end with the view on (a key prefix of its own: the Redis may be shared), and the view
is compared with the output topics, which are the pipeline's record of truth.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from connectors.broker import ensure_topics, free_port
from connectors.kafka_envelopes import produce_envelopes
from connectors.redis_server import LocalRedis
from schemas.timeparse import iso
from sim import generate
from tests.helpers import settings_of
from tests.integration.test_run_live import live_env, ok, orderguard, read_topic

ORDERS = 200
INCIDENTS = frozenset(
    {"lost_payment_callback", "carrier_api_outage", "channel_error_storm", "delivery_not_reflected"}
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with LocalRedis() as local:
        yield local.url


def view_env(bootstrap: str, tmp_path: Any, url: str) -> dict[str, str]:
    env = live_env(bootstrap, tmp_path / "recovery")
    env["ORDERGUARD__REDIS__URL"] = url
    env["ORDERGUARD__REDIS__KEY_PREFIX"] = f"ogtest:{uuid.uuid4().hex[:8]}:"
    return env


def drop_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


def docs(bootstrap: str, env: dict[str, str], output: str) -> list[dict[str, Any]]:
    topic = env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{output.upper()}"]
    return [orjson.loads(v) for _, v in read_topic(bootstrap, topic)]


def test_the_view_says_what_the_output_topics_say_and_lookup_shows_it(broker, tmp_path, redis_url):
    env = view_env(broker.bootstrap, tmp_path, redis_url)
    env["ORDERGUARD__BREAKERS__CUSTOMER__EXPIRES_AFTER"] = "30d"  # still held at the end
    prefix = env["ORDERGUARD__REDIS__KEY_PREFIX"]
    settings = settings_of(env)
    ensure_topics(broker.bootstrap, settings.kafka.topic_partitions())
    envelopes = generate(
        orders=ORDERS,
        seed=11,
        start=datetime(2026, 3, 2, tzinfo=UTC),
        incidents=INCIDENTS,
        open_share=0.3,  # lives cut short: open orders, stuck past their deadlines at the end
    )
    produce_envelopes(settings, envelopes)
    client = redis.Redis.from_url(redis_url)
    try:
        ok(orderguard(env, "run", "--exit-when-caught-up"))

        # what the topics say: each order's last correction, its open alerts, and
        # each breaker's and customer's last decision
        last: dict[str, dict[str, Any]] = {}
        for c in docs(broker.bootstrap, env, "corrected"):
            if c["version"] >= last.get(c["order_id"], {}).get("version", 0):
                last[c["order_id"]] = c
        firing: dict[str, dict[str, str]] = {}
        for a in docs(broker.bootstrap, env, "alerts"):
            if "order_id" not in a or "source" in a:
                continue
            if a["state"] == "firing":
                firing.setdefault(a["order_id"], {})[a["alert_id"]] = a["type"]
            else:
                firing.get(a["order_id"], {}).pop(a["alert_id"], None)
        decisions: dict[tuple[str, str], dict[str, Any]] = {}
        for d in docs(broker.bootstrap, env, "breakers"):
            decisions[d["breaker"], d["key"]] = d
        assert len(last) > 0.9 * ORDERS and decisions  # a real comparison

        # every order the view holds: status and version as its last correction (which
        # is only emitted on a change of status), open alerts as the alerts topic's. The
        # run's last batch moves the clock days ahead (its input ends days after most
        # orders completed): the orders that then leave state are deleted from the view.
        pipe = client.pipeline(transaction=False)
        for oid in last:
            pipe.get(f"{prefix}order:{oid}")
        views = {oid: orjson.loads(v) for oid, v in zip(last, pipe.execute(), strict=True) if v}
        assert len(views) > 0.3 * len(last), (len(views), len(last))
        with_alerts = 0
        for oid, v in views.items():
            c = last[oid]
            assert (v["status"], v["standard_status"]) == (c["status"], c["standard_status"]), oid
            assert v["version"] == c["version"], oid
            assert v["mismatch"] == (v["reported_status"] not in (None, v["status"])), oid
            want = sorted(firing.get(oid, {}).values())
            assert sorted(a["type"] for a in v["open_alerts"]) == want, oid
            with_alerts += bool(want)
        assert with_alerts >= 5, "too few orders with open alerts to compare"

        # timelines: each correction's evidence is on its order's timeline, in event order
        timelines = 0
        for oid in list(views)[:50]:
            c = last[oid]
            members = client.zrange(f"{prefix}order:{oid}:timeline", 0, -1, withscores=True)
            events = [orjson.loads(m) for m, _ in members]
            assert 0 < len(events) <= settings.redis.timeline_max
            assert [s for _, s in members] == sorted(s for _, s in members)
            ids = {(e["source"], e["event_id"]) for e in events}
            if len(events) < settings.redis.timeline_max:
                for ev in c["evidence"]:
                    assert (ev["source"], ev["event_id"]) in ids, (oid, ev)
                timelines += 1
            assert client.pttl(f"{prefix}order:{oid}:timeline") > 0
            assert client.pttl(f"{prefix}order:{oid}") > 0
        assert timelines >= 40

        # breakers: one HGET per key gives the last decision; holds: a key while held
        held = 0
        for (kind, key), d in decisions.items():
            if kind == "customer":
                doc = client.get(f"{prefix}hold:{key}")
                if d["state"] == "HOLD":
                    f = d["figures"]
                    want = {"since": d["at"], "reason": d["reason"], "orders": [f["order_id"]]}
                    assert orjson.loads(doc or b"null") == want | {
                        "expires_at": iso(f["expires_at"])
                    }, key
                    assert client.pttl(f"{prefix}hold:{key}") > 0
                    held += 1
                else:
                    assert doc is None, key
                continue
            got = orjson.loads(client.hget(f"{prefix}breaker:{kind}", key) or b"null")
            want = {k: d[k] for k in ("state", "action", "reason")} | {"since": d["at"]}
            assert got == want, (kind, key)
        kinds = {k for k, _ in decisions}
        assert {"channel", "carrier", "customer"} <= kinds and held, (kinds, held)

        # lookup, as a person and as a machine
        oid = next(o for o in views if firing.get(o))
        started = time.monotonic()
        table = ok(orderguard(env, "lookup", oid))
        took = time.monotonic() - started
        lines = table.splitlines()
        assert lines[0].split() == ["order", oid]
        assert lines[1].split()[:2] == ["status", last[oid]["status"]]
        for typ in firing[oid].values():
            assert any(typ in line for line in lines if "since" in line), (typ, table)
        assert any(line.startswith("timeline (") for line in lines)
        as_json = orjson.loads(ok(orderguard(env, "lookup", oid, "--json")))
        assert {k: v for k, v in as_json.items() if k != "timeline"} == views[oid]
        assert len(as_json["timeline"]) == client.zcard(f"{prefix}order:{oid}:timeline")
        # and by any id it is known by: here a tracking number, bare and namespaced
        shipped = next(o for o, v in views.items() if v["tracking_numbers"])
        number = views[shipped]["tracking_numbers"][0]
        assert f"tracking:{number}" in views[shipped]["ids"]
        for name in (number, f"tracking:{number}"):
            found = orjson.loads(ok(orderguard(env, "lookup", name, "--json")))
            assert found["order_id"] == shipped, name
        print(f"\nlookup took {took * 1000:.0f} ms wall clock (subprocess) and {held} holds")
    finally:
        client.close()
        drop_keys(redis_url, prefix)


def test_lookup_says_clearly_what_is_wrong(tmp_path, redis_url):
    env = view_env("127.0.0.1:1", tmp_path, redis_url)
    unknown = orderguard(env, "lookup", "TB2026030299999")
    assert unknown.returncode == 1
    assert "order TB2026030299999 is not in the view (unknown id, or past its retention)" in (
        unknown.stderr
    )

    del env["ORDERGUARD__REDIS__URL"]
    unset = orderguard(env, "lookup", "TB2026030299999")
    assert unset.returncode == 1 and "redis.url" in unset.stderr

    port = free_port()
    env["ORDERGUARD__REDIS__URL"] = f"redis://:s3cret@127.0.0.1:{port}/0"
    away = orderguard(env, "lookup", "TB2026030299999")
    err = away.stderr.strip()
    assert away.returncode == 1 and len(err.splitlines()) == 1, err
    assert f"127.0.0.1:{port}" in err and "s3cret" not in err and "Traceback" not in err, err

    env["ORDERGUARD__REDIS__URL"] = "http://127.0.0.1:6379"
    bad = orderguard(env, "lookup", "TB2026030299999")
    assert bad.returncode == 1 and "redis.url" in bad.stderr and "redis://" in bad.stderr


def test_lookup_finds_an_order_by_a_channel_reference_and_a_tracking_number(tmp_path, redis_url):
    """The view's writer against a real Redis: every id of an order aliases it, first claim wins."""
    from connectors.redis_view import ViewBuffer, ViewWriter
    from schemas.config import Settings
    from state.shard import OrderShard
    from state.view import first_deliveries, orders_update
    from tests.helpers import T0, label, oms

    env = view_env("127.0.0.1:1", tmp_path, redis_url)
    prefix = env["ORDERGUARD__REDIS__KEY_PREFIX"]
    settings = settings_of(env)
    shard_settings = Settings(carriers={"sf": {"pattern": "^SF[0-9]{12}$"}})
    oid, other, tid = "TB2026030200001", "TB2026030200002", "taobao:3456789012345678"
    shard = OrderShard(shard_settings)
    events = [
        oms(oid, "PAID", T0, channel="taobao", links=(tid,)),
        label(oid, "SF123456789012", T0 + 60_000),
        oms(other, "PAID", T0 + 120_000, channel="taobao", links=(tid,)),  # a conflicting link
    ]
    fresh = first_deliveries(events, shard.orders)
    records = [r for kind, r in shard.process(events, T0 + 120_000) if kind != "signal"]
    update = orders_update(shard_settings, shard, fresh, records)
    writer = ViewWriter(settings.redis, ViewBuffer(1000, 50)).start()
    writer.buffer.add(update)
    writer.notify()
    writer.close()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(f"{prefix}ref:{tid}") == oid.encode()  # the first claim kept
        # expiry times, not remaining TTLs: two PTTLs read a millisecond apart differ
        ref_expires = client.pexpiretime(f"{prefix}ref:{tid}")
        assert 0 < ref_expires <= client.pexpiretime(f"{prefix}order:{oid}")
        for name in (oid, tid, "SF123456789012", "tracking:SF123456789012"):
            found = orjson.loads(ok(orderguard(env, "lookup", name, "--json")))
            assert found["order_id"] == oid, name
            assert found["ids"] == [tid, "tracking:SF123456789012"], name
            assert len(found["timeline"]) == 2, name
        table = ok(orderguard(env, "lookup", tid))
        assert table.splitlines()[0].split() == ["order", oid]
        missing = orderguard(env, "lookup", "douyin:3456789012345678")  # another namespace
        assert missing.returncode == 1 and "not in the view" in missing.stderr
    finally:
        client.close()
        drop_keys(redis_url, prefix)


def test_every_key_of_an_update_expires_at_one_instant_fixed_when_the_update_was_made(
    tmp_path, redis_url
):
    """An order's document, its alias, its timeline and a hold expire when the pipeline
    forgets them: an instant, known when the update is made. Written as a time to live,
    each key's clock started when its own command ran, so an alias could outlive its
    order by a millisecond, and everything waiting out a Redis outage lived that much
    longer."""
    from connectors.redis_view import ViewBuffer, ViewWriter
    from state.view import ViewUpdate

    env = view_env("127.0.0.1:1", tmp_path, redis_url)
    prefix = env["ORDERGUARD__REDIS__KEY_PREFIX"]
    settings = settings_of(env)
    oid, ref, ttl = "TB2026030200001", "taobao:3456789012345678", 600_000
    buffer = ViewBuffer(1000, 50)
    before = int(time.time() * 1000)
    buffer.add(
        ViewUpdate(
            orders=[(oid, b'{"status": "PAID"}', ttl)],
            aliases=[(ref, oid, ttl)],
            timeline=[(oid, 1, b"e1")],
            holds=[("C1", b'{"reason": "x"}', ttl)],
        )
    )
    after = int(time.time() * 1000)
    time.sleep(0.3)  # the writer gets to it later, as after a slow or returning Redis
    writer = ViewWriter(settings.redis, buffer).start()
    writer.notify()
    writer.close()
    client = redis.Redis.from_url(redis_url)
    try:
        names = (f"order:{oid}", f"ref:{ref}", f"order:{oid}:timeline", "hold:C1")
        expires = {name: client.pexpiretime(prefix + name) for name in names}
        assert len(set(expires.values())) == 1, expires
        assert before + ttl <= expires["order:" + oid] <= after + ttl, (before, after, expires)
    finally:
        client.close()
        drop_keys(redis_url, prefix)


def test_lookup_finds_a_channel_named_order_by_its_id_and_its_oms_id(tmp_path, redis_url):
    """A canonical id with a `:` (`canonical_id: channel`, README "Identity") is the
    order's own key; its OMS id, linked as `oms:<id>`, is found bare or namespaced."""
    from connectors.redis_view import ViewBuffer, ViewWriter
    from schemas.config import Settings
    from state.shard import OrderShard
    from state.view import first_deliveries, orders_update
    from tests.helpers import T0, oms

    env = view_env("127.0.0.1:1", tmp_path, redis_url)
    prefix = env["ORDERGUARD__REDIS__KEY_PREFIX"]
    settings = settings_of(env)
    shard_settings = Settings()
    oid, gid = "pinduoduo:261206-512345678901234", "PDD2026120600456"
    shard = OrderShard(shard_settings)
    events = [oms(oid, "PAID", T0, channel="pinduoduo", links=(f"oms:{gid}",))]
    fresh = first_deliveries(events, shard.orders)
    records = [r for kind, r in shard.process(events, T0) if kind != "signal"]
    writer = ViewWriter(settings.redis, ViewBuffer(1000, 50)).start()
    writer.buffer.add(orders_update(shard_settings, shard, fresh, records))
    writer.notify()
    writer.close()
    try:
        for name in (oid, f"oms:{gid}", gid):
            found = orjson.loads(ok(orderguard(env, "lookup", name, "--json")))
            assert found["order_id"] == oid, name
            assert found["ids"] == [f"oms:{gid}"], name
            assert len(found["timeline"]) == 1, name
        table = ok(orderguard(env, "lookup", oid))
        assert table.splitlines()[0].split() == ["order", oid]
    finally:
        drop_keys(redis_url, prefix)


def test_a_live_run_finds_an_order_by_its_channel_id_and_parcel(
    broker, tmp_path, redis_url, monkeypatch
):
    """Kafka to lookup: envelopes naming one order by the channel's id, the OMS's and a
    tracking number (the sources of tests/unit/test_identity_replay.py, added to the
    shipped registry in a config of this test's own), then `orderguard lookup` by each."""
    import shutil

    import yaml

    from schemas.config import DEFAULT_CONFIG, load_settings
    from tests.unit.test_identity_replay import MAILNO, OID, OTHER_TID, SOURCES, TID, _lines

    config = tmp_path / "orderguard.yaml"
    shutil.copy(DEFAULT_CONFIG, config)
    shipped = yaml.safe_load((DEFAULT_CONFIG.parent / "sources.yaml").read_text())
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({**shipped, **SOURCES}))
    env = view_env(broker.bootstrap, tmp_path, redis_url)
    prefix = env["ORDERGUARD__REDIS__KEY_PREFIX"]
    for k, v in env.items():
        if k.startswith("ORDERGUARD__"):
            monkeypatch.setenv(k, v)
    settings = load_settings(config)
    ensure_topics(broker.bootstrap, settings.kafka.topic_partitions())
    produce_envelopes(settings, _lines())
    try:
        ok(orderguard(env, "run", "--exit-when-caught-up", "--config", str(config)))
        for name in (OID, f"taobao:{TID}", MAILNO, f"tracking:{MAILNO}"):
            found = orjson.loads(ok(orderguard(env, "lookup", name, "--json")))
            assert (found["order_id"], found["status"]) == (OID, "PICKED_UP"), name
            assert found["ids"] == [f"taobao:{TID}", f"tracking:{MAILNO}"], name
            assert {e["source"] for e in found["timeline"]} == {"shop", "pay", "erp", "parcel"}
        unlinked = orderguard(env, "lookup", f"taobao:{OTHER_TID}")
        assert unlinked.returncode == 1 and "not in the view" in unlinked.stderr
    finally:
        drop_keys(redis_url, prefix)

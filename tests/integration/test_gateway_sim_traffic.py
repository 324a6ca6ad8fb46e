"""A simulated day's webhooks, in their providers' real formats and signatures, through
the running gateway into Kafka (real Tansu), and the pipeline over what it stored.

The gateway is started as an operator starts it, with keys generated here (the
simulator's side holds the private halves). The demo's own `WebhookSender` posts every
webhook envelope of the day (`schemas.provider_requests.provider_request`: WeChat Pay's
encrypted resource, Alipay's RSA2 form, PayPal's transmission headers, SF's and J&T's
digested forms, DHL's key, Shopee's url|body HMAC, the HMACs). What lands on the input
topics must be the simulator's payloads again, and the dataflow over the day with those
records in place of the simulator's must give the same corrected statuses.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from connectors.broker import EmbeddedBroker
from connectors.webhook_client import WebhookSender
from dataflows.replay import run_replay
from schemas.config import load_settings
from sim import generate, write_jsonl
from tests.helpers import PrivateRedis
from tests.integration.gateway_fixture import GatewayProcess, gateway_env, records
from tests.provider_keys import provider_setup
from tests.unit.test_provider_requests import as_simulated

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def _key(source: str, payload: dict) -> tuple[str, bytes]:
    return source, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def _lives(out: Path) -> dict[str, list[str]]:
    lives: dict[str, list[str]] = defaultdict(list)
    for line in (out / "corrected.jsonl").read_bytes().splitlines():
        rec = orjson.loads(line)
        lives[rec["order_id"]].append(rec["status"])
    return dict(lives)


def test_a_simulated_day_through_the_gateway_is_the_simulated_day(
    broker: EmbeddedBroker, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
    day = [e for e in generate(orders=150, seed=13, start=start, hours=6) if "__raw__" not in e]
    (tmp_path / "keys").mkdir()
    keys, key_env = provider_setup(tmp_path / "keys")
    env = {**gateway_env(broker.bootstrap, private_redis.url), **key_env}
    with GatewayProcess(env) as gw:
        settings = gw.settings
        hooks = {n for n in settings.gateway.sources if n in settings.sources}
        webhooks = [e for e in day if e["source"] in hooks]
        sent = Counter(_key(e["source"], e["payload"]) for e in webhooks)
        assert {e["source"] for e in webhooks} >= {
            "wechatpay", "alipay", "paypal", "stripe", "sf", "jt", "dhl", "shopee", "shopify",
        }  # fmt: skip
        sender = WebhookSender(settings, gw.url, keys, concurrency=8).start()
        try:
            assert all(sender.offer(e) for e in webhooks)
            deadline = time.monotonic() + 120
            while sender.stats.pending and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            sender.stop()
        assert sender.stats.pending == 0 and sender.stats.retried == 0, sender.stats
        topics = settings.kafka.input_topics.model_dump()
        stored = [r.envelope for t in set(topics.values()) for r in records(broker.bootstrap, t)]

    # every distinct payload stored (redeliveries at most as often as sent), as simulated
    held: dict[tuple[str, bytes], list[dict]] = defaultdict(list)
    for env_ in stored:
        assert env_["stream"] == settings.sources[env_["source"]].stream
        held[_key(env_["source"], as_simulated(env_["source"], env_["payload"]))].append(env_)
    assert set(held) == set(sent), set(held) ^ set(sent)
    assert all(len(held[k]) <= n for k, n in sent.items())
    per_source = Counter(k[0] for k in held)
    assert per_source.keys() >= {"wechatpay", "alipay", "paypal", "sf", "jt"}, per_source

    # the pipeline over the day, directly and with the gateway's records in their place
    # (at the simulator's received_at: the gateway stamps its own clock, a day later)
    via_gateway = []
    for e in day:
        if e["source"] not in hooks:
            via_gateway.append(e)
            continue
        took = held[_key(e["source"], e["payload"])]
        if took:  # else a redelivery the gateway acknowledged without storing it again
            via_gateway.append({**took.pop(0), "received_at": e["received_at"]})
    write_jsonl(tmp_path / "direct.jsonl", day)
    write_jsonl(tmp_path / "gateway.jsonl", via_gateway)
    plain = load_settings()
    run_replay(plain, [tmp_path / "direct.jsonl"], tmp_path / "direct", show_progress=False)
    run_replay(plain, [tmp_path / "gateway.jsonl"], tmp_path / "gw", show_progress=False)
    direct, through = _lives(tmp_path / "direct"), _lives(tmp_path / "gw")
    assert direct and through == direct
    dead = (tmp_path / "gw" / "dead_letters.jsonl").read_bytes().splitlines()
    assert len(dead) == len((tmp_path / "direct" / "dead_letters.jsonl").read_bytes().splitlines())

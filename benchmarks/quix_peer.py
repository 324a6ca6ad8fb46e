"""The Quix Streams peer of the Kafka benchmark: the same keyed state machine, in Quix.

    <python with quixstreams> -m benchmarks.quix_peer --bootstrap HOST:PORT \
        --inputs orders=T1,payments=T2,tracking=T3 --output TOPIC --expect N

Run by `benchmarks.kafka_bench` in its own process, with a Python that has the
`bench` extra (`quixstreams`). What it does per input message, as a Quix user would
write it:

- the input topics are consumed by one `Application` (consumer group, earliest) and
  concatenated into one `StreamingDataFrame`; both input topics are keyed by order id,
  so Quix's keyed `State` (RocksDB, changelog topics on) holds one record per order;
- each message is normalized with `schemas.normalize.Normalizer` (the pipeline's own),
  the order's `state.evidence.Order` is loaded from State, the pipeline's per-event
  rules run on it (`state.shard.OrderShard._apply` on a one-order shard), the order is
  stored back, and each correction/alert is encoded (`state.encode`) and produced.

Simplifications (all in Quix's favour, it does less work than the pipeline): no
deadlines (Quix Streams has no timers: a timed alert would need a wall-clock poller
the user writes), no tracking index (scans without an order id are skipped), no
source health, breakers or customer desk. Dead letters are encoded and produced.

Prints one JSON line: messages, records out, seconds (first message to done) and wall.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
import time

# Quix logs every partition assignment at INFO; the benchmark wants its figures only.
logging.getLogger("quixstreams").setLevel(logging.WARNING)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--inputs", required=True, help="stream=topic,... (orders first)")
    ap.add_argument("--output", required=True)
    ap.add_argument("--expect", type=int, required=True, help="input messages to consume")
    ap.add_argument("--group", default="quix-peer")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--no-changelog", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop early (0: never)")
    args = ap.parse_args()

    wall0 = time.perf_counter()
    from quixstreams import Application, message_context
    from quixstreams.state.rocksdb import RocksDBOptions

    from schemas.config import load_settings
    from schemas.event import DeadLetter
    from schemas.normalize import Normalizer
    from state.encode import encode
    from state.evidence import Order
    from state.shard import OrderShard
    from state.timers import TimerWheel

    settings = load_settings()
    normalize = Normalizer(settings).normalize
    inputs = dict(kv.split("=", 1) for kv in args.inputs.split(","))
    stream_of = {topic: stream for stream, topic in inputs.items()}

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        auto_create_topics=True,  # its changelog topics; the others exist
        use_changelog_topics=not args.no_changelog,
        state_dir=args.state_dir,
        # Order state is a tuple of str/int/bytes/array: pickle, not JSON.
        rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        loglevel="WARNING",
    )
    topics = [
        app.topic(t, value_deserializer="bytes", key_deserializer="str") for t in inputs.values()
    ]
    out_topic = app.topic(args.output, value_serializer="bytes", key_serializer="str")

    shard = OrderShard(settings)
    seen = 0
    started: float | None = None
    records_out = 0

    def step(value: bytes, key: str, _ts: int, _headers: object, state) -> list:
        nonlocal seen, started, records_out
        if started is None:
            started = time.perf_counter()
        seen += 1
        ctx = message_context()
        origin = {"topic": ctx.topic, "partition": ctx.partition, "offset": ctx.offset}
        r = normalize(value, origin=origin, stream=stream_of[ctx.topic], seq=ctx.offset)
        out: list = []
        if isinstance(r, DeadLetter):
            out.append(r)
        elif r.order_id is not None and r.kind != "telemetry":
            o = state.get("order")
            if o is None:
                o = Order()
            shard.orders = {r.order_id: o}
            produced: list = []
            shard._apply(r, max(shard.clock, r.received_ms), produced)
            if r.order_id in shard.orders:  # not evicted
                state.set("order", o)
            else:
                state.delete("order")
            out.extend(rec for kind, rec in produced if kind != "signal")
        if seen % 50_000 == 0:
            shard._wheel = TimerWheel()  # deadlines are not kept (see the module doc)
        if seen >= args.expect or (
            args.max_seconds and time.perf_counter() - started > args.max_seconds
        ):
            app.stop()
        encoded = [encode(rec) for rec in out]
        records_out += len(encoded)
        return [v for _topic, _key, _sort, v in encoded]  # keyed by the order id, as input

    sdf = app.dataframe(topics[0])
    for t in topics[1:]:
        sdf = sdf.concat(app.dataframe(t))
    sdf = sdf.apply(step, stateful=True, expand=True, metadata=True)
    sdf.to_topic(out_topic)
    app.run()
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "messages": seen,
                "records_out": records_out,
                "seconds": done - (started or done),
                "wall": done - wall0,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

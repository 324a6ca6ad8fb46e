"""View benchmark: what the Redis order view costs `orderguard run`, side by side in one run.

    python -m benchmarks.view_bench [--orders N] [--quick]

Generates (once, cached under benchmarks/.data/) a day of simulated traffic with
incidents (default 50k orders, half of them cut off mid-life; the day's events only),
produces it once to input topics on the embedded Tansu broker, then runs
`orderguard run --exit-when-caught-up` on those topics four times, alternating
A/B/A/B so that drift on a shared machine hits both modes alike:

- off   no `redis.url`: the view's updates are not even built
- on    the view written to a local Redis (`LocalRedis`: 127.0.0.1:6379, else
        a throwaway redis-server), under a key prefix of its own per run

Each run gets fresh output and control topics and a fresh recovery dir. Per mode, the
median of its runs: wall time; events/s over the wall time and excluding start-up
(from the first input record read, polled on the run's metrics endpoint, to exit;
the tail after the last input record is read includes the view's final flush); the
keys under the run's prefix afterwards (counted, then deleted with SCAN + UNLINK).
Figures go to benchmarks/results/view.json and are printed as a table; `--quick`
(10k orders) checks the harness and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path

from benchmarks.kafka_bench import (
    DATA,
    RESULTS,
    ROOT,
    create_topics,
    delete_topics,
    orderguard_cmd,
    pipeline_env,
    produce_file,
    topic_names,
)

INCIDENTS = frozenset(
    {
        "duplicate_webhooks",
        "lost_payment_callback",
        "out_of_order_scans",
        "stalled_tracking",
        "channel_error_storm",
        "carrier_api_outage",
    }
)
"""The incidents that add load of their own (duplicates, dead letters, alerts)."""
OPEN_SHARE = 0.5
START = datetime(2026, 3, 2, tzinfo=UTC)
MODES = ("off", "on")
POLL = 0.25
"""Seconds between scrapes of the metrics endpoint: coarse, so it costs the run little."""
RUN_TIMEOUT = 900.0


def dataset(orders: int, seed: int = 13) -> Path:
    """Lines `stream TAB key TAB envelope` (kafka_bench's format, for `produce_file`), cached.

    A malformed line (channel_error_storm) goes to the orders stream without a key, as
    `connectors.kafka_envelopes` produces it.
    """
    import orjson

    from schemas.config import load_settings
    from schemas.keys import MessageKeys
    from sim import generate

    DATA.mkdir(exist_ok=True)
    path = DATA / f"view-{orders}-{OPEN_SHARE}-{seed}.tsv"
    if path.exists():
        return path
    t = time.perf_counter()
    keys = MessageKeys(load_settings())
    end = (START + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S")
    envelopes = generate(
        orders=orders, seed=seed, start=START, incidents=INCIDENTS, open_share=OPEN_SHARE
    )
    tmp = path.with_suffix(".tmp")
    n = 0
    with tmp.open("wb") as f:
        # stop at the end of the day, as replay_bench does: what follows (buyers
        # confirming days later) would run the clock past every open order's deadlines
        for env in takewhile(lambda e: e.get("received_at", "") < end, envelopes):
            raw = env.get("__raw__")
            if raw is not None:
                stream, key, value = "orders", b"", str(raw).encode()
            else:
                stream, key, value = env["stream"], keys.key(env) or b"", orjson.dumps(env)
            if b"\n" in value or b"\t" in key:
                raise ValueError(f"line {n}: a newline in the value or a tab in the key")
            f.write(b"%s\t%s\t%s\n" % (stream.encode(), key, value))
            n += 1
    tmp.rename(path)
    print(f"generated {n:,} events in {time.perf_counter() - t:.1f} s -> {path.name}")
    return path


# ---------------------------------------------------------------- one run
@dataclass
class Run:
    mode: str
    wall: float
    first_input: float | None = None
    """Seconds from launch to the first input record counted on the metrics endpoint."""
    all_input: float | None = None
    """Seconds from launch to the last input record counted."""
    records_out: int | None = None
    keys: int | None = None
    view: dict[str, float] = field(default_factory=dict)
    """The view's own series at the last scrape (writes, dropped, failures, buffered)."""
    warnings: list[str] = field(default_factory=list)
    """The view's log lines (Redis away, keys left unwritten at exit)."""


VIEW_SERIES = {
    "orderguard_redis_view_writes_total": "writes",
    "orderguard_redis_view_dropped_total": "dropped",
    "orderguard_redis_view_failures_total": "failures",
    "orderguard_redis_view_buffered": "buffered",
}


def scrape(port: int) -> tuple[float, dict[str, float]] | None:
    """(input records read, the view's series) from the metrics endpoint; None if it is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    if "orderguard_redis_view_buffered " not in text:
        return None  # cut short: the run was exiting
    read = 0.0
    view: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("orderguard_input_records_total{"):
            read += float(line.rsplit(" ", 1)[1])
        else:
            name, _, value = line.partition(" ")
            if name in VIEW_SERIES:
                view[VIEW_SERIES[name]] = float(value)
    return read, view


def run_once(
    bootstrap: str, inputs: dict[str, str], events: int, mode: str, tag: str, redis_url: str | None
) -> Run:
    """`orderguard run --exit-when-caught-up` on the inputs, fresh outputs, timed."""
    from connectors.broker import free_port

    _, outputs = topic_names(tag)
    control = f"{tag}.control"
    create_topics(bootstrap, list(outputs.values()))
    rdir = DATA / f"recovery-{tag}"
    shutil.rmtree(rdir, ignore_errors=True)
    env = {
        k: v
        for k, v in pipeline_env(bootstrap, inputs, outputs, rdir).items()
        if not k.startswith("ORDERGUARD__REDIS__")  # only what this run says
    }
    port = free_port()
    env["ORDERGUARD__METRICS__PORT"] = str(port)
    env["ORDERGUARD__KAFKA__CONTROL_TOPIC"] = control
    prefix = f"bench-view:{tag}:{uuid.uuid4().hex[:8]}:"
    if mode == "on":
        assert redis_url is not None
        env["ORDERGUARD__REDIS__URL"] = redis_url
        env["ORDERGUARD__REDIS__KEY_PREFIX"] = prefix
    try:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                orderguard_cmd("--exit-when-caught-up"), env=env, cwd=ROOT, stdout=out, stderr=err
            )
            run = Run(mode, 0.0)
            try:
                while proc.poll() is None:
                    if time.perf_counter() - t0 > RUN_TIMEOUT:
                        raise RuntimeError(f"{tag}: still running after {RUN_TIMEOUT:g} s")
                    got = scrape(port)
                    now = time.perf_counter() - t0
                    if got is not None:
                        read, run.view = got
                        if read > 0 and run.first_input is None:
                            run.first_input = now
                        if read >= events and run.all_input is None:
                            run.all_input = now
                    time.sleep(POLL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            run.wall = time.perf_counter() - t0
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{tag}: orderguard run exited {proc.returncode}:\n{stderr[-3000:]}")
        run.warnings = [line for line in stderr.splitlines() if "redis view:" in line]
        # "caught up: 1,234 records delivered; recovery initialized ..."
        for line in stdout.splitlines():
            if line.startswith("caught up: "):
                run.records_out = int(line.split()[2].replace(",", ""))
        if mode == "on":
            assert redis_url is not None
            run.keys = drop_keys(redis_url, prefix)
        return run
    finally:
        delete_topics(bootstrap, [*outputs.values(), control])
        shutil.rmtree(rdir, ignore_errors=True)


def drop_keys(url: str, prefix: str) -> int:
    """Count the keys under `prefix`, then unlink them (SCAN, never KEYS: Redis may be shared)."""
    import redis

    client = redis.Redis.from_url(url)
    n = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                n += client.unlink(*batch)
                batch.clear()
        if batch:
            n += client.unlink(*batch)
    finally:
        client.close()
    return n


# ---------------------------------------------------------------- main
def _median(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.median(have) if have else None


def summarize(runs: list[Run], events: int) -> dict[str, float]:
    f: dict[str, float] = {}
    for mode in MODES:
        mine = [r for r in runs if r.mode == mode]
        wall = _median([r.wall for r in mine])
        startup = _median([r.first_input for r in mine])
        tail = _median([r.wall - r.all_input if r.all_input else None for r in mine])
        excl = _median([events / (r.wall - r.first_input) if r.first_input else None for r in mine])
        assert wall is not None
        f[f"view_{mode}_seconds"] = round(wall, 2)
        f[f"view_{mode}_events_per_s"] = round(events / wall)
        for k, r in enumerate(mine, 1):
            f[f"view_{mode}_run{k}_seconds"] = round(r.wall, 2)
            if r.first_input is not None:
                f[f"view_{mode}_run{k}_startup_seconds"] = round(r.first_input, 2)
        if startup is not None and excl is not None:
            f[f"view_{mode}_startup_seconds"] = round(startup, 2)
            f[f"view_{mode}_events_per_s_excl_startup"] = round(excl)
        if tail is not None:
            f[f"view_{mode}_tail_seconds"] = round(tail, 2)
        outs = _median([r.records_out for r in mine])
        if outs is not None:
            f[f"view_{mode}_records_out"] = outs
        keys = _median([r.keys for r in mine])
        if keys is not None:
            f[f"view_{mode}_redis_keys"] = keys
        for series in ("dropped", "failures"):
            v = _median([r.view.get(series) for r in mine])
            if v is not None:
                f[f"view_{mode}_{series}"] = v
    f["view_on_to_off_ratio"] = round(f["view_on_events_per_s"] / f["view_off_events_per_s"], 3)
    if "view_on_events_per_s_excl_startup" in f and "view_off_events_per_s_excl_startup" in f:
        f["view_on_to_off_ratio_excl_startup"] = round(
            f["view_on_events_per_s_excl_startup"] / f["view_off_events_per_s_excl_startup"], 3
        )
    return f


def table(f: dict[str, float]) -> list[str]:
    def num(key: str, fmt: str = ",.0f") -> str:
        v = f.get(key)
        return "missing" if v is None else f"{v:{fmt}}"

    head = f"  {'view':<6}{'wall s':>9}{'start-up s':>12}{'tail s':>9}"
    head += f"{'events/s':>11}{'excl start-up':>15}{'Redis keys':>12}{'records out':>13}"
    lines = [head]
    for mode in MODES:
        lines.append(
            f"  {mode:<6}{num(f'view_{mode}_seconds', '.1f'):>9}"
            f"{num(f'view_{mode}_startup_seconds', '.1f'):>12}"
            f"{num(f'view_{mode}_tail_seconds', '.1f'):>9}"
            f"{num(f'view_{mode}_events_per_s'):>11}"
            f"{num(f'view_{mode}_events_per_s_excl_startup'):>15}"
            f"{num(f'view_{mode}_redis_keys') if mode == 'on' else '0':>12}"
            f"{num(f'view_{mode}_records_out'):>13}"
        )
    lines.append(
        f"  on/off: {num('view_on_to_off_ratio', '.3f')}x events/s, "
        f"{num('view_on_to_off_ratio_excl_startup', '.3f')}x excluding start-up"
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, help="default 50k (10k with --quick)")
    ap.add_argument("--quick", action="store_true", help="10k orders; writes nothing")
    args = ap.parse_args()
    if args.orders is None:
        args.orders = 10_000 if args.quick else 50_000

    from connectors.broker import EmbeddedBroker
    from connectors.redis_server import LocalRedis

    t_bench = time.perf_counter()
    path = dataset(args.orders)
    events = sum(1 for _ in path.open("rb"))
    print(f"dataset: {events:,} events, {args.orders:,} orders ({path.name})")
    runs: list[Run] = []
    with EmbeddedBroker(startup_timeout=30) as broker, LocalRedis() as redis:
        bs = broker.bootstrap
        print(f"redis: {redis.display_url} ({'started here' if redis.started else 'running'})")
        inputs, _ = topic_names(f"viewin{uuid.uuid4().hex[:6]}")
        create_topics(bs, list(inputs.values()))
        try:
            n, secs = produce_file(bs, inputs, path)
            print(f"produced {n:,} events in {secs:.1f} s ({n / secs:,.0f}/s)")
            for i, mode in enumerate(MODES * 2):  # A/B/A/B
                run = run_once(bs, inputs, events, mode, f"view{i}{mode}", redis.url)
                runs.append(run)
                keys = f", {run.keys:,} keys" if run.keys is not None else ""
                print(f"run {i + 1} (view {mode}): {run.wall:.1f} s{keys}, view {run.view}")
                for line in run.warnings:
                    print(f"  {line}")
        finally:
            delete_topics(bs, list(inputs.values()))

    f = {"view_events": events, "view_orders": args.orders, **summarize(runs, events)}
    f["view_bench_seconds"] = round(time.perf_counter() - t_bench, 1)
    print()
    print("\n".join(table(f)))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / "view.json"
        out.write_text(json.dumps(f, indent=2) + "\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()

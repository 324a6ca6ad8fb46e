"""Gateway benchmark: signed webhooks through `orderguard gateway`, 1 vs 2 processes.

    python -m benchmarks.gateway_bench [--quick] [--rounds N] [--rates R ...] [--seconds S]

Starts the embedded Tansu broker and uses a local Redis (`LocalRedis`: the one on
127.0.0.1:6379, else a throwaway redis-server), then, per round, 1 process then `--processes 2`:

- at R/s   wrk offers a fixed rate R (default 5,000/s, the target, and 3,000/s: each
           wrk thread keeps a schedule of send times and waits for the next slot in its
           `delay()` hook, 64 connections); achieved requests/s, latency p50/p90/p99/p99.9.
           When R is more than the gateway answers, wrk falls behind its schedule and
           sends at once: then it is a closed loop at the gateway's capacity, and its
           latency is not "at R/s" (the table says so)
- max      wrk unpaced on the same 64 connections: the most requests/s it answers

Every run starts a fresh gateway (its own input topics and Redis key prefix) on a
free loopback port, warms it with a few requests, and sends a file of unique signed
webhooks generated right before the run (Stripe's signature carries a timestamp that
must be within 300 s): real payloads from the simulator, its sources signed with an
HMAC over a JSON body (carrier_api, stripe, aftership, shopify, zto, yto; duplicates of
a delivery id are left out of the pool). So every request claims its delivery in Redis
and produces one record with acks=all. wrk sends each line at most once: it hands out
requests for `--seconds` (default 20) or until its file is used up, then waits for the
answers in flight (`benchmarks/gateway_wrk.lua` counts them by status), so every
request sent is counted. After each run the gateway is stopped (SIGTERM) and the input
topics are read to the end (counted by consuming: Tansu's high watermark is low by a
few dozen): the records in them must equal the 202 answers, and the Redis keys under
the run's prefix too. Per-source rate limits are raised for the
benchmark (the token buckets still run): it measures the gateway, not the limit.

Each run records the load average and how busy the machine's CPUs were (other
people's work included) and the CPU seconds of the gateway processes, Tansu and wrk.
Medians over the rounds; figures go to benchmarks/results/gateway.json and are printed
as a table. Targets (issue 5): >= 5,000 signed webhooks/s with p99 <= 50 ms on the
2-core machine. About 9 minutes (3 rounds); `--quick` (1 round of 5 s runs) checks the
harness in about 2 minutes and writes nothing.

    python -m benchmarks.gateway_bench --schemes [--quick] [--rates R ...] [--seconds S]

One process, per row: the simulator's whole webhook mix, every source in its
provider's real format and signature (`provider_request`: RSA for WeChat Pay, Alipay
and PayPal, digested forms for SF and J&T, ...), then Stripe's HMAC, WeChat Pay v3 and
Alipay RSA2 alone; paced (default 1,000/s) and unpaced, with what one core `admit`s
in-process per scheme (`benchmarks/results/gateway_schemes.json`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from benchmarks.kafka_bench import DATA, RESULTS, ROOT, count_topic, delete_topics

LUA = Path(__file__).resolve().parent / "gateway_wrk.lua"
TARGET_RPS = 5_000
TARGET_P99_MS = 50.0
CONNECTIONS = 128
"""wrk keeps one request in flight per connection, so a paced run can offer at most
connections / latency: 64 connections cap 5,000/s at 12.8 ms, below the gateway's p50
under that load (Kafka's and Redis's batching); 128 leave headroom, as many providers'
concurrent deliveries would."""
WRK_THREADS = 1
"""One wrk thread: it sends tens of thousands of requests/s, and leaves the gateway a core."""
MAX_RPS_FILE = 20_000
"""The unpaced run's file holds this many requests per second of run (it stops when used up)."""
WARM = 200
"""Requests sent one by one before wrk starts (the pool's last lines), counted in the check."""
STREAMS = ("orders", "payments", "tracking")
DRAIN = 2.0
"""Seconds wrk runs beyond the sending time, for the answers in flight."""
POOL_ORDERS = 40_000
START = datetime(2026, 3, 2, tzinfo=UTC)
CLK_TCK = os.sysconf("SC_CLK_TCK")
GATEWAY_CMD = [sys.executable, "-m", "dataflows.cli", "gateway"]


# ---------------------------------------------------------------- requests
def bench_secrets(hooks: dict) -> dict[str, str]:
    """A fresh secret per source whose scheme takes one, in this process's environment
    (so `load_settings` sees it); WeChat Pay's APIv3 key is 32 bytes."""
    from schemas.config import SECRET_SCHEMES

    out = {
        name: secrets.token_hex(16 if hook.auth.scheme == "wechatpay_v3" else 24)
        for name, hook in hooks.items()
        if hook.auth.scheme in SECRET_SCHEMES
    }
    for name, secret in out.items():
        os.environ[f"ORDERGUARD__GATEWAY__SOURCES__{name.upper()}__SECRET"] = secret
    return out


def pool(settings, orders: int = POOL_ORDERS, seed: int = 17) -> Path:
    """Lines `source TAB delivery header value (or empty) TAB body`: unique deliveries, cached.

    The payloads are the simulator's (a day of `orders` orders, all incidents off) for
    every configured webhook source, in the simulator's order and mix. A delivery id the
    gateway would compute twice (e.g. two identical carrier_api bodies) is kept once.
    """
    import orjson
    from multidict import CIMultiDict

    from schemas.signatures import SCHEMES, sign
    from schemas.webhooks import Accepted, endpoints
    from sim import generate

    DATA.mkdir(exist_ok=True)
    path = DATA / f"gateway-pool-v3-{orders}-{seed}.tsv"
    if path.exists():
        return path
    t = time.perf_counter()
    eps = endpoints(settings)
    seen: set[tuple[str, str]] = set()
    n = dropped = 0
    now = time.time()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for env in generate(orders=orders, seed=seed, start=START, hours=24):
            name = env.get("source")
            ep = eps.get(name)  # type: ignore[arg-type]
            if ep is None or "__raw__" in env:
                continue
            if ep.auth.scheme not in SCHEMES or ep.hook.body != "json":
                continue  # HMAC over JSON only here; every real format: `--schemes`' mix
            body = orjson.dumps(env["payload"])
            headers = CIMultiDict(sign(ep.auth, ep.secret, body, now))
            headers["Content-Type"] = "application/json"
            verdict = ep.admit(headers, body, int(now * 1000))
            if not isinstance(verdict, Accepted):
                raise RuntimeError(f"{name}: the gateway's own admit refuses it: {verdict}")
            if (name, verdict.delivery_id) in seen:
                dropped += 1
                continue
            seen.add((name, verdict.delivery_id))
            if b"\t" in body or b"\n" in body:
                raise ValueError(f"{name}: a tab or newline in the body")
            f.write(b"%s\t%s\n" % (name.encode(), body))
            n += 1
    tmp.rename(path)
    print(
        f"webhook pool: {n:,} unique deliveries ({dropped:,} repeated ids left out) "
        f"in {time.perf_counter() - t:.1f} s -> {path.name}"
    )
    return path


def request_lines(settings, pool_path: Path, start: int, count: int) -> list[bytes]:
    """Pool lines [start, start + count) as wrk lines, signed now."""
    from schemas.signatures import sign
    from schemas.webhooks import endpoints

    eps = endpoints(settings)
    now = time.time()
    out = []
    with pool_path.open("rb") as f:
        for line in islice(f, start, start + count):
            name, body = line.rstrip(b"\n").split(b"\t", 1)
            source = name.decode()
            ep = eps[source]
            parts = [b"/webhooks/" + name, body]
            for h, v in sign(ep.auth, ep.secret, body, now).items():
                parts += [h.encode(), v.encode()]
            out.append(b"\t".join(parts))
    return out


def source_mix(pool_path: Path, count: int) -> dict[str, int]:
    mix: dict[str, int] = {}
    with pool_path.open("rb") as f:
        for line in islice(f, count):
            name = line.split(b"\t", 1)[0].decode()
            mix[name] = mix.get(name, 0) + 1
    return dict(sorted(mix.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- CPU and load
def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals)


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) of the live processes in session `sid`."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # session id
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


# ---------------------------------------------------------------- one run
@dataclass
class Run:
    processes: int
    mode: str  # "at<rate>" (paced) | "max"
    offered: float  # requests/s offered (0: unpaced)
    seconds: float = 0.0
    responses: int = 0
    accepted: int = 0
    duplicate: int = 0
    other: int = 0
    socket_errors: int = 0
    exhausted: int = 0
    unanswered: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    warm_accepted: int = 0
    kafka_records: int = 0
    kafka_watermarks: int = 0
    redis_keys: int = 0
    load1: tuple[float, float] = (0.0, 0.0)
    busy: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    wrk: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return (self.accepted + self.duplicate + self.other) / self.seconds

    @property
    def errors(self) -> int:
        return self.duplicate + self.other + self.socket_errors + self.unanswered

    @property
    def stored_ok(self) -> bool:
        want = self.accepted + self.warm_accepted
        return self.kafka_records == want and self.redis_keys == want


class Gateway:
    """`orderguard gateway [--processes N]` on a free port, with its own topics and prefix."""

    def __init__(self, bootstrap: str, redis_url: str, processes: int, tag: str) -> None:
        from connectors.broker import free_port

        self.processes = processes
        self.port = free_port()
        self.bootstrap = bootstrap
        self.topics = {s: f"{tag}.{s}" for s in STREAMS}
        self.prefix = f"bench-gw:{tag}:"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
        env.update(
            {
                "ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "ORDERGUARD__KAFKA__CONTROL_TOPIC": f"{tag}.control",
                "ORDERGUARD__REDIS__URL": redis_url,
                "ORDERGUARD__REDIS__KEY_PREFIX": self.prefix,
                "ORDERGUARD__GATEWAY__PORT": str(self.port),
                "ORDERGUARD__GATEWAY__METRICS_PORT": "0",
                "ORDERGUARD__GATEWAY__RATE_LIMIT__RATE": "1000000",
                "ORDERGUARD__GATEWAY__RATE_LIMIT__BURST": "1000000",
            }
        )
        for s, t in self.topics.items():
            env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{s.upper()}"] = t
        for k, v in os.environ.items():  # the secrets bench_secrets set; client tuning
            if k.startswith("ORDERGUARD__GATEWAY__SOURCES__") or k == "ORDERGUARD__KAFKA__CLIENT":
                env[k] = v
        cmd = list(GATEWAY_CMD)
        if processes > 1:
            cmd += ["--processes", str(processes)]
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_up(60.0)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                out = self.output()
                self.stop()
                raise RuntimeError(f"gateway not up after {timeout:g} s:\n{out}")
            if self.output().count("gateway listening") >= self.processes:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    return
            time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def warm(self, lines: list[bytes], accepted: tuple[int, ...] = (202,)) -> int:
        """Send `lines` one by one; the number answered `accepted` (all, else an error)."""
        ok = 0
        for line in lines:
            path, body, *hv = line.split(b"\t")
            headers = {"Content-Type": "application/json"}
            headers.update({hv[i].decode(): hv[i + 1].decode() for i in range(0, len(hv), 2)})
            status, answer = self.request("POST", path.decode(), body, headers)
            if status not in accepted:
                raise RuntimeError(f"warm-up {path.decode()}: {status} {answer[:300]!r}")
            ok += 1
        return ok

    def cpu(self) -> float:
        return session_cpu(self.proc.pid)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                from connectors.processes import stop_group

                stop_group(self.proc)
        out = self.output()
        self.log.close()
        return out


def wrk(
    port: int, lines: list[bytes], rate: float, seconds: float, accepted: tuple[int, ...] = (202,)
) -> dict:
    with tempfile.NamedTemporaryFile("wb", suffix=".tsv", dir=DATA) as f:
        f.write(b"\n".join(lines) + b"\n")
        f.flush()
        env = {
            **os.environ,
            "GATEWAY_BENCH_FILE": f.name,
            "GATEWAY_BENCH_RATE": str(rate),
            "GATEWAY_BENCH_THREADS": str(WRK_THREADS),
            "GATEWAY_BENCH_SECONDS": str(seconds),
            "GATEWAY_BENCH_ACCEPTED": ",".join(map(str, accepted)),
        }
        cmd = [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{seconds + DRAIN:g}s",  # the script sends for `seconds`, then drains
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            f"http://127.0.0.1:{port}",
        ]
        out = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
    for line in out.stdout.splitlines():
        if line.startswith("GATEWAY_BENCH "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"wrk exited {out.returncode}:\n{out.stdout}\n{out.stderr}")


def watermarks(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics.get(topic)
    if meta is None:
        return 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-gw-wm"})
    try:
        total = 0
        for p in meta.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


def run_once(
    broker, redis_url: str, processes: int, mode: str, rate: float, seconds: float,
    lines_for: Callable[[int, int], list[bytes]], pool_lines: int, max_rps: int = MAX_RPS_FILE,
    accepted: tuple[int, ...] = (202,),
) -> Run:  # fmt: skip
    """One run; `lines_for(start, count)`: wrk lines of distinct deliveries, signed now."""
    from benchmarks.view_bench import drop_keys

    tag = f"gwb{uuid.uuid4().hex[:8]}"
    paced = mode != "max"
    run = Run(processes, mode, rate if paced else 0.0)
    want = int(rate * seconds * 1.1) + CONNECTIONS if paced else max_rps * seconds
    want = min(int(want), pool_lines - WARM)
    gw = Gateway(broker.bootstrap, redis_url, processes, tag)
    try:
        run.warm_accepted = gw.warm(lines_for(pool_lines - WARM, WARM), accepted)
        lines = lines_for(0, want)  # signed right before the run
        load0 = os.getloadavg()[0]
        busy0 = cpu_busy()
        gw_cpu0, tansu0 = gw.cpu(), session_cpu(broker.pid)
        wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w = wrk(gw.port, lines, rate if paced else 0, seconds, accepted)
        wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        gw_cpu1, tansu1 = gw.cpu(), session_cpu(broker.pid)
        busy1 = cpu_busy()
        run.load1 = (load0, os.getloadavg()[0])
    finally:
        log = gw.stop()
    run.busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    run.cpu = {
        "gateway": gw_cpu1 - gw_cpu0,
        "tansu": tansu1 - tansu0,
        "wrk": (wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime),
    }
    run.wrk = w
    run.seconds = w["window_us"] / 1e6
    run.responses = w["responses"]
    run.accepted, run.duplicate, run.other = w["accepted"], w["duplicate"], w["other"]
    run.exhausted = w["exhausted"]
    run.unanswered = w["sent"] - (run.accepted + run.duplicate + run.other)
    run.socket_errors = sum(
        w[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
    )
    for q in ("p50", "p90", "p99", "p999", "max"):
        setattr(run, f"{q}_ms", w[f"{q}_us"] / 1000)
    if "not acknowledged" in log:
        print(f"  gateway: {log.strip().splitlines()[-1]}")
    try:
        streams = [gw.topics[s] for s in STREAMS]
        run.kafka_records = sum(count_topic(broker.bootstrap, t) for t in streams)
        run.kafka_watermarks = sum(watermarks(broker.bootstrap, t) for t in streams)
    finally:
        delete_topics(broker.bootstrap, [*gw.topics.values(), f"{tag}.control"])
    run.redis_keys = drop_keys(redis_url, gw.prefix)
    return run


def describe(r: Run) -> str:
    offered = f"{r.offered:,.0f}/s offered, " if r.offered else ""
    check = "ok" if r.stored_ok else "MISMATCH"
    ex = ", its file was used up before the time" if r.exhausted else ""
    if r.errors:
        ex += f"\n  wrk: {r.wrk}"
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu.items())
    return (
        f"{r.processes}p {r.mode:<6}: {offered}{r.rps:,.0f}/s in {r.seconds:.1f} s, "
        f"p50/p90/p99/p99.9 {r.p50_ms:.1f}/{r.p90_ms:.1f}/{r.p99_ms:.1f}/{r.p999_ms:.1f} ms, "
        f"errors {r.errors}; stored {r.accepted:,} + warm-up {r.warm_accepted}, Kafka "
        f"{r.kafka_records:,} (watermarks {r.kafka_watermarks:,}), Redis keys "
        f"{r.redis_keys:,}: {check}{ex}; load {r.load1[0]:.2f}->{r.load1[1]:.2f}, "
        f"CPUs {r.busy:.0%} busy; CPU s: {cpu}"
    )


# ---------------------------------------------------------------- summary
def summarize(runs: list[Run]) -> dict[str, float]:
    f: dict[str, float] = {}
    for p in (1, 2):
        for mode in dict.fromkeys(r.mode for r in runs):
            mine = [r for r in runs if r.processes == p and r.mode == mode]
            if not mine:
                continue
            k = f"gateway_p{p}_{mode}"

            def med(values: list[float]) -> float:
                return statistics.median(values)

            if mine[0].offered:
                f[f"{k}_offered_rps"] = mine[0].offered
            f[f"{k}_rps"] = round(med([r.rps for r in mine]))
            for q in ("p50", "p90", "p99", "p999", "max"):
                f[f"{k}_{q}_ms"] = round(med([getattr(r, f"{q}_ms") for r in mine]), 2)
            f[f"{k}_errors"] = sum(r.errors for r in mine)
            f[f"{k}_accepted"] = sum(r.accepted + r.warm_accepted for r in mine)
            f[f"{k}_kafka_records"] = sum(r.kafka_records for r in mine)
            f[f"{k}_redis_keys"] = sum(r.redis_keys for r in mine)
            f[f"{k}_stored_mismatches"] = sum(not r.stored_ok for r in mine)
            f[f"{k}_gateway_cpu_us_per_request"] = round(
                med([1e6 * r.cpu["gateway"] / max(1, r.accepted) for r in mine]), 1
            )
            f[f"{k}_load1"] = round(med([max(r.load1) for r in mine]), 2)
            f[f"{k}_cpu_busy"] = round(med([r.busy for r in mine]), 3)
            for i, r in enumerate(mine, 1):
                f[f"{k}_run{i}_rps"] = round(r.rps)
                f[f"{k}_run{i}_p99_ms"] = round(r.p99_ms, 2)
    if "gateway_p1_max_rps" in f and "gateway_p2_max_rps" in f:
        f["gateway_max_2_to_1_ratio"] = round(f["gateway_p2_max_rps"] / f["gateway_p1_max_rps"], 3)
    f["gateway_target_rps"] = TARGET_RPS
    f["gateway_target_p99_ms"] = TARGET_P99_MS
    return f


def table(f: dict[str, float], modes: list[str]) -> list[str]:
    def num(key: str, fmt: str = ",.0f") -> str:
        v = f.get(key)
        return "-" if v is None else f"{v:{fmt}}"

    def ratio(key1: str, key2: str) -> str:
        a, b = f.get(key1), f.get(key2)
        return f"{b / a:.2f}x" if a and b is not None else "-"

    def judged(key: str, target: float, higher: bool) -> str:
        vals = [f.get(key.format(p=p)) for p in (1, 2)]
        met = [v is not None and (v >= target if higher else v <= target) for v in vals]
        word = {(True, True): "met (both)", (True, False): "met (1 process)"}.get(
            (met[0], met[1]), "met (2 processes)" if met[1] else "missed"
        )
        return f"{'>=' if higher else '<='} {target:,.0f}: {word}"

    rows: list[tuple[str, str | None, str | None, str]] = [
        ("max req/s (unpaced)", "gateway_p{p}_max_rps", ",.0f",
         judged("gateway_p{p}_max_rps", TARGET_RPS, True)),
        ("  p50 / p99 ms", None, None, ""),
    ]  # fmt: skip
    for mode in modes:
        k = f"gateway_p{{p}}_{mode}"
        offered = f.get(f"gateway_p1_{mode}_offered_rps") or f.get(f"gateway_p2_{mode}_offered_rps")
        if not offered:
            continue
        kept = [
            (f.get(f"gateway_p{p}_{mode}_rps") or 0) >= 0.98 * offered for p in (1, 2)
        ]  # the offered rate was served (else the latency is at the gateway's capacity)
        note = {(True, True): "", (True, False): " (2p: rate not kept)"}.get(
            (kept[0], kept[1]), " (1p: rate not kept)" if kept[1] else " (rate not kept)"
        )
        p99 = ""
        if offered >= TARGET_RPS:
            p99 = judged(f"{k}_p99_ms", TARGET_P99_MS, False) + note
        rows += [
            (f"at {offered:,.0f}/s: achieved req/s", f"{k}_rps", ",.0f",
             judged(f"{k}_rps", 0.98 * offered, True) if offered >= TARGET_RPS else ""),
            (f"at {offered:,.0f}/s: p50 ms", f"{k}_p50_ms", ".2f", ""),
            (f"at {offered:,.0f}/s: p90 ms", f"{k}_p90_ms", ".2f", ""),
            (f"at {offered:,.0f}/s: p99 ms", f"{k}_p99_ms", ".2f", p99),
            (f"at {offered:,.0f}/s: p99.9 ms", f"{k}_p999_ms", ".2f", ""),
        ]  # fmt: skip
    rows += [
        ("gateway CPU us/request (max)", "gateway_p{p}_max_gateway_cpu_us_per_request", ".0f", ""),
        ("load average (1 min, max)", "gateway_p{p}_max_load1", ".2f", ""),
        ("CPUs busy (max run)", "gateway_p{p}_max_cpu_busy", ".0%", ""),
    ]
    lines = [f"  {'':<30}{'1 process':>12}{'2 processes':>13}{'2/1':>8}   target"]
    for label, key, fmt, target in rows:
        if key is None:
            cells = [
                f"{num(f'gateway_p{p}_max_p50_ms', '.1f')} / "
                f"{num(f'gateway_p{p}_max_p99_ms', '.1f')}"
                for p in (1, 2)
            ]
            lines.append(f"  {label:<30}{cells[0]:>12}{cells[1]:>13}")
            continue
        k1, k2 = key.format(p=1), key.format(p=2)  # type: ignore[union-attr]
        lines.append(
            f"  {label:<30}{num(k1, fmt):>12}{num(k2, fmt):>13}{ratio(k1, k2):>8}   {target}"
        )
    for mode in modes:
        cells = []
        for p in (1, 2):
            k = f"gateway_p{p}_{mode}"
            cells.append(
                f"{num(f'{k}_errors')} err, {num(f'{k}_kafka_records')}/{num(f'{k}_accepted')}"
            )
        lines.append(f"  {mode + ': errors, Kafka/2xx':<30}{cells[0]:>20}{cells[1]:>26}")
    lines.append(
        "  (errors: non-2xx, duplicates and socket errors, all runs; Kafka/2xx: records in the "
        "input topics / 202 answers incl. warm-up)"
    )
    return lines


def main() -> None:
    global CONNECTIONS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round of 5 s runs; writes nothing")
    ap.add_argument("--rounds", type=int, help="default 3 (1 with --quick)")
    ap.add_argument(
        "--rates", type=float, nargs="*", default=[TARGET_RPS, 3000.0],
        help="paced rates, requests/s (default 5000 3000)",
    )  # fmt: skip
    ap.add_argument("--seconds", type=float, help="per run; default 20 (5 with --quick)")
    ap.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="default 1 2"
    )
    ap.add_argument("--no-max", action="store_true", help="no unpaced run")
    ap.add_argument(
        "--schemes",
        action="store_true",
        help="HMAC (Stripe) beside RSA (WeChat Pay v3, Alipay RSA2) and the simulator's "
        "real signed webhook mix: 1 process, real formats",
    )
    ap.add_argument(
        "--connections", type=int, default=CONNECTIONS, help=f"wrk's -c (default {CONNECTIONS})"
    )
    args = ap.parse_args()
    args.rates_given = "--rates" in sys.argv
    rounds = args.rounds or (1 if args.quick else 3)
    CONNECTIONS = args.connections
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `make bench-gateway` installs it (Debian's wrk)")

    from connectors.broker import EmbeddedBroker
    from connectors.redis_server import LocalRedis
    from schemas.config import load_settings

    t_bench = time.perf_counter()
    bench_secrets(dict(load_settings().gateway.sources))
    settings = load_settings()
    if args.schemes:
        schemes_main(seconds, args.rates if args.rates_given else [SCHEME_RATE], args.quick)
        return
    pool_path = pool(settings)
    pool_lines = sum(1 for _ in pool_path.open("rb"))

    def lines_for(start: int, count: int) -> list[bytes]:
        return request_lines(settings, pool_path, start, count)

    mix = source_mix(pool_path, int(TARGET_RPS * seconds))
    total = sum(mix.values())
    print(
        f"mix of a run at {TARGET_RPS:,}/s: "
        + ", ".join(f"{k} {v / total:.0%}" for k, v in mix.items())
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    plan = [(f"at{rate:.0f}", rate) for rate in args.rates]
    if not args.no_max:
        plan.append(("max", 0.0))
    runs: list[Run] = []
    with EmbeddedBroker(startup_timeout=30) as broker, LocalRedis() as redis:
        print(f"redis: {redis.display_url} ({'started here' if redis.started else 'running'})")
        for i in range(rounds):
            for p in args.processes:
                for mode, rate in plan:
                    r = run_once(broker, redis.url, p, mode, rate, seconds, lines_for, pool_lines)
                    runs.append(r)
                    print(f"round {i + 1} {describe(r)}", flush=True)

    f = {"gateway_rounds": rounds, "gateway_run_seconds": seconds, **summarize(runs)}
    f["gateway_bench_seconds"] = round(time.perf_counter() - t_bench, 1)
    print()
    print("\n".join(table(f, [mode for mode, _ in plan])))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / "gateway.json"
        out.write_text(json.dumps(f, indent=2) + "\n")
        print(f"\nwritten to {out}")


# ---------------------------------------------------------------- HMAC beside RSA
SCHEME_SOURCES = {
    "stripe": "timestamped HMAC-SHA256 (Stripe)",
    "wechatpay": "wechatpay_v3: RSA-2048 verify + AES-256-GCM",
    "alipay": "alipay_rsa2: RSA-2048 verify of a form",
}
MIX = "simulator mix, every source signed for real"
"""The `--schemes` row of the simulator's own traffic (`sim_mix`), each source in its
provider's real format and signature, in the simulator's proportions."""
SCHEME_RATE = 1000.0
"""The paced rate of `--schemes` runs: well within what each scheme takes, so the p99
compares the schemes' cost at equal load (the unpaced run gives each one's most)."""
SCHEME_MAX_RPS = 5_000
"""Lines per second of an unpaced `--schemes` run (RSA signing them takes ~0.3 ms each)."""


def scheme_payload(source: str, n: int, tag: str) -> dict:
    """Delivery `n` of a run in `source`'s real format (ids unique to the run)."""
    if source == "wechatpay":
        return {
            "id": f"EV-{tag}-{n}",
            "create_time": "2026-03-02T16:00:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "out_trade_no": f"TB{tag}{n}",
                "transaction_id": f"42000{n:020d}",
                "trade_state": "SUCCESS",
                "success_time": "2026-03-02T16:00:00+08:00",
                "amount": {"total": 12800, "currency": "CNY"},
            },
        }
    if source == "alipay":
        return {
            "notify_id": f"{tag}{n:012d}",
            "notify_type": "trade_status_sync",
            "notify_time": "2026-03-02 16:00:05",
            "charset": "utf-8",
            "version": "1.0",
            "app_id": "2014072300007148",
            "trade_no": f"2026030222{n:018d}",
            "out_trade_no": f"TB{tag}{n}",
            "trade_status": "TRADE_SUCCESS",
            "total_amount": "128.00",
            "gmt_payment": "2026-03-02 16:00:01",
        }
    return {
        "id": f"evt_{tag}_{n}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1772438400,
        "data": {"object": {"amount": 12800, "metadata": {"order_id": f"TB{tag}{n}"}}},
    }


def accepted_status(hook) -> int:
    """What the gateway answers a new delivery of `hook`'s provider (its configured
    answer, else 202)."""
    answer = hook.answers.accepted
    return answer.status if answer is not None and answer.status is not None else 202


def sim_mix(settings, count: int, seed: int = 29) -> list[tuple[str, dict]]:
    """`count` distinct webhook deliveries of the simulator's day, (source, payload), in
    its order and mix: every source the gateway has an endpoint for; a redelivery (same
    provider id, or same payload) is kept once, the gateway would not store it again."""
    from sim import generate

    hooks = {n: h for n, h in settings.gateway.sources.items() if n in settings.sources}
    out: list[tuple[str, dict]] = []
    seen: set[tuple[str, str]] = set()
    orders = count // 8 + 100  # ~10 webhooks an order
    for env in generate(orders=orders, seed=seed, start=START, hours=24):
        hook = hooks.get(env.get("source", ""))
        if hook is None or "__raw__" in env:
            continue
        payload = env["payload"]
        field = hook.delivery_id.body
        ident = str(payload.get(field)) if field else json.dumps(payload, sort_keys=True)
        if (env["source"], ident) in seen:
            continue
        seen.add((env["source"], ident))
        out.append((env["source"], payload))
        if len(out) == count:
            return out
    raise RuntimeError(f"the simulated day has fewer than {count:,} webhooks")


def in_process(
    settings, keys, mix: list[tuple[str, dict]], seconds: float = 2.0
) -> dict[str, float]:
    """What one core takes: `admit` (verify, decrypt, envelope) per second, per scheme
    and over the first 1,000 of the simulator's `mix`, in this process on pre-signed
    requests (no HTTP, no Kafka)."""
    from multidict import CIMultiDict

    from schemas.provider_requests import provider_request, signed_request
    from schemas.webhooks import Accepted, endpoints

    eps = endpoints(settings)
    hooks = settings.gateway.sources
    batches = {
        source: [
            (source, signed_request(hooks[source], scheme_payload(source, n, "cpu"),
                                    keys[source], time.time()))
            for n in range(300)
        ]
        for source in SCHEME_SOURCES
    }  # fmt: skip
    batches[MIX] = [
        (source, provider_request(hooks[source], payload, keys[source], time.time()))
        for source, payload in mix[:1000]
    ]
    out = {}
    for name, made in batches.items():
        reqs = [(eps[source], CIMultiDict(r.headers), r.body) for source, r in made]
        done, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for ep, headers, body in reqs:
                assert isinstance(ep.admit(headers, body, int(time.time() * 1000)), Accepted)
            done += len(reqs)
        out[name] = done / (time.perf_counter() - t)
    return out


def schemes_main(seconds: float, rates: list[float], quick: bool) -> None:
    """`--schemes`: per scheme, a gateway (1 process) fed its provider's real format."""
    from connectors.broker import EmbeddedBroker
    from connectors.redis_server import LocalRedis
    from schemas.config import load_settings
    from schemas.provider_requests import gateway_keys, provider_request, signed_request

    t_bench = time.perf_counter()
    DATA.mkdir(exist_ok=True)
    key_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-keys-"))
    base = load_settings().gateway.sources
    keys, files, env = gateway_keys(base, str(key_dir))  # every source: the mix needs them
    for path, data in files.items():
        Path(path).write_bytes(data)
    os.environ.update(env)  # the gateways started below inherit them
    settings = load_settings()
    plan = [(f"at{rate:.0f}", rate) for rate in rates] + [("max", 0.0)]
    figures: dict[str, dict[str, float]] = {}
    hooks = settings.gateway.sources
    mix = sim_mix(settings, SCHEME_MAX_RPS * int(seconds) + 10_000)
    shares: dict[str, int] = {}
    for source, _ in mix:
        shares[source] = shares.get(source, 0) + 1
    print(
        "simulator mix: "
        + ", ".join(f"{s} {100 * n / len(mix):.1f}%" for s, n in sorted(shares.items()))
    )
    cores = in_process(settings, keys, mix, 1.0 if quick else 3.0)

    def mix_lines(start: int, count: int) -> list[bytes]:
        out = []
        for source, payload in mix[start : start + count]:
            req = provider_request(hooks[source], payload, keys[source], time.time())
            parts = [f"/webhooks/{source}".encode(), req.body]
            for h, v in req.headers.items():
                parts += [h.encode(), v.encode()]
            out.append(b"\t".join(parts))
        return out

    with EmbeddedBroker(startup_timeout=30) as broker, LocalRedis() as redis:
        for mode, rate in plan:
            r = run_once(
                broker, redis.url, 1, mode, rate, seconds, mix_lines, len(mix), SCHEME_MAX_RPS,
                tuple({accepted_status(hooks[s]) for s in shares}),
            )  # fmt: skip
            print(f"{'mix':<9} {describe(r)}", flush=True)
            figures.setdefault(MIX, {})[mode] = r.rps
            figures[MIX][f"{mode}_p99_ms"] = r.p99_ms
            figures[MIX][f"{mode}_cpu_per_1k"] = 1000 * r.cpu["gateway"] / max(1, r.responses)
            figures[MIX][f"{mode}_ok"] = float(r.stored_ok)
        for source in SCHEME_SOURCES:
            hook = settings.gateway.sources[source]
            tag = uuid.uuid4().hex[:6]

            def lines_for(start: int, count: int, hook=hook, source=source, tag=tag) -> list[bytes]:
                out = []
                for n in range(start, start + count):
                    req = signed_request(
                        hook, scheme_payload(source, n, tag), keys[source], time.time()
                    )
                    parts = [f"/webhooks/{source}".encode(), req.body]
                    for h, v in req.headers.items():
                        parts += [h.encode(), v.encode()]
                    out.append(b"\t".join(parts))
                return out

            for mode, rate in plan:
                r = run_once(
                    broker, redis.url, 1, mode, rate, seconds, lines_for,
                    SCHEME_MAX_RPS * int(seconds) + 10_000, SCHEME_MAX_RPS,
                    (accepted_status(hook),),
                )  # fmt: skip
                print(f"{source:<9} {describe(r)}", flush=True)
                figures.setdefault(source, {})[mode] = r.rps
                figures[source][f"{mode}_p99_ms"] = r.p99_ms
                figures[source][f"{mode}_cpu_per_1k"] = (
                    1000 * r.cpu["gateway"] / max(1, r.responses)
                )
                figures[source][f"{mode}_ok"] = float(r.stored_ok)
    print()
    head = f"{'scheme':<46} {'admit/s 1 core':>14}"
    for mode, _ in plan:
        head += f" {mode + ' req/s':>12} {'p99 ms':>7}"
    head += f" {'gw CPU s/1k':>11}"
    print(head)
    for source, what in SCHEME_SOURCES.items():
        f = figures[source]
        row = f"{what:<46} {cores[source]:>14,.0f}"
        for mode, _ in plan:
            row += f" {f[mode]:>12,.0f} {f[mode + '_p99_ms']:>7.1f}"
        row += f" {f['max_cpu_per_1k']:>11.2f}"
        print(row)
    f = figures[MIX]
    row = f"{MIX:<46} {cores[MIX]:>14,.0f}"
    for mode, _ in plan:
        row += f" {f[mode]:>12,.0f} {f[mode + '_p99_ms']:>7.1f}"
    print(row + f" {f['max_cpu_per_1k']:>11.2f}")
    print(
        "admit/s 1 core: verification, decryption and the envelope in one process, no HTTP "
        "or Kafka; req/s and p99: a gateway process over HTTP into Kafka (acks=all) with "
        "Redis de-duplication, wrk on 128 connections; gw CPU s/1k: the gateway's CPU "
        "seconds per 1,000 answers in the unpaced run"
    )
    if not quick:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / "gateway_schemes.json"
        data = {"seconds": seconds, "in_process_admit_per_s": cores, "runs": figures}
        data["mix_shares"] = {s: n / len(mix) for s, n in shares.items()}
        data["bench_seconds"] = round(time.perf_counter() - t_bench, 1)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"written to {out}")


if __name__ == "__main__":
    main()

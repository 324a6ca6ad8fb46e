"""`orderguard demo`: the whole system on one machine, live, in one command.

An embedded Kafka-compatible broker (Tansu, memory storage), a Redis (redis.url, the
machine's, or one started here; the demo's keys under a prefix of its own, removed at
stop), the simulator producing yesterday's traffic as a
backlog and then today's in real time, and `orderguard run` as a child process, as
it runs in production. The summary comes from what a downstream consumer sees: the
output topics, and the pipeline's own metrics endpoint.

Stopping (Ctrl-C, SIGTERM, `--duration`) goes in dependency order: the producer, then
(with `--gateway`) the webhook sender and the gateway, then the pipeline (SIGINT: it
stops at an epoch boundary), then the consumer, Redis and the broker. Nothing is
left running. `--gateway` is in `dataflows/demo_gateway.py`. While it runs, the demo
publishes its connection settings for the operator commands (`dataflows/stack.py`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from connectors.broker import EmbeddedBroker, ensure_topics, free_port
from connectors.kafka_envelopes import ProduceProgress, produce_envelopes, split_backlog
from connectors.processes import spawn_logged, stop_group, stop_signals_interrupt
from connectors.redis_server import LocalRedis, RedisUnavailable, delete_prefixed
from connectors.webhook_client import WebhookSender, WebhookStats
from dataflows.demo_gateway import (
    DemoGateway,
    GatewayNotReady,
    describe,
    start_gateway,
    wait_ready,
    webhook_status,
)
from dataflows.page import PageServer
from dataflows.replay import Summary
from dataflows.stack import BROKER_VAR, CONTROL_KEY_VAR, PREFIX_VAR, REDIS_VAR, published
from schemas.config import Settings, load_settings
from sim import generate

STOP_GRACE = 20.0
"""Seconds the pipeline gets to stop on SIGINT before it is killed."""
STOPPED = (0, 130, -signal.SIGINT)
"""How a pipeline asked to stop may end: done, stopped (130, also while starting), or
ended by that very SIGINT while Python was still importing it (no handler yet)."""


@dataclass
class DemoOptions:
    orders_per_day: int = 20_000
    seed: int = 7
    incidents: tuple[str, ...] = ()
    showcase: bool = False
    """Add `sim.showcase`'s orders: every alert type and a customer hold in minutes 0-4."""
    history_hours: float = 24.0
    duration: float | None = None
    """Seconds to run live after start-up (None: until Ctrl-C)."""
    refresh: float = 2.0
    gateway: bool = False
    """Also run `orderguard gateway`; real-time webhooks go to it over HTTP, real formats."""


class PipelineDied(RuntimeError):
    """The pipeline process (or the gateway: `log` is whose) exited on its own."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


@dataclass
class PipelineStatus:
    """What the pipeline's metrics endpoint said last."""

    read: float = 0.0
    lag: float = 0.0
    caught_up: int = 0
    partitions: int = 0
    answered: bool = False


def scrape(url: str, timeout: float = 1.0) -> PipelineStatus:
    """Sum the input series of a pipeline's /metrics; `answered` False if it did not answer."""
    status = PipelineStatus()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return status
    status.answered = True
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "orderguard_input_records_total":
                status.read += sample.value
            elif sample.name == "orderguard_consumer_lag_records":
                status.lag += sample.value
            elif sample.name == "orderguard_input_caught_up":
                status.partitions += 1
                status.caught_up += int(sample.value)
    return status


class OutputTally:
    """Reads the output topics from the beginning, as a downstream consumer would."""

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        self._names = {topic: name for name, topic in kafka.output_topics.model_dump().items()}
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": "orderguard-demo",  # required by librdkafka; never joined
                "enable.auto.commit": False,
            }
        )
        parts = dict.fromkeys(self._names, kafka.partitions)
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t, n in parts.items() for p in range(n)]
        )
        self.summary = Summary()
        self.last_order = "ORDER_ID"
        """The order corrected last: one to try `orderguard lookup` on."""
        self.held = "CUSTOMER_ID"
        """The customer put on hold last, while still on hold: one to `hold release`."""
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-tally", daemon=True)

    def start(self) -> OutputTally:
        self._thread.start()
        return self

    def _run(self) -> None:
        counts = self.summary.counts
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        print(f"demo: output consumer: {err.str()}", file=sys.stderr)
                    continue
                name = self._names[msg.topic()]
                with self.lock:
                    counts[name] = counts.get(name, 0) + 1
                    self.summary.observe(name, msg.value())
                    if name == "corrected" and msg.key():
                        self.last_order = msg.key().decode()
                    elif name == "breakers":
                        self._customer(orjson.loads(msg.value()))
        self._consumer.close()

    def _customer(self, decision: dict) -> None:
        """Follow customer holds: the screen names one on hold, for `hold release`."""
        if decision["breaker"] != "customer":
            return
        if decision["state"] == "HOLD":
            self.held = decision["key"]
        elif decision["key"] == self.held:
            self.held = "CUSTOMER_ID"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _control_key(work: Path) -> Path:
    """A random control key for this run, in a file only this user reads: the pipeline
    gets it through the environment, the operator commands from the published settings
    (`dataflows.stack`, also 0600); it is never printed."""
    path = work / "control.key"
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32), encoding="ascii")
    return path


def _start_pipeline(config: Path | None, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dataflows.cli", "run"]
    if config is not None:
        cmd += ["--config", str(config)]
    return spawn_logged(cmd, env, log)


def _stop_pipeline(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGINT, as Ctrl-C would: the pipeline stops at an epoch boundary."""
    return stop_group(proc, signal.SIGINT, STOP_GRACE)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Output:
    """The demo's output: a terminal, a file, or a pipe whose reader may go away.

    `make demo 2>&1 | tee demo.log` and Ctrl-C: the terminal's SIGINT ends tee too, and
    every later write fails (EPIPE). The demo still has to stop everything, remove its
    work directory and say so: what is left to say goes to the terminal when there is
    one, else to stderr (ignored if that is the same dead pipe), and `closed` tells the
    demo to stop on its own when nobody reads any more (`orderguard demo | head`).
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.closed = False

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            if self.closed:
                return
            self.closed = True
            self._silence()
            self.out = _fallback()
            self.write(text)

    def _silence(self) -> None:
        """Point the dead pipe's descriptor at /dev/null: the buffered rest is dropped
        there at exit, instead of an 'Exception ignored ... BrokenPipeError'."""
        try:
            fd = self.out.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):
            return
        os.dup2(devnull, fd)
        os.close(devnull)


def _fallback() -> TextIO:
    try:
        return open("/dev/tty", "w")  # kept open: the process ends soon after
    except OSError:
        return sys.stderr


class Screen:
    """A redrawn block on a terminal; otherwise (a pipe, a log, CI) the same sections at a
    lower rate: the whole block every `every_block` refreshes, the status line every `every`."""

    def __init__(self, out: Output, every: int = 5, every_block: int = 15) -> None:
        self.out = out
        self._every = every
        self._every_block = every_block
        self._n = 0

    def show(self, header: str, status: str, body: str) -> None:
        self._n += 1
        if self.out.tty:
            self.out.write("\x1b[H\x1b[J" + header + "\n" + status + "\n\n" + body + "\n")
        elif self._n % self._every_block == 1:
            self.out.write("\n" + header + "\n" + status + "\n\n" + body + "\n")
        elif self._n % self._every == 1:
            self.out.write(status + "\n")


def demo_traffic(opts: DemoOptions, now: datetime) -> Iterator[dict]:
    """The demo's envelopes: `opts.history_hours` of backlog before `now`, then a day."""
    hours = opts.history_hours + 24
    return generate(
        orders=round(opts.orders_per_day * hours / 24),
        seed=opts.seed,
        start=now - timedelta(hours=opts.history_hours),
        hours=hours,
        incidents=frozenset(opts.incidents),
        incident_hours=opts.history_hours,  # seen in the backlog, not a day from now
        showcase_at=now if opts.showcase else None,
    )


def run_demo(config: Path | None, opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run until Ctrl-C, SIGTERM, `opts.duration` or the end of the output's reader;
    return the exit code (0: stopped). The work directory is kept only for a failure's logs."""
    work = Path(tempfile.mkdtemp(prefix="orderguard-demo-"))
    try:
        return _run_demo(config, opts, Output(out), work)
    except BaseException:  # stopped or failed while starting: nothing to look at in it
        shutil.rmtree(work, ignore_errors=True)
        raise


def _run_demo(config: Path | None, opts: DemoOptions, out: Output, work: Path) -> int:
    screen = Screen(out)
    configured = load_settings(config).redis
    removed: list[int] = []
    with (
        EmbeddedBroker() as broker,
        _redis(out, configured.url) as redis,
        ExitStack() as at_stop,  # before Redis and the broker stop, in reverse order
    ):
        metrics_port = free_port()
        key_file = _control_key(work)
        overrides = {
            BROKER_VAR: broker.bootstrap,
            "ORDERGUARD__RECOVERY__DIR": str(work / "recovery"),
            "ORDERGUARD__METRICS__HOST": "127.0.0.1",
            "ORDERGUARD__METRICS__PORT": str(metrics_port),
            CONTROL_KEY_VAR: key_file.read_text(encoding="ascii"),
        }
        if redis is not None:
            # The pipeline keeps its order view there, under a prefix of this run's own:
            # apart from a deployment's keys (and an earlier demo's), deleted at stop.
            overrides[REDIS_VAR] = redis.url
            overrides[PREFIX_VAR] = f"{configured.key_prefix}demo-{secrets.token_hex(4)}:"
        env = {**os.environ, **overrides}
        os.environ.update(overrides)  # this process reads the same configuration
        settings = load_settings(config)
        if redis is not None:  # never the configured prefix: only this run's own
            view = settings.redis
            at_stop.callback(
                lambda: removed.append(
                    delete_prefixed(view.url or "", view.key_prefix, view.client_options())
                )
            )
        at_stop.enter_context(published(env, config))
        kafka = settings.kafka
        ensure_topics(
            kafka.bootstrap_servers, kafka.topic_partitions(), config=kafka.client_config()
        )

        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(hours=opts.history_hours)
        backlog = round(opts.orders_per_day * opts.history_hours / 24)
        where = _where(broker.bootstrap, redis, settings)
        out.write(
            f"{where} · work dir {work}\nincidents: {', '.join(opts.incidents) or 'none'}\n"
            f"simulating {opts.orders_per_day:,} orders a day: {opts.history_hours:g} h of "
            f"backlog ({backlog:,} orders) from {start:%Y-%m-%d %H:%M} UTC, then real time\n"
        )
        produced = ProduceProgress()
        # Live from the demo's start: what is older is backlog, produced to Kafka directly
        # (the gateway would re-date it to its own clock: see dataflows/demo_gateway.py).
        live_from_ms = int(now.timestamp() * 1000)
        backlog_envelopes, live_envelopes = split_backlog(demo_traffic(opts, now), live_from_ms)
        # The backlog is in Kafka, acknowledged, before the pipeline starts. Read while it was
        # still being written, a partition at its end counts as caught up, whose clock is the
        # wall clock: every backlog order's deadlines then fired before its later events
        # arrived (hundreds of alerts fired and resolved when the producer was slow).
        took = time.monotonic()
        produce_envelopes(settings, backlog_envelopes, progress=produced)
        out.write(
            f"backlog in Kafka: {produced.delivered:,} envelopes "
            f"in {time.monotonic() - took:.1f} s\n"
        )
        stop = threading.Event()
        producer_error: list[str] = []

        gw: DemoGateway | None = None
        sender: WebhookSender | None = None

        def produce() -> None:
            try:
                produce_envelopes(
                    settings,
                    live_envelopes,
                    real_time=True,
                    stop=stop,
                    progress=produced,
                    live_route=sender.offer if sender is not None else None,
                    live_from_ms=live_from_ms,
                )
            except Exception as e:  # shown to the user, and the demo stops
                producer_error.append(str(e))

        pipeline_log = work / "pipeline.log"
        if opts.gateway:
            gw = start_gateway(settings, config, env, work / "gateway.log")
        pipeline = _start_pipeline(config, env, pipeline_log)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        page = PageServer(metrics_url, settings.redis, "127.0.0.1", free_port()).start()
        at_stop.callback(page.stop)
        where += f" · operator page {page.url}"
        out.write(f"pipeline pid {pipeline.pid}, metrics {metrics_url}\noperator page {page.url}\n")
        if gw is not None:
            try:
                wait_ready(gw)
            except BaseException as e:  # not ready, or Ctrl-C meanwhile: leave nothing running
                gw.stop(STOP_GRACE)
                _stop_pipeline(pipeline)
                if not isinstance(e, GatewayNotReady):
                    raise
                out.write(f"{e}; its last lines ({gw.log}):\n{_tail(gw.log)}\n")
                return 1
            sender = gw.sender(settings).start()
            out.write(describe(gw) + f", from {now:%Y-%m-%d %H:%M:%S} UTC\n")
        producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
        producer.start()
        tally = OutputTally(settings).start()
        started = time.monotonic()
        code = 0
        last = PipelineStatus()
        last_at = started
        rate = 0.0
        try:
            with stop_signals_interrupt():
                while not out.closed and (
                    opts.duration is None or time.monotonic() - started < opts.duration
                ):
                    time.sleep(opts.refresh)
                    if pipeline.poll() is not None:
                        raise PipelineDied(f"the pipeline exited with status {pipeline.returncode}")
                    if producer_error:
                        raise PipelineDied(f"the simulator's producer failed: {producer_error[0]}")
                    if gw is not None and gw.proc.poll() is not None:
                        raise PipelineDied(
                            f"the gateway exited with status {gw.proc.returncode}", gw.log
                        )
                    st = scrape(metrics_url)
                    t = time.monotonic()
                    if st.answered:
                        rate = (st.read - last.read) / (t - last_at) if last.answered else 0.0
                        last, last_at = st, t
                    screen.show(
                        f"orderguard demo · {time.monotonic() - started:,.0f} s · Ctrl-C stops"
                        f"\n{where}\n{operator_hint(tally.last_order, tally.held)}",
                        _status_line(produced, last, rate, sender.stats if sender else None),
                        _body(tally, last),
                    )
        except KeyboardInterrupt:
            out.write("\nstopping ...\n")
        except PipelineDied as e:
            log = e.log or pipeline_log
            out.write(f"\n{e}; its last lines ({log}):\n{_tail(log)}\n")
            code = 1
        finally:
            stop.set()
            producer.join(30)
            gateway_code: int | None = 0
            if sender is not None:
                sender.stop()  # what it still held is shown as pending
            if gw is not None:  # before the pipeline: what it acknowledged is in Kafka
                gateway_code = gw.stop(STOP_GRACE)
            pipeline_code = _stop_pipeline(pipeline)
            time.sleep(min(opts.refresh, 1.0))  # let the tally read the last outputs
            tally.stop()
        webhooks = sender.stats if sender is not None else None
        out.write(_status_line(produced, last, rate, webhooks) + "\n\n" + _body(tally, last) + "\n")
        if code == 0 and pipeline_code in STOPPED and gateway_code in (0, 130):
            shutil.rmtree(work, ignore_errors=True)
        else:
            out.write(
                f"pipeline exited with status {pipeline_code}"
                + (f", gateway with {gateway_code}" if gw is not None else "")
                + f"; kept {work} (logs: pipeline.log{', gateway.log' if gw else ''})\n"
            )
            code = code or 1
    if code == 0:
        gateway = ", the gateway" if opts.gateway else ""
        out.write(f"stopped: the pipeline, the broker{gateway} and any Redis started here\n")
    if removed:
        out.write(f"removed the demo's {removed[0]:,} Redis keys ({settings.redis.key_prefix}*)\n")
    return code


def operator_hint(order_id: str, customer_id: str = "CUSTOMER_ID") -> str:
    """The operator commands find the running demo by themselves (`dataflows/stack.py`)."""
    return (
        f"in another terminal: orderguard lookup {order_id} · "
        f"orderguard breaker force carrier jt OPEN · orderguard hold release {customer_id}"
    )


def _where(bootstrap: str, redis: LocalRedis | None, settings: Settings) -> str:
    """Where the demo's data is: its broker, and its Redis with its key prefix."""
    view = f"redis {redis.display_url} keys {settings.redis.key_prefix}*" if redis else "no redis"
    return f"broker {bootstrap} (Tansu, memory) · {view}"


def _status_line(
    produced: ProduceProgress, st: PipelineStatus, rate: float, webhooks: WebhookStats | None = None
) -> str:
    waiting = ""
    if produced.waiting_until_ms:
        ahead = produced.waiting_until_ms / 1000 - time.time()
        waiting = f", live (next in {max(0.0, ahead):.0f} s)"
    caught = f"{st.caught_up}/{st.partitions}" if st.answered else "-"
    via = f" · {webhook_status(webhooks)}" if webhooks is not None else ""
    return (
        f"produced {produced.delivered:,}{waiting}{via} · pipeline read {st.read:,.0f} "
        f"({rate:,.0f} events/s), partitions caught up {caught}"
    )


def _body(tally: OutputTally, st: PipelineStatus) -> str:
    with tally.lock:
        s = tally.summary
        s.events_in = int(st.read)
        s.seconds = 0.0
        return s.render().split("\n", 1)[1]  # the first line (replay timing) does not apply


@contextmanager
def _redis(out: Output, url: str | None) -> Iterator[LocalRedis | None]:
    """A Redis for the pipeline (None when there is none: the demo runs on, and says so)."""
    local = LocalRedis(url)
    try:
        local.start()
    except RedisUnavailable as e:
        out.write(f"demo: no Redis ({e}); running without it\n")
        yield None
        return
    try:
        yield local
    finally:
        local.stop()

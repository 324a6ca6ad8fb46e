"""The `orderguard` command."""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from schemas.config import ConfigError, Settings, load_settings


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        text = str(e)
        sep = "\n" if "\n" in text else " "  # one problem, one line
        raise click.ClickException(f"bad configuration:{sep}{text}") from None


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Configuration file (default: ops/orderguard.yaml).",
)


def _ctrl_c_while_starting_stops(command: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C before the command's own SIGINT handling took over (it was still starting:
    reading its config, setting up topics) is a stop, exit 130, not click's "Aborted!" and
    exit 1, which the demo took for a failed pipeline."""

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("stopped while starting; the next run starts from the recovery dir as it is")
            sys.exit(130)

    return guarded


@click.group()
@click.version_option(
    package_name="orderguard", prog_name="orderguard", message="%(prog)s %(version)s"
)
def main() -> None:
    """orderguard: a streaming guardian for e-commerce order fulfillment."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@config_option
@click.option(
    "--workers",
    "-w",
    default=1,
    show_default=True,
    help="Bytewax worker threads (per process, with --processes).",
)
@click.option("--batch-size", type=int, default=None, help="Input lines per batch.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Split the input into the partitions Kafka would have put it in, and read them "
    "with this many local processes (the same outputs for every count; docs/scale-out.md).",
)
@click.option(
    "--recovery-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Snapshot into this directory at every epoch close; run the same command again "
    "after a crash or kill to resume from the last snapshot (same inputs and mode, or it "
    "is refused). Outputs are then at least once: records of the epoch in flight are "
    "written again, identical but for emitted_at.",
)
@click.option(
    "--snapshot-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="With --recovery-dir: seconds between snapshots (default: the configuration's "
    "recovery.snapshot_interval).",
)
def replay(
    inputs: tuple[Path, ...],
    out_dir: Path,
    config_path: Path | None,
    workers: int,
    batch_size: int | None,
    processes: int | None,
    recovery_dir: Path | None,
    snapshot_interval: float | None,
) -> None:
    """Replay recorded envelopes (JSONL) and write corrected/alerts/breakers/dead_letters."""
    from connectors.replay import UnmirroredPartitioner
    from dataflows.live import RecoveryDirError
    from dataflows.replay import ReplayFailed, run_replay

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    if snapshot_interval is not None and recovery_dir is None:
        raise click.UsageError("--snapshot-interval only applies with --recovery-dir")

    for p in inputs:
        if not p.is_file():
            raise click.ClickException(f"cannot read input file {p}: no such file")
        try:
            with p.open("rb") as f:
                f.read(1)
        except OSError as e:
            raise click.ClickException(f"cannot read input file {p}: {e.strerror}") from None
    settings = _settings(config_path)
    try:
        summary = run_replay(
            settings,
            list(inputs),
            out_dir,
            workers=workers,
            batch_size=batch_size,
            processes=processes,
            config_path=config_path,
            recovery_dir=recovery_dir,
            snapshot_interval=snapshot_interval,
        )
    except ReplayFailed as e:
        if recovery_dir is not None:
            raise click.ClickException(
                f"{e}; run the same command again to resume from the last snapshot in "
                f"{recovery_dir}"
            ) from None
        raise click.ClickException(str(e)) from None
    except (UnmirroredPartitioner, RecoveryDirError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.render())
    click.echo(f"outputs in {out_dir}/")


@main.command()
@click.option("--orders", default=2000, show_default=True, help="Orders to simulate.")
@click.option("--seed", default=7, show_default=True)
@click.option("--hours", default=24.0, show_default=True, help="Length of the simulated period.")
@click.option("--start", default="2026-03-02T00:00:00Z", show_default=True, help="UTC start.")
@click.option("--incident", "incidents", multiple=True, help="Switch an incident on (repeat).")
@click.option("--open-share", default=0.0, show_default=True, help="Share of lives cut short.")
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a replay file (JSONL).",
)
@click.option(
    "--to-kafka", is_flag=True, help="Produce to the input topics of the config's `kafka:`."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --to-kafka: events per second in real time (default: as fast as possible).",
)
@config_option
def simulate(
    orders: int,
    seed: int,
    hours: float,
    start: str,
    incidents: tuple[str, ...],
    open_share: float,
    out_file: Path | None,
    to_kafka: bool,
    rate: float | None,
    config_path: Path | None,
) -> None:
    """Generate realistic traffic from all sources into a replay file or Kafka."""
    from sim import INCIDENTS, generate, write_jsonl

    if (out_file is None) == (not to_kafka):
        raise click.UsageError("give exactly one of --out FILE and --to-kafka")
    if rate is not None and not to_kafka:
        raise click.UsageError("--rate only applies with --to-kafka")
    unknown = sorted(set(incidents) - set(INCIDENTS))
    if unknown:
        known = ", ".join(sorted(INCIDENTS))
        raise click.ClickException(f"unknown incident {unknown[0]!r}; known: {known}")
    begin = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(UTC)
    envelopes = generate(
        orders=orders,
        seed=seed,
        start=begin,
        hours=hours,
        incidents=frozenset(incidents),
        open_share=open_share,
    )
    if out_file is not None:
        n = write_jsonl(out_file, envelopes)
        click.echo(f"wrote {n:,} envelopes to {out_file}")
        return

    from connectors.broker import BrokerError, ensure_topics
    from connectors.kafka_envelopes import ProduceError, produce_envelopes

    settings = _settings(config_path)
    kafka = settings.kafka
    try:
        # Created here with the configured partitions: a broker that auto-creates
        # topics on first produce would otherwise pick its own count.
        ensure_topics(
            kafka.bootstrap_servers,
            kafka.topic_partitions(),
            timeout=5.0,
            config=kafka.client_config(),
        )
        n = produce_envelopes(settings, envelopes, rate=rate)
    except (BrokerError, ProduceError) as e:
        raise click.ClickException(str(e)) from None
    topics = ", ".join(kafka.input_topics.model_dump().values())
    click.echo(f"produced {n:,} envelopes to {topics} at {kafka.bootstrap_servers}")


@main.command()
@config_option
@click.option("--workers", "-w", default=1, show_default=True, help="Bytewax worker threads.")
@click.option(
    "--exit-when-caught-up",
    is_flag=True,
    help="Stop once every input partition has been read to its end (batch jobs, tests).",
)
@click.option(
    "--process-id",
    "-i",
    type=click.IntRange(min=0),
    default=None,
    help="This process's index in --addresses (a cluster of processes; docs/scale-out.md).",
)
@click.option(
    "--addresses",
    "-a",
    default=None,
    metavar="HOST:PORT;HOST:PORT",
    help="Every process of the cluster, in process-id order, ';'-separated.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Launch this many local processes (`run -i k -a ...`) on free loopback ports.",
)
@_ctrl_c_while_starting_stops
def run(
    config_path: Path | None,
    workers: int,
    exit_when_caught_up: bool,
    process_id: int | None,
    addresses: str | None,
    processes: int | None,
) -> None:
    """Run the live dataflow: Kafka in, Kafka out, resuming from recovery snapshots."""
    from connectors.broker import BrokerError
    from connectors.kafka_source import MissingTopicError
    from connectors.metrics import MetricsPortInUse
    from dataflows.cluster import check_process_id, parse_addresses
    from dataflows.live import RecoveryDirError, Stopped, run_live, setup_live
    from dataflows.page import PageError

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    if processes is not None and (process_id is not None or addresses is not None):
        raise click.UsageError("--processes launches its own cluster: leave out -i and -a")
    if (process_id is None) != (addresses is None):
        raise click.UsageError("--process-id and --addresses go together")
    peers: list[str] | None = None
    if addresses is not None and process_id is not None:
        try:
            peers = parse_addresses(addresses)
            check_process_id(process_id, peers)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--addresses") from None
    settings = _settings(config_path)
    rdir = settings.recovery.dir
    if processes is not None and processes > 1:
        from dataflows.cluster import describe_exit, run_local_cluster

        # Set up once, before any process starts (no races); process 0 warns about
        # partitions (bytewax#556) with the topics' real partition counts.
        try:
            _, initialized = setup_live(settings)
        except (BrokerError, RecoveryDirError) as e:
            raise click.ClickException(str(e)) from None
        args = ["-w", str(workers)]
        if config_path is not None:
            args += ["--config", str(config_path)]
        if exit_when_caught_up:
            args.append("--exit-when-caught-up")
        me = [sys.executable, "-m", "dataflows.cli", "run"]
        result = run_local_cluster(
            processes, lambda k, joined: [*me, "-i", str(k), "-a", joined, *args]
        )
        if result.stopped:
            click.echo(f"stopped; the next run resumes from the last snapshot in {rdir}")
            sys.exit(130)
        if result.exit_code != 0:
            raise click.ClickException(
                f"process {result.failed} of {processes} failed "
                f"({describe_exit(result.exit_code)}); the others were stopped"
            )
        state = "initialized" if initialized else "resumed from"
        click.echo(
            f"caught up: {result.records_delivered:,} records delivered by {processes} "
            f"processes; recovery {state} {rdir}"
        )
        return
    try:
        result = run_live(
            settings,
            workers=workers,
            exit_when_caught_up=exit_when_caught_up,
            process_id=process_id,
            addresses=peers,
        )
    except (BrokerError, RecoveryDirError, MissingTopicError, MetricsPortInUse, PageError) as e:
        raise click.ClickException(str(e)) from None
    except Stopped:
        click.echo(f"stopped; the next run resumes from the last snapshot in {rdir}")
        sys.exit(130)
    state = "initialized" if result.recovery_initialized else "resumed from"
    who = f" (process {process_id} of {len(peers)})" if peers else ""
    click.echo(
        f"caught up: {result.records_delivered:,} records delivered{who}; recovery {state} {rdir}"
    )


@main.command()
@config_option
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Serve from this many processes sharing the port (SO_REUSEPORT).",
)
@click.option("--process-index", type=click.IntRange(min=0), default=None, hidden=True)
@click.option("--openapi", "print_openapi", is_flag=True, help="Print the OpenAPI description.")
def gateway(
    config_path: Path | None, processes: int, process_index: int | None, print_openapi: bool
) -> None:
    """Take signed carrier and payment webhooks over HTTP into the input topics."""
    settings = _settings(config_path)
    if print_openapi:
        import orjson

        from schemas.gateway_openapi import openapi

        click.echo(orjson.dumps(openapi(settings), option=orjson.OPT_INDENT_2).decode())
        return
    from connectors.gateway import GatewayError, run_gateway

    if process_index is None:  # the launcher (or the only process) creates missing topics
        from connectors.broker import BrokerError, ensure_topics

        kafka = settings.kafka
        try:
            ensure_topics(
                kafka.bootstrap_servers, kafka.topic_partitions(), config=kafka.client_config()
            )
        except BrokerError as e:  # not fatal: /readyz says so, requests get 503 until it is up
            click.echo(f"warning: {e}", err=True)
    if process_index is None and processes > 1:
        from dataflows.cluster import run_local_cluster

        me = [sys.executable, "-m", "dataflows.cli", "gateway", "--processes", str(processes)]
        if config_path is not None:
            me += ["--config", str(config_path)]
        result = run_local_cluster(processes, lambda k, _: [*me, "--process-index", str(k)])
        sys.exit(result.exit_code)
    try:
        run_gateway(settings, process_index or 0, processes)
    except GatewayError as e:
        raise click.ClickException(str(e)) from None


DEMO_INCIDENTS = (
    "lost_payment_callback",
    "carrier_api_outage",
    "channel_error_storm",
    "reship_delivered",
    "stalled_tracking",
)


@main.command()
@click.option(
    "--orders",
    default=None,
    type=click.IntRange(min=1),
    help="Orders per simulated day (default: 20,000 live, 5,000 with --replay).",
)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--incident",
    "incidents",
    multiple=True,
    help=f"Switch an incident on (repeat). Default: {', '.join(DEMO_INCIDENTS)}.",
)
@click.option("--normal", is_flag=True, help="No incidents (and no alerts).")
@click.option(
    "--history",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Hours of past traffic produced as a backlog before real time begins.",
)
@click.option(
    "--duration",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this many seconds (default: run until Ctrl-C).",
)
@click.option(
    "--replay",
    "offline",
    is_flag=True,
    help="Offline instead: simulate a day into a file and replay it (no broker).",
)
@click.option(
    "--gateway",
    "via_gateway",
    is_flag=True,
    help="Also run `orderguard gateway`: live webhooks (payments, carriers, Shopee, "
    "Shopify) go to it over HTTP in each provider's real format, signed with test keys "
    "made at start (the backlog and channel/OMS/WMS feeds still go to Kafka directly).",
)
@config_option
def demo(
    orders: int | None,
    seed: int,
    incidents: tuple[str, ...],
    normal: bool,
    history: float,
    duration: float | None,
    offline: bool,
    via_gateway: bool,
    config_path: Path | None,
) -> None:
    """Run everything on this machine: broker, Redis, simulator, pipeline, live summary."""
    from sim import INCIDENTS

    settings = _settings(config_path)  # a bad configuration fails before anything starts
    showcase = not normal and not incidents  # the default demo shows every alert type early
    if normal:
        incidents = ()
    elif not incidents:
        incidents = DEMO_INCIDENTS
    unknown = sorted(set(incidents) - set(INCIDENTS))
    if unknown:
        raise click.ClickException(
            f"unknown incident {unknown[0]!r}; known: {', '.join(sorted(INCIDENTS))}"
        )
    if offline and via_gateway:
        raise click.ClickException("--gateway needs the live demo (not --replay)")
    if offline:
        _replay_demo(settings, orders or 5000, seed, incidents)
        return

    from connectors.broker import BrokerError
    from connectors.processes import stop_signals_interrupt
    from dataflows.demo import DemoOptions, run_demo

    opts = DemoOptions(
        orders_per_day=orders or 20_000,
        seed=seed,
        incidents=incidents,
        showcase=showcase,
        history_hours=history,
        duration=duration,
        gateway=via_gateway,
    )
    try:
        with stop_signals_interrupt():  # also while the broker and Redis start
            code = run_demo(config_path, opts)
    except BrokerError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("stopped while starting up")
        sys.exit(130)
    sys.exit(code)


def _replay_demo(settings: Settings, orders: int, seed: int, incidents: tuple[str, ...]) -> None:
    from dataflows.replay import run_replay
    from sim import generate, write_jsonl

    click.echo(f"incidents: {', '.join(incidents) or 'none'}")
    # A throwaway: `orderguard simulate --out` and `orderguard replay --out` keep files.
    with tempfile.TemporaryDirectory(prefix="orderguard-demo-") as tmp:
        work = Path(tmp)
        day = work / "day.jsonl"
        start = datetime(2026, 3, 2, tzinfo=UTC)
        events = generate(
            orders=orders, seed=seed, start=start, hours=24, incidents=frozenset(incidents)
        )
        n = write_jsonl(day, events)
        click.echo(f"simulated {orders:,} orders in a day, {n:,} events; replaying them")
        summary = run_replay(settings, [day], work / "out")
    click.echo(summary.render())


def _operator_options(f: Any) -> Any:
    f = click.option("--reason", default=None, help="Why (recorded in the decision).")(f)
    f = click.option(
        "--operator",
        default=None,
        help="Who gives the command (default: $ORDERGUARD_OPERATOR, else the login name).",
    )(f)
    return config_option(f)


def _send_command(config_path: Path | None, payload: dict[str, Any]) -> None:
    """Validate as the pipeline will, produce to the control topic, wait for the ack."""
    from connectors.broker import BrokerError
    from dataflows.operator import CommandRefused, PublishError, prepare, publish, what_follows
    from dataflows.stack import BROKER_VAR, resolve

    stack = resolve(config_path)
    settings = _settings(stack.config)
    try:
        command, value = prepare(settings, payload)
    except CommandRefused as e:
        raise click.ClickException(f"command refused, nothing sent: {e}") from None
    try:
        publish(settings, command, value)
    except (BrokerError, PublishError) as e:
        hint = stack.hint(BROKER_VAR, "kafka.bootstrap_servers")
        raise click.ClickException(f"{e} {hint}") from None
    kafka = settings.kafka
    click.echo(
        f"sent command {command.command_id}: {command.breaker} {command.key} -> {command.state} "
        f"by {command.operator} to {kafka.control_topic} at {kafka.bootstrap_servers}, "
        f"{stack.describe()}"
    )
    click.echo(what_follows(command, kafka.output_topics.breakers))


def _who(operator: str | None) -> str:
    from dataflows.operator import default_operator

    return operator if operator is not None else default_operator()


@main.group()
def hold() -> None:
    """Customer holds: operator commands through the control topic."""


@hold.command("release")
@click.argument("customer_id")
@_operator_options
def hold_release(
    customer_id: str, operator: str | None, reason: str | None, config_path: Path | None
) -> None:
    """Release CUSTOMER_ID's hold (as `breaker force customer CUSTOMER_ID RELEASED`)."""
    from dataflows.operator import hold_release as payload

    _send_command(config_path, payload(customer_id, _who(operator), reason))


@main.group()
def breaker() -> None:
    """Circuit breakers: operator commands through the control topic."""


@breaker.command("force")
@click.argument("kind")
@click.argument("key")
@click.argument("state")
@_operator_options
def breaker_force(
    kind: str,
    key: str,
    state: str,
    operator: str | None,
    reason: str | None,
    config_path: Path | None,
) -> None:
    """Force breaker KIND (channel, carrier, customer) KEY into STATE.

    \b
    channel, carrier: OPEN, CLOSED, HALF_OPEN (held until the next command),
                      AUTO (back to the automatic rules)
    customer:         HOLD (expires like any hold), RELEASED
    """
    from dataflows.operator import breaker_force as payload

    _send_command(config_path, payload(kind.lower(), key, state.upper(), _who(operator), reason))


@main.command()
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for machines.")
@config_option
def lookup(order_id: str, as_json: bool, config_path: Path | None) -> None:
    """Show the order ORDER_ID as the Redis order view holds it: status, alerts, timeline.

    ORDER_ID is any id the order is known by: its canonical id (the OMS id, or the
    channel's, pinduoduo:260127-123456789012345, for a channel in canonical_id: channel),
    a channel's or payment's reference with its namespace (taobao:3456789012345678), a
    tracking number, or an OMS id that a channel-named order links (oms:PDD2026…).
    """
    from connectors.redis_server import _redacted
    from dataflows.lookup import ViewUnreachable, read_order, render
    from dataflows.stack import REDIS_VAR, resolve

    stack = resolve(config_path)
    view_cfg = _settings(stack.config).redis
    hint = stack.hint(REDIS_VAR, "redis.url")
    if view_cfg.url is None:
        raise click.ClickException(f"no order view is configured {hint}")
    order_id = order_id.strip()  # ids are case-sensitive; surrounding whitespace is noise
    try:
        view = read_order(view_cfg, order_id)
    except ViewUnreachable as e:
        raise click.ClickException(f"{e} {hint}") from None
    where = f"{_redacted(view_cfg.url)}, keys {view_cfg.key_prefix}*, {stack.describe()}"
    if view is None:
        raise click.ClickException(
            f"order {order_id} is not in the view (unknown id, or past its retention): {where}"
        )
    if as_json:
        click.echo(view.as_json().decode())
    else:
        click.echo(f"{render(view)}\n\nfrom the order view at {where}")


@main.group()
def config() -> None:
    """Configuration tools."""


@config.command("check")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def config_check(path: Path | None) -> None:
    """Validate a configuration file; say what is wrong and where."""
    settings = _settings(path)
    click.echo(
        f"ok: {len(settings.sources)} sources, {len(settings.channels)} channels, "
        f"{len(settings.carriers)} carriers"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `orderguard` command."""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

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


@click.group()
def main() -> None:
    """orderguard: a streaming guardian for e-commerce order fulfillment."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@config_option
@click.option("--workers", "-w", default=1, show_default=True, help="Bytewax worker threads.")
@click.option("--batch-size", type=int, default=None, help="Input lines per batch.")
def replay(
    inputs: tuple[Path, ...],
    out_dir: Path,
    config_path: Path | None,
    workers: int,
    batch_size: int | None,
) -> None:
    """Replay recorded envelopes (JSONL) and write corrected/alerts/breakers/dead_letters."""
    from dataflows.replay import run_replay

    for p in inputs:
        if not p.is_file():
            raise click.ClickException(f"cannot read input file {p}: no such file")
        try:
            with p.open("rb") as f:
                f.read(1)
        except OSError as e:
            raise click.ClickException(f"cannot read input file {p}: {e.strerror}") from None
    settings = _settings(config_path)
    summary = run_replay(settings, list(inputs), out_dir, workers=workers, batch_size=batch_size)
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
def run(config_path: Path | None, workers: int, exit_when_caught_up: bool) -> None:
    """Run the live dataflow: Kafka in, Kafka out, resuming from recovery snapshots."""
    from connectors.broker import BrokerError
    from dataflows.live import RecoveryDirError, Stopped, run_live

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    settings = _settings(config_path)
    try:
        result = run_live(settings, workers=workers, exit_when_caught_up=exit_when_caught_up)
    except (BrokerError, RecoveryDirError) as e:
        raise click.ClickException(str(e)) from None
    except Stopped:
        rdir = settings.recovery.dir
        click.echo(f"stopped; the next run resumes from the last snapshot in {rdir}")
        sys.exit(130)
    state = "initialized" if result.recovery_initialized else "resumed from"
    click.echo(
        f"caught up: {result.records_delivered:,} records delivered; "
        f"recovery {state} {settings.recovery.dir}"
    )


DEMO_INCIDENTS = (
    "lost_payment_callback",
    "carrier_api_outage",
    "channel_error_storm",
    "reship_delivered",
    "stalled_tracking",
)


@main.command()
@click.option("--orders", default=5000, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--incident",
    "incidents",
    multiple=True,
    help=f"Switch an incident on (repeat). Default: {', '.join(DEMO_INCIDENTS)}.",
)
@click.option("--normal", is_flag=True, help="A normal day: no incidents (and no alerts).")
@config_option
def demo(
    orders: int, seed: int, incidents: tuple[str, ...], normal: bool, config_path: Path | None
) -> None:
    """Simulate a day of traffic and replay it through the pipeline, with a summary."""
    from dataflows.replay import run_replay
    from sim import generate, write_jsonl

    settings = _settings(config_path)
    if normal:
        incidents = ()
    elif not incidents:
        incidents = DEMO_INCIDENTS
    click.echo(f"incidents: {', '.join(incidents) or 'none'}")
    work = Path(tempfile.mkdtemp(prefix="orderguard-demo-"))
    day = work / "day.jsonl"
    start = datetime(2026, 3, 2, tzinfo=UTC)
    n = write_jsonl(
        day,
        generate(orders=orders, seed=seed, start=start, hours=24, incidents=frozenset(incidents)),
    )
    click.echo(f"simulated {orders:,} orders, {n:,} events -> {day}")
    summary = run_replay(settings, [day], work / "out")
    click.echo(summary.render())
    click.echo(f"outputs in {work / 'out'}/")


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

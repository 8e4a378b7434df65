"""``claimflow kafka ...`` (the local broker) and ``claimflow topics ...`` (topic admin)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from broker import local
from broker.admin import metadata, tcp_open
from broker.errors import BrokerError
from broker.jars import install_jars
from broker.logs import follow, tail_lines
from broker.settings import KAFKA_VERSION, KafkaSettings
from broker.topics import claimflow_topics, ensure_topics
from claimflow.logging_setup import configure_logging

if TYPE_CHECKING:
    from confluent_kafka.admin._metadata import ClusterMetadata

NOT_RUNNING_EXIT = 3  # as LSB init scripts report "program is not running"


class BrokerCommandError(click.ClickException):
    """A BrokerError shown as click's "Error: ..." with exit code 1, no traceback."""


def _settings() -> KafkaSettings:
    configure_logging()
    return KafkaSettings()


@click.group("kafka")
def kafka_group() -> None:
    """Local single-node Kafka broker (KRaft) under CLAIMFLOW_HOME.

    \b
    claimflow kafka start     # returns once the broker answers; prints the bootstrap address
    claimflow kafka status
    claimflow kafka logs -f
    claimflow kafka stop
    """


@kafka_group.command("install")
def install() -> None:
    """Fetch the Kafka jars into the cache (idempotent); print the jars folder."""
    settings = _settings()
    try:
        click.echo(install_jars(settings))
    except BrokerError as exc:
        raise BrokerCommandError(str(exc)) from exc


@kafka_group.command("start")
def start() -> None:
    """Start the broker in the background (no-op when it already runs)."""
    settings = _settings()
    try:
        result = local.start(settings)
    except BrokerError as exc:
        raise BrokerCommandError(str(exc)) from exc
    state = "already running" if result.already_running else f"started in {result.seconds:.1f} s"
    click.echo(f"Kafka {KAFKA_VERSION} {state} (pid {result.pid})")
    click.echo(f"  data: {settings.data_dir}")
    click.echo(f"  logs: {settings.log_file}")
    click.echo(f"bootstrap: {result.bootstrap}")


@kafka_group.command("stop")
def stop() -> None:
    """Stop the broker gracefully (SIGTERM; SIGKILL after KAFKA_STOP_TIMEOUT_S)."""
    settings = _settings()
    result = local.stop(settings)
    if result.pid is None:
        click.echo("Kafka is not running")
    elif result.graceful:
        click.echo(f"Kafka stopped (pid {result.pid}, {result.seconds:.1f} s)")
    else:
        raise BrokerCommandError(f"Kafka (pid {result.pid}) did not stop in time and was killed")


@kafka_group.command("status")
def status() -> None:
    """Whether the broker runs and answers (exit 0), runs but does not answer (1), or is
    not running (3)."""
    settings = _settings()
    state = local.status(settings)
    if not state.running:
        click.echo(f"Kafka is not running (CLAIMFLOW_HOME={settings.home})")
        sys.exit(NOT_RUNNING_EXIT)
    if not state.answers:
        click.echo(f"Kafka runs (pid {state.pid}) but does not answer on {state.bootstrap}")
        sys.exit(1)
    try:
        topics = [t for t in metadata(state.bootstrap).topics if not t.startswith("__")]
    except BrokerError as exc:
        raise BrokerCommandError(str(exc)) from exc
    click.echo(f"Kafka {KAFKA_VERSION} running (pid {state.pid}), {len(topics)} topics")
    click.echo(f"bootstrap: {state.bootstrap}")


@kafka_group.command("logs")
@click.option("-n", "--lines", default=50, show_default=True, help="How many last lines.")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines.")
def logs(lines: int, follow_: bool) -> None:
    """Show the broker log (CLAIMFLOW_HOME/logs/kafka.log)."""
    settings = _settings()
    if not settings.log_file.exists() and not follow_:
        raise BrokerCommandError(f"no broker log yet at {settings.log_file}")
    for line in tail_lines(settings.log_file, lines):
        click.echo(line)
    if follow_:
        try:
            for line in follow(settings.log_file):
                click.echo(line)
        except KeyboardInterrupt:
            pass


def _reachable(bootstrap: str) -> ClusterMetadata:
    """Metadata, or an error that says how to get a broker (instead of a 30 s timeout)."""
    if not tcp_open(bootstrap):
        raise BrokerError(
            f"no Kafka broker answers at {bootstrap}: start the local one "
            "(`claimflow kafka start`) or point KAFKA_BOOTSTRAP_SERVERS (or --bootstrap) at one")
    return metadata(bootstrap)


@click.group("topics")
def topics_group() -> None:
    """The claimflow topics: claims, claims.approved, claims.investigate, claims.deadletter,
    claims.labels (compacted), claims.shadow."""


@topics_group.command("create")
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="Partitions per topic  [default: KAFKA_PARTITIONS, 6]")
@click.option("--bootstrap", default=None,
              help="Bootstrap servers  [default: KAFKA_BOOTSTRAP_SERVERS]")
def create(partitions: int | None, bootstrap: str | None) -> None:
    """Create the topics that are missing (idempotent; existing ones are left as they are)."""
    settings = _settings()
    target = bootstrap or settings.kafka_bootstrap_servers
    try:
        _reachable(target)
        results = ensure_topics(target, claimflow_topics(settings, partitions))
    except BrokerError as exc:
        raise BrokerCommandError(str(exc)) from exc
    for result in results:
        click.echo(f"{result.outcome:<8} {result.name} ({result.partitions} partitions)")


@topics_group.command("list")
@click.option("--bootstrap", default=None,
              help="Bootstrap servers  [default: KAFKA_BOOTSTRAP_SERVERS]")
def list_topics(bootstrap: str | None) -> None:
    """Show the claimflow topics and their partition counts."""
    settings = _settings()
    target = bootstrap or settings.kafka_bootstrap_servers
    try:
        meta = _reachable(target)
    except BrokerError as exc:
        raise BrokerCommandError(str(exc)) from exc
    for name in settings.topic_names():
        topic = meta.topics.get(name)
        click.echo(f"{name}: {len(topic.partitions)} partitions" if topic else f"{name}: missing")

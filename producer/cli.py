"""``claimflow generate`` and ``claimflow produce``."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

import click
import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from claimflow.logging_setup import configure_logging
from producer.csvio import read_claims_csv, write_claims_csv
from producer.encoding import EncodedClaims, encode_claims
from producer.errors import InputError, RowError
from producer.kafka import (
    DeliveryTracker,
    KafkaUnavailableError,
    SendReport,
    connect,
    produce_claims,
)
from producer.profiles import DEFAULT_ROWS, PROFILES, Profile
from producer.profiles import generate as generate_profile
from producer.settings import ProducerSettings

EXIT_FAILED: Final = 1
MAX_SHOWN_ROW_ERRORS: Final = 1000
SOURCE_OPTIONS: Final = ("rows", "profile", "seed", "anomaly_rate")


@contextmanager
def progress_bar(total: int, desc: str, quiet: bool) -> Iterator[tqdm]:
    """A bar on stderr; off with --quiet and when stderr is not a terminal. Log lines go
    through tqdm meanwhile, so they do not tear the bar."""
    with logging_redirect_tqdm(), tqdm(total=total, desc=desc, unit="claim", unit_scale=True,
                                       file=sys.stderr, disable=True if quiet else None,
                                       mininterval=0.25, leave=False) as bar:
        yield bar


def profile_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--profile", type=click.Choice(PROFILES), default="realistic",
                     show_default=True, help="seed: the original lab's dataset; realistic: "
                     "providers, patients and five labelled fraud patterns."),
        click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
                     help="Random seed: same arguments, same claims."),
        click.option("--rows", type=click.IntRange(min=1), default=None,
                     help=f"Claims in total [default: {DEFAULT_ROWS['seed']:,} for seed, "
                     f"{DEFAULT_ROWS['realistic']:,} for realistic]."),
        click.option("--anomaly-rate", type=click.FloatRange(0, 1), default=None,
                     help="Share of labelled anomalies [default: 50 in 1,050 for seed, "
                     "0.05 for realistic]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar, warnings only."),
    ]):
        command = option(command)
    return command


def make_frame(profile: Profile, rows: int | None, seed: int,
               anomaly_rate: float | None) -> pd.DataFrame:
    try:
        return generate_profile(profile, rows, seed, anomaly_rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def describe_labels(frame: pd.DataFrame) -> str:
    counts = frame.loc[frame["is_anomaly"], "pattern"].value_counts().sort_index()
    detail = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    return f"{int(frame['is_anomaly'].sum()):,} labelled anomalies" + (
        f": {detail}" if detail else "")


@click.command("generate")
@profile_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write (replaced atomically).")
def generate_command(profile: Profile, seed: int, rows: int | None, anomaly_rate: float | None,
                     quiet: bool, out: Path) -> None:
    """Generate synthetic claims to a CSV file (deterministic for the same arguments).

    \b
    Examples:
      claimflow generate --profile seed --seed 42 --out data/lab.csv
      claimflow generate --profile realistic --rows 1000000 --seed 7 --out data/claims.csv
    """
    configure_logging("WARNING" if quiet else "INFO")
    started = time.perf_counter()
    frame = make_frame(profile, rows, seed, anomaly_rate)
    try:
        with progress_bar(len(frame), "write", quiet) as bar:
            write_claims_csv(frame, out, progress=bar.update)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {len(frame):,} {profile} claims ({describe_labels(frame)}) to {out} "
               f"in {time.perf_counter() - started:.2f} s")


generate = generate_command  # the name claimflow/cli.py wires


def report_row_errors(errors: list[RowError], on_error: str) -> None:
    for error in errors[:MAX_SHOWN_ROW_ERRORS]:
        click.echo(f"bad row: {error}", err=True)
    if len(errors) > MAX_SHOWN_ROW_ERRORS:
        click.echo(f"bad row: ... and {len(errors) - MAX_SHOWN_ROW_ERRORS:,} more", err=True)
    action = "skipping them" if on_error == "skip" else "nothing produced (--on-error fail)"
    click.echo(f"{len(errors):,} bad row(s); {action}", err=True)


def load_claims(from_csv: Path | None, profile: Profile, rows: int | None, seed: int,
                anomaly_rate: float | None, labels: bool,
                quiet: bool) -> tuple[EncodedClaims, list[RowError]]:
    """Generated or CSV claims, encoded and validated; bad rows come back as errors."""
    if from_csv is None:
        frame = make_frame(profile, rows, seed, anomaly_rate)
        errors: list[RowError] = []

        def locate(i: int) -> str:
            return f"row {i + 1}"
    else:
        try:
            parsed = read_claims_csv(from_csv)
        except InputError as exc:
            raise click.ClickException(str(exc)) from exc
        frame, errors, lines = parsed.frame, parsed.errors, parsed.lines

        def locate(i: int) -> str:
            return f"line {lines[i]}"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with progress_bar(len(frame), "validate", quiet) as bar:
        claims, invalid = encode_claims(frame, locate, default_submitted_at=now, labels=labels,
                                        progress=bar.update)
    errors = sorted(errors + invalid, key=lambda e: int(e.location.split()[1]))
    return claims, errors


class Interrupts:
    """First SIGINT/SIGTERM: stop sending, flush, report. Second: stop waiting for the flush."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.signal: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.abort.set()
        self.signal = self.signal or signum
        self.stop.set()

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def summary(report: SendReport, skipped: int) -> str:
    line = (f"sent={report.sent} failed={report.failed} unconfirmed={report.unconfirmed} "
            f"skipped={skipped} elapsed={report.elapsed_s:.2f}s rate={report.rate:.0f} claims/s "
            f"topic={report.topic}")
    if report.interrupted:
        line += f" interrupted (not sent: {report.total - report.enqueued})"
    if report.fatal_error:
        line += f" fatal_error={report.fatal_error!r}"
    return line


def exit_code(report: SendReport, interrupts: Interrupts) -> int:
    """0 all sent; 1 any failed or unconfirmed delivery (or fatal error); 128+signal when
    interrupted with everything handed over before the signal acknowledged."""
    if report.failed or report.unconfirmed or report.fatal_error:
        return EXIT_FAILED
    if interrupts.signal is not None:
        return 128 + interrupts.signal
    return 0


@click.command("produce")
@profile_options
@click.option("--from-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Send the claims of this CSV instead of generating them.")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="fail",
              show_default=True, help="Bad rows (reported with their line): skip them, or "
              "send nothing and exit 1.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Claims per second (token bucket) [default: as fast as possible].")
@click.option("--topic", default=None, help="Target topic [default: PRODUCER_TOPIC or claims].")
@click.option("--labels/--no-labels", default=True, show_default=True,
              help="Send the is_anomaly/pattern labels as headers (when the input has them).")
@click.pass_context
def produce(ctx: click.Context, profile: Profile, seed: int, rows: int | None,
            anomaly_rate: float | None, quiet: bool, from_csv: Path | None, on_error: str,
            rate: float | None, topic: str | None, labels: bool) -> None:
    """Stream claims into Kafka, keyed by claim_id (idempotent producer, acks=all).

    Ctrl-C stops sending, waits for what was sent to be acknowledged, prints the summary and
    exits 130 (a second Ctrl-C stops waiting). Exit 1 if any delivery failed.

    \b
    Examples:
      claimflow produce --rows 100000 --seed 7 --rate 2000
      claimflow produce --from-csv data/lab.csv --on-error skip --topic claims
    """
    configure_logging("WARNING" if quiet else "INFO")
    explicit = [name for name in SOURCE_OPTIONS
                if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if from_csv is not None and explicit:
        options = ", ".join("--" + name.replace("_", "-") for name in explicit)
        raise click.UsageError(f"--from-csv cannot be combined with {options}")
    try:
        settings = ProducerSettings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid PRODUCER_ setting: {exc}") from exc
    target = topic or settings.topic
    claims, errors = load_claims(from_csv, profile, rows, seed, anomaly_rate, labels, quiet)
    if errors:
        report_row_errors(errors, on_error)
        if on_error == "fail":
            ctx.exit(EXIT_FAILED)
    tracker = DeliveryTracker()
    try:
        producer = connect(settings, target, tracker, throttled=rate is not None)
    except KafkaUnavailableError as exc:
        raise click.ClickException(str(exc)) from exc
    interrupts = Interrupts()
    with interrupts.installed(), progress_bar(len(claims), f"produce {target}", quiet) as bar:
        report = produce_claims(
            producer, target, claims, tracker, stop=interrupts.stop, abort=interrupts.abort,
            flush_timeout_s=settings.flush_timeout_s, rate=rate,
            progress=lambda acked: bar.update(acked - bar.n),
        )
    click.echo(summary(report, skipped=len(errors)))
    ctx.exit(exit_code(report, interrupts))


"""``claimflow generate`` and ``claimflow produce``."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import click
import numpy as np
import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from claimflow.logging_setup import configure_logging
from producer.csvio import read_claims_csv, write_claims_csv
from producer.encoding import EncodedClaims, encode_claims
from producer.errors import InputError, RowError
from producer.jsonl import encode_table, read_claims_jsonl, write_claims_jsonl
from producer.kafka import (
    DeliveryTracker,
    KafkaUnavailableError,
    SendReport,
    connect,
    produce_claims,
)
from producer.profiles import DEFAULT_ROWS, Profile
from producer.profiles import generate as generate_profile
from producer.realistic_v2 import generate_realistic_claims
from producer.settings import ProducerSettings
from producer.synthea import DEFAULT_SINCE, write_jsonl
from producer.synthea_cli import (
    DEFAULT_PATIENTS,
    SYNTHEA_OPTIONS,
    synthea_claims_with_fraud,
    synthea_options,
    synthea_run,
)
from producer.synthea_run import DEFAULT_REFERENCE_DATE, DEFAULT_STATE, DEFAULT_YEARS, SyntheaRun
from producer.synthea_settings import SyntheaSettings
from producer.table import ClaimTable
from producer.typology import PATTERNS

EXIT_FAILED: Final = 1
MAX_SHOWN_ROW_ERRORS: Final = 1000
SOURCE_OPTIONS: Final = ("rows", "profile", "seed", "anomaly_rate", "patients", "state", "since",
                         "years", "reference_date")
# Command-line profiles: realistic is contract v2 (JSON Lines); seed and realistic-v1 are the
# v1 frames of producer.profiles (CSV). realistic-v1 stays until every consumer reads v2.
CLI_PROFILES: Final = ("seed", "realistic", "synthea", "realistic-v1")
V2_PROFILES: Final = ("realistic", "synthea")
V1_PROFILE: Final[dict[str, Profile]] = {"seed": "seed", "realistic-v1": "realistic"}


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
        click.option("--profile", type=click.Choice(CLI_PROFILES), default="realistic",
                     show_default=True, help="seed: the original lab's dataset (v1, CSV); "
                     "realistic: v2 claims of members, providers and procedures with seven "
                     "labelled fraud patterns (JSON Lines); synthea: v2 claims of patients "
                     "simulated by Synthea, with the same fraud patterns (JSON Lines); "
                     "realistic-v1: the former v1 realistic profile (CSV)."),
        click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
                     help="Random seed: same arguments, same claims."),
        click.option("--rows", type=click.IntRange(min=1), default=None,
                     help=f"Claims in total [default: {DEFAULT_ROWS['seed']:,} for seed, "
                     f"{DEFAULT_ROWS['realistic']:,} otherwise]."),
        click.option("--anomaly-rate", type=click.FloatRange(0, 1), default=None,
                     help="Share of labelled anomalies [default: 50 in 1,050 for seed, "
                     "0.062 for realistic, 0.05 for realistic-v1]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar, warnings only."),
    ]):
        command = option(command)
    return command


def make_frame(profile: str, rows: int | None, seed: int,
               anomaly_rate: float | None) -> pd.DataFrame:
    try:
        return generate_profile(V1_PROFILE[profile], rows, seed, anomaly_rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def make_table(rows: int | None, seed: int, anomaly_rate: float | None) -> ClaimTable:
    try:
        return generate_realistic_claims(rows or DEFAULT_ROWS["realistic"], seed, anomaly_rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def describe_patterns(table: ClaimTable) -> str:
    counts = np.bincount(table.pattern, minlength=len(PATTERNS))
    detail = ", ".join(f"{name} {count:,}" for name, count in zip(PATTERNS[1:], counts[1:],
                                                                  strict=True) if count)
    return f"{int(counts[1:].sum()):,} labelled anomalies" + (f": {detail}" if detail else "")


def check_out_path(profile: str, out: Path) -> None:
    """v2 claims are JSON Lines and v1 claims CSV: a mismatched suffix is a usage error."""
    suffix = out.suffix.lower()
    if profile in V2_PROFILES and suffix == ".csv":
        raise click.BadParameter(
            f"--profile {profile} writes contract v2 claims (lines, diagnoses) as JSON Lines; "
            "use a .jsonl path (CSV stays for v1: --profile seed or realistic-v1)",
            param_hint="--out")
    if profile not in V2_PROFILES and suffix == ".jsonl":
        raise click.BadParameter(
            f"--profile {profile} writes contract v1 claims as CSV; use a .csv path "
            "(JSON Lines is for v2: --profile realistic or synthea)", param_hint="--out")


def describe_labels(frame: pd.DataFrame) -> str:
    counts = frame.loc[frame["is_anomaly"], "pattern"].value_counts().sort_index()
    detail = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    return f"{int(frame['is_anomaly'].sum()):,} labelled anomalies" + (
        f": {detail}" if detail else "")


def describe_dict_labels(claims: list[dict[str, Any]]) -> str:
    counts = Counter(claim["pattern"] for claim in claims if claim["is_anomaly"])
    detail = ", ".join(f"{name} {counts[name]:,}" for name in sorted(counts))
    return f"{sum(counts.values()):,} labelled anomalies" + (f": {detail}" if detail else "")


def synthea_source(ctx: click.Context, profile: str, seed: int, patients: int | None,
                   state: str | None, years: int | None,
                   reference_date: date | None) -> SyntheaRun | None:
    """The Synthea run for ``--profile synthea``; its options with another profile, and
    ``--rows`` with synthea (Synthea decides how many claims its patients have), are usage
    errors."""
    given = [name for name in (*SYNTHEA_OPTIONS, "rows")
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if profile != "synthea":
        misplaced = [name for name in given if name != "rows"]
        if misplaced:
            names = ", ".join("--" + name.replace("_", "-") for name in misplaced)
            raise click.UsageError(f"{names} only apply to --profile synthea")
        return None
    if "rows" in given:
        raise click.UsageError("--rows does not apply to --profile synthea (Synthea decides how "
                               "many claims its patients have); use --patients")
    return synthea_run(seed, patients or DEFAULT_PATIENTS, state or DEFAULT_STATE,
                       years or DEFAULT_YEARS, reference_date or DEFAULT_REFERENCE_DATE)


@click.command("generate")
@profile_options
@synthea_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write (replaced atomically): .jsonl for realistic and synthea (v2), "
              ".csv for seed and realistic-v1.")
@click.pass_context
def generate_command(ctx: click.Context, profile: str, seed: int, rows: int | None,
                     anomaly_rate: float | None, quiet: bool, patients: int | None,
                     state: str | None, since: date | None, years: int | None,
                     reference_date: date | None, out: Path) -> None:
    """Generate synthetic claims to a file (deterministic for the same arguments).

    \b
    Examples:
      claimflow generate --profile seed --seed 42 --out data/lab.csv
      claimflow generate --profile realistic --rows 1000000 --seed 7 --out data/claims.jsonl
      claimflow generate --profile synthea --patients 400 --seed 7 --out data/synthea.jsonl
    """
    configure_logging("WARNING" if quiet else "INFO")
    check_out_path(profile, out)
    run = synthea_source(ctx, profile, seed, patients, state, years, reference_date)
    started = time.perf_counter()
    try:
        if run is not None:
            claims, dropped = synthea_claims_with_fraud(
                run, since or DEFAULT_SINCE, anomaly_rate, quiet, SyntheaSettings())
            size = write_jsonl(claims, out)
            labels = describe_dict_labels(claims) + f"; {dropped:,} Synthea claims dropped"
        elif profile == "realistic":
            table = make_table(rows, seed, anomaly_rate)
            size, labels = len(table), describe_patterns(table)
            with progress_bar(size, "write", quiet) as bar:
                write_claims_jsonl(table, out, progress=bar.update)
        else:
            frame = make_frame(profile, rows, seed, anomaly_rate)
            size, labels = len(frame), describe_labels(frame)
            with progress_bar(size, "write", quiet) as bar:
                write_claims_csv(frame, out, progress=bar.update)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {size:,} {profile} claims ({labels}) to {out} "
               f"in {time.perf_counter() - started:.2f} s")


generate = generate_command  # the name claimflow/cli.py wires


def report_row_errors(errors: list[RowError], on_error: str) -> None:
    for error in errors[:MAX_SHOWN_ROW_ERRORS]:
        click.echo(f"bad row: {error}", err=True)
    if len(errors) > MAX_SHOWN_ROW_ERRORS:
        click.echo(f"bad row: ... and {len(errors) - MAX_SHOWN_ROW_ERRORS:,} more", err=True)
    action = "skipping them" if on_error == "skip" else "nothing produced (--on-error fail)"
    click.echo(f"{len(errors):,} bad row(s); {action}", err=True)


def load_claims(from_file: Path | None, profile: str, rows: int | None, seed: int,
                anomaly_rate: float | None, labels: bool,
                quiet: bool) -> tuple[EncodedClaims, list[RowError]]:
    """Generated or file claims, encoded and validated; bad rows come back as errors. v2
    (realistic, .jsonl) records are keyed by member_id, v1 ones by claim_id."""
    if from_file is not None and from_file.suffix.lower() == ".jsonl":
        return load_jsonl(from_file, labels, quiet)
    if from_file is None and profile == "realistic":
        table = make_table(rows, seed, anomaly_rate)
        with progress_bar(len(table), "validate", quiet) as bar:
            return encode_table(table, labels=labels, progress=bar.update)
    return load_v1(from_file, profile, rows, seed, anomaly_rate, labels, quiet)


def load_synthea(run: SyntheaRun, since: date, anomaly_rate: float | None, labels: bool,
                 quiet: bool) -> tuple[EncodedClaims, list[RowError]]:
    """Synthea's claims with fraud, through the same JSON Lines validation as a file."""
    claims, _dropped = synthea_claims_with_fraud(run, since, anomaly_rate, quiet,
                                                 SyntheaSettings())
    with tempfile.TemporaryDirectory(prefix="claimflow-synthea-") as folder:
        path = Path(folder) / "synthea.jsonl"
        write_jsonl(claims, path)
        return load_jsonl(path, labels, quiet)


def load_jsonl(path: Path, labels: bool, quiet: bool) -> tuple[EncodedClaims, list[RowError]]:
    with progress_bar(0, "validate", quiet) as bar:
        try:
            return read_claims_jsonl(path, labels=labels, progress=bar.update)
        except InputError as exc:
            raise click.ClickException(str(exc)) from exc


def load_v1(from_csv: Path | None, profile: str, rows: int | None, seed: int,
            anomaly_rate: float | None, labels: bool,
            quiet: bool) -> tuple[EncodedClaims, list[RowError]]:
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


def file_source(ctx: click.Context, from_file: Path | None, from_csv: Path | None) -> Path | None:
    """The input file, if any; a file excludes the generation options and the other file."""
    if from_file is not None and from_csv is not None:
        raise click.UsageError("--from-file and --from-csv cannot be combined")
    if from_csv is not None and from_csv.suffix.lower() == ".jsonl":
        raise click.UsageError("--from-csv reads v1 CSV; use --from-file for JSON Lines")
    if from_file is not None and from_file.suffix.lower() not in (".jsonl", ".csv"):
        raise click.UsageError(f"--from-file {from_file}: expected a .jsonl (v2) or .csv (v1) "
                               "file")
    source = from_file or from_csv
    explicit = [name for name in SOURCE_OPTIONS
                if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if source is not None and explicit:
        option = "--from-file" if from_file else "--from-csv"
        options = ", ".join("--" + name.replace("_", "-") for name in explicit)
        raise click.UsageError(f"{option} cannot be combined with {options}")
    return source


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
@synthea_options
@click.option("--from-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Send the claims of this file instead of generating them: .jsonl (v2, "
              "keyed by member_id) or .csv (v1, keyed by claim_id).")
@click.option("--from-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Send the claims of this v1 CSV (the same as --from-file PATH.csv).")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="fail",
              show_default=True, help="Bad rows (reported with their line): skip them, or "
              "send nothing and exit 1.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Claims per second (token bucket) [default: as fast as possible].")
@click.option("--topic", default=None, help="Target topic [default: PRODUCER_TOPIC or claims].")
@click.option("--labels/--no-labels", default=True, show_default=True,
              help="Send the is_anomaly/pattern labels as headers (when the input has them).")
@click.pass_context
def produce(ctx: click.Context, profile: str, seed: int, rows: int | None,
            anomaly_rate: float | None, quiet: bool, patients: int | None, state: str | None,
            since: date | None, years: int | None, reference_date: date | None,
            from_file: Path | None,
            from_csv: Path | None, on_error: str, rate: float | None, topic: str | None,
            labels: bool) -> None:
    """Stream claims into Kafka (idempotent producer, acks=all): v2 claims keyed by
    member_id, v1 claims by claim_id.

    Ctrl-C stops sending, waits for what was sent to be acknowledged, prints the summary and
    exits 130 (a second Ctrl-C stops waiting). Exit 1 if any delivery failed.

    \b
    Examples:
      claimflow produce --rows 100000 --seed 7 --rate 2000
      claimflow produce --from-file data/claims.jsonl --on-error skip --topic claims
      claimflow produce --profile synthea --patients 100 --rate 50
      claimflow produce --from-csv data/lab.csv --on-error skip --topic claims
    """
    configure_logging("WARNING" if quiet else "INFO")
    source = file_source(ctx, from_file, from_csv)
    try:
        settings = ProducerSettings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid PRODUCER_ setting: {exc}") from exc
    target = topic or settings.topic
    run = None if source else synthea_source(ctx, profile, seed, patients, state, years,
                                             reference_date)
    if run is not None:
        claims, errors = load_synthea(run, since or DEFAULT_SINCE, anomaly_rate, labels, quiet)
    else:
        claims, errors = load_claims(source, profile, rows, seed, anomaly_rate, labels, quiet)
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


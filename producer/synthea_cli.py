"""Command-line pieces of the Synthea profile: ``claimflow synthea install`` and the options
and steps of ``claimflow generate|produce --profile synthea``."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from types import TracebackType
from typing import Any, Final

import click
from tqdm import tqdm

from claimflow.logging_setup import configure_logging
from producer.synthea import DEFAULT_SINCE, FRAUD_STREAM, random_stream, synthea_conversion
from producer.synthea_install import SyntheaError, install_jars
from producer.synthea_run import DEFAULT_REFERENCE_DATE, DEFAULT_STATE, DEFAULT_YEARS, SyntheaRun
from producer.synthea_settings import SyntheaSettings
from producer.typology import inject_fraud

logger = logging.getLogger(__name__)

# Synthea prints one line per simulated person: "12 -- Name (34 y/o F) City, State  (567)";
# the dead carry "DECEASED" and do not count toward the population asked for.
PERSON_LINE: Final = re.compile(r"^\d+ -- ")
LOG_EVERY: Final = 0.1  # without a terminal: a log line per 10 % of the patients


class PatientProgress:
    """Synthea's console lines as progress on stderr: a bar with the elapsed time on a
    terminal, a log line per 10 % otherwise, nothing with --quiet."""

    def __init__(self, patients: int, quiet: bool) -> None:
        self.patients = patients
        self.quiet = quiet
        self.alive = 0
        self.started = time.monotonic()
        self.bar = tqdm(total=patients, desc="synthea", unit="patient", file=sys.stderr,
                        disable=True if quiet else None, leave=False, mininterval=0.5)

    def __call__(self, line: str) -> None:
        if not PERSON_LINE.match(line) or "DECEASED" in line:
            return
        self.alive += 1
        self.bar.update(1)
        step = max(1, int(self.patients * LOG_EVERY))
        if self.bar.disable and not self.quiet and self.alive % step == 0:
            logger.info("Synthea: %d of %d patients, %.0f s", self.alive, self.patients,
                        time.monotonic() - self.started)

    def __enter__(self) -> PatientProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.bar.close()


def _day(_ctx: click.Context, _param: click.Parameter, value: datetime | None) -> date | None:
    return value.date() if value is not None else None


def synthea_options(command: Callable[..., None]) -> Callable[..., None]:
    """--patients, --state, --since, --years, --reference-date (``--profile synthea`` only)."""
    day = click.DateTime(formats=["%Y-%m-%d"])
    for option in reversed([
        click.option("--patients", type=click.IntRange(min=1), default=None,
                     help="synthea: living patients simulated (~36 claims each since 2023) "
                     "[default: 400]."),
        click.option("--state", default=None,
                     help=f"synthea: US state of the population [default: {DEFAULT_STATE}]."),
        click.option("--since", type=day, default=None, callback=_day,
                     help=f"synthea: keep claims served on or after this date "
                     f"[default: {DEFAULT_SINCE.isoformat()}]."),
        click.option("--years", type=click.IntRange(min=1, max=100), default=None,
                     help=f"synthea: years of history exported [default: {DEFAULT_YEARS}]."),
        click.option("--reference-date", type=day, callback=_day, default=None,
                     help="synthea: Synthea's 'today', pinned so the output does not change "
                     f"with the day [default: {DEFAULT_REFERENCE_DATE.isoformat()}]."),
    ]):
        command = option(command)
    return command


SYNTHEA_OPTIONS: Final = ("patients", "state", "since", "years", "reference_date")
DEFAULT_PATIENTS: Final = 400


def synthea_claims_with_fraud(run: SyntheaRun, since: date, anomaly_rate: float | None,
                              quiet: bool, settings: SyntheaSettings
                              ) -> tuple[list[dict[str, Any]], int]:
    """Run or reuse Synthea, convert its claims, inject labelled fraud (the typology, on its
    own random stream of the seed); returns the claims and how many Synthea claims were
    dropped as unconvertible."""
    try:
        with PatientProgress(run.patients, quiet) as progress:
            conversion = synthea_conversion(run, since=since, settings=settings,
                                            on_line=progress)
        claims = inject_fraud(conversion.claims, random_stream(run.seed, FRAUD_STREAM),
                              anomaly_rate=anomaly_rate)
    except (SyntheaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    return claims, sum(conversion.dropped.values())


def synthea_run(seed: int, patients: int, state: str, years: int,
                reference_date: date) -> SyntheaRun:
    return SyntheaRun(seed=seed, patients=patients, state=state,
                      reference_date=reference_date, years=years)


@click.group("synthea")
def synthea_group() -> None:
    """Synthea (MITRE's synthetic patients) as a source of v2 claims."""


@synthea_group.command("install")
def install() -> None:
    """Fetch Synthea's jars into the cache (idempotent); print the jars folder."""
    configure_logging("INFO")
    try:
        click.echo(install_jars(SyntheaSettings()))
    except SyntheaError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    synthea_group()

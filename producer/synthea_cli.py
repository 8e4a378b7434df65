"""Command-line pieces of the Synthea profile: ``install``, ``generate`` and their options.

Not yet a ``claimflow`` subcommand (adding one regenerates the README's command reference);
until it is wired in, run ``python -m producer.synthea_cli install|generate``.
``synthea_options`` and :func:`generate_synthea` are meant for ``claimflow generate
--profile synthea``; :func:`inject_fraud_hook` is where ``producer.typology`` plugs in.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import click
import numpy as np
from tqdm import tqdm

from claimflow.logging_setup import configure_logging
from producer.synthea import (
    DEFAULT_SINCE,
    FRAUD_STREAM,
    labelled,
    random_stream,
    synthea_conversion,
    write_jsonl,
)
from producer.synthea_install import SyntheaError, install_jars
from producer.synthea_run import DEFAULT_REFERENCE_DATE, DEFAULT_STATE, DEFAULT_YEARS, SyntheaRun
from producer.synthea_settings import SYNTHEA_VERSION, SyntheaSettings

logger = logging.getLogger(__name__)

# Synthea prints one line per simulated person: "12 -- Name (34 y/o F) City, State  (567)";
# the dead carry "DECEASED" and do not count toward the population asked for.
PERSON_LINE: Final = re.compile(r"^\d+ -- ")
LOG_EVERY: Final = 0.1  # without a terminal: a log line per 10 % of the patients


def inject_fraud_hook(claims: list[dict[str, Any]],
                      rng: np.random.Generator) -> list[dict[str, Any]]:
    """Where fraud is injected into the normal claims.

    The lead replaces this body with ``producer.typology.inject_fraud(claims, rng,
    anomaly_rate=...)`` once that module is merged. Until then every claim goes out labelled
    normal, and ``generate`` says that no fraud was injected.
    """
    del rng  # used by inject_fraud
    return [labelled(claim) for claim in claims]


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
    """--seed, --patients, --state, --since, --years, --reference-date, --quiet."""
    day = click.DateTime(formats=["%Y-%m-%d"])
    for option in reversed([
        click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
                     help="Synthea's seed and clinician seed; also seeds submission delays."),
        click.option("--patients", type=click.IntRange(min=1), default=400, show_default=True,
                     help="Living patients Synthea simulates (~36 claims each since 2023)."),
        click.option("--state", default=DEFAULT_STATE, show_default=True,
                     help="US state Synthea draws the population from."),
        click.option("--since", type=day, default=DEFAULT_SINCE.isoformat(), callback=_day,
                     show_default=True, help="Keep claims with service date on or after it."),
        click.option("--years", type=click.IntRange(min=1, max=100), default=DEFAULT_YEARS,
                     show_default=True, help="Years of history Synthea exports."),
        click.option("--reference-date", type=day, callback=_day,
                     default=DEFAULT_REFERENCE_DATE.isoformat(), show_default=True,
                     help="Synthea's 'today' (pinned, so output does not change with the day)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress, warnings only."),
    ]):
        command = option(command)
    return command


def generate_synthea(run: SyntheaRun, since: date, out: Path, quiet: bool,
                     settings: SyntheaSettings) -> str:
    """Run or reuse Synthea, convert, inject fraud, write JSONL; return a summary line."""
    started = time.perf_counter()
    try:
        with PatientProgress(run.patients, quiet) as progress:
            conversion = synthea_conversion(run, since=since, settings=settings,
                                            on_line=progress)
        claims = inject_fraud_hook(conversion.claims, random_stream(run.seed, FRAUD_STREAM))
        count = write_jsonl(claims, out)
    except (SyntheaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    dropped = sum(conversion.dropped.values())
    anomalies = sum(1 for claim in claims if claim["is_anomaly"])
    return (f"wrote {count:,} Synthea claims ({anomalies:,} labelled anomalies; "
            f"{dropped:,} dropped) to {out} in {time.perf_counter() - started:.1f} s")


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


@synthea_group.command("generate")
@synthea_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSONL file to write (one claim per line, replaced atomically).")
def generate(seed: int, patients: int, state: str, since: date, years: int,
             reference_date: date, quiet: bool, out: Path) -> None:
    """Simulate patients with Synthea and write their claims as v2 JSONL.

    \b
    Examples:
      python -m producer.synthea_cli generate --patients 400 --seed 7 --out data/synthea.jsonl
    """
    configure_logging("WARNING" if quiet else "INFO")
    run = SyntheaRun(seed=seed, patients=patients, state=state,
                     reference_date=reference_date, years=years)
    click.echo(generate_synthea(run, since, out, quiet, SyntheaSettings()))
    click.echo(f"Synthea {SYNTHEA_VERSION}: no fraud injected yet (producer/typology.py is "
               f"wired in by `claimflow generate --profile synthea`)", err=True)


if __name__ == "__main__":
    synthea_group()

"""The Synthea profile's engine: MITRE's simulated patients as v2 claims, and JSONL output.

:func:`synthea_claims` runs Synthea (or reuses its cached output for the same arguments) and
converts its claims; :func:`write_jsonl` writes claims one per line. Fraud is injected between
the two by ``producer.typology.inject_fraud`` (wired by ``claimflow generate``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from producer.synthea_convert import Conversion, convert, describe
from producer.synthea_run import (
    DEFAULT_REFERENCE_DATE,
    DEFAULT_STATE,
    DEFAULT_YEARS,
    LineSink,
    SyntheaRun,
    synthea_tables_dir,
)
from producer.synthea_settings import SyntheaSettings
from producer.synthea_tables import read_tables

logger = logging.getLogger(__name__)

DEFAULT_SINCE: Final = date(2023, 1, 1)
# Independent random streams from one seed: claim delays here, fraud injection by the caller.
DELAY_STREAM: Final = 0
FRAUD_STREAM: Final = 1


def random_stream(seed: int, stream: int) -> np.random.Generator:
    """Generator number ``stream`` of ``seed`` (streams never overlap)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(stream + 1)[stream])


def synthea_conversion(run: SyntheaRun, *, since: date = DEFAULT_SINCE,
                       settings: SyntheaSettings | None = None,
                       on_line: LineSink | None = None) -> Conversion:
    """Synthea's claims for ``run`` converted, with the counts of what was dropped."""
    folder = synthea_tables_dir(run, settings or SyntheaSettings(), on_line)
    conversion = convert(read_tables(folder), since=since,
                         rng=random_stream(run.seed, DELAY_STREAM))
    level = logging.WARNING if conversion.dropped else logging.INFO
    logger.log(level, "Synthea claims since %s: %s", since, describe(conversion))
    return conversion


def synthea_claims(*, seed: int, patients: int, state: str = DEFAULT_STATE,
                   since: date = DEFAULT_SINCE, years: int = DEFAULT_YEARS,
                   reference_date: date = DEFAULT_REFERENCE_DATE,
                   settings: SyntheaSettings | None = None,
                   on_line: LineSink | None = None) -> list[dict[str, Any]]:
    """Normal v2 claims (JSON-ready dicts) sorted by submitted_at; same arguments, same claims.

    ``on_line`` receives Synthea's console lines while it runs (nothing on a cache hit).
    """
    run = SyntheaRun(seed=seed, patients=patients, state=state,
                     reference_date=reference_date, years=years)
    return synthea_conversion(run, since=since, settings=settings, on_line=on_line).claims


def labelled(claim: dict[str, Any]) -> dict[str, Any]:
    """The claim with its labels; a claim without them is normal."""
    return {**claim, "is_anomaly": claim.get("is_anomaly", False),
            "pattern": claim.get("pattern", "")}


def write_jsonl(claims: Iterable[dict[str, Any]], path: Path) -> int:
    """Write one claim per line (with ``is_anomaly`` and ``pattern``) atomically; return the
    number of lines. Key order is the claims' own, so equal claims give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "wb") as sink:
            for claim in claims:
                sink.write(orjson.dumps(labelled(claim), option=orjson.OPT_APPEND_NEWLINE))
                count += 1
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count

"""Generation profiles: pure functions from explicit parameters to a claims DataFrame.

Every profile returns the columns of :data:`producer.columns.ALL_COLUMNS`: the claim fields
in the lab's order, ``submitted_at`` (UTC, millisecond resolution), then the labels
``is_anomaly`` (bool) and ``pattern`` (empty for normal claims). Labels are for evaluation
only; they never become model features.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

import numpy as np
import pandas as pd

from producer.columns import ALL_COLUMNS, NORMAL_PATTERN
from producer.realistic import generate_realistic_profile
from producer.timestamps import submission_times

logger = logging.getLogger(__name__)

Profile = Literal["seed", "realistic"]
PROFILES: Final[tuple[Profile, ...]] = ("seed", "realistic")


# The lab's dataset: 1,000 normal claims and 50 anomalies.
LAB_NORMAL_ROWS: Final = 1000
LAB_ANOMALY_ROWS: Final = 50
LAB_ROWS: Final = LAB_NORMAL_ROWS + LAB_ANOMALY_ROWS
SEED_PATTERN: Final = "gross_outlier"  # the lab's anomalies: ~10x amounts, 10-19 services
# The contract wants claim_amount > 0; normal(1000, 250) goes below zero about 3 times in
# 100,000 draws. Such amounts are raised to one cent (and logged) so that every other value,
# and the row order, stay exactly the lab's.
MIN_AMOUNT: Final = 0.01
# submitted_at comes from its own generator so the lab's RandomState sequence is untouched.
SUBMITTED_AT_STREAM: Final = 0x5EED

DEFAULT_ROWS: Final[dict[Profile, int]] = {"seed": LAB_ROWS, "realistic": 100_000}


def split_rows(rows: int, anomaly_rate: float | None) -> tuple[int, int]:
    """(normal, anomalies) for ``rows`` in total; the lab's 1000:50 split by default."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if anomaly_rate is None:
        anomalies = (rows * LAB_ANOMALY_ROWS * 2 + LAB_ROWS) // (LAB_ROWS * 2)  # round half up
    else:
        check_anomaly_rate(anomaly_rate)
        anomalies = int(np.floor(rows * anomaly_rate + 0.5))
    return rows - anomalies, anomalies


def check_anomaly_rate(anomaly_rate: float) -> None:
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError(f"anomaly rate must be within [0, 1], got {anomaly_rate}")


def lab_frame(normal: int, anomalies: int, rs: np.random.RandomState) -> pd.DataFrame:
    """The lab's script, step by step, drawing from ``rs`` in the lab's order."""
    normal_frame = pd.DataFrame(
        {
            "claim_id": range(1, normal + 1),
            "claim_amount": rs.normal(1000, 250, normal),
            "num_services": rs.randint(1, 10, normal),
            "patient_age": rs.randint(18, 90, normal),
            "provider_id": rs.randint(1, 50, normal),
            "days_since_last_claim": rs.randint(0, 365, normal),
        }
    )
    anomaly_frame = pd.DataFrame(
        {
            "claim_id": range(normal + 1, normal + anomalies + 1),
            "claim_amount": rs.normal(10000, 2500, anomalies),
            "num_services": rs.randint(10, 20, anomalies),
            "patient_age": rs.randint(18, 90, anomalies),
            "provider_id": rs.randint(1, 50, anomalies),
            "days_since_last_claim": rs.randint(0, 365, anomalies),
        }
    )
    frame = pd.concat([normal_frame, anomaly_frame]).reset_index(drop=True)
    return frame.sample(frac=1, random_state=rs).reset_index(drop=True)


def raise_nonpositive_amounts(frame: pd.DataFrame) -> pd.DataFrame:
    """Raise amounts <= 0 to :data:`MIN_AMOUNT`, logging which claims were changed."""
    bad = frame["claim_amount"] <= 0
    if not bad.any():
        return frame
    ids = frame.loc[bad, "claim_id"].tolist()
    shown = ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
    logger.warning(
        "seed profile: %d claim(s) drew claim_amount <= 0 and were raised to %.2f to satisfy "
        "the Claim contract: claim_id %s",
        len(ids), MIN_AMOUNT, shown,
    )
    fixed = frame.copy()
    fixed.loc[bad, "claim_amount"] = MIN_AMOUNT
    return fixed


def generate_seed_profile(
    rows: int = LAB_ROWS, seed: int = 42, anomaly_rate: float | None = None
) -> pd.DataFrame:
    """The original lab's dataset, exactly (``rows=1050`` and the lab's seed give the lab's file).

    ``rows`` is the total, split 1000:50 like the lab unless ``anomaly_rate`` is given.
    Anomalies are labelled ``gross_outlier``.
    """
    normal, anomalies = split_rows(rows, anomaly_rate)
    frame = lab_frame(normal, anomalies, np.random.RandomState(seed))
    frame = raise_nonpositive_amounts(frame)
    is_anomaly = frame["claim_id"].to_numpy() > normal
    frame["submitted_at"] = submission_times(
        rows, np.random.default_rng([seed, SUBMITTED_AT_STREAM])
    )
    frame["is_anomaly"] = is_anomaly
    frame["pattern"] = np.where(is_anomaly, SEED_PATTERN, NORMAL_PATTERN)
    return frame[list(ALL_COLUMNS)]


def generate(
    profile: Profile, rows: int | None = None, seed: int = 42, anomaly_rate: float | None = None
) -> pd.DataFrame:
    """Dispatch to a profile; ``rows=None`` means the profile's default size.

    Realistic claim ids carry the seed (``C-<seed>-0000001``) so datasets generated with
    different seeds can share a topic without colliding claim ids.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    n = DEFAULT_ROWS[profile] if rows is None else rows
    if profile == "seed":
        return generate_seed_profile(n, seed, anomaly_rate)
    if profile == "realistic":
        rng = np.random.default_rng(seed)
        return generate_realistic_profile(n, rng, anomaly_rate, id_prefix=f"C-{seed}-")
    raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")

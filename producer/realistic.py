"""The ``realistic`` profile: believable claims with labelled fraud patterns (vectorised numpy).

Normal claims come from a small world of providers and patients:

* providers (hundreds) differ in price level, in how many services they bill per claim and in
  volume (a few large providers, many small ones);
* patients differ in age and in how often they claim (older patients claim more often);
* ``num_services`` depends on the provider and the patient's age; ``claim_amount`` is a
  skewed (log-normal) per-service price times the provider's price level, growing with the
  services billed and the patient's age; ``days_since_last_claim`` follows the patient's own
  claim frequency.

Fraud patterns are applied to a random subset of claims, each moving the claim only part of
the way out of the normal range so that no single feature separates them cleanly:
see :data:`DEFAULT_PATTERN_SHARES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from producer.columns import ALL_COLUMNS, NORMAL_PATTERN
from producer.timestamps import submission_times

# Share of all claims per pattern (5 % anomalies in total, like the lab's 50 in 1,050).
DEFAULT_PATTERN_SHARES: Final[Mapping[str, float]] = {
    "upcoding": 0.015,  # amount 1.8-4x what the services billed would cost
    "phantom_services": 0.010,  # 3-12 extra, cheaply priced services billed
    "frequency_abuse": 0.010,  # the same patient claims again 0-2 days later
    "compromised_provider": 0.010,  # a few providers whose claims shift up in price and services
    "gross_outlier": 0.005,  # the lab's kind: ~10x amount and 10-19 services
}
DEFAULT_ANOMALY_RATE: Final = sum(DEFAULT_PATTERN_SHARES.values())

PROVIDERS: Final = 500
COMPROMISED_PROVIDERS: Final = 4
PATIENTS_PER_CLAIM: Final = 1 / 6  # each patient has six claims on average
BASE_PRICE_PER_SERVICE: Final = 300.0


@dataclass(frozen=True)
class Providers:
    ids: np.ndarray  # provider_id values (distinct, five digits)
    price_level: np.ndarray  # multiplies every amount the provider bills
    intensity: np.ndarray  # mean extra services per claim
    weight: np.ndarray  # share of all claims (sums to 1)


@dataclass(frozen=True)
class Patients:
    age: np.ndarray
    mean_gap_days: np.ndarray  # mean days between two claims of the patient
    weight: np.ndarray  # share of all claims (sums to 1): frequent claimants claim more


def pattern_counts(rows: int, anomaly_rate: float | None) -> dict[str, int]:
    """Claims per pattern: the default shares scaled to ``anomaly_rate``, rounded so the
    counts add up to ``round(rows * anomaly_rate)`` (largest remainders get the extra ones)."""
    rate = DEFAULT_ANOMALY_RATE if anomaly_rate is None else anomaly_rate
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"anomaly rate must be within [0, 1], got {rate}")
    names = list(DEFAULT_PATTERN_SHARES)
    exact = np.array([rows * rate * DEFAULT_PATTERN_SHARES[n] / DEFAULT_ANOMALY_RATE
                      for n in names])
    counts = np.floor(exact).astype(int)
    missing = int(np.floor(rows * rate + 0.5)) - int(counts.sum())
    # Stable order on ties keeps the allocation deterministic.
    for index in np.argsort(-(exact - counts), kind="stable")[:missing]:
        counts[index] += 1
    return dict(zip(names, (int(c) for c in counts), strict=True))


def make_providers(rng: np.random.Generator, n: int = PROVIDERS) -> Providers:
    volume = rng.lognormal(0.0, 1.0, n)
    return Providers(
        ids=rng.choice(np.arange(10_000, 100_000), size=n, replace=False),
        price_level=rng.lognormal(0.0, 0.2, n),
        intensity=rng.gamma(4.0, 0.5, n),
        weight=volume / volume.sum(),
    )


def make_patients(rng: np.random.Generator, n: int) -> Patients:
    child = rng.random(n) < 0.12
    age = np.where(child, rng.integers(0, 18, n), np.clip(rng.normal(50, 17, n), 18, 100))
    age = np.rint(age).astype(np.int64)
    mean_gap = np.maximum(3.0, rng.gamma(2.0, 40.0, n) / (0.6 + age / 80.0))
    frequency = 1.0 / mean_gap
    return Patients(age=age, mean_gap_days=mean_gap, weight=frequency / frequency.sum())


def normal_claims(
    rows: int, rng: np.random.Generator, providers: Providers, patients: Patients
) -> dict[str, np.ndarray]:
    provider = rng.choice(len(providers.ids), size=rows, p=providers.weight)
    patient = rng.choice(len(patients.age), size=rows, p=patients.weight)
    age = patients.age[patient]
    services = 1 + rng.poisson(providers.intensity[provider] * (0.6 + age / 60.0))
    per_service = BASE_PRICE_PER_SERVICE * providers.price_level[provider] * rng.lognormal(
        0.0, 0.45, rows
    )
    amount = per_service * services**0.9 * (1.0 + age / 150.0)
    days = np.rint(rng.exponential(patients.mean_gap_days[patient]))
    return {
        "claim_amount": amount,
        "num_services": services.astype(np.int64),
        "patient_age": age,
        "provider_index": provider,
        "days_since_last_claim": days.astype(np.int64),
    }


def apply_patterns(
    claims: dict[str, np.ndarray],
    counts: Mapping[str, int],
    rng: np.random.Generator,
    providers: Providers,
) -> np.ndarray:
    """Turn randomly chosen claims into fraud; returns each claim's index into
    :data:`PATTERN_LABELS`."""
    rows = len(claims["claim_amount"])
    code = np.zeros(rows, dtype=np.int8)  # index into PATTERN_LABELS; 0 = normal
    order = rng.permutation(rows)
    start = 0
    for name, count in counts.items():
        chosen = np.sort(order[start : start + count])
        start += count
        code[chosen] = PATTERN_LABELS.index(name)
        PATTERN_EFFECTS[name](claims, chosen, rng, providers)
    return code


def upcoding(claims: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
             providers: Providers) -> None:
    claims["claim_amount"][idx] *= rng.uniform(1.8, 4.0, len(idx))


def phantom_services(claims: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
                     providers: Providers) -> None:
    extra = rng.integers(3, 13, len(idx))
    services = claims["num_services"][idx]
    per_service = claims["claim_amount"][idx] / services
    # Phantom services are billed as cheap items, so the amount grows less than the count.
    claims["claim_amount"][idx] += per_service * extra * rng.uniform(0.3, 0.7, len(idx))
    claims["num_services"][idx] = services + extra


def frequency_abuse(claims: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
                    providers: Providers) -> None:
    claims["days_since_last_claim"][idx] = rng.integers(0, 3, len(idx))
    claims["claim_amount"][idx] *= rng.uniform(0.9, 1.5, len(idx))


def compromised_provider(claims: dict[str, np.ndarray], idx: np.ndarray,
                         rng: np.random.Generator, providers: Providers) -> None:
    # Mid-volume providers: a hijacked giant would be obvious, a tiny one would not matter.
    by_volume = np.argsort(providers.weight, kind="stable")
    middle = by_volume[len(by_volume) // 4 : 3 * len(by_volume) // 4]
    hijacked = rng.choice(middle, size=min(COMPROMISED_PROVIDERS, len(middle)), replace=False)
    claims["provider_index"][idx] = rng.choice(hijacked, size=len(idx))
    claims["claim_amount"][idx] *= rng.uniform(1.4, 2.5, len(idx))
    claims["num_services"][idx] += rng.integers(1, 5, len(idx))


def gross_outlier(claims: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
                  providers: Providers) -> None:
    claims["claim_amount"][idx] = np.abs(rng.normal(10_000, 2_500, len(idx))) * rng.uniform(
        0.8, 1.6, len(idx)
    )
    claims["num_services"][idx] = rng.integers(10, 20, len(idx))


PATTERN_LABELS: Final = (NORMAL_PATTERN, *DEFAULT_PATTERN_SHARES)
PATTERN_EFFECTS: Final = {
    "upcoding": upcoding,
    "phantom_services": phantom_services,
    "frequency_abuse": frequency_abuse,
    "compromised_provider": compromised_provider,
    "gross_outlier": gross_outlier,
}


def claim_ids(rows: int, prefix: str) -> pd.Series:
    """``<prefix>0000001`` .. (built in Arrow: a Python loop costs 0.5 s per million)."""
    width = max(7, len(str(rows)))
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, rows + 1)), pa.string()), width, "0")
    return as_str_series(pc.binary_join_element_wise(prefix, numbers, ""))


def as_str_series(values: pa.Array) -> pd.Series:
    series: pd.Series = pd.Series(pd.array(values, dtype="str"))
    return series


def generate_realistic_profile(
    rows: int,
    rng: np.random.Generator,
    anomaly_rate: float | None = None,
    *,
    id_prefix: str = "C-",
) -> pd.DataFrame:
    """``rows`` realistic claims in submission order, labelled; ``claim_id`` is
    ``<id_prefix><n>`` with n = 1..rows zero-padded to seven digits."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    counts = pattern_counts(rows, anomaly_rate)
    providers = make_providers(rng)
    patients = make_patients(rng, max(1, int(rows * PATIENTS_PER_CLAIM)))
    claims = normal_claims(rows, rng, providers, patients)
    pattern = apply_patterns(claims, counts, rng, providers)
    amount = np.clip(np.round(claims["claim_amount"], 2), 5.0, 10_000_000.0)
    frame = pd.DataFrame(
        {
            "claim_id": claim_ids(rows, id_prefix),
            "claim_amount": amount,
            "num_services": np.clip(claims["num_services"], 1, 1000),
            "patient_age": claims["patient_age"],
            "provider_id": providers.ids[claims["provider_index"]].astype(np.int64),
            "days_since_last_claim": np.clip(claims["days_since_last_claim"], 0, 36_500),
            "submitted_at": submission_times(rows, rng),
            "is_anomaly": pattern != 0,
            "pattern": as_str_series(pa.array(PATTERN_LABELS).take(pa.array(pattern))),
        }
    )
    return frame[list(ALL_COLUMNS)]

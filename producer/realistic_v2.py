"""The ``realistic`` profile, contract v2: members, providers, procedures and labelled fraud.

A small world, drawn with vectorised numpy from one ``default_rng(seed)``:

* members with an age, a sex, a claim frequency and a primary-care provider;
* providers with a specialty, a price level and a volume;
* per claim: the member's primary-care provider or a specialist (a specialty that treats
  people of the member's age and sex, usually the same provider for the same member), a place
  of service typical of the specialty, 1-8 lines whose procedures come from the specialty's
  catalogue and fit the patient's age and sex (:mod:`producer.catalogue`), charges = list price
  x units x provider price level x noise, 1-4 diagnoses of the specialty, a service date in
  Q1 2025 and a submission 0-60 days later in office hours;
* 0.3 % legitimate repeats (the same service billed twice the same day, submitted hours or
  a few days apart), so exact repeats alone do not mean fraud;

then :func:`producer.typology.inject_table` adds the labelled fraud patterns. Claim ids are
given last, in submission order, so an id says nothing about the claim's label.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from producer import catalogue as cat
from producer.table import DAY_MS, ClaimTable, Ragged, Vocab, concat, offsets_of
from producer.typology import inject_table, plan_injection

FIRST_DAY: Final = int(np.datetime64("2025-01-01", "D").astype(np.int64))
SERVICE_DAYS: Final = 90
CLAIMS_PER_MEMBER: Final = 6
CLAIMS_PER_PROVIDER: Final = 400
LEGIT_REPEAT_SHARE: Final = 0.003
PRIMARY_CARE_SHARE: Final = 0.5
STICKY_SPECIALIST: Final = 0.8  # a member mostly sees the same specialist of a specialty
MAX_LINES: Final = 8
MAX_DIAGNOSES: Final = 4


@dataclass(frozen=True)
class Members:
    ids: np.ndarray
    age: np.ndarray
    sex: np.ndarray  # index into "FMU"
    primary: np.ndarray  # primary-care provider
    cdf: np.ndarray  # cumulative claim share


@dataclass(frozen=True)
class Providers:
    ids: np.ndarray
    specialty: np.ndarray  # index into catalogue.SPECIALTY_NAMES
    price_level: np.ndarray
    by_specialty: np.ndarray  # provider indices sorted by specialty
    cdf: np.ndarray  # per specialty row: cumulative volume share over by_specialty (flattened)


def party_ids(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    numbers = rng.choice(10**9, size=n, replace=False)
    out = np.empty(n, dtype=object)
    out[:] = [f"{prefix}{k:09d}" for k in numbers.tolist()]
    return out


def flat_cdf(weights: np.ndarray) -> np.ndarray:
    """Row ``r``'s cumulative distribution shifted by ``r``: one searchsorted of ``r + u``
    then samples every row at once (see :func:`sample_rows`)."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= np.where(cdf[:, -1:] > 0, cdf[:, -1:], 1)
    cdf[:, -1] = 1.0
    return (cdf + np.arange(len(weights))[:, None]).ravel()


def sample_rows(cdf: np.ndarray, width: int, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column index drawn from distribution ``row`` with uniforms ``u``."""
    pos = np.searchsorted(cdf, row + np.minimum(u, 1 - 1e-12), side="right")
    return np.asarray(np.minimum(pos - row * width, width - 1))


def make_providers(n: int, rng: np.random.Generator) -> Providers:
    shares = np.array([cat.SPECIALTIES[s][0] for s in cat.SPECIALTY_NAMES])
    specialty = np.sort(rng.choice(len(shares), n, p=shares / shares.sum()))
    specialty[: len(shares)] = np.arange(len(shares))  # every specialty has a provider
    specialty = np.sort(specialty)
    volume = rng.lognormal(0.0, 0.8, n)
    counts = np.bincount(specialty, minlength=len(shares))
    width = int(counts.max())
    weights = np.zeros((len(shares), width))
    first = offsets_of(counts)[:-1]
    weights[specialty, np.arange(n) - first[specialty]] = volume
    return Providers(ids=party_ids("P", n, rng), specialty=specialty,
                     price_level=rng.lognormal(0.0, 0.15, n), by_specialty=np.arange(n),
                     cdf=flat_cdf(weights))


def make_members(n: int, providers: Providers, rng: np.random.Generator) -> Members:
    child = rng.random(n) < 0.18
    age = np.where(child, rng.integers(0, 18, n), np.clip(rng.normal(48, 18, n), 18, 100))
    age = np.rint(age).astype(np.int16)
    sex = np.searchsorted([0.51, 0.995], rng.random(n)).astype(np.int8)
    frequency = rng.gamma(2.0, 1.0, n) * (0.5 + age / 60.0) * np.where(age < 2, 2.0, 1.0)
    primary_specialty = np.where(age < 18, cat.SPECIALTY_NAMES.index("pediatrics"),
                                 np.where(age >= 75, cat.SPECIALTY_NAMES.index("geriatrics"),
                                          cat.SPECIALTY_NAMES.index("family_medicine")))
    internal = (age >= 18) & (age < 75) & (rng.random(n) < 0.4)
    primary_specialty[internal] = cat.SPECIALTY_NAMES.index("internal_medicine")
    primary = pick_provider(providers, primary_specialty, rng.random(n))
    cdf = np.cumsum(frequency)
    return Members(party_ids("M", n, rng), age, sex, primary, cdf / cdf[-1])


def pick_provider(providers: Providers, specialty: np.ndarray, u: np.ndarray) -> np.ndarray:
    counts = np.bincount(providers.specialty, minlength=len(cat.SPECIALTY_NAMES))
    width = len(providers.cdf) // len(counts)
    column = sample_rows(providers.cdf, width, specialty, u)
    first = offsets_of(counts)[:-1]
    return np.asarray(
        providers.by_specialty[first[specialty] + np.minimum(column, counts[specialty] - 1)])


def age_band(age: np.ndarray) -> np.ndarray:
    return np.searchsorted(cat.AGE_BANDS, age, side="right") - 1


def claim_providers(members: Members, providers: Providers, member: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Primary care or a specialist that treats the member's age and sex."""
    n = len(member)
    sex, band = members.sex[member], age_band(members.age[member])
    spec_weights = cat.specialty_weights().reshape(-1, len(cat.SPECIALTY_NAMES))
    specialty = sample_rows(flat_cdf(spec_weights), len(cat.SPECIALTY_NAMES),
                            sex * (len(cat.AGE_BANDS) - 1) + band, rng.random(n))
    # The same member and specialty give the same uniform: a member keeps their specialist.
    sticky = np.modf(member * 0.6180339887498949 + specialty * 0.7548776662466927)[0]
    u = np.where(rng.random(n) < STICKY_SPECIALIST, sticky, rng.random(n))
    specialist = pick_provider(providers, specialty, u)
    primary = rng.random(n) < PRIMARY_CARE_SHARE
    return np.where(primary, members.primary[member], specialist)


def claim_lines(specialty: np.ndarray, sex: np.ndarray, age: np.ndarray, level: np.ndarray,
                rng: np.random.Generator) -> tuple[Ragged, np.ndarray, np.ndarray, np.ndarray]:
    extra = np.array([cat.SPECIALTIES[s][1] for s in cat.SPECIALTY_NAMES])
    count = np.minimum(1 + rng.poisson(extra[specialty]), MAX_LINES)
    lines = Ragged(offsets_of(count))
    owner = lines.owner()
    weights = cat.procedure_weights()
    bands = len(cat.AGE_BANDS) - 1
    combo = (specialty[owner] * 3 + sex[owner]) * bands + age_band(age[owner])
    code = sample_rows(flat_cdf(weights.reshape(-1, len(cat.PROCEDURES))),
                       len(cat.PROCEDURES), combo, rng.random(len(owner)))
    max_units = np.array([p.max_units for p in cat.PROCEDURES])[code]
    units = 1 + np.floor(rng.random(len(code)) ** 2 * max_units).astype(np.int64)
    price = np.array([p.charge for p in cat.PROCEDURES]) * 100
    cents = np.rint(price[code] * units * level[owner] * rng.lognormal(0, 0.1, len(code)))
    return lines, code.astype(np.int32), units, np.maximum(cents, 1).astype(np.int64)


def claim_diagnoses(specialty: np.ndarray, rng: np.random.Generator) -> tuple[Ragged, np.ndarray]:
    lists = [cat.SPECIALTIES[s][3] for s in cat.SPECIALTY_NAMES]
    sizes = np.array([len(ls) for ls in lists])
    count = np.minimum(1 + rng.poisson(0.6, len(specialty)), np.minimum(sizes[specialty],
                                                                         MAX_DIAGNOSES))
    dx = Ragged(offsets_of(count))
    owner = dx.owner()
    width = int(sizes.max())
    table = np.array([[cat.DIAGNOSES.index(d) for d in (*ls, *ls)][:width] for ls in lists])
    # Consecutive entries from a random start: the codes of a claim are distinct.
    start = np.floor(rng.random(len(specialty)) * sizes[specialty]).astype(np.int64)
    rank = np.arange(len(owner)) - dx.offsets[owner]
    spec = specialty[owner]
    return dx, table[spec, (start[owner] + rank) % sizes[spec]].astype(np.int32)


def places_of(specialty: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    weights = np.array([[cat.SPECIALTIES[s][2].get(p, 0.0) for p in cat.PLACES]
                        for s in cat.SPECIALTY_NAMES])
    return sample_rows(flat_cdf(weights), len(cat.PLACES), specialty, rng.random(len(specialty)))


def vocab_of(members: Members, providers: Providers) -> Vocab:
    def objects(values: tuple[str, ...]) -> np.ndarray:
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out

    return Vocab(members.ids, providers.ids, objects(cat.SPECIALTY_NAMES), objects(cat.PLACES),
                 objects(cat.DIAGNOSES), objects(tuple(p.code for p in cat.PROCEDURES)))


def normal_claims(rows: int, rng: np.random.Generator) -> ClaimTable:
    """``rows`` normal claims sorted by submission time, ids ``N<k>`` in that order."""
    providers = make_providers(max(len(cat.SPECIALTY_NAMES), rows // CLAIMS_PER_PROVIDER), rng)
    members = make_members(max(10, rows // CLAIMS_PER_MEMBER), providers, rng)
    repeats = round(rows * LEGIT_REPEAT_SHARE)
    n = rows - repeats
    member = np.searchsorted(members.cdf, rng.random(n), side="right").astype(np.int32)
    member = np.minimum(member, len(members.ids) - 1)
    provider = claim_providers(members, providers, member, rng)
    specialty = providers.specialty[provider]
    sex, age = members.sex[member], members.age[member]
    lines, code, units, cents = claim_lines(specialty, sex, age,
                                            providers.price_level[provider], rng)
    dx, dx_code = claim_diagnoses(specialty, rng)
    day = FIRST_DAY + rng.integers(0, SERVICE_DAYS, n)
    delay_days = np.minimum(np.floor(rng.lognormal(np.log(2.0), 0.9, n)), 60).astype(np.int64)
    office_ms = rng.integers(7 * 3_600_000, 21 * 3_600_000, n)
    table = ClaimTable(
        vocab=vocab_of(members, providers), claim_id=pa.nulls(n, pa.string()),
        member=member, provider=provider.astype(np.int32), specialty=specialty.astype(np.int32),
        place=places_of(specialty, rng).astype(np.int32), age=age, sex=sex,
        service_day=day.astype(np.int32), submitted_ms=(day + delay_days) * DAY_MS + office_ms,
        dx=dx, dx_code=dx_code, lines=lines, line_code=code, units=units, cents=cents,
        pattern=np.zeros(n, dtype=np.int8), source=np.arange(n, dtype=np.int64),
        changed=np.zeros(n, dtype=bool))
    return with_ids(sort_by_time(with_repeats(table, repeats, rng)), "N")


def with_repeats(table: ClaimTable, repeats: int, rng: np.random.Generator) -> ClaimTable:
    """Legitimate repeats: the same service billed twice the same day, submitted later."""
    copies = table.take(rng.integers(0, len(table), repeats))
    later = np.minimum(rng.exponential(8 * 3_600_000, repeats), 3 * DAY_MS).astype(np.int64)
    return concat([table, replace(copies, submitted_ms=copies.submitted_ms + later)])


def sort_by_time(table: ClaimTable) -> ClaimTable:
    return table.take(np.argsort(table.submitted_ms, kind="stable"))


def with_ids(table: ClaimTable, prefix: str) -> ClaimTable:
    numbers = pc.cast(pa.array(np.arange(1, len(table) + 1)), pa.string())
    ids = pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, 8, "0"), "")
    n = len(table)
    return replace(table, claim_id=ids, source=np.arange(n, dtype=np.int64),
                   changed=np.zeros(n, dtype=bool))


def generate_realistic_claims(rows: int, seed: int,
                              anomaly_rate: float | None = None) -> ClaimTable:
    """Exactly ``rows`` v2 claims (normal and labelled fraud) sorted by submission time, with
    ids ``C-<seed>-<n>`` (n = 1..rows zero-padded to eight digits) in that order."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    rng = np.random.default_rng(seed)
    plan = plan_injection(rows, rng, anomaly_rate)
    if plan.added >= rows:
        raise ValueError(f"{rows} rows are too few for the fraud patterns; use more rows")
    claims = inject_table(normal_claims(rows - plan.added, rng), plan, rng)
    return with_ids(claims, f"C-{seed}-")

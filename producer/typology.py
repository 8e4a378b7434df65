"""Fraud typology injector: labelled fraud patterns added to ANY population of normal v2 claims.

Nothing here knows how the normal claims were made (the realistic generator, Synthea, a
hand-written list): what a "normal" charge, code or patient looks like is learnt from the
population itself (median charge per unit of every procedure code, the age range and sex mix
of its patients, the delay between service and submission). Each pattern moves claims only
part of the way out of the normal range, so no single feature reveals all of them:

* ``duplicate``: the same member, provider, service date and lines under a new claim id,
  submitted 1-60 days later (normal traffic has legitimate same-day repeats too);
* ``unbundling``: one encounter split into 2-4 same-day claims by the same provider for the
  same member, each component billed 5-35 % above its share;
* ``upcoding``: a few providers bill a line at 1.8-3.5x the code's norm, or a costlier code than
  the one performed at that code's normal price;
* ``member_velocity``: one member, 5-12 claims within four days at as many providers;
* ``phantom_billing``: a compromised provider bills 15-60 members it never saw before within a
  week, with its own usual procedures;
* ``demographic_mismatch``: a line's procedure is one the population never sees at the
  patient's age or sex;
* ``gross_outlier``: 10-60x the units, or 8-30x the charge, of a line.

:func:`inject_fraud` is the public interface (JSON-ready dicts in and out);
:func:`inject_table` does the work on a :class:`~producer.table.ClaimTable`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from producer.table import DAY_MS, ClaimTable, concat, from_records, offsets_of, to_records

logger = logging.getLogger(__name__)

# Share of all output claims per pattern (6 % labelled in total).
DEFAULT_PATTERN_SHARES: Final[Mapping[str, float]] = {
    "duplicate": 0.010,
    "unbundling": 0.010,
    "upcoding": 0.012,
    "member_velocity": 0.008,
    "phantom_billing": 0.008,
    "demographic_mismatch": 0.008,
    "gross_outlier": 0.006,
}
DEFAULT_ANOMALY_RATE: Final = sum(DEFAULT_PATTERN_SHARES.values())
PATTERNS: Final = ("", *DEFAULT_PATTERN_SHARES)  # code 0 = normal
PATTERN_CODE: Final = {name: code for code, name in enumerate(PATTERNS)}
ADDING: Final = ("duplicate", "member_velocity", "phantom_billing")  # new claims only
MAX_CENTS_PER_LINE: Final = 1_000_000_000  # the contract's 10M per line
MAX_UNITS: Final = 1000
MIN_CODE_SAMPLES: Final = 20  # a code's age/sex profile needs this many lines
NUMBERED: Final = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")
HOUR_MS: Final = 3_600_000
PROFILE_LINES: Final = 300_000  # lines sampled to learn what is normal per procedure code


@dataclass(frozen=True)
class Plan:
    """How many labelled claims each pattern makes, and how they are grouped."""

    counts: Mapping[str, int]
    unbundle_pieces: np.ndarray  # claims per split encounter
    bursts: np.ndarray  # claims per member_velocity burst
    phantom_sizes: np.ndarray  # claims per compromised provider

    @property
    def added(self) -> int:
        """Claims the plan adds to its input (the rest alter input claims)."""
        return sum(self.counts[p] for p in ADDING) + int(
            self.unbundle_pieces.sum() - len(self.unbundle_pieces))


def scaled_shares(anomaly_rate: float | None) -> dict[str, float]:
    if anomaly_rate is None:
        return dict(DEFAULT_PATTERN_SHARES)
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError(f"anomaly rate must be within [0, 1], got {anomaly_rate}")
    scale = anomaly_rate / DEFAULT_ANOMALY_RATE
    return {p: share * scale for p, share in DEFAULT_PATTERN_SHARES.items()}


def largest_remainder(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Exact integer counts whose sum is round(total x sum of shares)."""
    exact = np.array([total * s for s in shares.values()])
    counts = np.floor(exact).astype(np.int64)
    missing = int(np.floor(exact.sum() + 0.5)) - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:missing]] += 1
    return dict(zip(shares, counts.tolist(), strict=True))


def split_sizes(total: int, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Group sizes in [low, high] (the last may grow past high) that sum to ``total``."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = rng.integers(low, high + 1, size=total // low + 1)
    keep = int(np.searchsorted(np.cumsum(sizes), total)) + 1
    sizes = sizes[:keep].copy()
    sizes[-1] = total - sizes[:-1].sum()
    if len(sizes) > 1 and sizes[-1] < low:  # too small to be a group on its own
        sizes[-2] += sizes[-1]
        sizes = sizes[:-1]
    return sizes


def plan_injection(total: int, rng: np.random.Generator,
                   anomaly_rate: float | None = None) -> Plan:
    """A plan for ``total`` output claims."""
    counts = largest_remainder(total, scaled_shares(anomaly_rate))
    return Plan(counts, split_sizes(counts["unbundling"], 2, 4, rng),
                split_sizes(counts["member_velocity"], 5, 12, rng),
                split_sizes(counts["phantom_billing"], 15, 60, rng))


def plan_for_input(n: int, rng: np.random.Generator, anomaly_rate: float | None) -> Plan:
    """A plan whose output share matches the rates for ``n`` input claims (approximately:
    the exact output size depends on the groups drawn)."""
    shares = scaled_shares(anomaly_rate)
    adding = sum(shares[p] for p in ADDING) + shares["unbundling"] * 2 / 3  # 3 pieces on average
    return plan_injection(round(n / max(1e-9, 1 - adding)), rng, anomaly_rate)


@dataclass(frozen=True)
class Population:
    """What normal looks like, learnt from the input claims."""

    table: ClaimTable
    norm_unit: np.ndarray  # median cents per unit, per procedure code
    code_lines: np.ndarray  # lines per procedure code
    female_share: np.ndarray  # per code, among lines of F/M patients (NaN without any)
    age_low: np.ndarray  # per code, 2nd percentile of patient age
    age_high: np.ndarray  # per code, 98th percentile
    delay_ms: np.ndarray  # submitted_at - start of service day, per claim
    patient_key: np.ndarray  # sex * 1000 + age, sorted
    patient_rows: np.ndarray  # rows in patient_key order


def group_quantile(groups: np.ndarray, values: np.ndarray, n: int, q: float) -> np.ndarray:
    """Per group 0..n-1 the q-quantile (lower) of ``values``; NaN for empty groups."""
    order = np.lexsort((values, groups))
    counts = np.bincount(groups, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full(n, np.nan)
    has = counts > 0
    pos = starts[has] + np.floor((counts[has] - 1) * q).astype(np.int64)
    out[has] = values[order][pos]
    return out


def learn(table: ClaimTable) -> Population:
    ncodes = len(table.vocab.procedures)
    owner = table.lines.owner()
    # Every k-th line is plenty for per-code medians and percentiles, and keeps sorting cheap.
    every = max(1, len(owner) // PROFILE_LINES)
    code, owner = table.line_code[::every], owner[::every]
    age, sex = table.age[owner].astype(np.float64), table.sex[owner]
    known = sex < 2
    code_lines = np.bincount(code, minlength=ncodes)
    with np.errstate(invalid="ignore", divide="ignore"):
        female_share = (np.bincount(code[known], weights=(sex[known] == 0), minlength=ncodes)
                        / np.bincount(code[known], minlength=ncodes))
    key = table.sex.astype(np.int64) * 1000 + table.age
    order = np.argsort(key, kind="stable")
    return Population(
        table=table,
        norm_unit=group_quantile(code, table.cents[::every] / table.units[::every], ncodes, 0.5),
        code_lines=code_lines,
        female_share=female_share,
        age_low=group_quantile(code, age, ncodes, 0.02),
        age_high=group_quantile(code, age, ncodes, 0.98),
        delay_ms=np.maximum(0, table.submitted_ms - table.service_day.astype(np.int64) * DAY_MS),
        patient_key=key[order],
        patient_rows=order,
    )


def as_new(table: ClaimTable, pattern: str) -> ClaimTable:
    n = len(table)
    return replace(table, claim_id=pa.array([""] * n, pa.string()),
                   pattern=np.full(n, PATTERN_CODE[pattern], dtype=np.int8),
                   source=np.full(n, -1, dtype=np.int64), changed=np.ones(n, dtype=bool))


def as_altered(table: ClaimTable, pattern: str) -> ClaimTable:
    n = len(table)
    return replace(table, pattern=np.full(n, PATTERN_CODE[pattern], dtype=np.int8),
                   changed=np.ones(n, dtype=bool))


def similar_patients(pop: Population, sex: np.ndarray, age: np.ndarray,
                     rng: np.random.Generator, spread: int = 3) -> np.ndarray:
    """A random row per request whose patient has the same sex and an age within ``spread``
    years (the row itself when nobody does)."""
    key = sex.astype(np.int64) * 1000 + age
    low = np.searchsorted(pop.patient_key, key - spread, side="left")
    high = np.searchsorted(pop.patient_key, key + spread, side="right")
    pick = low + np.floor(rng.random(len(key)) * np.maximum(high - low, 1)).astype(np.int64)
    return np.asarray(pop.patient_rows[np.minimum(pick, len(pop.patient_rows) - 1)])


def random_line(table: ClaimTable, rng: np.random.Generator) -> np.ndarray:
    """Position of one random line of every claim."""
    lengths = table.lines.lengths
    start = np.asarray(table.lines.offsets[:-1])
    return np.asarray(start + np.floor(rng.random(len(table)) * lengths).astype(np.int64))


def priced(pop: Population, codes: np.ndarray, units: np.ndarray, factor: np.ndarray) -> np.ndarray:
    cents = np.rint(pop.norm_unit[codes] * units * factor)
    return np.asarray(np.clip(cents, 1, MAX_CENTS_PER_LINE), dtype=np.int64)


def duplicate(pop: Population, rows: np.ndarray, rng: np.random.Generator) -> ClaimTable:
    copies = pop.table.take(rows)
    later = (1 + np.minimum(rng.exponential(6.0, len(rows)), 59)) * DAY_MS
    return as_new(replace(copies, submitted_ms=copies.submitted_ms + later.astype(np.int64)),
                  "duplicate")


def unbundle(pop: Population, bases: np.ndarray, pieces: np.ndarray,
             rng: np.random.Generator) -> ClaimTable:
    """Base ``i``'s lines dealt round-robin into ``pieces[i]`` claims; the first keeps its id."""
    table = pop.table
    _, line_at = table.lines.gather(bases)
    base_of_line = np.repeat(np.arange(len(bases)), table.lines.lengths[bases])
    position = line_at - table.lines.offsets[bases][base_of_line]
    first_piece = offsets_of(pieces)[:-1]
    piece_of_line = first_piece[base_of_line] + position % pieces[base_of_line]
    order = np.argsort(piece_of_line, kind="stable")
    counts = np.bincount(piece_of_line, minlength=int(pieces.sum()))
    split = table.with_lines(np.repeat(bases, pieces), line_at[order], counts)
    rank = np.arange(len(split)) - np.repeat(first_piece, pieces)
    inflate = np.repeat(rng.uniform(1.05, 1.35, len(split)), counts)
    gap = (rank * rng.uniform(0.2, 6.0, len(split)) * HOUR_MS).astype(np.int64)
    split = replace(split, cents=np.rint(split.cents * inflate).astype(np.int64),
                    submitted_ms=split.submitted_ms + gap)
    new, kept = as_new(split, "unbundling"), as_altered(split, "unbundling")
    first = rank == 0
    return replace(new, claim_id=pc.if_else(pa.array(first), kept.claim_id, new.claim_id),
                   source=np.where(first, kept.source, -1))


def upcoding_rows(pop: Population, count: int, available: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """``count`` available claims of a few providers (about a third of each one's claims)."""
    providers = pop.table.provider
    volume = np.bincount(providers[available], minlength=len(pop.table.vocab.providers))
    eligible = rng.permutation(np.flatnonzero(volume >= 5))
    enough = int(np.searchsorted(np.cumsum(volume[eligible]) / 3, count)) + 1
    chosen = np.isin(providers, eligible[:enough]) & available
    candidates = np.flatnonzero(chosen)
    return np.sort(rng.choice(candidates, min(count, len(candidates)), replace=False))


def upcode(pop: Population, rows: np.ndarray, rng: np.random.Generator) -> ClaimTable:
    claims = pop.table.take(rows)
    line = random_line(claims, rng)
    codes, cents = claims.line_code.copy(), claims.cents.copy()
    common = np.flatnonzero(pop.code_lines >= min(5, pop.code_lines.max()))  # tiny inputs
    ladder = common[np.argsort(pop.norm_unit[common], kind="stable")]  # cheapest first
    rank = np.searchsorted(pop.norm_unit[ladder], pop.norm_unit[codes[line]], side="right")
    step_up = rank + rng.integers(0, 3, len(line))
    costlier = (rng.random(len(line)) < 0.5) & (step_up < len(ladder))
    new_code = np.where(costlier, ladder[np.minimum(step_up, len(ladder) - 1)], codes[line])
    factor = np.where(costlier, rng.uniform(0.95, 1.25, len(line)),
                      rng.uniform(1.8, 3.5, len(line)))
    codes[line] = new_code
    cents[line] = priced(pop, new_code, claims.units[line], factor)
    return as_altered(replace(claims, line_code=codes, cents=cents), "upcoding")


def submitted_after(pop: Population, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Submission times for services on ``days``, with delays drawn from the population."""
    delay = pop.delay_ms[rng.integers(0, len(pop.delay_ms), len(days))]
    return np.asarray(days.astype(np.int64) * DAY_MS + delay)


def member_velocity(pop: Population, bursts: np.ndarray, rng: np.random.Generator) -> ClaimTable:
    table = pop.table
    # Whose member bursts, and when: random claims of distinct members.
    order = rng.permutation(len(table))
    anchors = order[np.sort(np.unique(table.member[order], return_index=True)[1])[:len(bursts)]]
    bursts = bursts[: len(anchors)]
    member_row = np.repeat(anchors, bursts)
    templates = similar_patients(pop, table.sex[member_row], table.age[member_row], rng)
    claims = table.take(templates)
    days = table.service_day[member_row] + rng.integers(0, 4, len(member_row))
    return as_new(replace(
        claims, member=table.member[member_row], age=table.age[member_row],
        sex=table.sex[member_row], service_day=days.astype(np.int32),
        submitted_ms=submitted_after(pop, days, rng)), "member_velocity")


def phantom_billing(pop: Population, sizes: np.ndarray, rng: np.random.Generator) -> ClaimTable:
    """Each compromised provider bills members who never had a claim with it."""
    table = pop.table
    parts = []
    by_provider = np.argsort(table.provider, kind="stable")
    starts = offsets_of(np.bincount(table.provider, minlength=len(table.vocab.providers)))
    first_rows = np.unique(table.member, return_index=True)[1]  # one row per member
    victims = rng.choice(len(table), len(sizes), replace=False) if len(sizes) else sizes
    for victim, size in zip(victims.tolist(), sizes.tolist(), strict=True):
        provider = table.provider[victim]
        own = by_provider[starts[provider]:starts[provider + 1]]
        templates = own[rng.integers(0, len(own), 6 * size)]
        # Patients like the provider's own first; any other member when those run out.
        members = np.concatenate((
            similar_patients(pop, table.sex[templates[:3 * size]],
                             table.age[templates[:3 * size]], rng, 5),
            first_rows[rng.integers(0, len(first_rows), 3 * size)]))
        fresh = ~np.isin(table.member[members], table.member[own])
        if fresh.sum() < size:  # the provider saw most members: list the others
            unseen = first_rows[~np.isin(table.member[first_rows], table.member[own])]
            members[~fresh] = unseen[rng.integers(0, len(unseen), int((~fresh).sum()))] \
                if len(unseen) else members[~fresh]
            fresh = ~np.isin(table.member[members], table.member[own])
        templates, members = templates[fresh][:size], members[fresh][:size]
        days = table.service_day[victim] + rng.integers(0, 7, len(templates))
        claims = table.take(templates)
        inflate = np.repeat(rng.uniform(1.0, 1.3, len(claims)), claims.lines.lengths)
        parts.append(replace(
            claims, member=table.member[members], age=table.age[members],
            sex=table.sex[members], service_day=days.astype(np.int32),
            submitted_ms=submitted_after(pop, days, rng),
            cents=np.rint(claims.cents * inflate).astype(np.int64)))
    return as_new(concat(parts), "phantom_billing") if parts else as_new(table.take(sizes),
                                                                          "phantom_billing")


def atypical_codes(pop: Population, sex: np.ndarray, age: np.ndarray) -> np.ndarray:
    """(patients x codes) mask: codes the population never bills at that age or sex."""
    profiled = pop.code_lines >= MIN_CODE_SAMPLES
    female, age_low, age_high = pop.female_share, pop.age_low, pop.age_high
    with np.errstate(invalid="ignore"):
        wrong_sex = ((sex[:, None] == 0) & (female[None, :] < 0.02)) | (
            (sex[:, None] == 1) & (female[None, :] > 0.98))
        wrong_age = (age[:, None] < age_low[None, :] - 3) | (age[:, None] > age_high[None, :] + 3)
    return np.asarray((wrong_sex | wrong_age) & profiled[None, :])


def demographic_mismatch(pop: Population, candidates: np.ndarray, count: int,
                         rng: np.random.Generator) -> ClaimTable:
    table = pop.table
    mask = atypical_codes(pop, table.sex[candidates], table.age[candidates].astype(np.float64))
    usable = np.flatnonzero(mask.any(axis=1))
    # A random choice among the usable candidates, not the first ones: candidates come in
    # time order, and taking the first would put the whole pattern in the earliest claims.
    chosen = np.sort(rng.choice(usable, min(count, len(usable)), replace=False))
    rows = candidates[chosen]
    pick = np.argmax(rng.random(mask.shape) * mask, axis=1)[chosen]
    claims = table.take(rows)
    line = random_line(claims, rng)
    codes, cents = claims.line_code.copy(), claims.cents.copy()
    codes[line] = pick
    cents[line] = priced(pop, pick, claims.units[line], rng.uniform(0.9, 1.15, len(line)))
    return as_altered(replace(claims, line_code=codes, cents=cents), "demographic_mismatch")


def gross_outlier(pop: Population, rows: np.ndarray, rng: np.random.Generator) -> ClaimTable:
    claims = pop.table.take(rows)
    line = random_line(claims, rng)
    units, cents = claims.units.copy(), claims.cents.copy()
    more_units = rng.random(len(line)) < 0.5
    new_units = np.minimum(units[line] * rng.integers(10, 61, len(line)), MAX_UNITS)
    factor = np.where(more_units, new_units / units[line], rng.uniform(8, 30, len(line)))
    units[line] = np.where(more_units, new_units, units[line])
    cents[line] = np.clip(np.rint(cents[line] * factor), 1, MAX_CENTS_PER_LINE).astype(np.int64)
    return as_altered(replace(claims, units=units, cents=cents), "gross_outlier")


class Pool:
    """Input claims not yet altered or used as a base, drawn without replacement."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.available = np.ones(n, dtype=bool)
        self.rng = rng

    def draw(self, count: int, where: np.ndarray | None = None) -> np.ndarray:
        mask = self.available if where is None else self.available & where
        candidates = np.flatnonzero(mask)
        rows = np.sort(self.rng.choice(candidates, min(count, len(candidates)), replace=False))
        self.available[rows] = False
        return rows

    def take(self, rows: np.ndarray) -> np.ndarray:
        self.available[rows] = False
        return rows


def unbundling_bases(pool: Pool, table: ClaimTable, pieces: np.ndarray) -> np.ndarray:
    """A base per encounter with at least as many lines as its pieces (pieces shrink to what
    the population has)."""
    bases = np.zeros(len(pieces), dtype=np.int64)
    lengths = table.lines.lengths
    for k in np.unique(pieces)[::-1]:
        want = np.flatnonzero(pieces == k)
        got = pool.draw(len(want), lengths >= k)
        if len(got) < len(want):
            logger.warning("unbundling: only %d claims with >= %d lines", len(got), k)
        bases[want[: len(got)]] = got
        pieces[want[len(got):]] = 0
    return bases


def alterations(pop: Population, plan: Plan, rng: np.random.Generator
                ) -> tuple[list[ClaimTable], np.ndarray]:
    """Every pattern's claims, and the input rows they replace."""
    table, counts = pop.table, plan.counts
    pool = Pool(len(table), rng)
    pieces = plan.unbundle_pieces.copy()
    bases = unbundling_bases(pool, table, pieces)
    bases, pieces = bases[pieces > 0], pieces[pieces > 0]
    up_rows = pool.take(upcoding_rows(pop, counts["upcoding"], pool.available, rng))
    mismatch_candidates = pool.draw(3 * counts["demographic_mismatch"])
    mismatch = demographic_mismatch(pop, mismatch_candidates, counts["demographic_mismatch"], rng)
    pool.available[mismatch_candidates] = True
    pool.take(mismatch.source)
    outliers = pool.draw(counts["gross_outlier"])
    untouched = np.flatnonzero(pool.available)  # resubmit claims as they stay in the output
    originals = untouched[rng.integers(0, len(untouched), counts["duplicate"])] if len(
        untouched) else untouched
    parts = [
        duplicate(pop, originals, rng),
        unbundle(pop, bases, pieces, rng),
        upcode(pop, up_rows, rng),
        member_velocity(pop, plan.bursts, rng),
        phantom_billing(pop, plan.phantom_sizes, rng),
        mismatch,
        gross_outlier(pop, outliers, rng),
    ]
    return parts, ~pool.available


def inject_table(table: ClaimTable, plan: Plan, rng: np.random.Generator) -> ClaimTable:
    """Apply ``plan`` to the normal claims of ``table``: the result is sorted by submission
    time and every new claim has a fresh id in the style of the input's ids."""
    if len(table) == 0:
        return table
    pop = learn(table)
    parts, replaced = alterations(pop, plan, rng)
    out = concat([table.take(np.flatnonzero(~replaced)), *parts])
    out = out.take(np.argsort(out.submitted_ms, kind="stable"))
    blank = np.asarray(pc.equal(out.claim_id, ""), dtype=bool)
    ids = out.claim_id.to_numpy(zero_copy_only=False).astype(object)
    ids[blank] = new_claim_ids(table.claim_id, int(blank.sum()), rng)
    return replace(out, claim_id=pa.array(ids, pa.string()))


def new_claim_ids(existing: pa.Array, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` ids unlike any of ``existing`` and in their style: the next numbers after
    ``<prefix><digits>`` ids that share one prefix, random UUIDs otherwise (Synthea's style;
    an id that looks unlike its neighbours would give the label away)."""
    if n == 0:
        return []
    numbered = numbered_ids(existing, n)
    if numbered is not None:
        return numbered
    ids: list[str] = []
    while len(ids) < n:
        raw = rng.integers(0, 256, (n - len(ids), 16), dtype=np.uint8)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
        hexes = [row.tobytes().hex() for row in raw]
        drawn = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes]
        clash = np.asarray(pc.is_in(pa.array(drawn), value_set=existing), dtype=bool)
        ids += [d for d, c in zip(drawn, clash, strict=True) if not c]
        ids = list(dict.fromkeys(ids))  # the same UUID drawn twice: keep it once
    return ids[:n]


def numbered_ids(existing: pa.Array, n: int) -> list[str] | None:
    """The next ``n`` ids after ``<prefix><digits>`` ids with one prefix, or None."""
    parts = pc.extract_regex(existing, NUMBERED.pattern)
    if parts.null_count or len(parts) == 0:
        return None
    prefixes = pc.unique(parts.field("prefix"))
    digits = parts.field("number")
    width = pc.max(pc.utf8_length(digits)).as_py()
    if len(prefixes) != 1 or width > 15:
        return None
    prefix, start = prefixes[0].as_py(), pc.max(pc.cast(digits, pa.int64())).as_py() + 1
    return [f"{prefix}{k:0{width}d}" for k in range(start, start + n)]


def inject_fraud(claims: Sequence[dict[str, Any]], rng: np.random.Generator, *,
                 anomaly_rate: float | None = None) -> list[dict[str, Any]]:
    """All ``claims`` (normal v2 claims as JSON-ready dicts, sorted by ``submitted_at``) plus
    injected or altered fraudulent ones, each with ``is_anomaly`` and ``pattern`` (``""`` when
    normal), sorted by ``submitted_at``. ``anomaly_rate`` scales every default share so that
    about that share of the output is labelled. Deterministic for a given ``rng``."""
    if not claims:
        return []
    plan = plan_for_input(len(claims), rng, anomaly_rate)
    out = inject_table(from_records(claims), plan, rng)
    return to_records(out, claims, PATTERNS)

"""Columnar v2 claims: one numpy array per field, lines and diagnoses as ragged arrays.

The realistic generator and the fraud injector work on a :class:`ClaimTable` so that a million
claims never become a million Python objects on the way; the JSON-ready dicts of the public
interface (:func:`from_records`, :func:`to_records`) and the JSON Lines writer sit at the edge.
Strings are codes into a vocabulary (members, providers, procedure codes, ...), money is in
integer cents (totals are sums of cents, so they match the lines exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEXES: Final = ("F", "M", "U")
DAY_MS: Final = 86_400_000
EPOCH_DAY: Final = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class Ragged:
    """Row ``i`` owns ``values[offsets[i]:offsets[i + 1]]`` of every value array."""

    offsets: np.ndarray  # int64, len rows + 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def owner(self) -> np.ndarray:
        """Row of every value."""
        return np.repeat(np.arange(len(self.offsets) - 1), self.lengths)

    def gather(self, rows: np.ndarray) -> tuple[Ragged, np.ndarray]:
        """Offsets of ``rows`` taken in order, and the value positions to take with them."""
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        shift = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths)
        return Ragged(offsets), np.arange(offsets[-1], dtype=np.int64) + shift


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


@dataclass(frozen=True)
class Vocab:
    """The strings the codes of a table point into (None allowed for optional labels)."""

    members: np.ndarray
    providers: np.ndarray
    specialties: np.ndarray
    places: np.ndarray
    diagnoses: np.ndarray
    procedures: np.ndarray


@dataclass(frozen=True)
class ClaimTable:
    """Claims column by column. ``source`` is the input record a row was made from (-1 for
    made-up rows) and ``changed`` says whether it differs from it; ``pattern`` is a code into
    the injector's pattern names (0 = normal)."""

    vocab: Vocab
    claim_id: pa.Array  # string
    member: np.ndarray
    provider: np.ndarray
    specialty: np.ndarray
    place: np.ndarray
    age: np.ndarray
    sex: np.ndarray  # index into SEXES
    service_day: np.ndarray  # days since 1970-01-01
    submitted_ms: np.ndarray  # ms since the epoch, UTC
    dx: Ragged
    dx_code: np.ndarray
    lines: Ragged
    line_code: np.ndarray
    units: np.ndarray
    cents: np.ndarray  # line charge in cents
    pattern: np.ndarray
    source: np.ndarray
    changed: np.ndarray

    def __len__(self) -> int:
        return len(self.member)

    def take(self, rows: np.ndarray) -> ClaimTable:
        rows = np.asarray(rows, dtype=np.int64)
        dx, dx_at = self.dx.gather(rows)
        lines, line_at = self.lines.gather(rows)
        arrays: dict[str, Any] = {name: getattr(self, name)[rows] for name in CLAIM_ARRAYS}
        arrays |= {name: getattr(self, name)[line_at] for name in LINE_ARRAYS}
        return replace(self, claim_id=self.claim_id.take(pa.array(rows)), dx=dx,
                       dx_code=self.dx_code[dx_at], lines=lines, **arrays)

    def slice(self, start: int, stop: int) -> ClaimTable:
        """Rows ``start:stop`` (views, no gathering)."""
        lo, hi = self.lines.offsets[start], self.lines.offsets[stop]
        dlo, dhi = self.dx.offsets[start], self.dx.offsets[stop]
        arrays: dict[str, Any] = {name: getattr(self, name)[start:stop] for name in CLAIM_ARRAYS}
        arrays |= {name: getattr(self, name)[lo:hi] for name in LINE_ARRAYS}
        return replace(self, claim_id=self.claim_id.slice(start, stop - start),
                       dx=Ragged(self.dx.offsets[start:stop + 1] - dlo),
                       dx_code=self.dx_code[dlo:dhi],
                       lines=Ragged(self.lines.offsets[start:stop + 1] - lo), **arrays)

    def with_lines(self, rows: np.ndarray, line_at: np.ndarray, counts: np.ndarray) -> ClaimTable:
        """Rows ``rows`` taken, each with lines ``line_at`` (``counts[i]`` lines for row i)."""
        taken = self.take(rows)
        arrays: dict[str, Any] = {name: getattr(self, name)[line_at] for name in LINE_ARRAYS}
        return replace(taken, lines=Ragged(offsets_of(counts)), **arrays)

    def amount_cents(self) -> np.ndarray:
        return np.add.reduceat(self.cents, self.lines.offsets[:-1]) if len(self) else self.cents

    def services(self) -> np.ndarray:
        return np.add.reduceat(self.units, self.lines.offsets[:-1]) if len(self) else self.units


CLAIM_ARRAYS: Final = ("member", "provider", "specialty", "place", "age", "sex", "service_day",
                       "submitted_ms", "pattern", "source", "changed")
LINE_ARRAYS: Final = ("line_code", "units", "cents")


def concat(tables: Sequence[ClaimTable]) -> ClaimTable:
    """Tables sharing one vocabulary, one after the other."""
    first = tables[0]
    dx = Ragged(offsets_of(np.concatenate([t.dx.lengths for t in tables])))
    lines = Ragged(offsets_of(np.concatenate([t.lines.lengths for t in tables])))
    arrays: dict[str, Any] = {name: np.concatenate([getattr(t, name) for t in tables])
                              for name in (*CLAIM_ARRAYS, *LINE_ARRAYS, "dx_code")}
    return replace(first, claim_id=pa.concat_arrays([t.claim_id for t in tables]), dx=dx,
                   lines=lines, **arrays)


def encode(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(codes, vocabulary) of a list of hashable values, in first-seen order."""
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int32,
                        count=len(values))
    vocab = np.empty(len(index), dtype=object)
    vocab[:] = list(index)
    return codes, vocab


def parse_times_ms(texts: list[str]) -> np.ndarray:
    """ISO 8601 times with a zone -> ms since the epoch (UTC)."""
    times = pc.cast(pa.array(texts, pa.string()), pa.timestamp("ms", tz="UTC"))
    return np.asarray(times.cast(pa.int64()), dtype=np.int64)


def parse_days(texts: list[str]) -> np.ndarray:
    days = pc.cast(pa.array(texts, pa.string()), pa.date32())
    return np.asarray(days.cast(pa.int32()), dtype=np.int32)


def from_records(records: Sequence[dict[str, Any]]) -> ClaimTable:
    """JSON-ready v2 claim dicts (labels ignored) -> a table whose ``source`` is the position."""
    n = len(records)
    lines = [line for r in records for line in r["lines"]]
    dxs = [code for r in records for code in r.get("diagnosis_codes", [])]
    members, member_vocab = encode([r["member_id"] for r in records])
    providers, provider_vocab = encode([r["provider_id"] for r in records])
    specialties, specialty_vocab = encode([r.get("provider_specialty") for r in records])
    places, place_vocab = encode([r.get("place_of_service") for r in records])
    dx_codes, dx_vocab = encode(dxs)
    line_codes, procedure_vocab = encode([line["procedure_code"] for line in lines])
    vocab = Vocab(member_vocab, provider_vocab, specialty_vocab, place_vocab, dx_vocab,
                  procedure_vocab)
    return ClaimTable(
        vocab=vocab,
        claim_id=pa.array([r["claim_id"] for r in records], pa.string()),
        member=members, provider=providers, specialty=specialties, place=places,
        age=np.array([r["patient_age"] for r in records], dtype=np.int16),
        sex=np.array([SEXES.index(r["patient_sex"]) for r in records], dtype=np.int8),
        service_day=parse_days([r["service_date"] for r in records]),
        submitted_ms=parse_times_ms([r["submitted_at"] for r in records]),
        dx=Ragged(offsets_of(np.array([len(r.get("diagnosis_codes", [])) for r in records],
                                      dtype=np.int64))),
        dx_code=dx_codes,
        lines=Ragged(offsets_of(np.array([len(r["lines"]) for r in records], dtype=np.int64))),
        line_code=line_codes,
        units=np.array([line["units"] for line in lines], dtype=np.int64),
        cents=np.rint(np.array([line["charge"] for line in lines], dtype=np.float64) * 100
                      ).astype(np.int64),
        pattern=np.zeros(n, dtype=np.int8),
        source=np.arange(n, dtype=np.int64),
        changed=np.zeros(n, dtype=bool),
    )


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def money(cents: int) -> float:
    return round(cents / 100, 2)


def record_of(table: ClaimTable, i: int) -> dict[str, Any]:
    """Row ``i`` as a JSON-ready v2 claim dict (no labels)."""
    v = table.vocab
    lo, hi = table.lines.offsets[i], table.lines.offsets[i + 1]
    dlo, dhi = table.dx.offsets[i], table.dx.offsets[i + 1]
    lines = [{"procedure_code": v.procedures[c], "units": int(u), "charge": money(int(ch))}
             for c, u, ch in zip(table.line_code[lo:hi], table.units[lo:hi],
                                 table.cents[lo:hi], strict=True)]
    return {
        "schema_version": 2,
        "claim_id": table.claim_id[i].as_py(),
        "member_id": v.members[table.member[i]],
        "provider_id": v.providers[table.provider[i]],
        "provider_specialty": v.specialties[table.specialty[i]],
        "place_of_service": v.places[table.place[i]],
        "patient_age": int(table.age[i]),
        "patient_sex": SEXES[table.sex[i]],
        "service_date": str(EPOCH_DAY + int(table.service_day[i])),
        "submitted_at": iso_ms(int(table.submitted_ms[i])),
        "diagnosis_codes": [v.diagnoses[c] for c in table.dx_code[dlo:dhi]],
        "lines": lines,
        "claim_amount": money(int(table.cents[lo:hi].sum())),
        "num_services": int(table.units[lo:hi].sum()),
    }


def to_records(table: ClaimTable, originals: Sequence[dict[str, Any]],
               pattern_names: Sequence[str]) -> list[dict[str, Any]]:
    """Every row as a dict with ``is_anomaly`` and ``pattern``; an unchanged row is a copy of
    its original record (its strings exactly as they came in)."""
    out = []
    for i in range(len(table)):
        source = int(table.source[i])
        if source >= 0 and not table.changed[i]:
            record = {k: v for k, v in originals[source].items()
                      if k not in ("is_anomaly", "pattern")}
        else:
            record = record_of(table, i)
        name = pattern_names[table.pattern[i]]
        record["is_anomaly"] = bool(name)
        record["pattern"] = name
        out.append(record)
    return out

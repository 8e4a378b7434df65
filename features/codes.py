"""Code references learned from training claims and shipped with the model.

* Charge per unit of each procedure code: median and spread of its logarithm (robust: the
  median absolute deviation), so "charge 4.2x the median for code 99215" and a z-score
  that does not care whether a code costs 5 or 5,000.
* Charge per unit of each code among providers of one specialty (its peers): the same robust
  norm per (specialty, code), so "charge 3.1x the median for code 99215 among cardiology
  providers" holds a claim against what its provider's peers bill, not against every
  specialty's mix of prices.
* How typical a code is for the patient's age band and sex: the code's share of claims in
  that band and sex against the band and sex's share of all claims (smoothed), so a
  procedure that is rare for a 9-year-old boy stands out whatever its price.
* How typical a code is for the claim's diagnoses: the code's share of the lines billed
  with a diagnosis against its share of all lines (smoothed); a line counts as supported
  when any of the claim's diagnoses supports it (a payer's diagnosis-procedure consistency
  edit, learnt from the data rather than from a coding manual).
Codes seen fewer than ``min_claims`` times in training have no reference: they contribute
no evidence rather than noise.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import cached_property
from typing import Final, NamedTuple

from pydantic import BaseModel, ConfigDict

from schemas import ClaimV2

MIN_CLAIMS: Final = 20
MAD_TO_SIGMA: Final = 1.4826  # scales the MAD to a normal distribution's sigma
MIN_SIGMA: Final = 0.05  # a code with (nearly) one fixed price still allows +-5 % noise
AGE_BANDS: Final = (0, 2, 12, 18, 30, 45, 65, 80, 121)
SMOOTHING: Final = 1.0


def age_band(age: int) -> int:
    """The band ``i`` with ``AGE_BANDS[i] <= age < AGE_BANDS[i + 1]``."""
    return bisect.bisect_right(AGE_BANDS, age) - 1


def demographic(age: int, sex: str) -> str:
    return f"{age_band(age)}{sex}"


class ChargeNorm(NamedTuple):
    median_log: float  # log of the median charge per unit
    sigma_log: float  # robust spread of log charge per unit


class CodeReference(BaseModel):
    """Per-code charge norms and demographic mix, from training claims."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    charge: dict[str, ChargeNorm]
    mix: dict[str, dict[str, int]]  # code -> demographic -> lines of the code
    base_mix: dict[str, float]  # demographic -> share of all lines
    dx_mix: dict[str, dict[str, int]] = {}  # diagnosis -> code -> lines billed with it
    code_share: dict[str, float] = {}  # code -> share of all lines
    # "<specialty>|<code>" -> charge norm among that specialty's providers. Empty in
    # references built before it existed; only the ``v2-peers`` feature set reads it.
    peer_charge: dict[str, ChargeNorm] = {}
    # Lines per code (the sum of ``mix[code]``) and per diagnosis are computed once: the
    # rarities run per claim line. Cached properties, not pydantic private attributes: a
    # private attribute is read through the model's ``__getattr__``: that cost the model
    # service's v2 scoring about 9 us per claim (29 -> 20 us, measured in process).

    @cached_property
    def lines_per_code(self) -> dict[str, int]:
        return {code: sum(counts.values()) for code, counts in self.mix.items()}

    @cached_property
    def lines_per_diagnosis(self) -> dict[str, int]:
        return {dx: sum(counts.values()) for dx, counts in self.dx_mix.items()}

    def charge_z(self, code: str, charge: float, units: int) -> float | None:
        norm = self.charge.get(code)
        if norm is None:
            return None
        return (math.log(charge / units) - norm.median_log) / norm.sigma_log

    def charge_ratio(self, code: str, charge: float, units: int) -> float | None:
        norm = self.charge.get(code)
        return None if norm is None else charge / units / math.exp(norm.median_log)

    def peer_charge_z(self, specialty: str | None, code: str, charge: float, units: int
                      ) -> tuple[float, float] | None:
        """(robust z, ratio to the median) of the charge per unit among providers of
        ``specialty``; None when that pair has no norm (too few training lines)."""
        norm = self.peer_charge.get(peer_key(specialty, code))
        if norm is None:
            return None
        log_unit = math.log(charge / units)
        return ((log_unit - norm.median_log) / norm.sigma_log,
                math.exp(log_unit - norm.median_log))

    def rarity(self, code: str, age: int, sex: str) -> float | None:
        """log2 of how much less often the code occurs in this age band and sex than the
        band and sex occur among all lines: 0 typical, 5 = 32x rarer than expected."""
        counts = self.mix.get(code)
        group = demographic(age, sex)
        expected = self.base_mix.get(group, 0.0)
        if counts is None or expected <= 0.0:
            return None
        lines = self.lines_per_code[code]
        # Smoothed towards the overall mix: one line's worth of "typical" evidence.
        share = (counts.get(group, 0) + SMOOTHING * expected) / (lines + SMOOTHING)
        return max(0.0, -math.log2(share / expected))


    def dx_rarity(self, code: str, diagnoses: Iterable[str]) -> float | None:
        """log2 of how much less often the code is billed with the best-supporting of
        ``diagnoses`` than overall: 0 when some diagnosis makes it typical. None when the
        code or none of the diagnoses has a reference."""
        base = self.code_share.get(code, 0.0)
        if base <= 0.0:
            return None
        best: float | None = None
        lines_per_diagnosis = self.lines_per_diagnosis
        for dx in diagnoses:
            counts = self.dx_mix.get(dx)
            if counts is None:
                continue
            share = (counts.get(code, 0) + SMOOTHING * base) / (lines_per_diagnosis[dx] + SMOOTHING)
            rarity = max(0.0, -math.log2(share / base))
            if best is None or rarity < best:
                best = rarity
        return best


def peer_key(specialty: str | None, code: str) -> str:
    """A claim without a specialty is compared with the other claims without one."""
    return f"{specialty or ''}|{code}"


def build_code_reference(claims: Iterable[ClaimV2], *, min_claims: int = MIN_CLAIMS
                         ) -> CodeReference:
    per_unit: dict[str, list[float]] = defaultdict(list)
    per_peer_unit: dict[str, list[float]] = defaultdict(list)
    mix: dict[str, Counter[str]] = defaultdict(Counter)
    dx_mix: dict[str, Counter[str]] = defaultdict(Counter)
    base: Counter[str] = Counter()
    for claim in claims:
        key = demographic(claim.patient_age, claim.patient_sex)
        for line in claim.lines:
            log_unit = math.log(line.charge / line.units)
            per_unit[line.procedure_code].append(log_unit)
            per_peer_unit[peer_key(claim.provider_specialty, line.procedure_code)].append(
                log_unit)
            mix[line.procedure_code][key] += 1
            base[key] += 1
            for dx in claim.diagnosis_codes:
                dx_mix[dx][line.procedure_code] += 1
    charge = {code: _norm(values) for code, values in per_unit.items()
              if len(values) >= min_claims}
    total = sum(base.values()) or 1
    return CodeReference(
        charge=charge,
        mix={code: dict(counts) for code, counts in mix.items()
             if sum(counts.values()) >= min_claims},
        base_mix={k: n / total for k, n in base.items()},
        dx_mix={dx: dict(counts) for dx, counts in dx_mix.items()
                if sum(counts.values()) >= min_claims},
        code_share={code: len(values) / total for code, values in per_unit.items()},
        peer_charge={key: _norm(values) for key, values in per_peer_unit.items()
                     if len(values) >= min_claims},
    )


def _norm(values: list[float]) -> ChargeNorm:
    ordered = sorted(values)
    median = _median(ordered)
    mad = _median(sorted(abs(v - median) for v in ordered))
    return ChargeNorm(median, max(MAD_TO_SIGMA * mad, MIN_SIGMA))


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0

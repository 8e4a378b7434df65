"""Reasons in an investigator's words for the stateful feature sets (``v2-history`` and after).

The explainer (``scoring.explain``) decides WHICH features are unusual (a tail of the training
data); this module says what that means for the claim at hand, with the evidence the
feature vector kept (the code behind a charge, the claim a duplicate repeats):

* "member filed 9 claims within 7 days of this one (99th percentile: 3)"
* "charge 4.2x the median for code 99215"
* "charge 3.1x the median for code 99215 among cardiology providers"
* "same provider, date and services as claim C-17 filed 12 days earlier"

Pure functions of numbers and strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from features.vector import Evidence

Words = Callable[[float, str, Evidence], str]


def _count(value: float) -> str:
    return f"{round(value):,}"


def _typical(typical: float, direction: str, level: str) -> str:
    shown = _count(typical) if typical == int(typical) else f"{typical:,.1f}"
    return f"{level} percentile: {shown}" if direction == "high" else f"usually {shown}"


def _claims_within(days: int) -> Words:
    span = "a day" if days == 1 else f"{days} days"

    def words(value: float, typical: str, _evidence: Evidence) -> str:
        return f"member filed {_count(value)} claims within {span} of this one ({typical})"
    return words


def _charge(value: float, typical: str, evidence: Evidence) -> str:
    if evidence.steepest_code is None or evidence.steepest_ratio is None:
        return f"a charge per unit {value:.1f} spreads above its code's median ({typical})"
    return (f"charge {evidence.steepest_ratio:.1f}x the median for code "
            f"{evidence.steepest_code}")


def _peer_charge(value: float, typical: str, evidence: Evidence) -> str:
    if evidence.peer_code is None or evidence.peer_ratio is None:
        return f"a charge per unit {value:.1f} spreads above its peers' median ({typical})"
    peers = (f"{evidence.specialty.replace('_', ' ')} providers" if evidence.specialty
             else "providers without a specialty")
    return (f"charge {evidence.peer_ratio:.1f}x the median for code {evidence.peer_code} "
            f"among {peers}")


def _amount_vs_norm(value: float, typical: str, _evidence: Evidence) -> str:
    ratio = math.exp(value)
    if ratio < 1:
        return f"billed {1 / ratio:.1f}x less than these services usually cost"
    return f"billed {ratio:.1f}x what these services usually cost"


def _times(log2_ratio: float) -> str:
    """"79x", or "1.3x" below 10 (a whole number would say "1x rarer" for 1.3)."""
    ratio = 2.0 ** log2_ratio
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _rarity(value: float, typical: str, evidence: Evidence) -> str:
    code = evidence.rarest_code or "a code"
    return f"{code} is {_times(value)} rarer than usual for the patient's age and sex"


def _unsupported(value: float, typical: str, evidence: Evidence) -> str:
    code = evidence.unsupported_code or "a code"
    return f"{code} is {_times(value)} rarer than usual with this claim's diagnoses"


def _amount(value: float, typical: str, _evidence: Evidence) -> str:
    return f"claim amount {math.exp(value):,.2f} ({typical.replace(': ', ': about ')})"


def _simple(template: str) -> Words:
    def words(value: float, typical: str, _evidence: Evidence) -> str:
        return template.format(n=_count(value), typical=typical)
    return words


WORDS: Final[dict[str, Words]] = {
    "log_amount": _amount,
    "num_lines": _simple("{n} lines on one claim ({typical})"),
    "num_services": _simple("{n} services billed ({typical})"),
    "num_diagnoses": _simple("{n} diagnosis codes ({typical})"),
    "max_charge_z": _charge,
    "max_peer_charge_z": _peer_charge,
    "amount_vs_norm": _amount_vs_norm,
    "max_code_rarity": _rarity,
    "max_dx_rarity": _unsupported,
    "claims_1d": _claims_within(1),
    "claims_7d": _claims_within(7),
    "claims_30d": _claims_within(30),
    "providers_30d": _simple("member saw {n} different providers within 30 days ({typical})"),
    "providers_7d": _simple("member saw {n} different providers within 7 days ({typical})"),
    "days_since_previous": _simple("member's previous claim was {n} days before this one "
                                   "({typical})"),
    "same_provider_same_day": _simple("the same provider billed this member {n} other "
                                      "claim(s) for the same day ({typical})"),
}


def in_words(feature: str, value: float, direction: str, typical: float, level: str,
             evidence: Evidence) -> str | None:
    """The investigator's sentence for one unusual feature; None for a feature this
    module does not describe (the explainer's generic sentence stays)."""
    words = WORDS.get(feature)
    if words is None or (feature == "days_since_previous" and value < 0):
        return None
    return words(value, _typical(typical, direction, level), evidence)


def resubmission_words(evidence: Evidence) -> str:
    days = evidence.duplicate_days_earlier
    when = f"{days:.0f} days earlier" if days >= 1.5 else "a day earlier"
    return f"same provider, date and services as claim {evidence.duplicate_of} filed {when}"


# Which tail of each feature is a reason: many recent claims are suspicious, few never are;
# a short gap since the previous claim is (a long one is not).
SIDES: Final[dict[str, str]] = {
    name: "high" for name in WORDS if name not in ("days_since_previous", "amount_vs_norm")
} | {"days_since_previous": "low", "amount_vs_norm": "both"}

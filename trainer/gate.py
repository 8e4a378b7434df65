"""The promotion gate: is a candidate at least as good as the champion on labelled claims?

Pure functions of what the training runs logged. Evidence, best first:

1. the candidate's run scored the current champion on the candidate's own labelled holdout
   (``claimflow train --supervised`` does: param ``champion_version``, metrics
   ``champion_*``): both models judged on the same claims with the same history;
2. both runs logged labelled metrics on the same holdout: the same data (``data_sha256``),
   feature set, test size and seed (so the same split);
3. otherwise nothing comparable: the candidate is not known to be worse, so the gate lets it
   through and says so (recorded as "no comparable evidence").

The comparison: precision at the investigation budget first (what an investigator's day
yields), then PR-AUC on a tie. A candidate that is lower on the first differing one is
refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

KEYS: Final = ("precision_at_budget", "pr_auc")
SAME_HOLDOUT_PARAMS: Final = ("feature_set", "test_size", "seed")
TIE: Final = 1e-12
FILE_LABELS: Final = "file:is_anomaly"


class PromotionRefusedError(RuntimeError):
    """The candidate is worse than the champion on the labelled holdout."""


@dataclass(frozen=True)
class RunRecord:
    metrics: Mapping[str, float]
    params: Mapping[str, str]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Evidence:
    candidate: dict[str, float]
    champion: dict[str, float]
    source: str
    champion_version: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    compared: bool
    reason: str
    evidence: Evidence | None = None

    def metrics(self) -> dict[str, float]:
        if self.evidence is None:
            return {}
        return {**{f"candidate_{k}": v for k, v in self.evidence.candidate.items()},
                **{f"champion_{k}": v for k, v in self.evidence.champion.items()}}


def _pick(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float] | None:
    if f"{prefix}{KEYS[0]}" not in metrics:
        return None
    return {key: float(metrics[f"{prefix}{key}"]) for key in KEYS
            if f"{prefix}{key}" in metrics}


def evidence(candidate: RunRecord, champion: RunRecord | None,
             champion_version: str) -> Evidence | None:
    """The best comparable numbers for candidate and champion, or None."""
    own = _pick(candidate.metrics)
    if own is None:
        return None
    if candidate.params.get("champion_version") == champion_version:
        theirs = _pick(candidate.metrics, "champion_")
        if theirs is not None:
            return Evidence(own, theirs, f"champion v{champion_version} scored on the "
                            "candidate's labelled holdout", champion_version)
    if champion is None:
        return None
    theirs = _pick(champion.metrics)
    same_data = (candidate.tags.get("data_sha256") is not None
                 and candidate.tags.get("data_sha256") == champion.tags.get("data_sha256"))
    same_split = _holdout_key(candidate) == _holdout_key(champion)
    if theirs is not None and same_data and same_split:
        return Evidence(own, theirs, "both runs' labelled holdout (same data and split)",
                        champion_version)
    return None


def _holdout_key(record: RunRecord) -> tuple[str | None, ...]:
    """What decides which claims a run judged on: the split and whose labels (a run without
    ``labels_source`` judged on the file's labels)."""
    return (*(record.params.get(p) for p in SAME_HOLDOUT_PARAMS),
            record.params.get("labels_source", FILE_LABELS))


def gate(found: Evidence | None) -> Verdict:
    """Pass iff the candidate is not worse: precision at budget, then PR-AUC on a tie."""
    if found is None:
        return Verdict(passed=True, compared=False,
                       reason="no labelled holdout compares it with the champion")
    for key in KEYS:
        mine, theirs = found.candidate.get(key), found.champion.get(key)
        if mine is None or theirs is None or abs(mine - theirs) <= TIE:
            continue
        words = (f"{key} {mine:.4f} vs champion v{found.champion_version}'s {theirs:.4f} "
                 f"({found.source})")
        if mine < theirs:
            return Verdict(passed=False, compared=True, reason=f"worse: {words}",
                           evidence=found)
        return Verdict(passed=True, compared=True, reason=f"better: {words}", evidence=found)
    return Verdict(passed=True, compared=True,
                   reason=f"as good as champion v{found.champion_version} ({found.source})",
                   evidence=found)

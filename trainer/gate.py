"""The promotion gate: is a candidate at least as good as the champion on labelled claims?

Pure functions of what the training runs logged. Evidence, best first:

1. the candidate's run scored the current champion on the candidate's own labelled holdout
   (``claimflow train --supervised`` does: param ``champion_version``, metrics
   ``champion_*``): both models judged on the same claims with the same history;
2. both runs logged labelled metrics on the same holdout: the same data (``data_sha256``),
   feature set, test size and seed (so the same split);
3. otherwise nothing comparable on a holdout.

The holdout comparison: precision at the investigation budget first (what an investigator's
day yields), then PR-AUC on a tie. A candidate that is lower on the first differing one is
refused.

Beside the holdout, the shadow period (``ShadowPeriod``): the claims the stream scored with
the candidate in shadow behind the current champion that investigators then closed
(``fraud`` or ``legitimate``). Each model's precision there is confirmed fraud / labelled
among its ``investigate`` decisions. Investigators label what the champion sends them, so
the candidate's own flags that the champion approved are never labelled: its observed
precision covers only the claims both flagged and says nothing about the rest. The gate
therefore judges the candidate on a conservative bound: those unseen flags count as
legitimate, at the rate investigators labelled the claims both flagged
(:attr:`ShadowPeriod.challenger_precision_bound`). It counts as evidence once each model
has at least ``min_labelled`` labelled investigate decisions.
The shadow period also tells how many claims each model would send to investigators, labels
or not: a candidate whose share of ``investigate`` decisions is more than ``max_growth``
times the larger of the champion's share and the investigation budget is refused, whatever
its precision, since investigators could not work that queue (judged from
``QueueLimit.min_claims`` shadowed claims on).

:func:`decide` combines both: refused if either comparable source finds the candidate worse;
with no comparable source at all, let through and recorded as "no comparable evidence",
or refused when ``strict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from schemas.shadow import labelling_rate, precision_bound

KEYS: Final = ("precision_at_budget", "pr_auc")
SAME_HOLDOUT_PARAMS: Final = ("feature_set", "test_size", "seed")
TIE: Final = 1e-12
FILE_LABELS: Final = "file:is_anomaly"
TOPIC_LABELS: Final = "topic:"  # labels_source of labels read from a topic: "topic:<name>"


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
    # Labels from investigators' dispositions (a labels topic): they answer the champion's
    # queue, so every labelled holdout claim is one the champion flagged.
    champions_queue: bool = False


@dataclass(frozen=True)
class ShadowPeriod:
    """What the stream saw of one (champion, candidate) pair in shadow, joined with labels."""

    claims: int = 0  # shadow records of the pair
    agree: int = 0
    champion_labelled: int = 0  # the champion's investigate decisions with a closing label
    champion_fraud: int = 0
    challenger_labelled: int = 0
    challenger_fraud: int = 0
    champion_flagged: int = 0  # investigate decisions, labelled or not
    challenger_flagged: int = 0
    both_flagged: int = 0  # claims both decided investigate
    both_labelled: int = 0  # ... of which investigators closed
    unseen: int = 0  # the challenger's flags the champion approved, without a label

    def flag_share(self, side: str) -> float:
        flagged = self.champion_flagged if side == "champion" else self.challenger_flagged
        return flagged / self.claims if self.claims else 0.0

    @property
    def champion_precision(self) -> float | None:
        return self.champion_fraud / self.champion_labelled if self.champion_labelled else None

    @property
    def challenger_precision(self) -> float | None:
        return (self.challenger_fraud / self.challenger_labelled if self.challenger_labelled
                else None)

    @property
    def labelling_rate(self) -> float:
        return labelling_rate(self.both_flagged, self.both_labelled)

    @property
    def challenger_precision_bound(self) -> float | None:
        return precision_bound(self.challenger_fraud, self.challenger_labelled, self.unseen,
                               self.both_flagged, self.both_labelled)

    def metrics(self) -> dict[str, float]:
        numbers = {"shadow_claims": float(self.claims),
                   "shadow_champion_labelled": float(self.champion_labelled),
                   "shadow_challenger_labelled": float(self.challenger_labelled)}
        if self.claims:
            numbers["shadow_agreement"] = self.agree / self.claims
            numbers["shadow_champion_flag_share"] = self.flag_share("champion")
            numbers["shadow_challenger_flag_share"] = self.flag_share("challenger")
        for side, value in (("champion", self.champion_precision),
                            ("challenger", self.challenger_precision),
                            ("challenger_bound", self.challenger_precision_bound)):
            if value is not None:
                numbers[f"shadow_{side}_precision"] = value
        numbers["shadow_challenger_unseen"] = float(self.unseen)
        return numbers


@dataclass(frozen=True)
class Verdict:
    passed: bool
    compared: bool
    reason: str
    evidence: Evidence | None = None
    shadow: ShadowPeriod | None = None

    def metrics(self) -> dict[str, float]:
        numbers = {} if self.shadow is None else self.shadow.metrics()
        if self.evidence is None:
            return numbers
        return {**{f"candidate_{k}": v for k, v in self.evidence.candidate.items()},
                **{f"champion_{k}": v for k, v in self.evidence.champion.items()}, **numbers}


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
    queue = candidate.params.get("labels_source", FILE_LABELS).startswith(TOPIC_LABELS)
    if candidate.params.get("champion_version") == champion_version:
        theirs = _pick(candidate.metrics, "champion_")
        if theirs is not None:
            return Evidence(own, theirs, f"champion v{champion_version} scored on the "
                            "candidate's labelled holdout", champion_version, queue)
    if champion is None:
        return None
    theirs = _pick(champion.metrics)
    same_data = (candidate.tags.get("data_sha256") is not None
                 and candidate.tags.get("data_sha256") == champion.tags.get("data_sha256"))
    same_split = _holdout_key(candidate) == _holdout_key(champion)
    if theirs is not None and same_data and same_split:
        return Evidence(own, theirs, "both runs' labelled holdout (same data and split)",
                        champion_version, queue)
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


MIN_SHADOW_LABELLED: Final = 20
MAX_QUEUE_GROWTH: Final = 1.5
MIN_VOLUME_CLAIMS: Final = 1_000


@dataclass(frozen=True)
class QueueLimit:
    """How large a candidate's queue may be against the champion's and the budget."""

    budget_share: float = 0.05  # the investigation budget, as a share of claims
    max_growth: float = MAX_QUEUE_GROWTH
    min_claims: int = MIN_VOLUME_CLAIMS

    def limit(self, period: ShadowPeriod) -> float:
        return self.max_growth * max(period.flag_share("champion"), self.budget_share)


def queue_words(period: ShadowPeriod, queue: QueueLimit) -> str:
    return (f"it would send {period.flag_share('challenger'):.1%} of claims to investigators "
            f"against the champion's {period.flag_share('champion'):.1%} over "
            f"{period.claims} shadowed claims (limit {queue.limit(period):.1%}: "
            f"{queue.max_growth:g}x the larger of the champion's share and the "
            f"{queue.budget_share:.0%} budget)")


def shadow_gate(period: ShadowPeriod | None, champion_version: str,
                min_labelled: int = MIN_SHADOW_LABELLED,
                queue: QueueLimit | None = None) -> Verdict:
    """Pass iff the candidate's queue fits (:class:`QueueLimit`, judged on shadowed claims,
    labelled or not) and its precision on the labelled shadow period is not lower than the
    champion's; precision is not compared below ``min_labelled`` labelled decisions on
    either side."""
    if period is None:
        return Verdict(passed=True, compared=False, reason="no shadow period was read")
    queue = queue or QueueLimit()
    if (period.claims >= queue.min_claims
            and period.flag_share("challenger") > queue.limit(period) + TIE):
        return Verdict(passed=False, compared=True, shadow=period,
                       reason=f"worse: {queue_words(period, queue)}")
    fewest = min(period.champion_labelled, period.challenger_labelled)
    if period.claims == 0 or fewest < min_labelled:
        return Verdict(passed=True, compared=False, shadow=period,
                       reason=f"shadow period too small ({period.claims} claims shadowed, "
                              f"{period.champion_labelled} champion / "
                              f"{period.challenger_labelled} candidate investigate decisions "
                              f"labelled; {min_labelled} each needed)")
    mine, theirs = period.challenger_precision_bound, period.champion_precision
    observed = period.challenger_precision
    assert mine is not None
    assert theirs is not None
    assert observed is not None
    unseen = ("" if not period.unseen else
              f"; {period.unseen} of its flags never reached investigators, counted "
              f"legitimate at the labelling rate {period.labelling_rate:.2f} of the claims "
              f"both flagged: {observed:.4f} observed")
    words = (f"shadow precision {mine:.4f} ({period.challenger_labelled} labelled{unseen}) "
             f"vs champion v{champion_version}'s {theirs:.4f} ({period.champion_labelled}), "
             f"agreement {period.agree / period.claims:.4f} on {period.claims} claims")
    if mine < theirs - TIE:
        return Verdict(passed=False, compared=True, reason=f"worse: {words}", shadow=period)
    return Verdict(passed=True, compared=True, reason=f"not worse: {words}", shadow=period)


def decide(holdout: Verdict, shadow: Verdict, *, strict: bool = False) -> Verdict:
    """The gate's answer from both sources: refused if a comparable one finds the candidate
    worse; with neither comparable, let through unless ``strict``.

    A holdout labelled from the champion's own queue (``Evidence.champions_queue``) judges
    the champion only on claims it chose, which favours it; when the shadow period is
    comparable, the shadow period decides and the holdout's verdict is only reported."""
    evidence, period = holdout.evidence, shadow.shadow
    overruled = shadow.compared and evidence is not None and evidence.champions_queue
    reason = (f"holdout (labels from the champion's queue; the shadow period decides): "
              f"{holdout.reason}; shadow: {shadow.reason}" if overruled
              else f"holdout: {holdout.reason}; shadow: {shadow.reason}")
    counted = (shadow,) if overruled else (holdout, shadow)
    worse = any(v.compared and not v.passed for v in counted)
    if worse:
        return Verdict(passed=False, compared=True, reason=reason, evidence=evidence,
                       shadow=period)
    if holdout.compared or shadow.compared:
        return Verdict(passed=True, compared=True, reason=reason, evidence=evidence,
                       shadow=period)
    if strict:
        return Verdict(passed=False, compared=False, shadow=period,
                       reason=f"strict: no comparable evidence ({reason})")
    return Verdict(passed=True, compared=False, reason=reason, shadow=period)

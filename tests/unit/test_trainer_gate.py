"""The promotion gate: which evidence counts and how candidate and champion compare."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas import DecisionKind, ModelRef, ShadowScore, StreamSource
from schemas.label import AnsweredDecision, Disposition, Label
from schemas.shadow import ShadowVerdict
from trainer.gate import (
    Evidence,
    QueueLimit,
    RunRecord,
    ShadowPeriod,
    Verdict,
    decide,
    evidence,
    gate,
    shadow_gate,
)
from trainer.shadow_period import pair_decisions, shadow_period

SPLIT = {"feature_set": "v2-history", "test_size": "0.2", "seed": "42"}


def run(metrics: dict[str, float], sha: str = "abc", **params: str) -> RunRecord:
    return RunRecord(metrics, {**SPLIT, **params}, {"data_sha256": sha})


def test_the_champion_scored_on_the_candidates_holdout_is_the_best_evidence() -> None:
    candidate = run({"precision_at_budget": 0.8, "pr_auc": 0.7,
                     "champion_precision_at_budget": 0.6, "champion_pr_auc": 0.5},
                    champion_version="3", labels_source="topic:claims.labels")
    champion = run({"precision_at_budget": 0.99, "pr_auc": 0.99}, sha="other")
    found = evidence(candidate, champion, "3")
    assert found is not None
    assert found.champion == {"precision_at_budget": 0.6, "pr_auc": 0.5}
    verdict = gate(found)
    assert verdict.passed
    assert verdict.compared
    assert verdict.metrics()["candidate_precision_at_budget"] == 0.8


def test_a_comparison_with_another_champion_does_not_count() -> None:
    candidate = run({"precision_at_budget": 0.8, "champion_precision_at_budget": 0.6},
                    champion_version="2", labels_source="file:is_anomaly")
    champion = run({"precision_at_budget": 0.9}, sha="other data")
    assert evidence(candidate, champion, "3") is None
    verdict = gate(None)
    assert verdict.passed
    assert not verdict.compared


def test_runs_on_the_same_data_and_split_compare_their_own_holdout() -> None:
    # An Isolation Forest run has no labels_source: it judged on the file's labels.
    candidate = run({"precision_at_budget": 0.5, "pr_auc": 0.6})
    champion = run({"precision_at_budget": 0.7, "pr_auc": 0.4}, labels_source="file:is_anomaly")
    verdict = gate(evidence(candidate, champion, "1"))
    assert not verdict.passed
    assert "precision_at_budget 0.5000 vs champion v1's 0.7000" in verdict.reason
    other_split = run({"precision_at_budget": 0.7}, seed="7")
    assert evidence(candidate, other_split, "1") is None
    topic_holdout = run({"precision_at_budget": 0.7}, labels_source="topic:claims.labels")
    assert evidence(candidate, topic_holdout, "1") is None


def test_precision_at_budget_first_then_pr_auc_on_a_tie() -> None:
    tie_better = gate(evidence(run({"precision_at_budget": 0.7, "pr_auc": 0.6}),
                               run({"precision_at_budget": 0.7, "pr_auc": 0.5}), "1"))
    assert tie_better.passed
    assert tie_better.reason.startswith("better: pr_auc")
    tie_worse = gate(evidence(run({"precision_at_budget": 0.7, "pr_auc": 0.4}),
                              run({"precision_at_budget": 0.7, "pr_auc": 0.5}), "1"))
    assert not tie_worse.passed
    equal = gate(evidence(run({"precision_at_budget": 0.7, "pr_auc": 0.5}),
                          run({"precision_at_budget": 0.7, "pr_auc": 0.5}), "1"))
    assert equal.passed
    assert equal.reason.startswith("as good as")
    # A better precision at budget wins even with a lower PR-AUC.
    assert gate(evidence(run({"precision_at_budget": 0.8, "pr_auc": 0.1}),
                         run({"precision_at_budget": 0.7, "pr_auc": 0.9}), "1")).passed


def test_a_candidate_without_labelled_metrics_has_no_evidence() -> None:
    assert evidence(run({"threshold": 0.5}), run({"precision_at_budget": 0.7}), "1") is None


# -- the shadow period and the combined decision ---------------------------------------------

def period(champion: tuple[int, int], challenger: tuple[int, int], claims: int = 500,
           agree: int = 450) -> ShadowPeriod:
    """(labelled, fraud) of each side's investigate decisions."""
    return ShadowPeriod(claims=claims, agree=agree, champion_labelled=champion[0],
                        champion_fraud=champion[1], challenger_labelled=challenger[0],
                        challenger_fraud=challenger[1])


def test_the_shadow_gate_compares_precision_on_labelled_shadow_claims() -> None:
    worse = shadow_gate(period((40, 30), (30, 15)), "1", min_labelled=20)
    assert (worse.passed, worse.compared) == (False, True)
    assert worse.reason.startswith("worse: shadow precision 0.5000 (30 labelled) vs "
                                   "champion v1's 0.7500 (40)")
    assert "agreement 0.9000 on 500 claims" in worse.reason
    better = shadow_gate(period((40, 30), (25, 24)), "1", min_labelled=20)
    assert (better.passed, better.compared) == (True, True)
    same = shadow_gate(period((40, 20), (20, 10)), "1", min_labelled=20)
    assert (same.passed, same.compared) == (True, True)
    assert better.metrics() == {
        "shadow_claims": 500.0, "shadow_agreement": 0.9,
        "shadow_champion_labelled": 40.0, "shadow_challenger_labelled": 25.0,
        "shadow_champion_precision": 0.75, "shadow_challenger_precision": 0.96,
        "shadow_challenger_bound_precision": 0.96, "shadow_challenger_unseen": 0.0,
        "shadow_champion_flag_share": 0.0, "shadow_challenger_flag_share": 0.0}


def test_flags_investigators_never_saw_count_against_the_candidate() -> None:
    # 7 % of claims flagged (within the queue limit), 0.933 precision on the 450 labelled
    # claims both flagged, but 500 flags the champion approved: nobody looked at them.
    period = ShadowPeriod(claims=20_000, agree=19_400, champion_labelled=500,
                          champion_fraud=350, challenger_labelled=450, challenger_fraud=420,
                          champion_flagged=1_000, challenger_flagged=1_400, both_flagged=900,
                          both_labelled=450, unseen=500)
    assert period.labelling_rate == 0.5
    assert period.challenger_precision_bound == 420 / (450 + 500 * 0.5)  # 0.6
    verdict = shadow_gate(period, "1", min_labelled=20)
    assert (verdict.passed, verdict.compared) == (False, True)
    assert verdict.reason.startswith(
        "worse: shadow precision 0.6000 (450 labelled; 500 of its flags never reached "
        "investigators, counted legitimate at the labelling rate 0.50 of the claims both "
        "flagged: 0.9333 observed) vs champion v1's 0.7000 (500)")
    # The same candidate without unseen flags is judged on what was observed.
    seen = ShadowPeriod(**{**period.__dict__, "unseen": 0})
    assert shadow_gate(seen, "1", min_labelled=20).passed


def test_the_demo_run_that_doubled_the_queue_is_refused() -> None:
    """The shadow period of the 2026-12-05 demo run, read back from its topics: promoted
    then on a 0.893 precision over 28 labels, it decided at 0.333 once champion."""
    period = ShadowPeriod(claims=8_020, agree=7_338, champion_labelled=432,
                          champion_fraud=272, challenger_labelled=206, challenger_fraud=189,
                          champion_flagged=432, challenger_flagged=662, both_flagged=206,
                          both_labelled=206, unseen=456)
    assert round(period.challenger_precision_bound or 0, 3) == 0.285
    assert not shadow_gate(period, "1").passed


def volume(champion_flagged: int, challenger_flagged: int, claims: int = 2_000
           ) -> ShadowPeriod:
    """A shadow period where the candidate is far more precise on its labelled decisions."""
    return ShadowPeriod(claims=claims, agree=claims - abs(challenger_flagged - champion_flagged),
                        champion_labelled=40, champion_fraud=20, challenger_labelled=40,
                        challenger_fraud=38, champion_flagged=champion_flagged,
                        challenger_flagged=challenger_flagged)


def test_a_candidate_whose_queue_outgrows_the_budget_is_refused_whatever_its_precision(
) -> None:
    # The demo's case: the champion flags 4 %, the candidate 9 %; the limit is 1.5 x 5 %.
    doubled = shadow_gate(volume(80, 180), "1", min_labelled=20)
    assert (doubled.passed, doubled.compared) == (False, True)
    assert doubled.reason == (
        "worse: it would send 9.0% of claims to investigators against the champion's 4.0% "
        "over 2000 shadowed claims (limit 7.5%: 1.5x the larger of the champion's share and "
        "the 5% budget)")
    assert doubled.metrics()["shadow_challenger_flag_share"] == 0.09
    # Within the limit: the precision comparison decides as before.
    fits = shadow_gate(volume(80, 140), "1", min_labelled=20)
    assert (fits.passed, fits.compared) == (True, True)
    assert fits.reason.startswith("not worse: shadow precision 0.9500")
    # A champion that already flags more than the budget sets the limit itself.
    assert shadow_gate(volume(200, 290), "1", min_labelled=20).passed
    assert not shadow_gate(volume(200, 310), "1", min_labelled=20).passed


def test_the_queue_is_judged_without_labels_but_not_on_a_few_claims() -> None:
    unlabelled = ShadowPeriod(claims=2_000, agree=1_900, champion_flagged=80,
                              challenger_flagged=180)
    assert not shadow_gate(unlabelled, "1").passed
    few = ShadowPeriod(claims=999, agree=900, champion_flagged=40, challenger_flagged=90)
    verdict = shadow_gate(few, "1")
    assert (verdict.passed, verdict.compared) == (True, False)
    assert shadow_gate(few, "1", queue=QueueLimit(min_claims=500)).passed is False
    assert shadow_gate(volume(80, 180), "1",
                       queue=QueueLimit(budget_share=0.05, max_growth=2.5)).passed


def test_a_small_or_missing_shadow_period_is_no_evidence() -> None:
    # One side below the minimum: however bad the candidate looks, not compared.
    for small in (period((19, 0), (40, 40)), period((40, 40), (19, 0)), ShadowPeriod()):
        verdict = shadow_gate(small, "1", min_labelled=20)
        assert (verdict.passed, verdict.compared) == (True, False)
        assert verdict.reason.startswith("shadow period too small")
        assert verdict.shadow == small
    missing = shadow_gate(None, "1")
    assert (missing.passed, missing.compared, missing.reason) == (
        True, False, "no shadow period was read")


HOLDOUT = {
    "better": Verdict(passed=True, compared=True, reason="better: h"),
    "worse": Verdict(passed=False, compared=True, reason="worse: h"),
    "none": Verdict(passed=True, compared=False, reason="no holdout"),
}
SHADOW = {
    "better": Verdict(passed=True, compared=True, reason="not worse: s",
                      shadow=period((40, 30), (30, 29))),
    "worse": Verdict(passed=False, compared=True, reason="worse: s",
                     shadow=period((40, 30), (30, 10))),
    "none": Verdict(passed=True, compared=False, reason="too small", shadow=ShadowPeriod()),
}


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("shadow", SHADOW)
@pytest.mark.parametrize("holdout", HOLDOUT)
def test_decide_on_every_combination(holdout: str, shadow: str, strict: bool) -> None:
    verdict = decide(HOLDOUT[holdout], SHADOW[shadow], strict=strict)
    worse = "worse" in (holdout, shadow)
    nothing = holdout == shadow == "none"
    assert verdict.passed is (not worse and not (nothing and strict))
    assert verdict.compared is (not nothing)
    assert HOLDOUT[holdout].reason in verdict.reason
    assert SHADOW[shadow].reason in verdict.reason
    assert verdict.reason.startswith("strict: no comparable evidence" if nothing and strict
                                     else "holdout: ")
    # The evidence of both sources is kept for the promotion record.
    assert verdict.shadow == SHADOW[shadow].shadow


def test_the_combined_verdict_records_both_sources_metrics() -> None:
    found = Evidence({"precision_at_budget": 0.9}, {"precision_at_budget": 0.8}, "holdout", "1")
    holdout = gate(found)
    verdict = decide(holdout, SHADOW["better"])
    assert verdict.metrics()["candidate_precision_at_budget"] == 0.9
    assert verdict.metrics()["shadow_challenger_precision"] == 29 / 30


def shadow_score(claim_id: str, champion: DecisionKind, challenger: DecisionKind,
                 versions: tuple[str, str] = ("1", "2")) -> ShadowScore:
    def verdict(version: str, decision: DecisionKind) -> ShadowVerdict:
        return ShadowVerdict(model=ModelRef(name="claim-anomaly", version=version),
                             anomaly_score=0.5, threshold=0.4, decision=decision)
    return ShadowScore(claim_id=claim_id, champion=verdict(versions[0], champion),
                       challenger=verdict(versions[1], challenger),
                       agree=champion == challenger, decided_at=datetime.now(UTC),
                       source=StreamSource(topic="claims", partition=0, offset=1))


def label(claim_id: str, disposition: Disposition) -> Label:
    return Label(claim_id=claim_id, disposition=disposition, investigator="ana",
                 decided_at=datetime.now(UTC),
                 answers=AnsweredDecision(decision="investigate",
                                          model=ModelRef(name="claim-anomaly", version="1"),
                                          anomaly_score=0.5, threshold=0.4,
                                          decided_at=datetime.now(UTC)))


def test_the_shadow_period_joins_the_pairs_records_with_closing_labels() -> None:
    records = [
        shadow_score("A", "investigate", "investigate"),  # both flag, fraud
        shadow_score("B", "investigate", "approve"),      # only the champion, legitimate
        shadow_score("C", "investigate", "investigate"),  # both, legitimate
        shadow_score("D", "approve", "approve"),          # unlabelled
        shadow_score("E", "investigate", "investigate"),  # needs_info: not closing
        shadow_score("F", "investigate", "investigate", versions=("1", "3")),  # other pair
        shadow_score("G", "approve", "investigate"),      # only the challenger: unseen
    ]
    labels = [label("A", "fraud"), label("B", "legitimate"), label("C", "legitimate"),
              label("E", "needs_info"), label("F", "fraud"), label("Z", "fraud")]
    decisions = pair_decisions(records, "claim-anomaly", "1", "2")
    assert set(decisions) == {"A", "B", "C", "D", "E", "G"}
    assert shadow_period(decisions, labels) == ShadowPeriod(
        claims=6, agree=4, champion_labelled=3, champion_fraud=1, challenger_labelled=2,
        challenger_fraud=1, champion_flagged=4, challenger_flagged=4, both_flagged=3,
        both_labelled=2, unseen=1)


def holdout_verdict(candidate: float, champion: float, labels_source: str) -> Verdict:
    """The holdout verdict of a candidate run that scored champion v1 on its own holdout."""
    record = run({"precision_at_budget": candidate, "champion_precision_at_budget": champion},
                 champion_version="1", labels_source=labels_source)
    return gate(evidence(record, None, "1"))


QUEUE = "topic:claims.labels"


def test_labels_from_the_topic_mark_the_holdout_as_the_champions_queue() -> None:
    assert holdout_verdict(0.9, 0.8, QUEUE).evidence.champions_queue  # type: ignore[union-attr]
    assert not holdout_verdict(0.9, 0.8, "file:is_anomaly"  # type: ignore[union-attr]
                               ).evidence.champions_queue


def test_the_shadow_period_decides_over_a_holdout_from_the_champions_queue() -> None:
    # The demo's numbers: worse on the queue-labelled holdout, better in shadow.
    verdict = decide(holdout_verdict(0.956, 1.0, QUEUE), SHADOW["better"])
    assert (verdict.passed, verdict.compared) == (True, True)
    assert verdict.reason.startswith(
        "holdout (labels from the champion's queue; the shadow period decides): worse: ")
    assert verdict.metrics()["candidate_precision_at_budget"] == 0.956  # still recorded
    assert not decide(holdout_verdict(0.99, 0.9, QUEUE), SHADOW["worse"]).passed


def test_a_queue_labelled_holdout_still_counts_without_a_comparable_shadow_period() -> None:
    verdict = decide(holdout_verdict(0.956, 1.0, QUEUE), SHADOW["none"])
    assert (verdict.passed, verdict.compared) == (False, True)
    assert verdict.reason.startswith("holdout: worse: ")


def test_a_holdout_labelled_from_the_file_is_never_overruled() -> None:
    verdict = decide(holdout_verdict(0.956, 1.0, "file:is_anomaly"), SHADOW["better"])
    assert not verdict.passed
    assert verdict.reason.startswith("holdout: worse: ")

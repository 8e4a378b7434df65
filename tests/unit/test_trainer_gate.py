"""The promotion gate: which evidence counts and how candidate and champion compare."""

from __future__ import annotations

from trainer.gate import RunRecord, evidence, gate

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

"""Model tests: the lab's numbers, determinism, and behaviour a claims analyst would expect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import train_test_split

from producer.csvio import write_claims_csv
from producer.profiles import generate_seed_profile
from schemas import CLAIM_FEATURES
from trainer.data import DataError, Dataset, load_csv
from trainer.model import TrainedModel, TrainParams, anomaly_scores, time_cut, train

LAB_PARAMS = TrainParams(n_estimators=100, contamination=0.05, test_size=0.2, seed=42)


def lab_script_percentages() -> tuple[float, float]:
    """The original lab, re-typed from its description with plain numpy/pandas/sklearn."""
    rs = np.random.RandomState(42)
    normal = pd.DataFrame({
        "claim_id": range(1, 1001),
        "claim_amount": rs.normal(1000, 250, 1000),
        "num_services": rs.randint(1, 10, 1000),
        "patient_age": rs.randint(18, 90, 1000),
        "provider_id": rs.randint(1, 50, 1000),
        "days_since_last_claim": rs.randint(0, 365, 1000),
    })
    anomalies = pd.DataFrame({
        "claim_id": range(1001, 1051),
        "claim_amount": rs.normal(10000, 2500, 50),
        "num_services": rs.randint(10, 20, 50),
        "patient_age": rs.randint(18, 90, 50),
        "provider_id": rs.randint(1, 50, 50),
        "days_since_last_claim": rs.randint(0, 365, 50),
    })
    data = pd.concat([normal, anomalies]).reset_index(drop=True)
    data = data.sample(frac=1, random_state=rs).reset_index(drop=True)
    x = data[["claim_amount", "num_services", "patient_age", "provider_id",
              "days_since_last_claim"]]
    x_train, x_test = train_test_split(x, test_size=0.2, random_state=42)
    model = IsolationForest(n_estimators=100, contamination=0.05, random_state=42)
    model.fit(x_train)
    train_pct = float((model.predict(x_train) == -1).mean() * 100)
    test_pct = float((model.predict(x_test) == -1).mean() * 100)
    return train_pct, test_pct


@pytest.fixture(scope="module")
def seed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "seed.csv"
    write_claims_csv(generate_seed_profile(1050, 42), path)  # what `claimflow generate` writes
    return path


@pytest.fixture(scope="module")
def seed_data(seed_csv: Path) -> Dataset:
    return load_csv(seed_csv)


@pytest.fixture(scope="module")
def lab_model(seed_data: Dataset) -> TrainedModel:
    return train(seed_data, LAB_PARAMS)


def test_reproduces_the_labs_two_percentages(lab_model: TrainedModel) -> None:
    lab_train, lab_test = lab_script_percentages()
    assert lab_model.metrics["train_anomaly_percentage"] == lab_train
    assert lab_model.metrics["test_anomaly_percentage"] == lab_test
    # The lab logged 42 of 840 training claims and 9 of 210 test claims as anomalies.
    assert (lab_train, lab_test) == (100 * 42 / 840, 100 * 9 / 210)
    assert (lab_model.split.x_train.shape[0], lab_model.split.x_test.shape[0]) == (840, 210)


def test_same_data_and_seed_give_identical_scores(seed_csv: Path,
                                                  lab_model: TrainedModel) -> None:
    again = train(load_csv(seed_csv), LAB_PARAMS)
    assert np.array_equal(again.test_scores, lab_model.test_scores)
    assert np.array_equal(again.train_scores, lab_model.train_scores)
    assert again.threshold == lab_model.threshold
    assert again.metrics == lab_model.metrics
    assert again.reference == lab_model.reference


def test_another_seed_gives_another_model(seed_data: Dataset, lab_model: TrainedModel) -> None:
    other = train(seed_data, TrainParams(seed=7))
    assert not np.array_equal(other.test_scores[:50], lab_model.test_scores[:50])


def test_decision_rule_is_sklearns_predict(lab_model: TrainedModel, seed_data: Dataset) -> None:
    scores = anomaly_scores(lab_model.estimator, seed_data.features)
    predicted = lab_model.estimator.predict(seed_data.features)
    assert np.array_equal(scores > lab_model.threshold, predicted == -1)
    assert lab_model.threshold == -lab_model.estimator.offset_
    assert np.all((scores > 0) & (scores <= 1))


def test_labelled_metrics_on_the_lab_data(lab_model: TrainedModel) -> None:
    metrics = lab_model.metrics
    # The lab's anomalies are ~10x amounts with 10-19 services: easy to separate.
    assert metrics["roc_auc"] > 0.99
    assert metrics["pr_auc"] > 0.95
    assert metrics["recall_gross_outlier"] == metrics["recall"]
    assert {"precision", "f1", "precision_at_budget", "recall_at_budget", "naive_pr_auc",
            "amount_pr_auc", "naive_amount_cutoff"} <= set(metrics)


def test_reference_describes_the_training_split(lab_model: TrainedModel) -> None:
    ref = lab_model.reference
    assert ref.features == list(CLAIM_FEATURES)
    for i, name in enumerate(CLAIM_FEATURES):
        assert ref.medians[name] == pytest.approx(float(np.median(lab_model.split.x_train[:, i])))


def score_one(model: TrainedModel, **changes: float) -> float:
    row = np.array([[model.reference.medians[name] for name in CLAIM_FEATURES]])
    for name, value in changes.items():
        row[0, CLAIM_FEATURES.index(name)] = value
    return float(anomaly_scores(model.estimator, row)[0])


def test_median_claim_is_approved(lab_model: TrainedModel) -> None:
    assert score_one(lab_model) < lab_model.threshold


def test_ten_times_the_median_amount_is_more_anomalous(lab_model: TrainedModel) -> None:
    median_amount = lab_model.reference.medians["claim_amount"]
    assert score_one(lab_model, claim_amount=10 * median_amount) > score_one(lab_model)


def test_gross_outlier_is_investigated(lab_model: TrainedModel) -> None:
    median_amount = lab_model.reference.medians["claim_amount"]
    score = score_one(lab_model, claim_amount=12 * median_amount, num_services=15)
    assert score > lab_model.threshold


def test_many_services_is_more_anomalous(lab_model: TrainedModel) -> None:
    assert score_one(lab_model, num_services=19) > score_one(lab_model)


def test_claim_id_is_not_a_feature(seed_csv: Path, tmp_path: Path,
                                   lab_model: TrainedModel) -> None:
    frame = pd.read_csv(seed_csv)
    frame["claim_id"] = [f"X-{i}" for i in range(len(frame))]
    frame = frame.drop(columns=["submitted_at"])
    renamed = tmp_path / "renamed.csv"
    frame.to_csv(renamed, index=False)
    assert np.array_equal(train(load_csv(renamed), LAB_PARAMS).test_scores,
                          lab_model.test_scores)


def test_unlabelled_data_gets_only_the_lab_metrics(seed_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(seed_csv).drop(columns=["is_anomaly", "pattern"])
    path = tmp_path / "unlabelled.csv"
    frame.to_csv(path, index=False)
    model = train(load_csv(path), LAB_PARAMS)
    assert set(model.metrics) == {"train_anomaly_percentage", "test_anomaly_percentage",
                                  "threshold"}
    assert model.patterns == []


def test_too_few_rows_to_split_is_a_data_error(tmp_path: Path) -> None:
    from trainer.data import DataError

    path = tmp_path / "one.csv"
    path.write_text("claim_amount,num_services,patient_age,provider_id,days_since_last_claim\n"
                    "100.0,1,40,3,10\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot split 1 row"):
        train(load_csv(path), LAB_PARAMS)


def test_time_cut_without_labels_is_the_last_share_of_the_claims() -> None:
    assert time_cut(1_000, 0.2) == 800


def test_time_cut_with_labels_is_the_last_share_of_the_labelled_claims() -> None:
    labelled = np.zeros(1_000, dtype=bool)
    labelled[100:600:5] = True  # 100 labels, the newest at claim 595
    assert time_cut(1_000, 0.2, labelled) == 500  # the last 20 labels: claims 500..595
    assert time_cut(1_000, 0.2, np.ones(1_000, dtype=bool)) == time_cut(1_000, 0.2)


@pytest.mark.parametrize("labelled", [np.zeros(10, dtype=bool),
                                      np.eye(1, 10, 0, dtype=bool)[0],
                                      np.eye(1, 10, 4, dtype=bool)[0]])
def test_time_cut_refuses_too_few_labels_to_split(labelled: np.ndarray) -> None:
    with pytest.raises(DataError, match="labelled claim"):
        time_cut(10, 0.2, labelled)

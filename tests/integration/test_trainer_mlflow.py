"""The trainer against a real MLflow store (SQLite + artifact folder) and BentoML store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from claimflow.cli import cli
from claimflow.procs import free_port
from features.reference import FeatureReference
from features.sets import V2_CLAIM, V2_VELOCITY
from modelstore.bento import load_exported
from modelstore.registry import (
    aliases_of,
    load_estimator,
    mlflow_uris,
    resolve_champion,
)
from schemas import CLAIM_FEATURES
from tests.integration.cli_run import invoke, train_json
from tests.v2_factory import v2_claims, write_jsonl
from trainer.model import TrainParams
from trainer.pipeline import store_config, train_and_register
from trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

NAME = "claim-anomaly"


@pytest.fixture
def settings(home: Path) -> TrainerSettings:
    return TrainerSettings()


@pytest.fixture(scope="session")
def seed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's dataset, written by the real `claimflow generate --profile seed`."""
    path = tmp_path_factory.mktemp("data") / "seed.csv"
    result = CliRunner().invoke(cli, ["generate", "--profile", "seed", "--seed", "42", "-q",
                                      "--out", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


def versions(client: MlflowClient) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{NAME}'"))


def test_train_logs_one_run_and_registers_a_challenger(
        home: Path, seed_csv: Path, client: MlflowClient, settings: TrainerSettings) -> None:
    outcome = train_json("--data", str(seed_csv))
    assert outcome["version"] == "1"
    assert aliases_of(client) == {"challenger": "1"}
    # Exported too: the model service shadows a challenger from its export.
    assert load_exported(f"{NAME}:v1", settings.bentoml_home).labels["run_id"] == \
        outcome["run_id"]

    run = client.get_run(outcome["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert {k: params[k] for k in ("n_estimators", "contamination", "test_size", "seed")} == {
        "n_estimators": "100", "contamination": "0.05", "test_size": "0.2", "seed": "42"}
    assert (params["rows_read"], params["rows_train"], params["rows_test"]) == (
        "1050", "840", "210")
    assert run.data.tags["data_sha256"] == hashlib.sha256(seed_csv.read_bytes()).hexdigest()
    metrics = run.data.metrics
    assert metrics["train_anomaly_percentage"] == 5.0
    assert metrics["test_anomaly_percentage"] == pytest.approx(100 * 9 / 210)
    assert {"precision", "recall", "f1", "roc_auc", "pr_auc", "precision_at_budget",
            "recall_at_budget", "naive_pr_auc", "recall_gross_outlier"} <= set(metrics)

    artifacts = {a.path for a in client.list_artifacts(outcome["run_id"])}
    assert {"reference.json", "score_histogram.png", "pr_curve.png", "per_pattern.csv",
            "per_pattern.json", "metrics.json"} <= artifacts
    # The embedded store keeps artifacts under CLAIMFLOW_HOME, not the working directory.
    assert run.info.artifact_uri.startswith((home / "mlflow" / "artifacts").as_uri())

    import mlflow.models

    with mlflow_uris(settings.tracking_uri):
        info = mlflow.models.get_model_info(f"models:/{NAME}/1")
    assert info.signature is not None
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 5)
    assert info.saved_input_example_info is not None
    assert info.metadata is not None
    assert info.metadata["features"] == list(CLAIM_FEATURES)


def test_aliases_follow_train_and_promote(home: Path, seed_csv: Path, client: MlflowClient,
                                          settings: TrainerSettings) -> None:
    first = train_json("--data", str(seed_csv))
    second = train_json("--data", str(seed_csv), "--seed", "7", "--n-estimators", "50")
    assert versions(client) == ["1", "2"]
    assert aliases_of(client) == {"challenger": "2"}

    result = invoke("promote")  # default: the newest version
    assert result.exit_code == 0, result.output
    assert "version 2" in result.output
    assert aliases_of(client) == {"challenger": "2", "champion": "2"}

    result = invoke("promote", "--version", "1")
    assert result.exit_code == 0, result.output
    assert aliases_of(client) == {"challenger": "2", "champion": "1", "previous-champion": "2"}
    assert resolve_champion(settings.tracking_uri) == ("1", first["run_id"])
    # MLflow exports the URIs it is given into os.environ; the trainer must not leak them.
    assert "MLFLOW_TRACKING_URI" not in os.environ

    for version, run_id in (("1", first["run_id"]), ("2", second["run_id"])):
        exported = load_exported(f"{NAME}:v{version}", settings.bentoml_home)
        assert exported.labels == {"model_family": "isolation-forest",
                                   "registry_name": NAME, "registry_version": version,
                                   "run_id": run_id, "feature_set": "v1", "claim_version": "1"}


def test_train_with_promote_flag_makes_a_champion(seed_csv: Path, client: MlflowClient,
                                                  settings: TrainerSettings) -> None:
    outcome = train_json("--data", str(seed_csv), "--promote")
    assert outcome["bento_tag"] == f"{NAME}:v1"
    assert aliases_of(client) == {"challenger": "1", "champion": "1"}
    assert resolve_champion(settings.tracking_uri) == ("1", outcome["run_id"])


def test_v2_jsonl_trains_a_v2_velocity_model_and_promotes_it(
    tmp_path: Path, client: MlflowClient, settings: TrainerSettings,
) -> None:
    data = write_jsonl(tmp_path / "claims_v2.jsonl", v2_claims(1_000, seed=3))
    outcome = train_json("--data", str(data), "--promote", "--n-estimators", "20")
    run = client.get_run(outcome["run_id"])
    assert run.data.params["feature_set"] == "v2-velocity"
    assert run.data.params["claim_version"] == "2"
    assert run.data.params["features"] == ",".join(V2_VELOCITY.features)
    assert run.data.params["max_samples"] == "800"  # min(1,024, the 800 training claims)
    assert {"pr_auc", "precision_at_budget", "recall_at_budget_gross_outlier",
            "test_rule_findings"} <= set(run.data.metrics)
    import mlflow.models

    with mlflow_uris(settings.tracking_uri):
        info = mlflow.models.get_model_info(f"models:/{NAME}/1")
    assert info.metadata is not None
    assert info.metadata["feature_set"] == "v2-velocity"
    assert info.metadata["claim_version"] == 2
    exported = load_exported(outcome["bento_tag"], settings.bentoml_home)
    assert exported.labels["feature_set"] == "v2-velocity"
    assert exported.labels["claim_version"] == "2"
    assert exported.reference.features == list(V2_VELOCITY.features)
    assert exported.reference.claim_version == 2
    assert exported.reference.codes is not None  # the code references travel with the model
    assert exported.reference.codes.charge


def test_feature_set_option_trains_the_claim_level_set(
    tmp_path: Path, client: MlflowClient, settings: TrainerSettings,
) -> None:
    data = write_jsonl(tmp_path / "claims_v2.jsonl", v2_claims(600, seed=4))
    outcome = train_json("--data", str(data), "--feature-set", "v2-claim",
                         "--n-estimators", "20")
    run = client.get_run(outcome["run_id"])
    assert run.data.params["feature_set"] == "v2-claim"
    assert run.data.params["features"] == ",".join(V2_CLAIM.features)
    result = invoke("train", "--data", str(data), "--feature-set", "v1")
    assert result.exit_code == 1
    assert "scores claims of schema_version 1; this claim is schema_version 2" in result.output


def test_mixed_claim_versions_fail_clearly_and_register_nothing(
    tmp_path: Path, client: MlflowClient,
) -> None:
    v1 = {"claim_id": "C-1", "claim_amount": 10.0, "num_services": 1, "patient_age": 30,
          "provider_id": 2, "days_since_last_claim": 3, "submitted_at": "2026-11-26T18:00:00Z"}
    data = write_jsonl(tmp_path / "mixed.jsonl", [*v2_claims(5), v1])
    result = invoke("train", "--data", str(data))
    assert result.exit_code == 1
    assert "line 6 is a schema_version 1 claim, line 1 is schema_version 2" in result.output
    assert versions(client) == []


def test_bentoml_export_scores_identically_to_mlflow(
        seed_csv: Path, client: MlflowClient, settings: TrainerSettings,
        tmp_path: Path) -> None:
    outcome = train_json("--data", str(seed_csv), "--promote")
    from_mlflow = load_estimator(settings.tracking_uri, "1")
    exported = load_exported(outcome["bento_tag"], settings.bentoml_home)
    from sklearn.ensemble import IsolationForest

    # The estimator itself, not a +1/-1 pyfunc wrapper.
    assert isinstance(exported.estimator, IsolationForest)
    assert isinstance(from_mlflow, IsolationForest)
    x = np.random.default_rng(0).uniform([10, 1, 0, 1, 0], [20_000, 30, 100, 60, 400],
                                         size=(5000, 5))
    assert np.array_equal(exported.estimator.score_samples(x), from_mlflow.score_samples(x))
    assert exported.estimator.offset_ == from_mlflow.offset_
    assert exported.estimator.offset_ == -outcome["metrics"]["threshold"]

    path = client.download_artifacts(outcome["run_id"], "reference.json", str(tmp_path))
    logged = FeatureReference.model_validate_json(Path(path).read_text())
    assert exported.reference == logged


@pytest.mark.parametrize(("content", "message"), [
    ("", "the file is empty"),
    ("claim_amount,num_services\n1,2\n", "missing column(s) patient_age"),
    ("claim_amount,num_services,patient_age,provider_id,days_since_last_claim\n"
     "abc,1,2,3,4\n", "column claim_amount needs finite numbers; line 2 has 'abc'"),
    ("claim_amount,num_services,patient_age,provider_id,days_since_last_claim\n",
     "no claim rows"),
    ("claim_amount,num_services,patient_age,provider_id,days_since_last_claim\n"
     "-1,1,2,3,4\n", "no rows left after dropping 1 row"),
])
def test_bad_input_fails_clearly_and_registers_nothing(
        tmp_path: Path, client: MlflowClient, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    result = invoke("train", "--data", str(path))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert client.search_registered_models() == []
    assert client.search_runs(experiment_ids=["0"]) == []
    assert client.get_experiment_by_name(NAME) is None


def test_failure_after_registration_leaves_no_version(
        seed_csv: Path, client: MlflowClient, settings: TrainerSettings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registry went away")

    # Fault injection: the real registry call that follows version creation fails.
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry went away"):
        train_and_register(seed_csv, TrainParams(), store_config(settings))
    assert versions(client) == []
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]


def test_promote_needs_a_model(client: MlflowClient, seed_csv: Path) -> None:
    result = invoke("promote")
    assert result.exit_code == 1
    assert "has no versions" in result.output
    train_json("--data", str(seed_csv))
    result = invoke("promote", "--version", "9")
    assert result.exit_code == 1
    assert "no version '9'" in result.output
    assert "champion" not in aliases_of(client)


def wait_for_health(url: str, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "mlflow-ui exited early"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # polling interval, not a wait for an event
    raise AssertionError(f"{url} not healthy within {deadline_s} s")


def test_mlflow_ui_serves_the_same_store(home: Path, seed_csv: Path) -> None:
    outcome = train_json("--data", str(seed_csv))
    port = free_port()
    claimflow = str(Path(sys.executable).parent / "claimflow")
    # Started as a shell starts a background job (`claimflow mlflow-ui &` in a script):
    # with SIGINT ignored. Ctrl-C / SIGINT must stop it all the same.
    command = ["sh", "-c", f'trap "" INT; exec "{claimflow}" mlflow-ui --port {port}']
    process = subprocess.Popen(command, env=dict(os.environ), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    tree: list[psutil.Process] = []
    try:
        wait_for_health(f"{base}/health", process, deadline_s=180)
        model = httpx.get(f"{base}/api/2.0/mlflow/registered-models/get",
                          params={"name": NAME}, timeout=10).json()["registered_model"]
        assert model["latest_versions"][0]["version"] == "1"
        assert {a["alias"]: a["version"] for a in model["aliases"]} == {"challenger": "1"}
        reference = httpx.get(f"{base}/get-artifact", timeout=10,
                              params={"path": "reference.json", "run_uuid": outcome["run_id"]})
        assert reference.status_code == 200
        assert FeatureReference.model_validate_json(reference.content).features == list(
            CLAIM_FEATURES)
        assert httpx.get(base, timeout=10).status_code == 200  # the UI page itself

        # Any MLFLOW_TRACKING_URI works: train once more through the running server.
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_TRACKING_URI", base)
            via_server = train_json("--data", str(seed_csv))
        assert via_server["version"] == "2"
        assert via_server["tracking_uri"] == base
        version = httpx.get(f"{base}/api/2.0/mlflow/registered-models/alias", timeout=10,
                            params={"name": NAME, "alias": "challenger"}).json()
        assert version["model_version"]["version"] == "2"
        assert version["model_version"]["run_id"] == via_server["run_id"]
        # mlflow-ui runs the server in a process group of its own: follow the whole tree.
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        assert len(tree) >= 2, "mlflow-ui started no server process"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            tree = [psutil.Process(process.pid),
                    *psutil.Process(process.pid).children(recursive=True)]
        leftovers = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        process.wait(timeout=30)
    assert not leftovers, f"mlflow-ui left processes behind: {leftovers}"


@pytest.fixture(scope="module", autouse=True)
def nothing_written_to_the_working_directory() -> Iterator[None]:
    """MLflow falls back to ./mlflow.db and ./mlruns when a URI is not passed through."""
    before = {p for p in ("mlflow.db", "mlruns", "mlartifacts") if (Path.cwd() / p).exists()}
    yield
    after = {p for p in ("mlflow.db", "mlruns", "mlartifacts") if (Path.cwd() / p).exists()}
    assert after == before

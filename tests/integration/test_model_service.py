"""The model service as deployed: a real ``claimflow serve-model`` (``bentoml serve``) process
resolving the champion through a real MLflow registry and BentoML store, called through
:class:`scorer.client.ModelClient`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from claimflow.procs import wait_until as wait_for
from modelstore.bento import load_exported
from modelstore.registry import CHAMPION, REGISTERED_MODEL, client_for
from producer.profiles import generate
from schemas import Claim, ScoreResult
from schemas.score import only_results
from scorer.client import ModelClient, ModelServiceError, ModelUnavailable
from scorer.shadow import ShadowColumns
from tests.integration.model_service_fixture import (
    Champion,
    ModelServiceProcess,
    clean_env,
)
from trainer.model import TrainParams
from trainer.pipeline import promote, store_config, train_and_register
from trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

POLL_S = 1.0


@dataclass(frozen=True)
class Registry:
    """A claimflow home with an MLflow registry (v1 champion, v2 challenger) and store."""

    home: Path
    settings: TrainerSettings

    def offline(self, version: str) -> Champion:
        exported = load_exported(f"{REGISTERED_MODEL}:v{version}", self.settings.bentoml_home)
        return Champion(home=self.home, tag=exported.tag, estimator=exported.estimator)

    def set_champion(self, version: str) -> None:
        client_for(self.settings.tracking_uri).set_registered_model_alias(
            REGISTERED_MODEL, CHAMPION, version
        )


class RegistryServiceProcess(ModelServiceProcess):
    """``claimflow serve-model`` following the registry alias (not a pinned tag)."""

    def __init__(self, home: Path, log_path: Path, tracking_uri: str | None = None) -> None:
        super().__init__(Champion(home=home, tag="", estimator=None), log_path)
        self.tracking_uri = tracking_uri

    def env(self) -> dict[str, str]:
        extra = {"CLAIMFLOW_HOME": str(self.champion.home), "MODEL_POLL_INTERVAL_S": str(POLL_S)}
        if self.tracking_uri:
            extra["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return clean_env(**extra)

    def start_unready(self, timeout_s: float = 180.0) -> None:
        """Start and wait until the HTTP server answers (readiness may stay false)."""
        self.launch()
        wait_for(self.answers, timeout_s, f"the model service to answer:\n{self.log_tail()}")

    def answers(self) -> bool:
        if not self.alive():
            raise AssertionError(f"model service exited:\n{self.log_tail()}")
        try:
            httpx.get(f"{self.url}/livez", timeout=2).raise_for_status()
        except httpx.HTTPError:
            return False
        return True


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two real training runs through the trainer: v1 and v2 registered, no champion yet."""
    home = tmp_path_factory.mktemp("model-service-home")
    data = tmp_path_factory.mktemp("model-service-data")
    settings = TrainerSettings(claimflow_home=home)
    config = store_config(settings)
    for seed in (1, 2):
        csv = data / f"claims-{seed}.csv"
        generate("realistic", 4_000, seed=seed).to_csv(csv, index=False)
        run = train_and_register(csv, TrainParams(seed=seed), config).run
        assert run.version == str(seed)
    return Registry(home=home, settings=settings)


@dataclass(frozen=True)
class BeforeChampion:
    """What the service answered while the registry had no champion."""

    ready: bool
    errors: dict[str, str]


@pytest.fixture(scope="module")
def started_service(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RegistryServiceProcess, BeforeChampion]]:
    """One service for the module, started BEFORE any champion exists (one BentoML start
    is the slow part of these tests); then v1 is promoted and picked up by polling."""
    process = RegistryServiceProcess(
        registry.home, tmp_path_factory.mktemp("model-service-log") / "model.log"
    )
    claims = make_claims(5, seed=10)
    try:
        process.start_unready()
        errors: dict[str, str] = {}
        with ModelClient(process.url, timeout_s=30) as client:
            ready = client.ready()
            for name, call in (("score_batch", lambda: client.score_batch(claims)),
                               ("score", lambda: client.score(claims[0])),
                               ("reload", client.reload)):
                try:
                    call()
                except ModelUnavailable as exc:
                    errors[name] = str(exc)
            promote(registry.settings, "1")
            wait_for(client.ready, 60, "the promoted champion to be picked up")
        yield process, BeforeChampion(ready=ready, errors=errors)
    finally:
        process.stop()


@pytest.fixture
def service(
    started_service: tuple[RegistryServiceProcess, BeforeChampion],
) -> RegistryServiceProcess:
    """The module's running service (restarted if a test left it stopped)."""
    process = started_service[0]
    if not process.alive():
        process.start()
    return process


@pytest.fixture
def client(service: RegistryServiceProcess) -> Iterator[ModelClient]:
    with ModelClient(service.url, timeout_s=30) as model_client:
        yield model_client


def make_claims(n: int, seed: int) -> list[Claim]:
    frame = generate("realistic", n, seed=seed)
    fields = [name for name in Claim.model_fields if name != "schema_version"]
    # Through JSON, as claims travel (the strict contract takes ISO datetimes there).
    claims = [Claim.from_json(line) for line in
              frame[fields].to_json(orient="records", lines=True, date_format="iso").splitlines()]
    # A few claims far outside anything seen in training.
    odd = [
        Claim(claim_id=f"ODD-{i}", claim_amount=amount, num_services=services, patient_age=age,
              provider_id=1, days_since_last_claim=days,
              submitted_at=datetime(2026, 11, 26, tzinfo=UTC))
        for i, (amount, services, age, days) in enumerate(
            [(9_999_999.0, 900, 120, 36_000), (0.01, 1, 0, 0), (50_000.0, 40, 3, 1)]
        )
    ]
    return claims + odd


def assert_matches(results: list[ScoreResult], claims: list[Claim], model: Champion,
                   version: str) -> None:
    scores, decisions = model.offline(claims)
    assert [r.claim_id for r in results] == [c.claim_id for c in claims]
    assert {r.model.version for r in results} == {version}
    got = np.array([r.anomaly_score for r in results])
    assert np.max(np.abs(got - scores)) <= 1e-9
    assert [r.decision for r in results] == decisions
    assert {r.threshold for r in results} == {-model.estimator.offset_}


def assert_columns_match(columns: ShadowColumns, claims: list[Claim], model: Champion,
                         version: str) -> None:
    """A shadow answer's columns against the model scored offline."""
    scores, decisions = model.offline(claims)
    assert columns.claim_ids == [c.claim_id for c in claims]
    assert columns.model.version == version
    assert np.max(np.abs(np.array(columns.scores, dtype=np.float64) - scores)) <= 1e-9
    assert columns.decisions == decisions
    assert columns.threshold == -model.estimator.offset_


def test_batch_and_single_claim_match_the_offline_champion(
    client: ModelClient, registry: Registry
) -> None:
    claims = make_claims(500, seed=11)
    results = only_results(client.score_batch(claims))
    champion = registry.offline("1")
    assert_matches(results, claims, champion, "1")
    assert {r.model.name for r in results} == {REGISTERED_MODEL}
    assert all(r.model.run_id for r in results)
    # The far-out claims are investigated and say why.
    huge = results[-3]
    assert huge.decision == "investigate"
    assert huge.reasons
    assert huge.reasons[0].feature == "claim_amount"
    assert "claim_amount 9,999,999" in huge.reasons[0].message
    # The single-claim API answers exactly what the batch API answered.
    for i in (0, 1, 250, len(claims) - 3, len(claims) - 1):
        assert client.score(claims[i]) == results[i]
    assert client.ready()


def test_contract_violations_are_client_errors(service: RegistryServiceProcess) -> None:
    claim = make_claims(1, seed=12)[0].model_dump(mode="json")
    bad = {**claim, "patient_age": 130}
    response = httpx.post(f"{service.url}/score_batch", json={"claims": [claim, bad]})
    assert response.status_code == httpx.codes.BAD_REQUEST
    [error] = response.json()["detail"]
    # The claim union's tag (the contract version it was read as) is part of pydantic's path.
    assert error["loc"] == ["claims", 1, "1", "patient_age"]
    assert httpx.post(f"{service.url}/score_batch", json={"claims": []}).status_code == 400
    extra = {"claim": {**claim, "is_anomaly": True}}
    assert httpx.post(f"{service.url}/score", json=extra).status_code == 400
    # ISO datetimes in JSON are accepted by the strict contract (JSON-mode validation).
    assert httpx.post(f"{service.url}/score", json={"claim": claim}).status_code == 200


def test_client_errors_are_not_retryable(service: RegistryServiceProcess) -> None:
    claims = make_claims(50, seed=13)
    with ModelClient(service.url) as client, pytest.raises(ModelServiceError, match="404"):
        client._post("/no-such-api", b"{}")
    # A timeout is an outage, not a client error. A listening socket that never answers
    # times out for sure (a tiny timeout against the real service may still win the race).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with ModelClient(url, timeout_s=0.2) as client, pytest.raises(ModelUnavailable):
            client.score_batch(claims)


def test_new_champion_is_served_without_restart(
    client: ModelClient, registry: Registry, service: RegistryServiceProcess
) -> None:
    claims = make_claims(300, seed=14)
    v1, v2 = registry.offline("1"), None
    seen: list[list[ScoreResult]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:  # requests in flight while the champion changes
        with ModelClient(service.url, timeout_s=30) as own:
            while not stop.is_set():
                try:
                    seen.append(only_results(own.score_batch(claims)))
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    return

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        # Promotion through the trainer; the service notices by polling the alias.
        promote(registry.settings, "2")
        v2 = registry.offline("2")
        wait_for(lambda: client.score(claims[0]).model.version == "2", 60,
                 "the polled champion v2 to be served")
        assert_matches(only_results(client.score_batch(claims)), claims, v2, "2")
        # Back to v1 and /reload: switched by the time the call returns.
        registry.set_champion("1")
        assert client.reload() == "1"
        assert_matches(only_results(client.score_batch(claims)), claims, v1, "1")
        wait_for(lambda: len(seen) > 3, 30, "requests during the switch")
    finally:
        stop.set()
        worker.join(60)
        registry.set_champion("1")
    assert not errors, errors
    # Every answer was scored by one model from start to end, whichever it was.
    by_version = {"1": v1, "2": v2}
    versions = set()
    for results in seen:
        version = results[0].model.version
        versions.add(version)
        model = by_version[version]
        assert model is not None
        assert_matches(results, claims, model, version)
    assert versions <= {"1", "2"}


def test_the_challenger_alias_is_scored_in_shadow_until_it_is_removed(
    client: ModelClient, registry: Registry
) -> None:
    claims = make_claims(200, seed=16)
    registry_client = client_for(registry.settings.tracking_uri)
    try:
        promote(registry.settings, "2")  # exports v2 to the BentoML store
        registry.set_champion("1")
        # The trainer put the challenger alias on the newest version; here on the champion:
        # the champion is not scored twice.
        registry_client.set_registered_model_alias(REGISTERED_MODEL, "challenger", "1")
        assert client.reload() == "1"
        assert client.score_batch_shadow(claims).shadow is None
        registry_client.set_registered_model_alias(REGISTERED_MODEL, "challenger", "2")
        assert client.reload() == "1"  # /reload checks the challenger alias too
        answer = client.score_batch_shadow(claims)
        assert_matches(only_results(answer.results), claims, registry.offline("1"), "1")
        assert answer.shadow is not None
        assert_columns_match(answer.shadow, claims, registry.offline("2"), "2")
        # The plain API is unchanged for existing clients.
        assert_matches(only_results(client.score_batch(claims)), claims,
                       registry.offline("1"), "1")
        registry_client.delete_registered_model_alias(REGISTERED_MODEL, "challenger")
        assert client.reload() == "1"
        assert client.score_batch_shadow(claims).shadow is None
    finally:  # as the trainer left it: the challenger alias on the newest version
        registry_client.set_registered_model_alias(REGISTERED_MODEL, "challenger", "2")
        registry.set_champion("1")


def test_not_ready_and_unavailable_until_a_champion_exists(
    started_service: tuple[RegistryServiceProcess, BeforeChampion],
) -> None:
    """Started with no champion in the registry: alive, not ready, every call a 503 (which
    the client raises as ModelUnavailable); the fixture then promoted v1 and the service
    became ready without a restart."""
    before = started_service[1]
    assert before.ready is False
    assert set(before.errors) == {"score_batch", "score", "reload"}
    assert all("503" in message for message in before.errors.values())


def test_stopped_service_raises_model_unavailable(service: RegistryServiceProcess) -> None:
    claims = make_claims(20, seed=15)
    with ModelClient(service.url, timeout_s=30) as client:
        assert client.score_batch(claims)
        service.stop()
        assert not client.ready()
        with pytest.raises(ModelUnavailable):
            client.score_batch(claims)
        with pytest.raises(ModelUnavailable):
            client.score(claims[0])

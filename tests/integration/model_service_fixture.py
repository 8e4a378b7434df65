"""A real model service for integration tests: a temporary champion exported into a temp
BentoML store, served by ``claimflow serve-model`` (``bentoml serve``) on a free port.

Import the fixtures where they are used::

    from tests.integration.model_service_fixture import champion, model_service  # noqa: F401

``model_service`` is session-scoped (BentoML takes seconds to start); a test may stop and
start it again (same port), and the fixture hands it out running to the next test.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.stack_harness import ManagedProcess, log_tail
from claimflow.procs import QUIET_ENV as QUIET_ENV
from claimflow.procs import free_port as free_port  # re-exported for the tests
from schemas import CLAIM_FEATURES

CLAIMFLOW = (sys.executable, "-c", "from claimflow.cli import main; main()")
# Settings a developer's shell may hold must not leak into the processes under test.
COMPONENT_PREFIXES = ("KAFKA_", "MODEL_", "SCORER_", "GATEWAY_", "MLFLOW_", "BENTOML_",
                      "CLAIMFLOW_", "PRODUCER_", "TRAINER_", "INVESTIGATE_")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPONENT_PREFIXES)}
    env.update(QUIET_ENV)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Champion:
    """A fitted IsolationForest exported as BentoML ``tag`` under ``home``."""

    home: Path
    tag: str
    estimator: Any  # sklearn.ensemble.IsolationForest

    feature_set: str = "v1"

    def offline(self, claims: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
        """Scores and decisions straight from scikit-learn (what serving must reproduce)."""
        from features.sets import feature_set

        x = feature_set(self.feature_set).matrix(claims)
        scores: np.ndarray = -self.estimator.score_samples(x)
        flagged = self.estimator.predict(x) == -1
        return scores, ["investigate" if f else "approve" for f in flagged]


def make_champion(home: Path, rows: int = 5_000, seed: int = 7) -> Champion:
    """Train a small forest on realistic claims and export it like ``promote`` does."""
    from sklearn.ensemble import IsolationForest

    from features.reference import build_reference
    from modelstore.bento import export_to_bentoml
    from producer.profiles import generate

    frame = generate("realistic", rows, seed=seed)
    x = frame[list(CLAIM_FEATURES)].to_numpy(dtype=np.float64)
    estimator = IsolationForest(n_estimators=100, contamination=0.05, random_state=seed).fit(x)
    tag = export_to_bentoml(estimator, build_reference(x), "1", f"test-run-{seed}",
                            home / "bentoml")
    return Champion(home=home, tag=tag, estimator=estimator)


def make_v2_champion(home: Path, rows: int = 3_000, seed: int = 7) -> Champion:
    """A v2-claim model trained by the trainer's own functions from a small JSON Lines file
    (tests/v2_factory.py), exported like ``promote`` does."""
    from modelstore.bento import export_to_bentoml
    from tests.v2_factory import v2_claims, write_jsonl
    from trainer.jsonl import load_jsonl
    from trainer.model import TrainParams, train

    home.mkdir(parents=True, exist_ok=True)
    data = load_jsonl(write_jsonl(home / "train_v2.jsonl", v2_claims(rows, seed=seed)),
                      "v2-claim")
    trained = train(data, TrainParams(seed=seed))
    tag = export_to_bentoml(trained.estimator, trained.reference, "1", f"test-run-v2-{seed}",
                            home / "bentoml")
    return Champion(home=home, tag=tag, estimator=trained.estimator, feature_set="v2-claim")


class ModelServiceProcess:
    """``claimflow serve-model`` serving ``champion`` (pinned tag, no registry needed)."""

    def __init__(self, champion: Champion, log_path: Path, port: int | None = None) -> None:
        self.champion = champion
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: ManagedProcess | None = None

    def env(self) -> dict[str, str]:
        return clean_env(
            CLAIMFLOW_HOME=str(self.champion.home),
            MODEL_TAG=self.champion.tag,
            MODEL_POLL_INTERVAL_S="0",
        )

    def launch(self) -> ManagedProcess:
        """Start the server process (in its own session: BentoML runs worker processes)."""
        self.process = ManagedProcess("model-service",
                                      [*CLAIMFLOW, "serve-model", "--port", str(self.port)],
                                      self.env(), self.log_path).start()
        return self.process

    def start(self, timeout_s: float = 180.0) -> None:
        process = self.launch()
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not process.alive():
                raise RuntimeError(f"model service exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"model service not ready in {timeout_s:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)  # polling interval of the readiness loop, bounded by the deadline

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the whole service, SIGKILL for what is left after ``timeout_s``."""
        if self.process is not None:
            self.process.stop(timeout_s)
            self.process = None

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)


# Every test module that imports these fixtures gets its own copy of each definition (pytest
# registers imported fixtures per module), so the expensive parts are kept here: one
# champion and one running service per test session, whichever module asks first, stopped
# when the last module's fixture is torn down.
_SHARED: dict[str, Any] = {}


def _shared_champion(key: str, make: Callable[[Path], Champion],
                     tmp_path_factory: pytest.TempPathFactory) -> Champion:
    if key not in _SHARED:
        _SHARED[key] = make(tmp_path_factory.mktemp(f"{key}-home"))
    shared: Champion = _SHARED[key]
    return shared


def _shared_service(key: str, champion: Champion,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServiceProcess]:
    """One running service per key for the whole session, stopped with its last user."""
    service: ModelServiceProcess | None = _SHARED.get(key)
    if service is None:
        log = tmp_path_factory.mktemp(f"{key}-log") / "model.log"
        service = _SHARED[key] = ModelServiceProcess(champion, log)
        service.start()
    users = f"{key}-users"
    _SHARED[users] = _SHARED.get(users, 0) + 1
    try:
        yield service
    finally:
        _SHARED[users] -= 1
        if _SHARED[users] == 0:
            service.stop()
            del _SHARED[key]


def _running(service: ModelServiceProcess) -> ModelServiceProcess:
    if not service.alive():  # an earlier test may have stopped it
        service.start()
    return service


@pytest.fixture(scope="session")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    return _shared_champion("champion", make_champion, tmp_path_factory)


@pytest.fixture(scope="session")
def _model_service_session(
    champion: Champion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServiceProcess]:
    yield from _shared_service("service", champion, tmp_path_factory)


@pytest.fixture
def model_service(_model_service_session: ModelServiceProcess) -> ModelServiceProcess:
    """The shared, running model service (restarted if an earlier test left it stopped)."""
    return _running(_model_service_session)


@pytest.fixture(scope="session")
def v2_champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    return _shared_champion("v2-champion", make_v2_champion, tmp_path_factory)


@pytest.fixture(scope="session")
def _v2_model_service_session(
    v2_champion: Champion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServiceProcess]:
    yield from _shared_service("v2-service", v2_champion, tmp_path_factory)


@pytest.fixture
def v2_model_service(_v2_model_service_session: ModelServiceProcess) -> ModelServiceProcess:
    """A running model service whose champion reads contract-version-2 claims."""
    return _running(_v2_model_service_session)

"""Fixtures for integration tests against real services.

Kafka: a session-scoped broker. Set ``CLAIMFLOW_TEST_BOOTSTRAP=host:port`` to use an already
running broker; otherwise one is started in a container through testcontainers.
Every test gets its own uuid-named topics and consumer groups.

MLflow: ``home`` is a fresh CLAIMFLOW_HOME whose MLflow store (SQLite + artifact folder) is a
copy of one migrated database; ``client`` talks to it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from mlflow import MlflowClient

from claimflow.procs import QUIET_ENV
from modelstore.registry import client_for
from tests.integration.kafka_helpers import start_kafka_container
from trainer.settings import TrainerSettings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("CLAIMFLOW_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with start_kafka_container() as bootstrap:
        yield bootstrap


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic(partitions=1, prefix="t")`` creates a uuid-named topic."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def create(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow database (creating one takes seconds; copy it)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def home(tmp_path: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / "mlflow").mkdir(parents=True)
    shutil.copyfile(migrated_db, home / "mlflow" / "mlflow.db")
    monkeypatch.setenv("CLAIMFLOW_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # `claimflow promote` reads a shadow period from the default broker (once the trainer has
    # TRAINER_PROMOTE_SHADOW_TOPIC); a broker another process runs there must not judge this
    # store's versions (shadow tests set their own).
    monkeypatch.setenv("TRAINER_PROMOTE_SHADOW_TOPIC", "")
    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)
    return home


@pytest.fixture
def client(home: Path) -> MlflowClient:
    return client_for(TrainerSettings().tracking_uri)

"""Helpers for the gateway's integration and browser tests (no tests here): the real
``claimflow gateway`` (granian) as a subprocess on a free port, with a temp CLAIMFLOW_HOME,
uuid topics and its own view group, next to the real broker, a real stream worker
(``claimflow score``, which decides what the gateway produces) and the real model service.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from bench.stack_harness import ManagedProcess, log_tail
from broker.topics import COMPACTED, TopicSpec, ensure_topics
from claimflow.procs import wait_until as wait_until  # re-exported for the tests
from tests.integration.model_service_fixture import (
    CLAIMFLOW,
    ModelServiceProcess,
    clean_env,
    free_port,
    make_champion,
)


@dataclass
class GatewayServer:
    """One ``claimflow gateway`` process; ``restart()`` keeps its home (and so its stores)."""

    home: Path
    env_extra: dict[str, str]
    port: int = field(default_factory=free_port)
    _proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "gateway.log"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return None if self._proc is None else self._proc.popen

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60.0) -> GatewayServer:
        env = clean_env(CLAIMFLOW_HOME=str(self.home), **self.env_extra)
        self._proc = ManagedProcess("gateway", [*CLAIMFLOW, "gateway", "--port", str(self.port)],
                                    env, self.log_path).start()
        probe = "/readyz" if wait_ready else "/healthz"
        wait_until(lambda: self._answers(probe), timeout_s, f"gateway {probe}\n{self.tail()}")
        return self

    def _answers(self, path: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gateway exited {self.process.returncode}:\n{self.tail()}")
        try:
            return httpx.get(self.url + path, timeout=2).status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    def stop(self) -> int | None:
        """SIGTERM (the command's clean shutdown); returns the exit code."""
        if self._proc is None:
            return None
        code = self._proc.stop(30)
        self._proc = None
        return code

    def restart(self) -> GatewayServer:
        self.stop()
        return self.start()

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def claim(claim_id: str, amount: float = 1_250.0, **overrides: Any) -> dict[str, Any]:
    """A v1 claim body for the gateway's API (a usual one unless ``overrides`` say else)."""
    body = {"claim_id": claim_id, "claim_amount": amount, "num_services": 3,
            "patient_age": 47, "provider_id": 14_210, "days_since_last_claim": 32,
            "submitted_at": "2026-11-26T18:00:00Z"}
    body.update(overrides)
    return body


def unusual(claim_id: str) -> dict[str, Any]:
    """An unusual claim: a huge amount, many services, a toddler, no gap since the last."""
    return claim(claim_id, amount=480_000.0, num_services=60, patient_age=2,
                 days_since_last_claim=0)


@dataclass(frozen=True)
class GatewayTopics:
    approved: str
    investigate: str
    claims: str
    deadletter: str


def gateway_env(bootstrap: str, topics: GatewayTopics, group: str,
                **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_CLAIMS_TOPIC": topics.claims,
        "GATEWAY_DEADLETTER_TOPIC": topics.deadletter,
        "GATEWAY_APPROVED_TOPIC": topics.approved,
        "GATEWAY_INVESTIGATE_TOPIC": topics.investigate,
        "GATEWAY_VIEW_GROUP_ID": group,
        "GATEWAY_PAGE_REFRESH_S": "0.5",
        **extra,
    }


@dataclass
class StreamWorker:
    """``claimflow score`` on the gateway's topics: it decides what the gateway produces."""

    log_path: Path
    env: dict[str, str]
    _proc: ManagedProcess | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return None if self._proc is None else self._proc.popen

    def start(self) -> StreamWorker:
        self._proc = ManagedProcess("scorer", [*CLAIMFLOW, "score"], clean_env(**self.env),
                                    self.log_path).start()
        return self

    def stop(self) -> int | None:
        """SIGTERM (a clean stop: it finishes its batch and leaves the group)."""
        if self._proc is None:
            return None
        code = self._proc.stop(60)
        self._proc = None
        return code

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def wait_assigned(self, timeout_s: float = 60.0) -> StreamWorker:
        """Until the worker has its partitions (it logs "assigned ...")."""
        def assigned() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.tail()}")
            return " assigned " in self.tail(200)

        wait_until(assigned, timeout_s, f"the stream worker's partitions\n{self.tail()}")
        return self


def worker_env(bootstrap: str, topics: GatewayTopics, group: str, model_url: str
               ) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCORER_INPUT_TOPIC": topics.claims,
        "SCORER_APPROVED_TOPIC": topics.approved,
        "SCORER_INVESTIGATE_TOPIC": topics.investigate,
        "SCORER_DEADLETTER_TOPIC": topics.deadletter,
        "SCORER_GROUP_ID": f"{group}-scorer",
        "SCORER_TRANSACTIONAL_ID_PREFIX": f"{group}-scorer",
        "SCORER_MODEL_URL": model_url,
    }


@pytest.fixture
def stream_worker_factory(tmp_path: Path, kafka_bootstrap: str, gateway_topics: GatewayTopics,
                          group_id: str) -> Iterator[Callable[..., StreamWorker]]:
    """``stream_worker_factory(model_url, name="scorer")``: a worker on the gateway's topics
    (same group whatever the name: a second one takes over after the first stopped)."""
    started: list[StreamWorker] = []

    def start(model_url: str, name: str = "scorer") -> StreamWorker:
        env = worker_env(kafka_bootstrap, gateway_topics, group_id, model_url)
        worker = StreamWorker(tmp_path / f"{name}.log", env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


_SHARED: dict[str, ModelServiceProcess] = {}


@pytest.fixture
def gateway_model(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> ModelServiceProcess:
    """The model-service engineer's champion + ``serve-model`` process, started once per test
    session for all gateway test modules (a session fixture imported into two modules would
    be set up twice) and stopped at the end of the session."""
    service = _SHARED.get("model")
    if service is None:
        home = tmp_path_factory.mktemp("gateway-champion")
        service = ModelServiceProcess(make_champion(home), home / "model.log")
        _SHARED["model"] = service
        request.config.add_cleanup(service.stop)
    if not service.alive():
        service.start()
    return service


@pytest.fixture
def gateway_topics(make_topic: Callable[..., str]) -> GatewayTopics:
    return GatewayTopics(make_topic(partitions=2, prefix="gw-approved"),
                         make_topic(partitions=2, prefix="gw-investigate"),
                         make_topic(partitions=2, prefix="gw-claims"),
                         make_topic(partitions=1, prefix="gw-deadletter"))


@pytest.fixture
def labels_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A uuid-named labels topic, compacted as `claimflow topics create` makes it."""
    name = f"labels-{uuid.uuid4().hex[:12]}"
    ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=2, config=COMPACTED)])
    yield name
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics([name]).values():
        future.result(timeout=30)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayServer]]:
    """``gateway_factory(env, name="gw")``: start a gateway; every one is stopped at the end."""
    started: list[GatewayServer] = []

    def start(env: dict[str, str], name: str = "gw", wait_ready: bool = True) -> GatewayServer:
        server = GatewayServer(tmp_path / name, env)
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.stop()

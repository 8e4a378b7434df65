"""The local broker process (`claimflow kafka ...`), driven through the real command line.

Runs on free ports with a temporary CLAIMFLOW_HOME, never on the shared 9092.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tests.integration.kafka_helpers import consume_until, free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from claimflow.cli import main; main()"]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return str(future.result(timeout=30)["cleanup.policy"].value)


@pytest.fixture
def broker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port, controller = free_port(), free_port()
    env = dict(os.environ)
    env.update(CLAIMFLOW_HOME=str(tmp_path / "home"), KAFKA_PORT=str(port),
               KAFKA_CONTROLLER_PORT=str(controller),
               KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    yield env
    stopped = _run(env, "kafka", "stop")  # whatever the test did, leave no broker behind
    assert stopped.returncode == 0, stopped.stderr


def test_local_broker_lifecycle_keeps_data(broker_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = broker_env["KAFKA_BOOTSTRAP_SERVERS"]
    started = _run(broker_env, "kafka", "start")
    assert started.returncode == 0, started.stderr
    assert f"bootstrap: {bootstrap}" in started.stdout

    created = _run(broker_env, "topics", "create", "--partitions", "2")
    assert created.returncode == 0, created.stderr
    topics = 6  # claims, approved, investigate, deadletter, labels, shadow
    assert created.stdout.count("created") == topics
    again = _run(broker_env, "topics", "create", "--partitions", "2")
    assert again.stdout.count("exists") == topics, again.stdout
    # Labels are compacted (the latest per claim_id stays); the other topics are not.
    assert cleanup_policy(bootstrap, "claims.labels") == "compact"
    assert cleanup_policy(bootstrap, "claims.investigate") == "delete"

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    sent = {f"c-{i}".encode(): f"v-{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce("claims", value=value, key=key)
    assert producer.flush(30) == 0

    # A standard Kafka client talks to it: kcat reads everything back.
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by `make setup` (scripts/setup-system.sh)"
    listing = subprocess.run([kcat, "-b", bootstrap, "-L"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert f"broker 1 at {bootstrap}" in listing
    read = subprocess.run([kcat, "-b", bootstrap, "-C", "-t", "claims", "-o", "beginning", "-e",
                           "-q", "-f", "%k=%s\\n"], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    assert sorted(read.split()) == sorted(f"{k.decode()}={v.decode()}" for k, v in sent.items())

    # A second broker on the same ports is refused with a clear reason.
    other = dict(broker_env, CLAIMFLOW_HOME=str(tmp_path / "other"))
    clash = _run(other, "kafka", "start")
    assert clash.returncode == 1
    assert "is taken" in clash.stderr
    assert "KAFKA_PORT" in clash.stderr

    stopped = _run(broker_env, "kafka", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert _run(broker_env, "kafka", "status").returncode == 3
    assert not (Path(broker_env["CLAIMFLOW_HOME"]) / "kafka" / "kafka.pid").exists()

    restarted = _run(broker_env, "kafka", "start")
    assert restarted.returncode == 0, restarted.stderr
    survived = consume_until(bootstrap, ["claims"], expected=len(sent))
    assert {m.key(): m.value() for m in survived} == sent
    assert {m.partition() for m in survived} == {0, 1}
    status = _run(broker_env, "kafka", "status")
    assert status.returncode == 0, status.stdout
    assert f"bootstrap: {bootstrap}" in status.stdout

    logs = _run(broker_env, "kafka", "logs", "-n", "5")
    assert logs.returncode == 0
    assert len(logs.stdout.splitlines()) == 5
    assert (Path(broker_env["CLAIMFLOW_HOME"]) / "logs" / "kafka.log").stat().st_size > 0

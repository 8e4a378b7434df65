"""Helpers for integration tests: start a broker container, consume until a deadline.

The container path works on any Docker-API engine through testcontainers:
- here, podman's API socket and a locally built image (``make setup-containers``);
- on a Docker host with registry access, the official ``apache/kafka`` image.
``CLAIMFLOW_TEST_KAFKA_IMAGE`` picks the image explicitly; otherwise the local image is used
when the engine has it, else the official one.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Message

from broker.admin import wait_for_metadata
from broker.config import BrokerConfig, cluster_id, render_properties, server_properties
from broker.errors import BrokerError
from claimflow.procs import free_port as free_port  # re-exported for the tests
from claimflow.settings import BACKLOG_READER_CONFIG

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

PODMAN_SOCKET = Path("/run/claimflow-podman.sock")
LOCAL_IMAGE = "localhost/claimflow/kafka:4.1.1"
OFFICIAL_IMAGE = "apache/kafka:4.1.1"
BROKER_PORT = 9092
START_TIMEOUT_S = 120.0
START_DIR = "/tmp/claimflow"  # inside the container
# The container idles until the harness has copied in the broker configuration, which can
# only be written once the engine has mapped the client port (it is advertised to clients).
WAIT_FOR_CONFIG = (
    f"while [ ! -f {START_DIR}/ready ]; do sleep 0.1; done; exec sh {START_DIR}/start.sh"
)


def configure_container_engine() -> None:
    """Point testcontainers at podman's API socket when that is what this machine has.

    Must run before testcontainers is imported: it reads its settings at import time.
    """
    # The same variable scripts/setup-containers.sh starts the API on.
    podman = Path(os.environ.get("CLAIMFLOW_PODMAN_SOCKET", str(PODMAN_SOCKET)))
    if "DOCKER_HOST" not in os.environ and podman.exists():
        os.environ["DOCKER_HOST"] = f"unix://{podman}"
    if os.environ.get("DOCKER_HOST") == f"unix://{podman}":
        # Ryuk's image cannot be pulled without a registry; the fixture removes its container.
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        # This machine has a /.dockerenv file, so testcontainers believes it runs inside a
        # container and looks up a gateway that podman does not report (KeyError 'HostConfig').
        os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")


def data_dir(image: str) -> str:
    # The local image comes with this folder formatted (setup-containers.sh), which saves a
    # JVM start per container; the official image formats a fresh one.
    return "/tmp/kraft-data" if is_official_image(image) else "/var/lib/kafka/data"


def start_script(image: str, heap: str = "512m") -> str:
    """Shell script run inside the container: format the KRaft storage if needed, start Kafka."""
    props = f"{START_DIR}/server.properties"
    formatted = f"[ -f {data_dir(image)}/meta.properties ] ||"
    cid = cluster_id(secrets.token_bytes(16))
    if is_official_image(image):
        return "\n".join([
            "set -e",
            f'export KAFKA_HEAP_OPTS="-Xmx{heap} -Xms{heap}"',
            f"{formatted} /opt/kafka/bin/kafka-storage.sh format -t {cid} -c {props}",
            f"exec /opt/kafka/bin/kafka-server-start.sh {props}",
        ]) + "\n"
    # The local image carries its JVM options (setup-containers.sh) and a class-data archive
    # of the broker that makes the JVM start faster. Images built by older checkouts of
    # setup-containers.sh lack both and get the equivalent options here.
    args, archive = "/opt/kafka/config/jvm.args", "/opt/kafka/kafka.jsa"
    fallback = (f"java -Xmx{heap} -Xms{heap} -XX:+UseG1GC "
                "-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties "
                "-cp /opt/kafka/libs/*")
    return "\n".join([
        "set -ef",  # -f: the class path wildcard is for java, not for the shell
        f'java="{fallback}"',
        f'if [ -f {args} ]; then java="java @{args}"; fi',
        "cds=",
        f'if [ -s {archive} ]; then cds="-Xlog:cds*=off -XX:SharedArchiveFile={archive}"; fi',
        f"{formatted} $java kafka.tools.StorageTool format -t {cid} -c {props}",
        f"exec $java $cds kafka.Kafka {props}",
    ]) + "\n"


def is_official_image(image: str) -> bool:
    name = image.split("@")[0].rsplit(":", 1)[0]
    return name in {"apache/kafka", "docker.io/apache/kafka", "docker.io/library/apache/kafka"}


def _tar(files: dict[str, str]) -> bytes:
    """A tar of text files; extraction order is insertion order, so 'ready' comes last."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _kafka_container_class() -> type[DockerContainer]:
    from testcontainers.core.container import DockerContainer

    class KafkaBrokerContainer(DockerContainer):
        """A single-node KRaft broker whose advertised listener is the mapped host port."""

        def __init__(self, image: str, **kwargs: Any) -> None:
            super().__init__(image, **kwargs)
            self.with_exposed_ports(BROKER_PORT)
            self.with_command(["sh", "-c", WAIT_FOR_CONFIG])
            self.bootstrap = ""

        def start(self) -> KafkaBrokerContainer:
            super().start()
            host = self.get_container_host_ip()
            # "localhost" may resolve to ::1 first; the engine maps the port on IPv4.
            host = "127.0.0.1" if host == "localhost" else host
            port = int(self.get_exposed_port(BROKER_PORT))
            cfg = BrokerConfig(listen_host="0.0.0.0", port=BROKER_PORT,
                               controller_port=9093, internal_port=9094,
                               data_dir=data_dir(self.image),
                               advertised_host=host, advertised_port=port)
            files = {
                f"{START_DIR}/server.properties": render_properties(server_properties(cfg)),
                f"{START_DIR}/start.sh": start_script(self.image),
                f"{START_DIR}/ready": "",
            }
            if not self.get_wrapped_container().put_archive("/", _tar(files)):
                raise BrokerError("could not copy the broker configuration into the container")
            self.bootstrap = f"{host}:{port}"
            try:
                wait_for_metadata(self.bootstrap, START_TIMEOUT_S, alive=self._running)
            except BrokerError as exc:
                logs = b"".join(self.get_logs()).decode(errors="replace")[-4000:]
                raise BrokerError(f"{exc}\n--- container log ---\n{logs}") from exc
            return self

        def _running(self) -> bool:
            container = self.get_wrapped_container()
            container.reload()
            return bool(container.status == "running")

    return KafkaBrokerContainer


def choose_image() -> str:
    """The explicit choice, else the local image when the engine has it, else the official."""
    from testcontainers.core.docker_client import DockerClient

    try:
        client = DockerClient().client
        client.ping()
    except Exception as exc:  # docker.errors.DockerException and the socket errors under it
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        raise BrokerError(
            f"no container engine answers at {where} ({exc}). Run `make setup-containers` "
            "(starts podman's API), set DOCKER_HOST, or use a running broker with "
            "CLAIMFLOW_TEST_BOOTSTRAP=host:port") from exc
    explicit = os.environ.get("CLAIMFLOW_TEST_KAFKA_IMAGE")
    if explicit:
        return explicit
    try:
        client.images.get(LOCAL_IMAGE)
    except Exception:  # docker.errors.ImageNotFound, or an engine that cannot say
        return OFFICIAL_IMAGE
    return LOCAL_IMAGE


@contextmanager
def start_kafka_container() -> Iterator[str]:
    """Start a single-node Kafka in a container; yields its bootstrap address."""
    configure_container_engine()
    container = _kafka_container_class()(choose_image())
    with container:
        yield container.bootstrap  # type: ignore[attr-defined]


def consume_until(
    bootstrap: str,
    topics: list[str],
    expected: int,
    timeout_s: float = 30.0,
    *,
    read_committed: bool = True,
) -> list[Message]:
    """Read from the beginning until ``expected`` messages arrived or the deadline passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            **BACKLOG_READER_CONFIG,
        }
    )
    consumer.subscribe(topics)
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    messages.append(msg)
    finally:
        consumer.close()
    return messages

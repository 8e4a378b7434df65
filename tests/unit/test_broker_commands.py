"""Command logic of the broker package that needs no running broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker import local
from broker.admin import metadata_answers, tcp_open, wait_for_metadata
from broker.cli import kafka_group
from broker.errors import BrokerError
from broker.jars import STAMP, cached_libs, find_java, find_mvn, install_jars, pom_digest, pom_text
from broker.logs import follow, tail_lines
from broker.settings import KafkaSettings
from tests.integration.kafka_helpers import (
    LOCAL_IMAGE,
    OFFICIAL_IMAGE,
    _tar,
    data_dir,
    free_port,
    is_official_image,
    start_script,
)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> KafkaSettings:
    monkeypatch.setenv("CLAIMFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAFKA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KAFKA_PORT", str(free_port()))
    return KafkaSettings()


def test_missing_java_names_the_alternatives(
    settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = settings.model_copy(update={"java": "/nonexistent/java"})
    with pytest.raises(BrokerError) as error:
        find_java(missing)
    message = str(error.value)
    assert "Java 17+" in message
    assert "KAFKA_BOOTSTRAP_SERVERS" in message
    assert "docker-compose.yml" in message


def test_missing_maven_names_the_alternatives(settings: KafkaSettings) -> None:
    with pytest.raises(BrokerError, match=r"Maven.*KAFKA_BOOTSTRAP_SERVERS"):
        find_mvn(settings.model_copy(update={"mvn": "/nonexistent/mvn"}))


def test_install_without_maven_and_without_cache_fails_clearly(settings: KafkaSettings) -> None:
    with pytest.raises(BrokerError, match="Maven is needed once"):
        install_jars(settings.model_copy(update={"mvn": "/nonexistent/mvn"}))


def test_cache_is_used_only_for_the_same_pom(settings: KafkaSettings) -> None:
    settings.libs_dir.mkdir(parents=True)
    (settings.libs_dir / "kafka.jar").write_bytes(b"jar")
    assert cached_libs(settings) is None  # no stamp yet
    (settings.jars_root / STAMP).write_text(pom_digest(pom_text()) + "\n")
    assert cached_libs(settings) == settings.libs_dir
    (settings.jars_root / STAMP).write_text("def\n")
    assert cached_libs(settings) is None  # resolved from another pom: resolve again


def test_start_without_java_is_a_clear_cli_error(
    settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_JAVA", "/nonexistent/java")
    result = CliRunner().invoke(kafka_group, ["start"])
    assert result.exit_code == 1
    assert "Java 17+" in result.output
    assert "Traceback" not in result.output


def test_status_and_stop_when_nothing_runs(settings: KafkaSettings) -> None:
    status = CliRunner().invoke(kafka_group, ["status"])
    assert status.exit_code == 3
    assert "not running" in status.output
    stop = CliRunner().invoke(kafka_group, ["stop"])
    assert stop.exit_code == 0
    assert "not running" in stop.output


def test_stale_pid_file_is_not_a_running_broker(settings: KafkaSettings) -> None:
    settings.kafka_home.mkdir(parents=True)
    # Our own pid is alive but is not a Kafka broker: a recycled pid must not count.
    settings.pid_file.write_text(f"{os.getpid()}\n")
    assert local.running_pid(settings) is None
    settings.pid_file.write_text("not a pid\n")
    assert local.running_pid(settings) is None
    assert local.stop(settings).pid is None
    assert not settings.pid_file.exists()


def test_exited_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not local._alive(child.pid)
    assert local._alive(os.getpid())


def test_port_taken_by_a_non_kafka_program(settings: KafkaSettings) -> None:
    with socket.socket() as listener:
        listener.bind((settings.host, settings.port))
        listener.listen()
        with pytest.raises(BrokerError, match=r"is taken: another program uses it.*KAFKA_PORT"):
            local._require_free_port(settings, settings.port)


def test_logs_command_without_a_log(settings: KafkaSettings) -> None:
    result = CliRunner().invoke(kafka_group, ["logs"])
    assert result.exit_code == 1
    assert "no broker log yet" in result.output


def test_logs_command_shows_last_lines(settings: KafkaSettings) -> None:
    settings.logs_dir.mkdir(parents=True)
    settings.log_file.write_text("".join(f"line {i}\n" for i in range(100)))
    result = CliRunner().invoke(kafka_group, ["logs", "-n", "3"])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["line 97", "line 98", "line 99"]


def test_tail_lines_reads_only_the_end_of_big_files(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"{i:07d} {'x' * 100}\n" for i in range(20_000)))
    assert [line[:7] for line in tail_lines(path, 3)] == ["0019997", "0019998", "0019999"]
    assert tail_lines(tmp_path / "missing.log", 3) == []
    assert len(tail_lines(path, 5000)) == 5000


def test_follow_yields_new_lines_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "kafka.log"
    path.write_text("old\n")
    done = threading.Event()
    deadline = time.monotonic() + 10  # a bug ends the iteration instead of hanging the test
    lines = follow(path, poll_s=0.01, stop=lambda: done.is_set() or time.monotonic() > deadline)
    with path.open("a") as handle:
        handle.write("first\n")
    assert next(lines) == "first"  # starts at the end: "old" is not repeated
    path.rename(tmp_path / "kafka.log.1")
    path.write_text("after rotation\n")
    assert next(lines) == "after rotation"
    done.set()
    assert list(lines) == []


def test_probes_on_a_closed_port_answer_no_quickly() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    assert not tcp_open(bootstrap)
    assert not metadata_answers(bootstrap)
    with pytest.raises(BrokerError, match="exited while starting"):
        wait_for_metadata(bootstrap, timeout_s=30, alive=lambda: False)
    with pytest.raises(BrokerError, match="within 0 s"):
        wait_for_metadata(bootstrap, timeout_s=0.3)


def test_container_start_script_per_image() -> None:
    local_script = start_script(LOCAL_IMAGE)
    assert "kafka.tools.StorageTool format" in local_script
    assert f"[ -f {data_dir(LOCAL_IMAGE)}/meta.properties ] ||" in local_script
    assert local_script.rstrip().splitlines()[-1].startswith("exec $java $cds kafka.Kafka ")
    official = start_script(OFFICIAL_IMAGE)
    assert "/opt/kafka/bin/kafka-storage.sh format" in official
    assert official.rstrip().splitlines()[-1].startswith("exec /opt/kafka/bin/kafka-server-start")
    assert is_official_image("apache/kafka:4.1.1")
    assert is_official_image("docker.io/apache/kafka:latest")
    assert not is_official_image(LOCAL_IMAGE)


def test_container_files_arrive_before_the_ready_marker() -> None:
    import io
    import tarfile

    data = _tar({"/tmp/x/server.properties": "a=1\n", "/tmp/x/ready": ""})
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.getnames() == ["tmp/x/server.properties", "tmp/x/ready"]


def test_class_archive_is_adopted_only_after_a_graceful_exit(settings: KafkaSettings) -> None:
    settings.jars_root.mkdir(parents=True)
    (settings.jars_root / STAMP).write_text("pom-digest\n")
    settings.kafka_home.mkdir(parents=True)
    archive = local.class_archive(settings, sys.executable)
    first = local._class_archive_flags(settings, sys.executable)
    assert first[-1].startswith("-XX:ArchiveClassesAtExit=")
    partial = Path(first[-1].split("=", 1)[1])
    partial.write_bytes(b"archive")  # what the JVM writes when it exits
    local._settle_class_archive(settings, keep=False)  # killed: may be half written
    assert not partial.exists()
    assert not archive.exists()

    second = local._class_archive_flags(settings, sys.executable)
    Path(second[-1].split("=", 1)[1]).write_bytes(b"archive")
    local._settle_class_archive(settings, keep=True)  # graceful stop
    assert archive.read_bytes() == b"archive"
    assert local._class_archive_flags(settings, sys.executable)[-1] == (
        f"-XX:SharedArchiveFile={archive}")


def test_class_archive_key_follows_the_jars(settings: KafkaSettings) -> None:
    settings.jars_root.mkdir(parents=True)
    (settings.jars_root / STAMP).write_text("one\n")
    before = local.class_archive(settings, sys.executable)
    (settings.jars_root / STAMP).write_text("two\n")
    assert local.class_archive(settings, sys.executable) != before


def test_topics_without_a_broker_say_how_to_get_one(settings: KafkaSettings) -> None:
    from broker.cli import topics_group

    closed = f"127.0.0.1:{free_port()}"
    for args in (["create", "--bootstrap", closed], ["list", "--bootstrap", closed]):
        result = CliRunner().invoke(topics_group, args)
        assert result.exit_code == 1
        assert f"no Kafka broker answers at {closed}" in result.output
        assert "claimflow kafka start" in result.output

"""Pure parts of the broker package: configuration rendering, settings, ids, java commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.config import (
    BROKER_MAIN,
    BrokerConfig,
    cluster_id,
    java_command,
    log4j2_properties,
    render_properties,
    server_properties,
)
from broker.jars import pom_digest, pom_text
from broker.local import broker_config
from broker.settings import KAFKA_VERSION, KafkaSettings
from broker.topics import TopicSpec, claimflow_topics
from claimflow.maven import java_major_version


def test_single_node_settings_make_transactions_and_groups_work() -> None:
    props = server_properties(BrokerConfig(listen_host="127.0.0.1", port=9092,
                                           controller_port=9093, data_dir="/data"))
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["auto.create.topics.enable"] == "false"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["log.dirs"] == "/data"
    # A dead worker's open transaction is aborted within a second of its timeout.
    assert props["transaction.abort.timed.out.transaction.cleanup.interval.ms"] == "1000"


def test_container_advertises_mapped_port_and_talks_to_itself_internally() -> None:
    props = server_properties(BrokerConfig(
        listen_host="0.0.0.0", port=9092, controller_port=9093, internal_port=9094,
        data_dir="/d", advertised_host="127.0.0.1", advertised_port=41234))
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:41234,INTERNAL://127.0.0.1:9094")
    assert props["inter.broker.listener.name"] == "INTERNAL"
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT")
    assert "INTERNAL://127.0.0.1:9094" in props["listeners"]


def test_render_properties_is_sorted_deterministic_and_escaped() -> None:
    text = render_properties({"b": "2", "a": r"C:\dir", "key with space": "v"}, "header")
    assert text == "# header\na=C:\\\\dir\nb=2\nkey\\ with\\ space=v\n"
    assert text == render_properties({"key with space": "v", "b": "2", "a": r"C:\dir"}, "header")
    with pytest.raises(ValueError, match="line break"):
        render_properties({"a": "x\ny"})


def test_log4j2_file_config_rotates_into_the_log_file(tmp_path: Path) -> None:
    props = log4j2_properties(tmp_path / "kafka.log")
    assert props["appender.file.type"] == "RollingFile"
    assert props["appender.file.fileName"] == str(tmp_path / "kafka.log")
    assert props["rootLogger.appenderRef.file.ref"] == "file"
    assert props["logger.request.level"] == "WARN"
    console = log4j2_properties(None, level="WARN")
    assert console["appender.out.type"] == "Console"
    assert console["appender.out.target"] == "SYSTEM_ERR"
    assert "appender.file.type" not in console


@pytest.mark.parametrize("seed", [bytes(16), b"\xff" * 16, bytes(range(16)), b"\xf8" + bytes(15)])
def test_cluster_id_has_kafkas_text_form(seed: bytes) -> None:
    cid = cluster_id(seed)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
    assert not cid.startswith("-")
    with pytest.raises(ValueError, match="16 random bytes"):
        cluster_id(b"short")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ("no java here", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major


def test_java_command_puts_options_before_main_class(tmp_path: Path) -> None:
    command = java_command("java", tmp_path, BROKER_MAIN, ["server.properties"], heap="512m",
                           log4j_config=tmp_path / "log4j2.properties", jvm_flags=["-XX:+X"])
    assert command[:4] == ["java", "-Xmx512m", "-Xms512m", "-XX:+X"]
    assert f"-Dlog4j2.configurationFile={tmp_path / 'log4j2.properties'}" in command
    assert command[-4:] == ["-cp", f"{tmp_path}/*", BROKER_MAIN, "server.properties"]


def test_settings_use_kafka_prefix_and_shared_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLAIMFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("KAFKA_CONTROLLER_PORT", "19093")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    monkeypatch.setenv("KAFKA_CACHE_DIR", str(tmp_path / "cache"))
    settings = KafkaSettings()
    assert settings.bootstrap == "127.0.0.1:19092"
    assert settings.kafka_bootstrap_servers == "elsewhere:9092"  # shared, unprefixed
    assert settings.data_dir == tmp_path / "kafka" / "data"
    assert settings.log_file == tmp_path / "logs" / "kafka.log"
    assert settings.libs_dir == tmp_path / "cache" / f"kafka-{KAFKA_VERSION}" / "libs"
    cfg = broker_config(settings)
    assert (cfg.port, cfg.controller_port, cfg.data_dir) == (19092, 19093,
                                                            str(tmp_path / "kafka" / "data"))
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_settings_reject_a_bad_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_HEAP", "lots")
    with pytest.raises(ValueError, match="heap"):
        KafkaSettings()


def test_claimflow_topics_follow_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CLAIMS_TOPIC", "team.claims")
    monkeypatch.delenv("KAFKA_PARTITIONS", raising=False)
    settings = KafkaSettings()
    assert claimflow_topics(settings) == [
        TopicSpec("team.claims", 6), TopicSpec("claims.approved", 6),
        TopicSpec("claims.investigate", 6), TopicSpec("claims.deadletter", 6),
        TopicSpec("claims.labels", 6, config={"cleanup.policy": "compact"}),
        TopicSpec("claims.shadow", 6)]
    assert {spec.partitions for spec in claimflow_topics(settings, partitions=2)} == {2}


def test_committed_pom_pins_the_kafka_version() -> None:
    pom = pom_text().decode()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    for artifact in ("kafka_2.13", "kafka-tools", "log4j-slf4j-impl"):
        assert f"<artifactId>{artifact}</artifactId>" in pom
    assert pom_digest(pom.encode()) == pom_digest(pom_text())

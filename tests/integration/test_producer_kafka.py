"""``claimflow produce`` against a real broker: keys, values, headers, counts, failures, SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from claimflow.cli import cli
from producer.profiles import generate
from producer.realistic_v2 import generate_realistic_claims
from producer.throttle import burst_for_rate
from producer.typology import DEFAULT_PATTERN_SHARES
from schemas import CLAIM_FEATURES, Claim
from schemas.claim_v2 import ClaimV2
from tests.integration.kafka_helpers import consume_until

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    r"sent=(?P<sent>\d+) failed=(?P<failed>\d+) unconfirmed=(?P<unconfirmed>\d+) "
    r"skipped=(?P<skipped>\d+) elapsed=(?P<elapsed>[\d.]+)s"
)


def summary_of(output: str) -> dict[str, float]:
    match = SUMMARY.search(output)
    assert match, output
    return {name: float(value) for name, value in match.groupdict().items()}


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages in the topic, from the partitions' watermarks (exact for a non-transactional
    producer: every offset is one message)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size-probe"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


@pytest.fixture
def produce_cli(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLAIMFLOW_HOME": str(tmp_path)}
        return CliRunner().invoke(cli, ["produce", "--quiet", *args], env=env)

    return invoke


def test_seed_profile_arrives_with_keys_values_and_headers(
    kafka_bootstrap: str, make_topic: Callable[..., str], produce_cli: Callable[..., Result]
) -> None:
    topic = make_topic(partitions=3, prefix="producer")
    result = produce_cli("--profile", "seed", "--topic", topic)
    assert result.exit_code == 0, result.output
    assert summary_of(result.stdout)["sent"] == 1050

    messages = consume_until(kafka_bootstrap, [topic], 1050, timeout_s=60)
    assert len(messages) == 1050
    assert topic_size(kafka_bootstrap, topic) == 1050  # nothing doubled
    expected = generate("seed").set_index("claim_id")
    seen = set()
    for msg in messages:
        claim = Claim.from_json(msg.value() or b"")
        assert msg.key() == claim.claim_id.encode()
        row = expected.loc[int(claim.claim_id)]
        for name in CLAIM_FEATURES:
            assert getattr(claim, name) == row[name], name
        assert claim.submitted_at == row["submitted_at"].to_pydatetime()
        assert dict(msg.headers() or []) == {
            "is_anomaly": b"true" if row["is_anomaly"] else b"false",
            "pattern": row["pattern"].encode(),
        }
        seen.add(claim.claim_id)
    assert seen == {str(i) for i in range(1, 1051)}


def test_csv_with_bad_rows_is_skipped_line_by_line(
    kafka_bootstrap: str, make_topic: Callable[..., str], produce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    topic = make_topic(partitions=2, prefix="producer")
    path = tmp_path / "claims.csv"
    written = CliRunner().invoke(cli, ["generate", "--profile", "realistic-v1", "--rows", "3000",
                                       "--seed", "8", "--out", str(path), "--quiet"])
    assert written.exit_code == 0, written.output
    lines = path.read_text().splitlines()
    lines[10] = lines[10].replace(",", ";", 1)  # line 11: wrong field count
    bad_age = lines[20].split(",")
    bad_age[3] = "130"  # line 21: patient_age out of range
    lines[20] = ",".join(bad_age)
    path.write_text("\n".join(lines) + "\n")

    result = produce_cli("--from-csv", str(path), "--on-error", "skip", "--no-labels",
                         "--topic", topic)

    assert result.exit_code == 0, result.output
    assert "bad row: line 11: expected 9 fields, found 8" in result.stderr
    assert f"bad row: line 21 (claim_id '{bad_age[0]}'): invalid Claim: patient_age" in (
        result.stderr)
    assert summary_of(result.stdout) | {"elapsed": 0} == {
        "sent": 2998, "failed": 0, "unconfirmed": 0, "skipped": 2, "elapsed": 0}
    messages = consume_until(kafka_bootstrap, [topic], 2998, timeout_s=60)
    assert topic_size(kafka_bootstrap, topic) == 2998
    assert all(msg.headers() is None for msg in messages)
    keys = {(msg.key() or b"").decode() for msg in messages}
    assert len(keys) == 2998
    assert bad_age[0] not in keys


def test_v2_file_arrives_keyed_by_member_with_label_headers(
    kafka_bootstrap: str, make_topic: Callable[..., str], produce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    topic = make_topic(partitions=3, prefix="producer")
    path = tmp_path / "claims.jsonl"
    written = CliRunner().invoke(cli, ["generate", "--profile", "realistic", "--rows", "3000",
                                       "--seed", "8", "--out", str(path), "--quiet"])
    assert written.exit_code == 0, written.output
    lines = path.read_bytes().splitlines()
    lines[41] = lines[41].replace(b'"units":', b'"units":-', 1)  # line 42: units < 1
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = {c["claim_id"]: c for c in map(orjson.loads, lines[:41] + lines[42:])}

    result = produce_cli("--from-file", str(path), "--on-error", "skip", "--topic", topic)

    assert result.exit_code == 0, result.output
    assert f"bad row: {path}:42 (claim_id " in result.stderr
    assert "invalid Claim: lines.0.units: Input should be greater than or equal to 1" in (
        result.stderr)
    assert summary_of(result.stdout)["sent"] == 2999
    messages = consume_until(kafka_bootstrap, [topic], 2999, timeout_s=60)
    assert topic_size(kafka_bootstrap, topic) == 2999
    for msg in messages:
        claim = ClaimV2.from_json(msg.value() or b"")
        line = expected.pop(claim.claim_id)
        assert msg.key() == line["member_id"].encode()
        assert orjson.loads(msg.value() or b"") == {
            k: v for k, v in line.items() if k not in ("is_anomaly", "pattern")}
        assert dict(msg.headers() or []) == {
            "is_anomaly": b"true" if line["is_anomaly"] else b"false",
            "pattern": line["pattern"].encode()}
    assert expected == {}
    # One member's claims share a partition: the detection stage keys its state by member.
    partitions: dict[bytes, set[int]] = {}
    for msg in messages:
        partitions.setdefault(msg.key() or b"", set()).add(msg.partition() or 0)
    assert all(len(p) == 1 for p in partitions.values())
    # Every pattern of the typology arrives, labelled in the headers only.
    sent_patterns = {dict(msg.headers() or [])["pattern"] for msg in messages}
    assert sent_patterns == {p.encode() for p in ("", *DEFAULT_PATTERN_SHARES)}


def test_rate_is_a_ceiling(
    kafka_bootstrap: str, make_topic: Callable[..., str], produce_cli: Callable[..., Result]
) -> None:
    topic = make_topic(prefix="producer")
    rows, rate = 600, 300.0
    result = produce_cli("--rows", str(rows), "--rate", str(rate), "--topic", topic)
    assert result.exit_code == 0, result.output
    summary = summary_of(result.stdout)
    assert summary["sent"] == rows
    assert summary["elapsed"] >= (rows - burst_for_rate(rate)) / rate
    assert topic_size(kafka_bootstrap, topic) == rows


@pytest.fixture
def tiny_message_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A topic whose broker-side limit rejects every claim batch."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"producer-tiny-{uuid.uuid4().hex[:12]}"
    topic = NewTopic(name, num_partitions=1, replication_factor=1,
                     config={"max.message.bytes": "64"})
    admin.create_topics([topic])[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def test_delivery_failures_make_the_exit_code_non_zero(
    tiny_message_topic: str, produce_cli: Callable[..., Result]
) -> None:
    result = produce_cli("--profile", "seed", "--rows", "40", "--topic", tiny_message_topic)
    assert result.exit_code == 1, result.output
    summary = summary_of(result.stdout)
    assert summary["sent"] == 0
    assert summary["failed"] == 40
    assert f"delivery failed: {tiny_message_topic}[0] claim_id" in result.stderr


def test_sigint_flushes_reports_and_exits_130(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=3, prefix="producer")
    rows, seed = 50_000, 5
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "CLAIMFLOW_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from claimflow.cli import main; main()", "produce",
         "--rows", str(rows), "--seed", str(seed), "--rate", "1000", "--topic", topic],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        arrived = consume_until(kafka_bootstrap, [topic], 200, timeout_s=90)
        assert len(arrived) >= 200, "the producer did not start streaming"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "interrupted" in stdout
    summary = summary_of(stdout)
    assert summary["failed"] == summary["unconfirmed"] == 0
    sent = int(summary["sent"])
    assert 200 <= sent < rows

    # Every claim reported as sent is in the topic, once; they are the first ones generated.
    assert topic_size(kafka_bootstrap, topic) == sent
    messages = consume_until(kafka_bootstrap, [topic], sent, timeout_s=60)
    ids = [ClaimV2.from_json(msg.value() or b"").claim_id for msg in messages]
    expected = generate_realistic_claims(rows, seed).claim_id.to_pylist()
    assert len(ids) == sent
    assert set(ids) == set(expected[:sent])

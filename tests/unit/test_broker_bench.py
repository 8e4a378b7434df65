"""The broker benchmark's parsing of Kafka's ProducerPerformance output."""

from __future__ import annotations

import pytest

from bench.kafka_broker import parse_summary

OUTPUT = """\
13789 records sent, 2723.5 records/sec (0.52 MB/sec), 103.6 ms avg latency, 2866.0 ms max latency.
100000 records sent, 10165.7 records/sec (1.94 MB/sec), 54.07 ms avg latency, \
2866.00 ms max latency, 47 ms 50th, 100 ms 95th, 219 ms 99th, 377 ms 99.9th.
"""


def test_parse_summary_takes_the_final_line_with_percentiles() -> None:
    summary = parse_summary(OUTPUT)
    assert summary == {
        "records": 100000, "records_per_s": 10165.7, "mb_per_s": 1.94,
        "avg_latency_ms": 54.07, "max_latency_ms": 2866.0, "p50_ms": 47.0, "p95_ms": 100.0,
        "p99_ms": 219.0, "p999_ms": 377.0,
    }
    assert isinstance(summary["records"], int)


def test_parse_summary_without_a_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ProducerPerformance summary"):
        parse_summary(OUTPUT.splitlines()[0])

"""The gateway's metrics across worker processes: each worker writes its own values, any
worker's /metrics adds them all up (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.metrics import GatewayMetrics

WORKER = """
import sys
from pathlib import Path
from gateway.metrics import GatewayMetrics
metrics = GatewayMetrics(multiprocess_dir=Path(sys.argv[1]))
metrics.decisions.labels("approve", "false").inc(int(sys.argv[2]))
metrics.latency.labels("POST", "/api/v1/claims").observe(0.003)
sys.stdout.write(metrics.exposition().get_data(as_text=True))
"""


def run_worker(folder: Path, decisions: int) -> str:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    done = subprocess.run([sys.executable, "-c", WORKER, str(folder), str(decisions)],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_any_worker_reports_the_sum_of_all_workers(tmp_path: Path) -> None:
    run_worker(tmp_path, 3)
    exposition = run_worker(tmp_path, 4)  # another process, same folder
    assert 'gateway_decisions_total{decision="approve",replayed="false"} 7.0' in exposition
    assert ('gateway_request_seconds_count{method="POST",route="/api/v1/claims"} 2.0'
            in exposition)


def test_refuses_a_process_where_prometheus_keeps_values_in_memory(tmp_path: Path) -> None:
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        GatewayMetrics(multiprocess_dir=tmp_path)


CACHED_WORKER = """
import sys
from pathlib import Path
from gateway.metrics import GatewayMetrics
metrics = GatewayMetrics(multiprocess_dir=Path(sys.argv[1]), cache_s=3600)
metrics.decisions.labels("approve", "false").inc()
first = metrics.exposition().get_data()
metrics.decisions.labels("approve", "false").inc()
second = metrics.exposition().get_data()
sys.stdout.write("same" if first == second else "merged again")
"""


def test_scrapes_within_the_cache_period_share_one_merge(tmp_path: Path) -> None:
    """Each scrape used to read and merge every worker's files; /metrics is open."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", CACHED_WORKER, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "same"

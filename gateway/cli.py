"""``claimflow gateway``: the HTTP gateway and outcome view, served by granian.

granian parses HTTP in native code and calls the Flask app from a pool of Python threads
(``GATEWAY_THREADS``), so no Python thread spends its time reading and parsing requests
(why granian: docs/gateway.md, "Performance design").

granian runs the app in ``GATEWAY_WORKERS`` processes it forks from this one (one per core:
the GIL lets one process use one core). The app and its runtime (Kafka producer, reply and
outcome-view consumers, stores) are built in each worker, after the fork, and closed when
the worker exits.
The workers share the stores under CLAIMFLOW_HOME (claim_id locks across processes: see
:mod:`gateway.locks`), the outcome view's consumer group (the partitions are split between
them), and a folder of Prometheus value files, so ``/metrics`` from any worker adds up all.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing.util
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from claimflow.logging_setup import configure_logging

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)


@click.command("gateway")
@click.option("--host", default=None, help="Interface to listen on [GATEWAY_HOST, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65_535), default=None,
              help="Port [GATEWAY_PORT, 5005]; 0 picks a free one.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes [GATEWAY_WORKERS, 2].")
@click.option("--threads", type=click.IntRange(1, 512), default=None,
              help="Request threads per worker [GATEWAY_THREADS, 32].")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def gateway(host: str | None, port: int | None, workers: int | None, threads: int | None,
            log_level: str) -> None:
    """Run the claim submission API and the investigators' page.

    \b
    Example:
      claimflow gateway --port 5005
      curl -s -XPOST localhost:5005/api/v1/claims -H 'Content-Type: application/json' \\
        -d '{"claim_amount": 1200, "num_services": 2, "patient_age": 40,
             "provider_id": 17, "days_since_last_claim": 30}'
    """
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    from gateway.settings import GatewaySettings

    configure_logging(log_level)
    options = {"host": host, "port": port, "workers": workers, "threads": threads}
    overrides = {k: v for k, v in options.items() if v is not None}
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    bound_port = settings.port or free_port(settings.host)
    server = Granian(
        "gateway.app:create_app",  # for granian's log lines; the app comes from load_app
        address=settings.host, port=bound_port, interface=Interfaces.WSGI,
        workers=settings.workers,
        blocking_threads=settings.threads,
        log_level=LogLevels(log_level.lower()),
        # Keep-alive clients (benchmarks, proxies) hold a connection each; leave headroom.
        backlog=max(1024, settings.threads * 8),
        # Slow headers (slowloris) are cut off by granian before any Python thread is involved.
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.header_read_timeout_s * 1000)),
    )
    click.echo(f"gateway listening on http://{settings.host}:{bound_port}/ "
               f"(API docs: /docs/swagger)", err=True)
    logger.info("gateway on %s:%s, %d workers x %d threads, claims to %s, broker %s",
                settings.host, bound_port, settings.workers, settings.threads,
                settings.claims_topic, settings.kafka_bootstrap_servers)
    metrics_dir = Path(tempfile.mkdtemp(prefix="claimflow-gateway-metrics-"))
    # prometheus_client picks its storage when first imported: the workers import it after
    # the fork, with this set, and keep their values in files there that /metrics sums up.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        # granian stops on SIGINT and SIGTERM: the workers finish their requests and exit.
        server.serve(target_loader=lambda: load_app(settings, log_level, metrics_dir),
                     wrap_loader=False)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def load_app(settings: GatewaySettings, log_level: str, metrics_dir: Path) -> Any:
    """Build the app in a granian worker process (after the fork: no thread crosses it)."""
    from gateway.app import create_app, runtime
    from gateway.metrics import GatewayMetrics

    configure_logging(log_level)
    app = create_app(settings, metrics=GatewayMetrics(multiprocess_dir=metrics_dir))
    rt = runtime(app)
    rt.start()
    # multiprocessing runs its finalizers when the worker process ends (also on SIGTERM,
    # which granian turns into a graceful stop): flush the producer, stop the consumer.
    multiprocessing.util.Finalize(None, rt.close, exitpriority=10)
    # Everything built so far lives as long as the process. Moved out of the collector's
    # reach, a full collection no longer walks it: measured here, 24 ms -> under 0.1 ms, a
    # pause every request in flight would otherwise sit through.
    gc.freeze()
    return app


def free_port(host: str) -> int:
    """A port the OS considers free now (``--port 0``); granian binds it right after."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

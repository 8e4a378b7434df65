"""docker-compose.yml brought up for real with podman-compose on this machine, with locally
built images (no registry): the runtime image of deploy/build-local-image.sh with this
checkout bind-mounted read-only, and the local Kafka image of `make setup-containers` in
place of apache/kafka. A claim submitted to the gateway comes back decided (by the scorer),
the demo producer's stream reaches the dashboard through the scorer, and `down -v` leaves
nothing.

podman 4.3 (Debian 12) with podman-compose 1.6 cannot follow the file's `depends_on`:
health conditions need podman 4.6 (podman-compose ignores them with a warning), and starting
a container created with `--requires` on a finished one-shot container fails ("generating
dependency graph ... not found in input list"). So the test starts the services in the
file's dependency order itself (`--no-deps`): broker and MLflow, the one-shot trainer until
it exits 0, then the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.config import BrokerConfig, render_properties, server_properties
from claimflow.procs import free_ports
from tests.integration.kafka_helpers import LOCAL_IMAGE, START_DIR, start_script
from tests.layout import distribution_packages
from tests.v2_factory import v2_claim

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PODMAN_COMPOSE = str(Path(sys.executable).with_name("podman-compose"))
APP_IMAGE = "localhost/claimflow:local"
APP_SERVICES = ("mlflow", "trainer", "model", "scorer", "gateway", "producer")
PACKAGES = distribution_packages()  # mounted into the app containers
TRAINER_TIMEOUT_S = 600
READY_DEADLINE_S = 420
FLOW_DEADLINE_S = 240


def local_images_override(folder: Path) -> Path:
    """Compose override: the broker from the local image, configured like the file's
    apache/kafka service (single node, kafka:9092, data on the kafka-data volume), and the
    checkout mounted into the application containers (the image has only the environment)."""
    cfg = BrokerConfig(listen_host="0.0.0.0", port=9092, controller_port=9093,
                       data_dir="/var/lib/kafka/data", advertised_host="kafka")
    start = folder / "kafka-start"
    start.mkdir()
    (start / "server.properties").write_text(render_properties(server_properties(cfg)),
                                             encoding="utf-8")
    (start / "start.sh").write_text(start_script(LOCAL_IMAGE), encoding="utf-8")
    mounts = "".join(f"      - {ROOT / pkg}:{ROOT / pkg}:ro\n" for pkg in PACKAGES)
    apps = "".join(f"  {name}:\n    volumes:\n{mounts}" for name in APP_SERVICES)
    # `!override` replaces the list (podman-compose would append to it otherwise).
    text = f"""\
services:
  kafka:
    image: {LOCAL_IMAGE}
    entrypoint: ["/bin/sh"]
    command: ["{START_DIR}/start.sh"]
    volumes:
      - kafka-data:/var/lib/kafka/data
      - {start}:{START_DIR}:ro
    healthcheck:
      test: !override ["CMD-SHELL", "nc -z 127.0.0.1 9092"]
{apps}"""
    path = folder / "compose.local-images.yml"
    path.write_text(text, encoding="utf-8")
    return path


class Project:
    def __init__(self, override: Path, env: dict[str, str]) -> None:
        self.name = f"cftest{uuid.uuid4().hex[:8]}"
        self.override = override
        self.env = env

    def compose(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PODMAN_COMPOSE, "-p", self.name, "-f", str(ROOT / "docker-compose.yml"),
             "-f", str(self.override), "--profile", "demo", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
            check=False)

    def up(self, *services: str) -> None:
        result = self.compose("up", "-d", "--no-deps", *services, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def containers(self) -> list[str]:
        result = subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}",
             "--filter", f"label=io.podman.compose.project={self.name}"],
            capture_output=True, text=True, timeout=60, check=True)
        return result.stdout.split()

    def logs(self, *services: str) -> str:
        out = []
        for service in services:
            result = subprocess.run(["podman", "logs", "--tail", "30", self.container(service)],
                                    capture_output=True, text=True, timeout=60, check=False)
            out.append(f"--- {service} ---\n{result.stdout}{result.stderr}")
        return "\n".join(out)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Project, int]]:
    assert shutil.which("podman"), "podman is missing: make setup-system"
    images = subprocess.run(["podman", "image", "exists", LOCAL_IMAGE], check=False)
    assert images.returncode == 0, f"{LOCAL_IMAGE} is missing: make setup-containers"
    build = subprocess.run(["bash", str(ROOT / "deploy" / "build-local-image.sh"), APP_IMAGE],
                           capture_output=True, text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    gateway, mlflow, model = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMFLOW_")}
    env.update({"CLAIMFLOW_GATEWAY_PORT": str(gateway), "CLAIMFLOW_MLFLOW_PORT": str(mlflow),
                "CLAIMFLOW_MODEL_PORT": str(model), "CLAIMFLOW_TRAIN_ROWS": "5000",
                "CLAIMFLOW_DEMO_RATE": "100"})
    proj = Project(local_images_override(tmp_path), env)
    try:
        yield proj, gateway
    finally:
        down = proj.compose("down", "-v", "-t", "20", timeout=600)
        assert down.returncode == 0, down.stderr[-3000:]
        assert proj.containers() == []


def wait_ready(client: httpx.Client, url: str, proj: Project) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if client.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2.0)
    pytest.fail(f"{url} not ready; logs:\n{proj.logs('model', 'gateway', 'scorer')}")


@pytest.mark.timeout(1800)  # a first image build plus seven containers on a busy machine
def test_compose_stack_decides_a_claim_on_podman(project: tuple[Project, int]) -> None:
    proj, gateway = project
    began = time.monotonic()
    proj.up("kafka", "mlflow", "trainer")
    trainer = subprocess.run(["podman", "wait", proj.container("trainer")],
                             capture_output=True, text=True, timeout=TRAINER_TIMEOUT_S,
                             check=False)
    assert trainer.stdout.strip() == "0", proj.logs("trainer", "kafka", "mlflow")
    trained_after = time.monotonic() - began
    proj.up("model", "scorer", "gateway", "producer")
    base = f"http://127.0.0.1:{gateway}"
    with httpx.Client(timeout=10.0) as client:
        wait_ready(client, f"{base}/readyz", proj)
        ready_after = time.monotonic() - began
        # The compose trainer trains on v2 claims, like the demo: a v2 gross outlier.
        claim = v2_claim(claim_id=f"podman-{uuid.uuid4().hex[:8]}", patient_age=47,
                         lines=[{"procedure_code": "99213", "units": 40, "charge": 95000.0}])
        answer = client.post(f"{base}/api/v1/claims", content=json.dumps(claim),
                             headers={"Content-Type": "application/json"})
        # The scorer decides it: 201, or 202 while the scorer is still joining its group
        # (the gateway's readiness does not include the scorer); then its Location has it.
        assert answer.status_code in (201, 202), answer.text
        if answer.status_code == 202:
            location = f"{base}{answer.headers['Location']}"
            deadline = time.monotonic() + FLOW_DEADLINE_S
            while (answer := client.get(location)).status_code != 200:
                assert time.monotonic() < deadline, f"{answer.text}\n{proj.logs('scorer')}"
                time.sleep(1.0)  # polling interval, bounded by the deadline
        decision = answer.json()
        assert decision["source"]["kind"] == "stream"
        assert decision["claim"]["claim_id"] == claim["claim_id"]
        assert decision["decision"] == "investigate"  # ~100 times the median amount
        assert decision["model"]["version"] == "1"
        # The demo producer's stream reaches the outcome view through the scorer.
        deadline = time.monotonic() + FLOW_DEADLINE_S
        totals: dict[str, int] = {}
        while time.monotonic() < deadline:
            totals = client.get(f"{base}/api/v1/stats").json()["totals"]
            if totals["total"] > 100:
                break
            time.sleep(2.0)
        assert totals["total"] > 100, f"{totals}\n{proj.logs('producer', 'scorer')}"
    print(f"\ncompose on podman: trainer done {trained_after:.0f} s, gateway ready "
          f"{ready_after:.0f} s after start; {totals}")

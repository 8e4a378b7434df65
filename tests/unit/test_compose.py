"""docker-compose.yml: valid against the Compose Specification, references resolve, and the
deployment promises of docs/compose.md hold (what is published, health, scaling)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from claimflow.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "compose-spec.json"
# Pinned: a refreshed schema must be a deliberate change (update the NOTICE, too).
SCHEMA_SHA256 = "bc50c2d79102aed8df21b3a13e56c9396c7a06da6cff5ce37629f2ee7eb41735"
APP_SERVICES = ("mlflow", "trainer", "model", "scorer", "gateway", "producer")
PUBLISHED = {"gateway": 5005, "mlflow": 5000, "model": 3000}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = doc["services"]
    return found


def errors(validator: jsonschema.Draft7Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_vendored_schema_is_the_recorded_copy() -> None:
    text = SCHEMA.read_text(encoding="utf-8")
    notice = (ROOT / "deploy" / "compose-spec.NOTICE.md").read_text(encoding="utf-8")
    assert f"{len(text):,} characters" in notice
    assert "Apache License, Version 2.0" in notice
    assert json.loads(text)["title"] == "Compose Specification"
    assert hashlib.sha256(text.encode()).hexdigest() == SCHEMA_SHA256


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    assert errors(validator, compose) == []


@pytest.mark.parametrize(
    ("path", "bad_value"),
    [
        (("services", "model", "depends_on", "trainer", "condition"), "service_done"),
        (("services", "gateway", "ports"), "127.0.0.1:5005:5005"),
        (("services", "kafka", "healthcheck", "interval"), 10),
        (("services", "scorer", "unknown_key"), True),
    ],
)
def test_the_schema_check_catches_mistakes(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator,
    path: tuple[str, ...], bad_value: object,
) -> None:
    broken = json.loads(json.dumps(compose))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad_value
    assert errors(validator, broken)


def podman_compose(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("podman-compose")
    return subprocess.run([str(exe), "-f", str(COMPOSE), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as podman-compose resolves it with the demo profile (interpolated)."""
    result = podman_compose("--profile", "demo", "config")
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert isinstance(doc, dict)
    return doc


def test_podman_compose_resolves_the_file(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {"kafka", "mlflow", "trainer", "model", "scorer",
                                         "gateway", "producer"}
    # Every ${VAR:-default} was interpolated.
    assert "${" not in json.dumps(resolved)


def test_without_the_demo_profile_there_is_no_producer() -> None:
    result = podman_compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"kafka", "mlflow", "trainer", "model", "scorer",
                                          "gateway"}


def test_references_resolve(compose: dict[str, Any]) -> None:
    """What podman-compose's config does not check: depends_on targets exist, a
    service_healthy target has a health check, a completed-successfully target is one-shot,
    and every named volume used is declared."""
    svc = services(compose)
    declared_volumes = set(compose["volumes"])
    for name, service in svc.items():
        for target, dep in service.get("depends_on", {}).items():
            assert target in svc, f"{name} depends on unknown service {target}"
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in svc[target], f"{target} has no healthcheck"
            if dep["condition"] == "service_completed_successfully":
                assert svc[target].get("restart") == "no", f"{target} must be one-shot"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith((".", "/")), f"{name}: bind mount {volume}"
            assert source in declared_volumes, f"{name}: undeclared volume {source}"
    used = {v.split(":")[0] for s in svc.values() for v in s.get("volumes", [])}
    assert used == declared_volumes


def test_only_gateway_mlflow_and_model_are_published_on_loopback(
    compose: dict[str, Any]
) -> None:
    published = {name: s["ports"] for name, s in services(compose).items() if "ports" in s}
    assert set(published) == set(PUBLISHED)
    for name, ports in published.items():
        assert len(ports) == 1
        match = re.fullmatch(r"127\.0\.0\.1:\$\{CLAIMFLOW_\w+:-(\d+)\}:(\d+)", ports[0])
        assert match, f"{name} publishes {ports[0]} (must be 127.0.0.1 only)"
        assert int(match.group(1)) == int(match.group(2)) == PUBLISHED[name]


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in ("kafka", "mlflow", "model", "scorer", "gateway"):
        test = services(compose)[name]["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}


def test_kafka_is_single_node_kraft_with_transactions_on_one_node(
    compose: dict[str, Any]
) -> None:
    kafka = services(compose)["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert int(env[key]) == 1
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "ports" not in kafka


def test_mlflow_uses_a_database_store_an_artifact_volume_and_one_worker(
    compose: dict[str, Any]
) -> None:
    mlflow = services(compose)["mlflow"]
    args = mlflow["command"]
    assert "--workers=1" in args
    assert any(a.startswith("--backend-store-uri=sqlite:////data/mlflow/") for a in args)
    assert any(a.startswith("--artifacts-destination=/data/mlflow/") for a in args)
    assert "mlflow-data:/data/mlflow" in mlflow["volumes"]
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_scorer_scales_without_colliding_transactional_ids(compose: dict[str, Any]) -> None:
    scorer = services(compose)["scorer"]
    # --scale needs replicas without a fixed name or host port.
    assert "container_name" not in scorer
    assert "ports" not in scorer
    # A fixed prefix would give every replica the same transactional.id '<prefix>-0'.
    assert "SCORER_TRANSACTIONAL_ID_PREFIX" not in scorer["environment"]
    assert scorer["command"][:3] == ["score", "--instances", "1"]


def test_default_transactional_id_prefix_differs_per_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scorer default the compose file relies on: each replica's hostname is its own."""
    from scorer.worker_settings import ScorerSettings

    monkeypatch.delenv("SCORER_TRANSACTIONAL_ID_PREFIX", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "replica-a")
    a = ScorerSettings().transactional_id(0)
    monkeypatch.setattr("socket.gethostname", lambda: "replica-b")
    b = ScorerSettings().transactional_id(0)
    assert a != b


def test_trainer_is_one_shot_and_everything_waits_for_it(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert svc["trainer"]["restart"] == "no"
    assert svc["trainer"]["command"] == ["up", "--prepare-only"]
    for name in ("model", "scorer", "gateway", "producer"):
        assert svc[name]["depends_on"]["trainer"]["condition"] == (
            "service_completed_successfully")
    # The model service and the trainer share the BentoML store.
    assert "models:/data/bentoml" in svc["trainer"]["volumes"]
    assert "models:/data/bentoml" in svc["model"]["volumes"]


def test_producer_runs_only_under_the_demo_profile(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert svc["producer"]["profiles"] == ["demo"]
    assert [name for name, s in svc.items() if "profiles" in s] == ["producer"]


def test_app_services_are_built_from_the_repository_dockerfile(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = services(compose)[name]
        assert service["build"]["context"] == "."
        assert service["image"] == "claimflow:local"
    assert (ROOT / "Dockerfile").is_file()


def test_dockerfile_copies_every_package_of_the_distribution() -> None:
    """A package added to the wheel but not to the image would break the containers only."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
        assert f"!{package}/" in dockerignore, package


@pytest.mark.parametrize("name", ["trainer", "model", "scorer", "gateway", "producer"])
def test_service_commands_parse_with_the_real_cli(resolved: dict[str, Any], name: str) -> None:
    """Each container's command is a claimflow subcommand whose options exist and whose
    values are valid (parsed by the command itself, not run)."""
    args = [str(part) for part in resolved["services"][name]["command"]]
    if name == "producer":
        args = producer_command(resolved["services"][name])
    assert args[0] in COMMANDS
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, args[0])
        assert command is not None
        command.make_context(args[0], args[1:])


def producer_command(service: dict[str, Any]) -> list[str]:
    """The `claimflow produce` invocation inside the producer's chunk loop."""
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    match = re.search(r"while claimflow (produce .*?) --seed \"\$seed\";", script)
    assert match, script
    return [*shlex.split(match.group(1)), "--seed", "1"]


def test_producer_streams_chunks_with_fresh_seeds(resolved: dict[str, Any]) -> None:
    """The compose tool turned `$$` into `$`: the loop sees shell variables, not compose ones."""
    (script,) = resolved["services"]["producer"]["command"]
    assert script.startswith("seed=$(date +%s);")
    assert script.endswith("do seed=$((seed + 1)); done")
    assert producer_command(resolved["services"]["producer"])[-4:] == [
        "--rate", "200", "--seed", "1"]


def test_health_checks_work_on_older_engines(compose: dict[str, Any]) -> None:
    """`start_interval` needs Docker Engine 25+; podman 4.3 (this machine) refuses to create
    the container at all (`unknown flag: --health-startup-interval`)."""
    for name, service in services(compose).items():
        assert "start_interval" not in service.get("healthcheck", {}), name

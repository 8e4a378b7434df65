"""docker-compose.yml: valid against the Compose Specification, references resolve, and the
deployment promises of docs/compose.md hold (what is published, health, scaling).

The schema and the loader come from compose-go (the library Docker Compose is built on),
pinned in deploy/composecheck/go.mod and built by `make setup-composecheck` into
~/.cache/claimflow/composecheck (CLAIMFLOW_COMPOSECHECK_DIR): the `composecheck` binary and
the module's schema/compose-spec.json."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from claimflow.cli import COMMANDS, cli
from tests.layout import ROOT, distribution_packages

COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = ("mlflow", "trainer", "model", "scorer", "gateway", "producer")
PUBLISHED = {"gateway": 5005, "mlflow": 5000, "model": 3000}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def composecheck_artifact(name: str) -> Path:
    """A file `make setup-composecheck` puts into the cache; a clear failure without it."""
    folder = Path(os.environ.get("CLAIMFLOW_COMPOSECHECK_DIR",
                                 "~/.cache/claimflow/composecheck")).expanduser()
    path = folder / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make setup-composecheck` (builds "
                    "deploy/composecheck with Go and caches compose-go's schema)")
    return path


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    """compose-go's schema/compose-spec.json, with the draft it declares (2020-12)."""
    schema = json.loads(composecheck_artifact("compose-spec.json").read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = doc["services"]
    return found


def errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def composecheck(path: Path, *args: str,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """compose-go's loader on `path`: schema, interpolation, consistency; JSON on stdout.
    The CLAIMFLOW_* variables of the caller's shell are dropped, so defaults apply."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMFLOW_")}
    return subprocess.run([str(composecheck_artifact("composecheck")), *args, str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={**clean, **(env or {})})


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert errors(validator, compose) == []


# (path, bad value, what composecheck says): schema mistakes, then references only the
# loader's consistency check catches (the schema cannot see across services).
Mistake = tuple[tuple[str, ...], object, str]
MISTAKES: list[Mistake] = [
    (("services", "model", "depends_on", "trainer", "condition"), "service_done",
     "services.model.depends_on.trainer.condition"),
    (("services", "gateway", "ports"), "127.0.0.1:5005:5005", "services.gateway.ports"),
    (("services", "kafka", "healthcheck", "interval"), 10,
     "services.kafka.healthcheck.interval"),
    (("services", "scorer", "unknown_key"), True, "services.scorer.unknown_key"),
]
REFERENCE_MISTAKES: list[Mistake] = [
    (("services", "producer", "depends_on", "broker"), {"condition": "service_started"},
     'depends on undefined service "broker"'),
    (("services", "gateway", "volumes"), ["gateway-state:/data/gateway"],
     "refers to undefined volume gateway-state"),
]


def broken_copy(compose: dict[str, Any], path: tuple[str, ...], bad: object) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    return broken


@pytest.mark.parametrize(("path", "bad_value", "message"), MISTAKES)
def test_the_schema_check_catches_mistakes(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator,
    path: tuple[str, ...], bad_value: object, message: str,
) -> None:
    assert errors(validator, broken_copy(compose, path, bad_value))


@pytest.mark.parametrize(("path", "bad_value", "message"), MISTAKES + REFERENCE_MISTAKES)
def test_composecheck_rejects_broken_copies(
    compose: dict[str, Any], tmp_path: Path,
    path: tuple[str, ...], bad_value: object, message: str,
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(broken_copy(compose, path, bad_value)), encoding="utf-8")
    result = composecheck(broken, "-profile", "*")
    assert result.returncode == 1, result.stdout
    assert message in result.stderr


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    """The file as compose-go resolves it with every profile (interpolated, normalized)."""
    result = composecheck(COMPOSE, "-profile", "*")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def test_composecheck_resolves_the_file_with_its_profiles(project: dict[str, Any]) -> None:
    assert project["name"] == "claimflow"
    assert set(project["services"]) == {"kafka", "mlflow", "trainer", "model", "scorer",
                                        "gateway", "producer"}
    assert project["services"]["producer"]["profiles"] == ["demo"]
    assert [n for n, s in project["services"].items() if s.get("profiles")] == ["producer"]
    assert "${" not in json.dumps(project["services"])
    # Without a profile (a plain `docker compose up`) there is no producer.
    plain = composecheck(COMPOSE)
    assert plain.returncode == 0, plain.stderr
    assert set(json.loads(plain.stdout)["services"]) == set(project["services"]) - {"producer"}


def test_resolved_ports_are_loopback_only_with_defaults(project: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in project["services"].items() if s.get("ports")}
    assert published == {
        name: [{"mode": "ingress", "host_ip": "127.0.0.1", "target": port,
                "published": str(port), "protocol": "tcp"}]
        for name, port in PUBLISHED.items()}


def test_published_ports_follow_the_variables() -> None:
    result = composecheck(COMPOSE, env={"CLAIMFLOW_GATEWAY_PORT": "6005"})
    assert result.returncode == 0, result.stderr
    (port,) = json.loads(result.stdout)["services"]["gateway"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "6005", 5005)


def test_resolved_dependencies(project: dict[str, Any]) -> None:
    conditions = {name: {target: dep["condition"] for target, dep in
                         s.get("depends_on", {}).items()}
                  for name, s in project["services"].items()}
    done, healthy = "service_completed_successfully", "service_healthy"
    assert conditions == {
        "kafka": {}, "mlflow": {},
        "trainer": {"kafka": healthy, "mlflow": healthy},
        "model": {"trainer": done},
        "scorer": {"trainer": done, "model": healthy},
        "gateway": {"trainer": done, "scorer": "service_started"},
        "producer": {"trainer": done, "scorer": "service_started"},
    }


def test_resolved_volumes_are_named_volumes(project: dict[str, Any]) -> None:
    mounts = {name: [(v["type"], v["source"], v["target"]) for v in s.get("volumes", [])]
              for name, s in project["services"].items()}
    assert {name: m for name, m in mounts.items() if m} == {
        "kafka": [("volume", "kafka-data", "/var/lib/kafka/data")],
        "mlflow": [("volume", "mlflow-data", "/data/mlflow")],
        "trainer": [("volume", "models", "/data/bentoml")],
        "model": [("volume", "models", "/data/bentoml")],
        "gateway": [("volume", "gateway-data", "/data/gateway")],
    }
    assert {k: v["name"] for k, v in project["volumes"].items()} == {
        v: f"claimflow_{v}" for v in ("kafka-data", "mlflow-data", "models", "gateway-data")}


def podman_compose(*args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("podman-compose")
    return subprocess.run([str(exe), "-f", str(file), *args], capture_output=True,
                          text=True, cwd=file.parent, timeout=60, check=False)


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


# Mistakes and whether `podman-compose config` (1.6.0) rejects them: it parses YAML and
# interpolates, but has no schema and no cross-service check, so most of these pass it.
# composecheck must reject every one; this table is why it stays (docs/compose.md).
CHECKER_COMPARISON: list[tuple[str, tuple[str, ...], object, bool]] = [
    ("unknown service key", ("services", "scorer", "unknown_key"), True, False),
    ("unknown top-level key", ("servics",), {}, False),
    ("missing depends_on target", ("services", "producer", "depends_on", "broker"),
     {"condition": "service_started"}, False),
    ("ports as a string", ("services", "gateway", "ports"), "127.0.0.1:5005:5005", False),
    ("non-numeric host port", ("services", "gateway", "ports"), ["127.0.0.1:abc:5005"], False),
    ("container port out of range", ("services", "gateway", "ports"),
     ["127.0.0.1:5005:99999"], False),
    ("numeric interval", ("services", "kafka", "healthcheck", "interval"), 10, False),
    ("numeric restart policy", ("services", "trainer", "restart"), 5, False),
    ("environment as a number", ("services", "kafka", "environment"), 5, True),
    ("unknown depends_on condition", ("services", "model", "depends_on", "trainer",
                                      "condition"), "service_done", True),
    ("undeclared volume", ("services", "gateway", "volumes"),
     ["gateway-state:/data/gateway"], True),
]


def broken_indentation() -> str:
    """The real file with one mis-indented line: a YAML error, not a compose one."""
    text = COMPOSE.read_text(encoding="utf-8")
    assert "\n  kafka:\n" in text
    return text.replace("\n  kafka:\n", "\n  kafka:\n    image: x\n     bad: 1\n", 1)


@pytest.mark.parametrize(("name", "path", "bad_value", "podman_compose_rejects"),
                         CHECKER_COMPARISON, ids=[c[0] for c in CHECKER_COMPARISON])
def test_composecheck_catches_what_podman_compose_config_misses(
    compose: dict[str, Any], tmp_path: Path, name: str,
    path: tuple[str, ...], bad_value: object, podman_compose_rejects: bool,
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(broken_copy(compose, path, bad_value)), encoding="utf-8")
    assert composecheck(broken, "-profile", "*").returncode == 1, name
    rejected = podman_compose("--profile", "demo", "config", file=broken).returncode != 0
    assert rejected == podman_compose_rejects, (
        f"podman-compose config now {'rejects' if rejected else 'accepts'} {name}: "
        "update the table and docs/compose.md (could it replace composecheck?)")


def test_both_checkers_reject_a_yaml_error(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(broken_indentation(), encoding="utf-8")
    result = composecheck(broken, "-profile", "*")
    assert result.returncode == 1
    assert "mapping values are not allowed" in result.stderr
    assert podman_compose("config", file=broken).returncode != 0


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
    packages = distribution_packages()
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

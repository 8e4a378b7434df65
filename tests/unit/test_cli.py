from __future__ import annotations

import pytest
from click.testing import CliRunner

from claimflow.cli import COMMANDS, cli
from claimflow.settings import CommonSettings


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_schemas_export_is_a_no_op_on_a_clean_tree() -> None:
    result = CliRunner().invoke(cli, ["schemas", "export"])
    assert result.exit_code == 0
    assert "up to date" in result.output


def test_common_settings_read_shared_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:29092")
    monkeypatch.setenv("CLAIMFLOW_HOME", "/tmp/cf-home")
    settings = CommonSettings()
    assert settings.kafka_bootstrap_servers == "broker:29092"
    assert str(settings.home) == "/tmp/cf-home"
    with pytest.raises(ValueError, match="frozen"):
        settings.claimflow_home = settings.home  # type: ignore[misc]


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CLAIMFLOW_HOME", raising=False)
    settings = CommonSettings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.claimflow_home.name == ".claimflow"

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from claimflow.cli import cli
from trainer.cli import ui_command
from trainer.settings import TrainerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CLAIMFLOW_HOME", str(tmp_path / "home"))


def test_defaults_put_the_store_under_claimflow_home(tmp_path: Path) -> None:
    settings = TrainerSettings()
    home = (tmp_path / "home").resolve()
    assert settings.uses_default_store
    assert settings.tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert settings.artifacts_dir == home / "mlflow" / "artifacts"
    assert settings.bentoml_home == home / "bentoml"
    assert (settings.n_estimators, settings.contamination, settings.test_size,
            settings.seed) == (100, 0.05, 0.2, 42)


def test_prefixed_and_unprefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("TRAINER_N_ESTIMATORS", "250")
    monkeypatch.setenv("TRAINER_BUDGET_PERCENT", "2.5")
    settings = TrainerSettings()
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert not settings.uses_default_store
    assert settings.n_estimators == 250
    assert settings.budget_percent == 2.5


def test_invalid_settings_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_CONTAMINATION", "0.9")
    with pytest.raises(ValueError, match="contamination"):
        TrainerSettings()


def test_ui_command_uses_one_worker_and_the_artifact_folder() -> None:
    settings = TrainerSettings()
    command = ui_command(settings, "127.0.0.1", 5123)
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert command[command.index("--backend-store-uri") + 1] == settings.tracking_uri
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--default-artifact-root") + 1] == (
        settings.artifacts_dir.as_uri())


def test_mlflow_ui_refuses_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    result = CliRunner().invoke(cli, ["mlflow-ui"])
    assert result.exit_code == 1
    assert "open http://mlflow.internal:5000" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--contamination", "0.7"], "--contamination"),
    (["--test-size", "1.0"], "--test-size"),
    (["--n-estimators", "0"], "--n-estimators"),
])
def test_train_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "x.csv"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "home").exists()  # rejected before anything was created

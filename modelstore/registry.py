"""The MLflow model registry: versions, the ``challenger``/``champion`` aliases, loading.

Serving never uses "latest": it asks which version carries the alias ``champion``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from features.reference import FeatureReference

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sklearn.ensemble import IsolationForest

log = logging.getLogger(__name__)

REGISTERED_MODEL: Final = "claim-anomaly"
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
# The champion a promotion replaced: what `claimflow promote --rollback` returns to.
PREVIOUS_CHAMPION: Final = "previous-champion"
REFERENCE_ARTIFACT: Final = "reference.json"
_URI_ENV: Final = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class RegistryError(LookupError):
    """The registry has no such model, version or alias."""


def prepare_store(tracking_uri: str) -> None:
    """Create the folder of a local SQLite store (MLflow creates the file, not its folder)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        Path(tracking_uri[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)


def client_for(tracking_uri: str) -> MlflowClient:
    """An MLflow client for ``tracking_uri``; the registry lives in the same store."""
    from mlflow import MlflowClient

    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def version_for_alias(client: MlflowClient, alias: str,
                      name: str = REGISTERED_MODEL) -> tuple[str, str]:
    """``(version, run_id)`` of the version that carries ``alias``."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(f"registered model {name!r} has no version with alias "
                            f"{alias!r} (train and promote a model first)") from exc
    return str(version.version), str(version.run_id or "")


def resolve_champion(tracking_uri: str, name: str = REGISTERED_MODEL) -> tuple[str, str]:
    """``(version, run_id)`` of ``<name>@champion``; raises :class:`RegistryError`."""
    return version_for_alias(client_for(tracking_uri), CHAMPION, name)


def newest_version(client: MlflowClient, name: str = REGISTERED_MODEL) -> str:
    """The highest version number of ``name``."""
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise RegistryError(f"registered model {name!r} has no versions (train a model first)")
    return str(max(int(v.version) for v in versions))


def run_of_version(client: MlflowClient, version: str, name: str = REGISTERED_MODEL) -> str:
    """The run id that produced ``name`` version ``version``."""
    from mlflow.exceptions import MlflowException

    try:
        model_version = client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"registered model {name!r} has no version {version!r}") from exc
    return str(model_version.run_id or "")


def aliases_of(client: MlflowClient, name: str = REGISTERED_MODEL) -> dict[str, str]:
    """alias -> version for ``name``."""
    return {alias: str(version)
            for alias, version in client.get_registered_model(name).aliases.items()}


def load_estimator(tracking_uri: str, version: str,
                   name: str = REGISTERED_MODEL) -> IsolationForest:
    """The scikit-learn estimator of a version (the flavour, not the +1/-1 pyfunc)."""
    import mlflow.sklearn

    # mlflow.sklearn.load_model resolves "models:/" URIs through the global URIs; scope them.
    with mlflow_uris(tracking_uri):
        return mlflow.sklearn.load_model(f"models:/{name}/{version}")


@contextmanager
def mlflow_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking and registry URIs at one store, then restore.

    The fluent API (``start_run``, ``log_model``, ``models:/`` URIs) only knows the globals.
    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` into ``os.environ`` (for
    subprocesses), which would leak into every later settings object of this process, so
    the exact previous state (module globals and environment) is put back afterwards.
    """
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_state
    import mlflow.tracking._tracking_service.utils as tracking_state

    prepare_store(tracking_uri)
    saved_globals = (tracking_state._tracking_uri, registry_state._registry_uri)
    saved_env = {key: os.environ.get(key) for key in _URI_ENV}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_state._tracking_uri, registry_state._registry_uri = saved_globals
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_reference(client: MlflowClient, run_id: str, dst: Path) -> FeatureReference:
    """The feature reference logged by training run ``run_id``."""
    dst.mkdir(parents=True, exist_ok=True)
    path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, str(dst))
    return FeatureReference.model_validate_json(Path(path).read_text(encoding="utf-8"))

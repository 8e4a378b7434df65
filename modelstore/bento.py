"""Export a registered model version into the BentoML model store (what serving loads).

The scikit-learn estimator itself is saved (``bentoml.sklearn``), not an MLflow pyfunc:
the pyfunc's ``predict`` only answers +1/-1, while serving needs ``score_samples`` and the
fitted forest. Tag ``claim-anomaly:v<N>`` ties the export to registry version N.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.reference import FeatureReference
from modelstore.registry import REGISTERED_MODEL

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

log = logging.getLogger(__name__)


REFERENCE_OBJECT = "reference"


def bento_tag(registry_version: str | int, name: str = REGISTERED_MODEL) -> str:
    """The BentoML tag of registry version N: ``claim-anomaly:vN``."""
    return f"{name}:v{registry_version}"


@contextmanager
def bentoml_store(bentoml_home: Path) -> Iterator[Any]:
    """Point BentoML's model store at ``bentoml_home`` for the duration of the block.

    BentoML reads ``BENTOML_HOME`` once per process; overriding its container keeps the
    choice explicit (from settings) instead of mutating the environment.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    home = Path(bentoml_home).expanduser().resolve()
    for sub in ("models", "bentos", "envs", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    store = ModelStore(str(home / "models"))
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store.set(store)
    try:
        yield store
    finally:
        BentoMLContainer.model_store.reset()
        BentoMLContainer.bentoml_home.reset()


def export_to_bentoml(
    estimator: IsolationForest,
    reference: FeatureReference,
    registry_version: str | int,
    run_id: str,
    bentoml_home: Path,
    name: str = REGISTERED_MODEL,
    threshold: float | None = None,
) -> str:
    """Save ``estimator`` as ``<name>:v<registry_version>``; returns the tag.

    The label ``model_family`` says which family it is (``isolation-forest``,
    ``gradient-boosting``); the metadata ``threshold`` is the forest's ``-offset_`` or, for a
    classifier, ``threshold`` (chosen at training time; required).

    Idempotent: an existing export of the same run is kept. An export under the same tag
    from a different run (a registry that was reset while the BentoML store was kept) is
    replaced, so the tag always means what the registry says.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    tag = bento_tag(registry_version, name)
    family, metadata = _family_metadata(estimator, threshold)
    labels = {"model_family": family,
              "registry_name": name, "registry_version": str(registry_version), "run_id": run_id,
              # What a caller may send it: the reference (authoritative) says the same.
              "feature_set": reference.feature_set,
              "claim_version": str(reference.claim_version)}
    with bentoml_store(bentoml_home) as store:
        try:
            existing = store.get(tag)
        except NotFound:
            existing = None
        if existing is not None:
            if existing.info.labels.get("run_id") == run_id:
                log.info("BentoML model %s already exported from run %s", tag, run_id)
                return tag
            log.warning("replacing BentoML model %s (was run %s, now run %s)",
                        tag, existing.info.labels.get("run_id"), run_id)
            store.delete(tag)
        saved = bentoml.sklearn.save_model(
            tag,
            estimator,
            labels=labels,
            custom_objects={REFERENCE_OBJECT: reference.model_dump()},
            metadata=metadata,
        )
        log.info("exported %s to BentoML store %s", saved.tag, bentoml_home)
        return str(saved.tag)


def _family_metadata(estimator: Any, threshold: float | None) -> tuple[str, dict[str, Any]]:
    if hasattr(estimator, "predict_proba"):
        if threshold is None:
            raise ValueError("exporting a classifier needs its training-time threshold")
        return "gradient-boosting", {"threshold": float(threshold),
                                     "n_iter": int(estimator.n_iter_)}
    return "isolation-forest", {"threshold": float(-estimator.offset_),
                                "n_estimators": int(estimator.n_estimators)}


@dataclass(frozen=True)
class ExportedModel:
    """A model loaded back from the BentoML store."""

    tag: str
    estimator: IsolationForest
    reference: FeatureReference
    labels: dict[str, str]
    metadata: dict[str, Any] = field(default_factory=dict)


def load_exported(tag: str, bentoml_home: Path) -> ExportedModel:
    """Load an export made by :func:`export_to_bentoml` (estimator, reference, labels)."""
    import bentoml

    with bentoml_store(bentoml_home) as store:
        model = store.get(tag)
        estimator = bentoml.sklearn.load_model(model)
        reference = FeatureReference.model_validate(model.custom_objects[REFERENCE_OBJECT])
        return ExportedModel(tag=str(model.tag), estimator=estimator,
                             reference=reference, labels=dict(model.info.labels),
                             metadata=dict(model.info.metadata))

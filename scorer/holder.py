"""Which model the service serves now: :class:`ModelHolder` owns the reference to the current
:class:`scoring.model.ServedModel`. A new champion is loaded beside the old one and swapped in
with a single assignment, so a request that already took the old model finishes on it, and
every answer names the version that scored it. The model to serve comes from the service's
settings (:func:`source_from`, :func:`shadow_source_from`).
"""

from __future__ import annotations

import logging
import threading

from scorer.model_settings import ModelSettings
from scoring.model import (
    ModelSource,
    PinnedSource,
    RegistrySource,
    ServedModel,
    load_served_model,
)

logger = logging.getLogger(__name__)


def source_from(settings: ModelSettings) -> ModelSource:
    if settings.tag:
        return PinnedSource(settings.tag)
    return RegistrySource(settings.tracking_uri, settings.registered_model, settings.alias)


def shadow_source_from(settings: ModelSettings) -> ModelSource | None:
    """The challenger scored in shadow: a pinned tag, or the registry's shadow alias (only
    when the champion comes from the registry too); None: no shadow model."""
    if settings.shadow_tag:
        return PinnedSource(settings.shadow_tag)
    if settings.tag or not settings.shadow_alias:
        return None
    return RegistrySource(settings.tracking_uri, settings.registered_model, settings.shadow_alias)


class ModelHolder:
    """The current :class:`ServedModel` (or None) and how to refresh it."""

    def __init__(self, settings: ModelSettings, source: ModelSource | None = None) -> None:
        self._settings = settings
        self._source = source or source_from(settings)
        self._refresh_lock = threading.Lock()
        # Read without a lock: one attribute read is atomic, and the object is immutable.
        self.current: ServedModel | None = None

    def clear(self) -> ServedModel | None:
        """Stop serving (a shadow alias that was removed); returns what was served."""
        with self._refresh_lock:
            current, self.current = self.current, None
            return current

    def refresh(self) -> ServedModel:
        """Serve what the source wants now; loads only when it changed.

        Raises :class:`ModelLoadError` when nothing can be served; the current model (if
        any) stays in place then.
        """
        with self._refresh_lock:  # one load at a time; a second caller reuses its result
            wanted = self._source.wanted()
            current = self.current
            if current is not None and current.tag == wanted.tag and (
                wanted.run_id is None or current.ref.run_id == wanted.run_id
            ):
                return current
            model = load_served_model(wanted, self._settings.bentoml_home, self._settings)
            self.current = model
            logger.info(
                "serving %s version %s (%s, run %s, %d trees, threshold %.6f)%s",
                model.ref.name, model.ref.version, model.tag, model.ref.run_id,
                model.forest.n_trees, model.threshold,
                f"; was version {current.ref.version}" if current else "",
            )
            return model

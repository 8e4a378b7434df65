"""The BentoML model service: ``bentoml serve scorer.service:ClaimAnomalyService``.

Started by ``claimflow serve-model``. APIs (JSON):

* ``POST /score_batch`` ``{"claims": [Claim, ...], "members": [MemberContext, ...]}`` ->
  ``[ScoreResult, ...]`` (input order)
* ``POST /score_batch`` with ``"shadow": true`` -> ``{"results": [...], "shadow": {...} | null}``:
  the same champion answers, and the challenger's verdicts on the same claims and member
  contexts as columns without reasons (``ServedModel.verdicts_json``: a shadow record reads
  only score, threshold and decision); null when no challenger is loaded or it failed
  (logged and counted, never an error of the request)
* ``POST /score`` ``{"claim": Claim, "member": MemberContext}`` -> ``ScoreResult``

``members``/``member`` (the claim's member history, computed by the stream's member stage)
is required by a model whose feature set reads history (``v2-history``, ``v2-peers``);
without it such a model answers 400, never a score from features it could not compute.

Claims may be of any contract version (``schemas.AnyClaim``); the model reads one version
(its feature set's) and answers a ``ScoreRefusal`` in place of a claim of another version.
* ``POST /reload`` -> ``{"version": "N"}``: serve the current champion now
* BentoML's own ``/livez``, ``/readyz`` (ready once a model is loaded) and ``/metrics``.

Claims are validated by BentoML from the request bytes in pydantic's JSON mode, which is
what lets the strict ``Claim`` accept ISO datetimes. Answers are encoded in one pass (see
:meth:`scoring.model.ServedModel.score_json`) and returned as a ready response: BentoML's
generic path would dump every result to Python objects and through ``json.dumps``.

The champion is polled every ``MODEL_POLL_INTERVAL_S`` and ``/reload`` checks at once; a new
version is loaded beside the old one and swapped in atomically (see :mod:`scorer.holder`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Annotated, Final

import bentoml
from bentoml.exceptions import BadInput, ServiceUnavailable
from prometheus_client import Counter
from pydantic import BaseModel, Field, RootModel
from starlette.responses import Response

from features.member import MemberFeatures
from schemas import AnyClaim, MemberContext, ScoreResult
from scorer.holder import ModelHolder, shadow_source_from
from scorer.model_settings import ModelSettings
from scoring.model import (
    AliasMissing,
    MissingHistoryError,
    ModelLoadError,
    ServedModel,
    member_features,
)

logger = logging.getLogger(__name__)

MAX_BATCH: Final = 10_000
JSON: Final = "application/json"
# Shadow scoring never fails a request: what goes wrong is logged and counted here.
SHADOW_FAILURES: Final = Counter(
    "claimflow_shadow_failures",
    "Challenger failures: stage=load (it could not be loaded; served without it), "
    "stage=score (a batch answered without shadow results).",
    ["stage"],
)


class ClaimList(RootModel[Annotated[list[AnyClaim], Field(min_length=1, max_length=MAX_BATCH)]]):
    """1..10,000 claims of any contract version. A root model: BentoML rebuilds a bare
    parameter type in a way that drops the tags the claim union's callable discriminator
    needs (pydantic then refuses the schema); inside a model it stays intact."""


class MemberList(RootModel[Annotated[list[MemberContext], Field(max_length=MAX_BATCH)]]):
    """One member context per claim, in the claims' order."""


class OneClaim(RootModel[AnyClaim]):
    """One claim of any contract version (a root model: see :class:`ClaimList`)."""


# Declared for the OpenAPI document only (the APIs return ready bytes). A claim the model
# does not read is answered by a ScoreRefusal in its place; the union is left out of the
# document because BentoML's OpenAPI generation fails on union answers (bentoml build: a
# KeyError on the union's $ref).
class ScoreResults(RootModel[list[ScoreResult]]):
    """The answer of ``/score_batch`` (with ``ScoreRefusal`` items for claims of another
    contract version than the model reads)."""


class ReloadResult(BaseModel):
    """The answer of ``/reload``."""

    version: str = Field(description="Registry version now served.")


def _freeze_heap() -> None:
    """Exempt everything alive now (BentoML, MLflow, the model) from garbage collection.

    A request allocates thousands of short-lived objects, which triggers collections that
    otherwise traverse the whole long-lived heap (hundreds of thousands of objects here):
    measured, that made a 500-claim batch ~1.5x slower.
    """
    gc.collect()
    gc.freeze()


def _log_like_bentoml(*names: str) -> None:
    """Send our loggers' records through BentoML's handlers (BentoML configures logging in
    the server processes; without this, INFO from ``scorer`` would be dropped)."""
    handlers = logging.getLogger("bentoml").handlers
    for name in names:
        ours = logging.getLogger(name)
        if handlers and not ours.handlers:
            for handler in handlers:
                ours.addHandler(handler)
            ours.setLevel(logging.INFO)
            ours.propagate = False


@bentoml.service(
    name="claim_anomaly",
    workers=1,
    traffic={"timeout": 30},
    metrics={"enabled": True},
    # No trace exporter is configured, yet BentoML's OpenTelemetry middleware builds five
    # spans per request: half the CPU of a single-claim request, measured. To trace the
    # scoring APIs, override services.claim_anomaly.tracing.excluded_urls.
    tracing={"excluded_urls": ["/score", "/reload"]},
)
class ClaimAnomalyService:
    """Scores claims with the registry champion of ``claim-anomaly``."""

    def __init__(self) -> None:
        # The service constructor is this process's entry point: settings are built here.
        _log_like_bentoml("scorer", "trainer")
        self.settings = ModelSettings()
        self.holder = ModelHolder(self.settings)
        shadow_source = shadow_source_from(self.settings)
        self.shadow = None if shadow_source is None else ModelHolder(self.settings,
                                                                     shadow_source)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        try:
            self.holder.refresh()
        except ModelLoadError as exc:
            # Not fatal: readiness stays false and polling keeps looking for a champion.
            logger.warning("no model to serve yet: %s", exc)
        except Exception:  # e.g. the registry is unreachable: same, but with the traceback
            logger.exception("no model to serve yet")
        self._refresh_shadow()

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    @bentoml.on_startup  # type: ignore[untyped-decorator]
    def start_polling(self) -> None:
        _freeze_heap()
        interval = self.settings.poll_interval_s
        if interval <= 0:
            return
        self._poller = threading.Thread(
            target=self._poll, args=(interval,), name="champion-poller", daemon=True
        )
        self._poller.start()

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                before = self.holder.current
                if self.holder.refresh() is not before:
                    _freeze_heap()
            except ModelLoadError as exc:
                logger.warning("champion check: %s", exc)
            except Exception as exc:  # keep polling whatever a registry outage raises
                logger.warning("champion check failed (keeping the current model): %r", exc)
            if self._refresh_shadow():
                _freeze_heap()

    def _refresh_shadow(self) -> bool:
        """Load the challenger when it changed, drop it when it is gone or cannot be loaded
        (the champion goes on alone); True when a new one was loaded."""
        if self.shadow is None:
            return False
        before = self.shadow.current
        try:
            return self.shadow.refresh() is not before
        except Exception as exc:
            dropped = self.shadow.clear()
            if isinstance(exc, AliasMissing):
                if dropped is not None:  # the alias was removed: shadowing ends
                    logger.info("no challenger any more (%s); scoring without shadow", exc)
                return False
            SHADOW_FAILURES.labels("load").inc()
            logger.warning("challenger not loaded, scoring without shadow: %r", exc)
            return False

    def _model(self) -> ServedModel:
        # One read: this request finishes on this model even if a reload swaps it meanwhile.
        model = self.holder.current
        if model is None:
            raise ServiceUnavailable("no model loaded yet")
        return model

    @bentoml.api(route="/score_batch", output_spec=ScoreResults)  # type: ignore[untyped-decorator]
    async def score_batch(
        self, claims: ClaimList, members: MemberList | None = None, shadow: bool = False
    ) -> Response:
        """Score a batch of claims; results come back in input order. With ``shadow``:
        ``{"results": [...], "shadow": {...} | null}``, the challenger's verdicts on the same
        claims and member contexts as columns (null: no challenger loaded, or it failed)."""
        contexts = None if members is None else [member_features(m) for m in members.root]
        model = self._model()
        try:
            results = model.score_json(claims.root, contexts)
        except MissingHistoryError as exc:
            raise BadInput(str(exc)) from exc
        if not shadow:
            return Response(results, media_type=JSON)
        return Response(b'{"results":' + results + b',"shadow":'
                        + self._shadow_json(model, claims.root, contexts) + b"}",
                        media_type=JSON)

    def _shadow_json(self, champion: ServedModel, claims: list[AnyClaim],
                     contexts: list[MemberFeatures] | None) -> bytes:
        """The challenger's verdicts on the same claims and contexts, or ``null``."""
        challenger = None if self.shadow is None else self.shadow.current
        # The trainer leaves the challenger alias on a version it promotes: scoring the
        # champion twice would cost as much as a real challenger and tell nothing.
        if challenger is None or challenger.tag == champion.tag:
            return b"null"
        try:
            return challenger.verdicts_json(claims, contexts)
        except Exception:  # whatever the challenger does, the champion's answer stands
            SHADOW_FAILURES.labels("score").inc()
            logger.exception("challenger %s failed on a batch of %d claims; answering "
                             "without shadow", challenger.tag, len(claims))
            return b"null"

    @bentoml.api(route="/score", output_spec=ScoreResult)  # type: ignore[untyped-decorator]
    async def score(self, claim: OneClaim, member: MemberContext | None = None) -> Response:
        """Score one claim."""
        context = None if member is None else member_features(member)
        try:
            return Response(self._model().score_one_json(claim.root, context), media_type=JSON)
        except MissingHistoryError as exc:
            raise BadInput(str(exc)) from exc

    @bentoml.api(route="/reload")  # type: ignore[untyped-decorator]
    async def reload(self) -> ReloadResult:
        """Check the registry now and serve its champion; answers the version served."""
        before = self.holder.current
        try:
            model = await asyncio.to_thread(self.holder.refresh)
            shadow_changed = await asyncio.to_thread(self._refresh_shadow)
            if model is not before or shadow_changed:
                _freeze_heap()
        except Exception as exc:
            logger.warning("reload: %s", exc)
            raise ServiceUnavailable(f"cannot load the champion: {exc}") from exc
        return ReloadResult(version=model.ref.version)

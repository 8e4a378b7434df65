"""HTTP client of the model service, shared by the stream worker and the gateway.

One persistent ``httpx.Client`` (keep-alive) per :class:`ModelClient`. Requests are encoded
by joining each claim's own JSON bytes and answers are decoded in one pydantic JSON pass:
the client stays far below the cost of the service itself.

Errors: anything that means "the service cannot answer right now" (connection refused,
timeouts, 5xx including BentoML's 503 when its batching queue is full, 429) raises
:class:`ModelUnavailable`; callers decide on retry and backoff. An answer that the service
should never give (4xx, a body that is not a list of ``ScoreResult``) raises
:class:`ModelServiceError`: retrying would not help.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Final

import httpx
from pydantic import TypeAdapter, ValidationError

from schemas import Claim, ScoreResult

logger = logging.getLogger(__name__)

JSON_HEADERS: Final = {"content-type": "application/json", "accept": "application/json"}
_RESULTS: Final = TypeAdapter(list[ScoreResult])


class ModelUnavailable(Exception):  # noqa: N818 - the agreed public name
    """The model service cannot answer now (down, overloaded, timing out). Retry later."""


class ModelServiceError(Exception):
    """The model service answered something unusable (a bug, not an outage)."""


def encode_batch(claims: Sequence[Claim]) -> bytes:
    """``{"claims": [...]}`` built from each claim's own serializer (no dict round trip)."""
    return b'{"claims":[' + b",".join(claim.to_json() for claim in claims) + b"]}"


def encode_single(claim: Claim) -> bytes:
    return b'{"claim":' + claim.to_json() + b"}"


class ModelClient:
    """Talks to ``claimflow serve-model``. Thread-safe (httpx.Client is)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            headers=JSON_HEADERS,
            # Several gateway threads may share one client.
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    def score_batch(self, claims: Sequence[Claim]) -> list[ScoreResult]:
        """Score claims in one call; results are in the order of ``claims``."""
        if not claims:
            return []
        results = self._decode_list(self._post("/score_batch", encode_batch(claims)))
        if len(results) != len(claims):
            raise ModelServiceError(
                f"model service returned {len(results)} results for {len(claims)} claims"
            )
        return results

    def score(self, claim: Claim) -> ScoreResult:
        body = self._post("/score", encode_single(claim))
        try:
            return ScoreResult.model_validate_json(body)
        except ValidationError as exc:
            raise ModelServiceError(f"unexpected /score answer: {exc}") from exc

    def reload(self) -> str:
        """Ask the service to load the current champion now; returns the version it serves."""
        body = self._post("/reload", b"{}")
        try:
            version = TypeAdapter(dict[str, str]).validate_json(body)["version"]
        except (ValidationError, KeyError) as exc:
            raise ModelServiceError(f"unexpected /reload answer: {body[:200]!r}") from exc
        return version

    def ready(self) -> bool:
        """True when the service is up and has a model loaded (BentoML's ``/readyz``)."""
        try:
            return self._http.get("/readyz").status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, path: str, body: bytes) -> bytes:
        try:
            response = self._http.post(path, content=body)
        except httpx.TransportError as exc:  # connect errors, timeouts, resets
            raise ModelUnavailable(f"model service at {self.base_url}: {exc!r}") from exc
        status = response.status_code
        if status >= 500 or status == httpx.codes.TOO_MANY_REQUESTS:
            raise ModelUnavailable(
                f"model service at {self.base_url}{path} answered {status}: "
                f"{response.text[:200]}"
            )
        if status != httpx.codes.OK:
            raise ModelServiceError(
                f"model service at {self.base_url}{path} answered {status}: "
                f"{response.text[:500]}"
            )
        return response.content

    @staticmethod
    def _decode_list(body: bytes) -> list[ScoreResult]:
        try:
            return _RESULTS.validate_json(body)
        except ValidationError as exc:
            raise ModelServiceError(f"unexpected /score_batch answer: {exc}") from exc

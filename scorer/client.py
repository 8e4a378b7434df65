"""HTTP client of the model service, shared by the stream worker and the gateway.

One keep-alive connection per calling thread (:class:`scorer.http11.Http11Connection`).
Requests are encoded by joining each claim's own JSON bytes and answers are decoded in one
pydantic JSON pass. Why neither httpx nor ``http.client``: docs/model-service.md ("The
client's transport"). Scoring is a pure function, so a call that fails on a reused
connection (the server closed it while idle) is retried once on a fresh one.

Errors: anything that means "the service cannot answer right now" (connection refused,
timeouts, 5xx including BentoML's 503 when its batching queue is full, 429) raises
:class:`ModelUnavailable`; callers decide on retry and backoff. An answer that the service
should never give (4xx, a body that is not a list of ``ScoreResult``) raises
:class:`ModelServiceError`: retrying would not help.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from features.member import MemberFeatures
from schemas import Claim, ClaimV2, ScoreAnswer
from scorer.http11 import Http11Connection
from scorer.shadow import ShadowColumns

logger = logging.getLogger(__name__)

# What a dead, refusing, resetting or silent peer raises (socket.timeout is TimeoutError).
TRANSPORT_ERRORS: Final = (OSError, http.client.HTTPException)
_RESULTS: Final = TypeAdapter(list[ScoreAnswer])
_ANSWER: Final = TypeAdapter(ScoreAnswer)


class _ShadowBody(BaseModel):
    results: list[ScoreAnswer]
    shadow: Any = None  # read apart: an unreadable shadow part must not fail the results


class ShadowAnswer(NamedTuple):
    """The champion's answers (they route) and the challenger's to the same claims (None:
    the service has no challenger, or it failed on this batch). ``unreadable`` says why a
    shadow part that came was not used (another shape, such as a list of answers from a
    model service older than the worker)."""

    results: list[ScoreAnswer]
    shadow: ShadowColumns | None
    unreadable: str | None = None


class ModelUnavailable(Exception):  # noqa: N818 - the agreed public name
    """The model service cannot answer now (down, overloaded, timing out). Retry later."""


class ModelServiceError(Exception):
    """The model service answered something unusable (a bug, not an outage)."""


def encode_batch(claims: Sequence[Claim | ClaimV2],
                 members: Sequence[MemberFeatures] | None = None, shadow: bool = False) -> bytes:
    """``{"claims": [...]}`` built from each claim's own serializer (no dict round trip),
    with ``"members"`` (one context per claim) when given, and ``"shadow": true`` to ask
    for the challenger's answers too."""
    body = b'{"claims":[' + b",".join(claim.to_json() for claim in claims) + b"]"
    if members is not None:
        body += b',"members":' + orjson.dumps([m._asdict() for m in members])
    if shadow:
        body += b',"shadow":true'
    return body + b"}"


def encode_single(claim: Claim | ClaimV2, member: MemberFeatures | None = None) -> bytes:
    if member is None:
        return b'{"claim":' + claim.to_json() + b"}"
    return b'{"claim":' + claim.to_json() + b',"member":' + orjson.dumps(member._asdict()) + b"}"


class ModelClient:
    """Talks to ``claimflow serve-model``. Thread-safe: each thread uses its own connection."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"model service URL must be http(s)://host[:port], not {base_url!r}")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[Http11Connection] = []
        self._all_lock = threading.Lock()

    def score_batch(self, claims: Sequence[Claim | ClaimV2],
                    members: Sequence[MemberFeatures] | None = None) -> list[ScoreAnswer]:
        """Score claims in one call; answers are in the order of ``claims``: a
        ``ScoreResult``, or a ``ScoreRefusal`` for a claim the model does not read.
        ``members``: each claim's member history (needed by a model that reads it)."""
        if not claims:
            return []
        results = self._decode_list(self._post("/score_batch", encode_batch(claims, members)))
        if len(results) != len(claims):
            raise ModelServiceError(
                f"model service returned {len(results)} results for {len(claims)} claims"
            )
        return results

    def score_batch_shadow(self, claims: Sequence[Claim | ClaimV2],
                           members: Sequence[MemberFeatures] | None = None) -> ShadowAnswer:
        """``score_batch``, plus the challenger's answers to the same claims and contexts
        when the service scores one in shadow. Only the champion's answers are checked
        here; the caller decides what an unfit shadow answer means (never a routing
        failure)."""
        if not claims:
            return ShadowAnswer([], None)
        body = self._post("/score_batch", encode_batch(claims, members, shadow=True))
        try:
            answer = _ShadowBody.model_validate_json(body)
        except ValidationError as exc:
            raise ModelServiceError(f"unexpected /score_batch shadow answer: {exc}") from exc
        if len(answer.results) != len(claims):
            raise ModelServiceError(
                f"model service returned {len(answer.results)} results for {len(claims)} claims"
            )
        if answer.shadow is None:
            return ShadowAnswer(answer.results, None)
        try:
            return ShadowAnswer(answer.results, ShadowColumns.model_validate(answer.shadow))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "shadow"
            return ShadowAnswer(answer.results, None, unreadable=(
                f"{exc.error_count()} errors, first at {where}: {first['msg']}"))

    def score(self, claim: Claim | ClaimV2) -> ScoreAnswer:
        body = self._post("/score", encode_single(claim))
        try:
            return _ANSWER.validate_json(body)
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
            status, _ = self._request("GET", "/readyz", None)
        except ModelUnavailable:
            return False
        return status == http.client.OK

    def close(self) -> None:
        with self._all_lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()

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
        status, content = self._request("POST", path, body)
        if status >= 500 or status == http.client.TOO_MANY_REQUESTS:
            raise ModelUnavailable(
                f"model service at {self.base_url}{path} answered {status}: "
                f"{content[:200].decode(errors='replace')}"
            )
        if status != http.client.OK:
            raise ModelServiceError(
                f"model service at {self.base_url}{path} answered {status}: "
                f"{content[:500].decode(errors='replace')}"
            )
        return content

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """One exchange on this thread's connection; transport failures are outages."""
        for attempt in (1, 2):
            connection: Http11Connection | None = getattr(self._local, "connection", None)
            reused = connection is not None
            try:
                if connection is None:
                    connection = self._connect()
                return self._exchange(connection, method, path, body)
            except TRANSPORT_ERRORS as exc:
                if connection is not None:
                    self._discard(connection)
                # A kept-alive connection that the server had closed gets one more try on a
                # fresh one; a timeout does not (the caller's budget is spent).
                if not (reused and attempt == 1 and not isinstance(exc, TimeoutError)):
                    raise ModelUnavailable(f"model service at {self.base_url}: {exc!r}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _exchange(self, connection: Http11Connection, method: str, path: str,
                  body: bytes | None) -> tuple[int, bytes]:
        status, content = connection.request(method, self._prefix + path, body)
        if connection.closed:  # the server ended the keep-alive
            self._discard(connection)
        return status, content

    def _connect(self) -> Http11Connection:
        connection = Http11Connection(self._host, self._port, self._timeout_s, self._tls)
        self._local.connection = connection
        with self._all_lock:
            self._all.append(connection)
        return connection

    def _discard(self, connection: Http11Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._all_lock:
            if connection in self._all:
                self._all.remove(connection)

    @staticmethod
    def _decode_list(body: bytes) -> list[ScoreAnswer]:
        try:
            return _RESULTS.validate_json(body)
        except ValidationError as exc:
            raise ModelServiceError(f"unexpected /score_batch answer: {exc}") from exc

"""API keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, compared in constant
time against every accepted key."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from pydantic import SecretStr
from werkzeug.datastructures import Headers

from gateway.problems import ProblemError

CHALLENGE = 'Bearer realm="claimflow", charset="UTF-8"'


def presented_key(headers: Headers) -> str | None:
    key = headers.get("X-API-Key")
    if key:
        return key
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def key_matches(presented: str, accepted: Sequence[SecretStr]) -> bool:
    given = presented.encode("utf-8", "surrogateescape")
    # Compare against every key (no early exit), so timing does not tell which one matched.
    matches = [hmac.compare_digest(given, key.get_secret_value().encode()) for key in accepted]
    return any(matches)


def require_key(headers: Headers, accepted: Sequence[SecretStr | None]) -> None:
    """Raise a 401 problem unless a configured key was presented. No key configured: open."""
    keys = [key for key in accepted if key is not None]
    if not keys:
        return
    presented = presented_key(headers)
    if presented is None:
        raise ProblemError(401, "an API key is required (X-API-Key header or Bearer token)",
                           slug="unauthorized", headers={"WWW-Authenticate": CHALLENGE})
    if not key_matches(presented, keys):
        raise ProblemError(401, "the API key is not valid", slug="unauthorized",
                           headers={"WWW-Authenticate": CHALLENGE})

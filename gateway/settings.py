"""Settings of the HTTP gateway (``claimflow gateway``): env prefix ``GATEWAY_``.

Built once in the command and passed to :func:`gateway.app.create_app`; nothing else in the
gateway reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from claimflow.settings import TOPICS, CommonSettings


class GatewaySettings(CommonSettings):
    """Everything the gateway needs (all overridable as ``GATEWAY_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface the server listens on.")
    port: int = Field(default=5005, ge=0, le=65_535, description="Port (0 picks a free one).")
    workers: int = Field(
        default=2, ge=1, le=64,
        description="Worker processes (granian workers; one per core). Each has its own threads, "
        "Kafka producer, reply consumer and outcome-view consumer; they share the "
        "stores under CLAIMFLOW_HOME.",
    )
    threads: int = Field(
        default=32, ge=1, le=512,
        description="Python threads running requests in each worker (granian's blocking threads; "
        "each waits for the broker and the stream's decision, so far more than the cores: "
        "workers x threads caps the decisions waited for at once).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, submissions and the read API need it (X-API-Key or Bearer).",
    )
    read_api_key: SecretStr | None = Field(
        default=None,
        description="A key for the read API (outcomes, claims, stats) only. The read API needs "
        "this key or GATEWAY_API_KEY whenever either is set.",
    )
    claims_topic: str = Field(
        default=TOPICS.claims,
        description="Submitted claims are produced here, for the stream worker to decide (a v2 "
        "claim keyed by member_id, v1 by claim_id, as the producer does).",
    )
    deadletter_topic: str = Field(
        default=TOPICS.deadletter,
        description="The stream worker's dead letters: a submitted claim set aside there (the "
        "model refused it) is an error for its client.",
    )
    decision_timeout_s: float = Field(
        default=5.0, gt=0, le=300,
        description="Longest a submission waits for the stream's decision; then 202 Accepted "
        "with a Location to poll (GET /api/v1/claims/<id>).",
    )
    reply_max_wait_ms: int = Field(
        default=500, ge=1, le=5000,
        description="The reply consumer's fetch wait (fetch.wait.max.ms): the broker answers "
        "a fetch as soon as a decision is committed, or after this long with nothing "
        "(it bounds the empty fetches of an idle gateway, not the latency).",
    )
    approved_topic: str = Field(default=TOPICS.approved, description="Approved decisions.")
    investigate_topic: str = Field(
        default=TOPICS.investigate, description="Decisions flagged for investigation."
    )
    labels_topic: str = Field(
        default=TOPICS.labels,
        description="Investigators' dispositions (compacted, keyed by claim_id): written by "
        "POST /api/v1/claims/<id>/disposition, read by the outcome view.",
    )
    shadow_topic: str = Field(
        default=TOPICS.shadow,
        description="Champion and challenger side by side (ShadowScore), read by the outcome "
        "view for the shadow summary (dashboard, GET /api/v1/shadow); empty: not read.",
    )
    publish_timeout_s: float = Field(
        default=5.0, gt=0, le=300,
        description="Longest a submission waits for the broker to confirm the claim it "
        "produced (then 503).",
    )
    retry_after_s: int = Field(
        default=5, ge=1, le=3600, description="Retry-After sent with 503 answers."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger request bodies get 413."
    )
    header_read_timeout_s: float = Field(
        default=10.0, ge=1, le=300,
        description="A connection that has not sent its complete request headers this long "
        "after it opened (or after its previous request) is closed (granian, in native code: no "
        "request thread waits for it). Bodies have no such timeout: see docs/gateway.md.",
    )
    max_batch: int = Field(
        default=500, ge=1, le=10_000, description="Most claims in one batch or CSV upload."
    )
    view_enabled: bool = Field(
        default=True,
        description="Run the outcome-view consumer (claims.approved + investigate + labels).",
    )
    view_group_id: str = Field(
        default="claimflow-gateway-view", description="Consumer group of the outcome view."
    )
    view_stale_s: float = Field(
        default=15.0, gt=0, le=3600,
        description="/readyz reports the outcome view not ready when its consumer has not "
        "completed a poll for this long (it restarts by itself after failures, with backoff).",
    )
    ready_cache_s: float = Field(
        default=2.0, ge=0, le=300,
        description="/readyz checks the broker at most this often and "
        "answers from the last check in between (probes are open to anyone).",
    )
    metrics_cache_s: float = Field(
        default=1.0, ge=0, le=300,
        description="/metrics merges the workers' value files at most this often.",
    )
    db_synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        default="NORMAL",
        description=(
            "SQLite synchronous mode of the gateway's stores. NORMAL (WAL) survives a process "
            "crash; FULL also survives a power cut at ~1.3 ms per commit here."
        ),
    )
    page_refresh_s: float = Field(
        default=2.0, gt=0, le=3600, description="How often the web page polls for new data."
    )

    @property
    def state_dir(self) -> Path:
        """The gateway's folder under CLAIMFLOW_HOME (created by the stores when opened)."""
        return self.home / "gateway"

    @property
    def submissions_db(self) -> Path:
        """First decisions of submitted claims: what makes submissions idempotent."""
        return self.state_dir / "submissions.db"

    @property
    def submissions_lock(self) -> Path:
        """Byte-range locks that keep worker processes from deciding one claim_id twice."""
        return self.state_dir / "submissions.lock"

    @property
    def outcomes_db(self) -> Path:
        """The outcome view, filled from the decision topics."""
        return self.state_dir / "outcomes.db"

    @property
    def outcome_topics(self) -> list[str]:
        return [self.approved_topic, self.investigate_topic]

    @property
    def reply_topics(self) -> list[str]:
        """What the reply consumer reads: the decisions and the dead letters."""
        return [*self.outcome_topics, self.deadletter_topic]

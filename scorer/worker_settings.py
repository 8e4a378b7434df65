"""Settings of the stream worker (``claimflow score``) and of ``claimflow tail``: env prefix
``SCORER_``. Built once in the command and passed down; nothing else reads the environment."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import TOPICS, CommonSettings

OutcomeName = Literal["approved", "investigate", "deadletter"]


class ScorerSettings(CommonSettings):
    """Everything the stream worker needs (all overridable as ``SCORER_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="SCORER_", frozen=True, extra="ignore")

    group_id: str = Field(default="claimflow-scorer", description="Consumer group of the workers.")
    input_topic: str = Field(default=TOPICS.claims, description="Topic the claims are read from.")
    approved_topic: str = Field(default=TOPICS.approved, description="Approved decisions.")
    investigate_topic: str = Field(
        default=TOPICS.investigate, description="Decisions flagged for investigation."
    )
    deadletter_topic: str = Field(
        default=TOPICS.deadletter, description="Input that could not be processed."
    )
    shadow_topic: str = Field(
        default=TOPICS.shadow,
        description="One ShadowScore per decided claim while the model service scores a "
        "challenger in shadow, in the batch's transaction.",
    )
    shadow: bool = Field(
        default=True,
        description="Ask the model service for shadow answers (only a served challenger "
        "costs anything); false: never write shadow records.",
    )
    member_state_topic: str = Field(
        default="",
        description="Compacted changelog of the member stage's state, created with the claims "
        "topic's partition count; restores a worker's members on assignment. Empty: "
        "'<group_id>.member-state' (state belongs to the consumer group, like its offsets).",
    )
    batch_max_size: int = Field(
        # Each batch pays one model call and one transaction (~10 ms together here): 1000
        # amortizes them (1.3x the throughput of 500) while a batch's model call stays short
        # for the gateway's requests to the same service. Batches fill only under load.
        default=1000,
        ge=1,
        le=10_000,
        description="Most messages in one batch (one model call, one transaction).",
    )
    batch_max_wait_ms: int = Field(
        default=10,
        ge=1,
        le=60_000,
        description="Longest an idle worker waits for a batch to fill (a busy one never waits).",
    )
    max_claim_bytes: int = Field(
        default=16_384,
        ge=256,
        # Its dead letter (base64, a third larger) must fit the broker's default 1 MB limit.
        le=512_000,
        description="Larger input messages are dead-lettered unread (first bytes kept).",
    )
    model_url: str = Field(
        default="http://127.0.0.1:3000", description="Base URL of the model service."
    )
    model_timeout_s: float = Field(default=10.0, gt=0, description="Model-service call timeout.")
    retry_initial_s: float = Field(
        default=0.2, gt=0, description="First wait after the model service failed."
    )
    retry_max_s: float = Field(
        default=5.0, gt=0, description="Cap of the exponential backoff between model retries."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="Prometheus port of worker 0 (worker i uses port + i); 0 turns metrics off.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface of the metrics server (0.0.0.0 in a container to be scraped).",
    )
    transactional_id_prefix: str = Field(
        default_factory=lambda: f"claimflow-scorer-{socket.gethostname()}",
        description="Worker i's transactional.id is '<prefix>-<i>' (stable across restarts).",
    )
    transaction_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="Broker aborts a dead worker's open transaction after this long.",
    )
    session_timeout_ms: int = Field(
        default=6_000, ge=1_000, description="A dead worker leaves the group after this long."
    )
    static_membership: bool = Field(
        default=False,
        description="Join the group as a static member (group.instance.id = the worker's "
        "transactional.id): a worker restarted under the same id gets its partitions back "
        "at once instead of after the session timeout. A stopped static worker does not "
        "leave the group: its partitions wait up to the session timeout for it to return.",
    )
    state_prefetch: bool = Field(
        default=True,
        description="Read the whole member-state changelog while waiting for the first "
        "partition assignment (a replacement waits out its killed predecessor's session), "
        "then only what was written since to the assigned partitions. Costs a read of every "
        "partition, not just the assigned ones, once at start. Not used with static "
        "membership, whose assignment comes at once.",
    )
    lag_interval_s: float = Field(
        default=2.0, gt=0, description="How often the consumer-lag gauge is refreshed."
    )

    @property
    def changelog_topic(self) -> str:
        return self.member_state_topic or TOPICS.changelog(self.group_id)

    def outcome_topic(self, name: OutcomeName) -> str:
        topics: dict[OutcomeName, str] = {
            "approved": self.approved_topic,
            "investigate": self.investigate_topic,
            "deadletter": self.deadletter_topic,
        }
        return topics[name]

    def transactional_id(self, instance: int) -> str:
        return f"{self.transactional_id_prefix}-{instance}"

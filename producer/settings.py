"""Producer settings (env prefix ``PRODUCER_``), built once by the command and passed down."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import TOPICS, CommonSettings

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class ProducerSettings(CommonSettings):
    """``KAFKA_BOOTSTRAP_SERVERS`` and ``CLAIMFLOW_HOME`` are shared; the rest is prefixed."""

    model_config = SettingsConfigDict(env_prefix="PRODUCER_", frozen=True, extra="ignore")

    topic: str = Field(default=TOPICS.claims, min_length=1, description="Topic claims go to.")
    linger_ms: int = Field(
        default=50, ge=0, le=5000,
        description="librdkafka linger.ms: how long a batch may wait to fill up "
        "(at most 5 ms with --rate).",
    )
    batch_size: int = Field(
        default=1_000_000, ge=1, le=2_000_000,
        description="librdkafka batch.size in bytes (keep below the broker's message.max.bytes).",
    )
    compression: Compression = Field(default="lz4", description="Batch compression codec.")
    queue_max_messages: int = Field(
        default=1_000_000, ge=1000,
        description="librdkafka queue.buffering.max.messages: claims in flight locally.",
    )
    delivery_timeout_ms: int = Field(
        default=120_000, ge=1000,
        description="librdkafka delivery.timeout.ms: a claim not acknowledged by then fails.",
    )
    flush_timeout_s: float = Field(
        default=120.0, gt=0,
        description="How long the final flush (also after Ctrl-C) waits for acknowledgements.",
    )
    metadata_timeout_s: float = Field(
        default=10.0, gt=0, description="How long to wait for the broker when starting."
    )

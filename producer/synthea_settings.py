"""Settings of the Synthea profile (env prefix ``SYNTHEA_``), built once by a command.

``CLAIMFLOW_HOME`` is shared (``CommonSettings``); the rest is prefixed, e.g.
``SYNTHEA_CACHE_DIR`` or ``SYNTHEA_JAVA``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import CommonSettings

SYNTHEA_VERSION = "3.3.0"


class SyntheaSettings(CommonSettings):
    """Where Synthea's jars and its runs are cached, and how Java is started."""

    model_config = SettingsConfigDict(env_prefix="SYNTHEA_", frozen=True, extra="ignore")

    java: str = Field(default="java", description="Java 11+ executable (name on PATH or path).")
    mvn: str = Field(default="mvn", description="Maven executable used to fetch Synthea's jars.")
    cache_dir: Path = Field(
        default=Path("~/.cache/claimflow"),
        description="Cache outside the repository: synthea-<version>/libs (jars) and "
        "synthea-<version>/runs (Synthea's CSV output, one folder per argument set).",
    )
    runs_dir: Path | None = Field(
        default=None,
        description="Cache of Synthea's output instead of <cache_dir>/synthea-<version>/runs.",
    )
    heap: str | None = Field(
        # The JVM's default (a quarter of RAM) let 400 patients grow to 5.2 GB RSS here; with
        # 2 GB they ran in 114 s at 2.2 GB RSS (docs/producer.md). None: the JVM default.
        default="2g", pattern=r"^\d+[kmgKMG]$",
        description="Java heap (-Xmx) of a Synthea run.",
    )
    run_timeout_s: float = Field(
        default=3600.0, gt=0, description="How long one Synthea run may take before it is killed."
    )

    @property
    def jars_root(self) -> Path:
        return self.cache_dir.expanduser().resolve() / f"synthea-{SYNTHEA_VERSION}"

    @property
    def libs_dir(self) -> Path:
        return self.jars_root / "libs"

    @property
    def runs_root(self) -> Path:
        """Synthea's cached output, one folder per argument set."""
        if self.runs_dir is not None:
            return self.runs_dir.expanduser().resolve()
        return self.jars_root / "runs"

"""Logging configured once per entry point (never at import time)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Configure the root logger for a command-line entry point."""
    logging.basicConfig(level=level, format=LOG_FORMAT, force=True)
    # Third-party libraries are chatty at INFO; our own loggers carry the story.
    for noisy in ("urllib3", "httpx", "httpcore", "alembic", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

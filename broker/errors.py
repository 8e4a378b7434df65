"""The one exception type the broker package raises for problems a user can act on."""

from __future__ import annotations


class BrokerError(Exception):
    """A clear, actionable failure (missing tool, port taken, broker did not come up, ...)."""

"""The gateway's small exception hierarchy; library errors are translated at the boundary."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A site config is unusable; the message names file, field path and what was expected."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: invalid site config\n{lines}")


class NeedsAttention(GatewayError):
    """A connection refused for a reason a person must fix (trust, credentials, settings).

    The supervisor logs each new one, even in the middle of an outage whose other
    failures it keeps at debug level: the machine came back, and now refuses the
    gateway's certificate, is worth a line.
    """


class PayloadError(GatewayError):
    """One message from a machine could not be turned into samples; it goes to dead letters."""


class SinkError(GatewayError):
    """A sink could not deliver a batch.

    ``retryable`` False means the server refused the points themselves (bad line, type
    conflict): retrying the same points can never succeed, so they are bisected and
    quarantined instead of blocking the spool.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class PluginError(GatewayError):
    """An adapter or sink plugin cannot be used: not importable, wrong kind, missing library."""

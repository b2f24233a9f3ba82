"""What one connection sent that the contract refuses: counted, logged sparingly, budgeted.

A client's bad input is never a traceback: it is a Prometheus count by reason, at most one
warning line per connection per `log_interval_s` (the rest are counted into that line), and a
token bucket of `budget` rejections refilled at `refill_per_s`; a connection that empties it
is closed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter

from signaling.ratelimit import TokenBucket

log = logging.getLogger("signaling.edge")

REJECTED = Counter(
    "signaling_rejected_total", "Client input refused at the edge or by validation", ["reason"]
)
CLOSED = Counter("signaling_client_closes_total", "Connections the server closed", ["reason"])


@dataclass(frozen=True)
class EdgePolicy:
    """The limits of the edge, from the settings (README, "Configuration")."""

    send_queue_max_bytes: int = 2_000_000
    send_queue_max_age_s: float = 20.0
    reject_budget: int = 100
    reject_refill_per_s: float = 1.0
    reject_log_interval_s: float = 10.0


class Rejects:
    """One connection's rejections; `note` says when its budget is spent."""

    __slots__ = ("bucket", "interval", "logged_at", "suppressed", "total")

    def __init__(self, policy: EdgePolicy) -> None:
        self.bucket = TokenBucket(policy.reject_refill_per_s, policy.reject_budget)
        self.interval = policy.reject_log_interval_s
        self.logged_at = -policy.reject_log_interval_s
        self.suppressed = 0
        self.total = 0

    def note(self, who: str, reason: str, detail: str) -> bool:
        """Counts one refused input; True when the connection has used up its budget."""
        REJECTED.labels(reason).inc()
        self.total += 1
        now = time.monotonic()
        if now - self.logged_at >= self.interval:
            more = f" (+{self.suppressed} more since the last line)" if self.suppressed else ""
            log.warning("client %s: refused %s: %s%s", who, reason, detail, more)
            self.logged_at = now
            self.suppressed = 0
        else:
            self.suppressed += 1
        return not self.bucket.take()


def closing(who: str, reason: str, detail: str) -> None:
    """Counts a connection the server closes and says why, in one line."""
    CLOSED.labels(reason).inc()
    log.warning("client %s: closing the connection: %s (%s)", who, reason, detail)

"""What a namespace's link does: a token bucket per direction, nftables rules for UDP."""

from __future__ import annotations

from dataclasses import dataclass

MTU_FRAME = 1514
"""Bytes tbf counts for a full-size packet on a veth (1500 + the Ethernet header)."""
DEFAULT_QUEUE_MS = 100.0
"""How long a packet may wait in a shaper's queue before tail drop (see `TokenBucket`)."""
NFT_TABLE = "studycall"
"""The namespace's own nftables table (netdev family): never the host's ruleset."""


@dataclass(frozen=True)
class TokenBucket:
    """One direction's `tc tbf`: rate, bucket (burst) and queue (latency).

    - **burst** is the bucket: what may leave back to back at line rate. Two full frames,
      or 10 ms of the rate when that is more: at least one MTU (tbf drops a packet larger
      than the bucket), small enough that a video frame's burst of packets queues instead of
      passing unshaped (at 300 kbit/s, 3 kB is 80 ms of the link).
    - **latency** bounds the queue (tbf's limit = rate x latency + burst): 100 ms by
      default, a modest access-link buffer. Long enough that a delay-based estimator (GCC)
      sees the queue build before it overflows; short enough not to add seconds of
      bufferbloat. Beyond it packets are tail-dropped, as at a real bottleneck.
    """

    rate_kbit: float
    burst_bytes: int
    latency_ms: float

    def tc_args(self) -> list[str]:
        return [
            "tbf",
            "rate",
            f"{self.rate_kbit:g}kbit",
            "burst",
            str(self.burst_bytes),
            "latency",
            f"{self.latency_ms:g}ms",
        ]

    def as_dict(self) -> dict[str, float]:
        return {
            "rate_kbit": self.rate_kbit,
            "burst_bytes": self.burst_bytes,
            "latency_ms": self.latency_ms,
        }


def token_bucket(
    rate_kbit: float, *, latency_ms: float = DEFAULT_QUEUE_MS, burst_bytes: int | None = None
) -> TokenBucket:
    """The tbf for `rate_kbit` (kilobits per second, 1000 bits) with the defaults above."""
    if rate_kbit <= 0:
        raise ValueError(f"rate must be positive, not {rate_kbit} kbit/s")
    if latency_ms <= 0:
        raise ValueError(f"queue latency must be positive, not {latency_ms} ms")
    if burst_bytes is None:
        burst_bytes = max(2 * MTU_FRAME, int(rate_kbit * 1000 / 8 * 0.010))
    if burst_bytes < MTU_FRAME:
        raise ValueError(f"burst {burst_bytes} B is below one frame ({MTU_FRAME} B)")
    return TokenBucket(rate_kbit, burst_bytes, latency_ms)


def udp_loss_rule(percent: int) -> str:
    """An nft rule dropping `percent` % of UDP datagrams at random (`numgen random`)."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"loss is a whole percentage 0-100, not {percent!r}")
    return f"meta l4proto udp numgen random mod 100 < {percent} drop"


UDP_BLOCK_RULE = "meta l4proto udp drop"


def reset_table() -> str:
    """nft script removing our table whether or not it exists (declare, then delete:
    `nft -f` applies a script as one transaction)."""
    return f"table netdev {NFT_TABLE}\ndelete table netdev {NFT_TABLE}\n"


def filter_table(device: str, *, uplink: str, downlink: str) -> str:
    """nft script replacing our table: `uplink` applies to what leaves through `device`,
    `downlink` to what arrives on it.

    netdev hooks (egress, ingress) on the device itself: a packet dropped on its way out is
    gone without the sender hearing of it, as on a lossy link. (A drop in the inet family's
    output hook fails the sender's `sendto` with EPERM, which no real network does.)
    """
    return (
        reset_table()
        + f"table netdev {NFT_TABLE} {{\n"
        + "  chain uplink {\n"
        + f'    type filter hook egress device "{device}" priority 0; policy accept;\n'
        + f"    {uplink}\n  }}\n"
        + "  chain downlink {\n"
        + f'    type filter hook ingress device "{device}" priority 0; policy accept;\n'
        + f"    {downlink}\n  }}\n"
        + "}\n"
    )

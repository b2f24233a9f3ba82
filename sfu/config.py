"""The media plane's settings, as signaling (or a worker process) hands them over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from .source import SourceConfig


@dataclass(frozen=True)
class MediaConfig:
    """Settings of the media plane."""

    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    """RTCIceServer dicts ``{urls, username?, credential?}`` for the server's gathering."""
    video_codec: Literal["VP8", "H264"] = "VP8"
    keyframe_interval_s: float = 0.5
    """Minimum spacing of PLIs sent to one publisher's track."""
    answer_timeout_s: float = 15.0
    """An offer unanswered this long is sent again once; then the participant is dropped."""
    source: SourceConfig | None = None
    """Loss-repair bounds; defaults follow ``keyframe_interval_s``."""

    def source_config(self) -> SourceConfig:
        return self.source or SourceConfig(keyframe_interval_s=self.keyframe_interval_s)

    def rtc_config(self) -> RTCConfiguration:
        """What every server-side connection is created with (all media on one transport)."""
        return RTCConfiguration(
            iceServers=ice_servers(self), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )


def ice_servers(config: MediaConfig) -> list[RTCIceServer]:
    """The configured ICE servers; a malformed entry is a ValueError at start-up."""
    servers = []
    for entry in config.ice_servers:
        try:
            servers.append(
                RTCIceServer(
                    urls=entry["urls"],
                    username=entry.get("username"),
                    credential=entry.get("credential"),
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad ICE server entry {entry!r}") from exc
    return servers

"""Every setting, from flags, environment variables or `.env` (pydantic-settings)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from signaling.domain import Policy, Topology


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    room_mode: Policy = "auto"
    mesh_max: int = Field(default=3, ge=2, le=64)
    guide_room_mode: Topology = "mesh"
    """The guide dialect's rooms: mesh as the guide documents, or carried by the SFU, which
    answers each member's offers as the peer. No auto: see docs/protocol.md section 3."""
    redis_url: str | None = None
    redis_prefix: str = "studycall"
    jwt_secret: str | None = None
    auth_verify_url: str | None = None
    membership_url: str | None = None
    api_key: str | None = None
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    ice_servers: Annotated[list[dict[str, Any]], NoDecode] = Field(default_factory=list)
    max_participants: int = Field(default=16, ge=2, le=256)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    node_id: str | None = None

    # Limits of docs/protocol.md section 6.
    max_http_buffer_size: int = 1_000_000
    max_sdp_chars: int = 100_000
    max_room_id_chars: int = 100
    max_chat_chars: int = 4_000
    rate_per_second: float = 50.0
    rate_burst: int = 100
    ping_interval: float = 25.0
    ping_timeout: float = 60.0
    chat_history: int = Field(default=100, ge=1, le=10_000)

    # The edge (signaling/edge): a client that stops reading is cut off once this much waits
    # for it or its oldest packet waited this long; a client that keeps sending input the
    # contract refuses is closed once it spends its budget (refilled per second).
    send_queue_max_bytes: int = Field(default=2_000_000, ge=10_000)
    send_queue_max_age_s: float = Field(default=20.0, gt=0)
    reject_budget: int = Field(default=100, ge=1)
    reject_refill_per_s: float = Field(default=1.0, ge=0)
    reject_log_interval_s: float = Field(default=10.0, ge=0)

    # Multi-node liveness: a node is dead when its heartbeat key has expired.
    node_heartbeat_s: float = 2.0
    node_ttl_s: float = 6.0

    sfu_video_codec: Literal["VP8", "H264"] = "VP8"
    # Media workers: processes sharing this node's peer connections (1: in this process).
    media_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    media_placement: Literal["load", "spread"] = "load"
    """load: a room stays on one worker while it fits; spread: each joiner on the next."""
    media_pipe_host: str = "127.0.0.1"
    """Where this node's workers listen for the pipes between them."""
    media_pipe_advertise: str | None = None
    """The address other nodes send pipes to, when it is not MEDIA_PIPE_HOST (NAT,
    containers: listen on 0.0.0.0, advertise the host's address)."""
    media_worker_capacity_pps: float = Field(default=30_000.0, gt=0)
    """Forwarded packets/s a worker takes before a room spills onto another one (`load`)."""
    # An SFU offer unanswered this long is sent again once, then the client's media is
    # dropped (its signaling stays). A connection the client closes or that fails gets a
    # fresh offer after SFU_RETRY_BACKOFF_S, doubling for each retry (at most 3).
    sfu_answer_timeout_s: float = Field(default=15.0, gt=0)
    sfu_retry_backoff_s: float = Field(default=1.0, ge=0)

    # Durable history (signaling/history): unset = SQLite in DATA_DIR; `memory`; or a URL.
    database_url: str | None = None
    data_dir: Path = Path("data")
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    """normal: acks survive any death of the process; full: a power cut too (an fsync each)."""
    history_days: int = Field(default=0, ge=0)
    """Delete chat, notifications and ended calls older than this many days; 0 keeps all."""
    history_cleanup_s: float = Field(default=3600.0, gt=0)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _parse_ice_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @model_validator(mode="after")
    def _pipes_reachable(self) -> Settings:
        """Other nodes cannot send pipes to a wildcard address: say so at start-up."""
        wildcard = self.media_pipe_host in ("0.0.0.0", "::")
        if self.redis_url and wildcard and not self.media_pipe_advertise:
            raise ValueError(
                f"MEDIA_PIPE_HOST={self.media_pipe_host} with REDIS_URL needs "
                "MEDIA_PIPE_ADVERTISE: the address the other nodes send this node's pipes to"
            )
        return self

    @property
    def auth_mode(self) -> Literal["jwt", "verify-url", "open"]:
        if self.jwt_secret:
            return "jwt"
        if self.auth_verify_url:
            return "verify-url"
        return "open"

    @property
    def cors_origins(self) -> str | list[str]:
        return "*" if "*" in self.allowed_origins else self.allowed_origins

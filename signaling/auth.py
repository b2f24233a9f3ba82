"""Who is connecting: open mode, an HS256 JWT, or the application's verify URL."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from signaling.config import Settings
from signaling.domain import User

log = logging.getLogger(__name__)

MAX_USER_ID = 128


class AuthError(Exception):
    """Refuses the connection; the message is what the client sees in `connect_error`."""


@dataclass(frozen=True)
class Identity:
    user: User
    role: str | None = None
    rooms: list[str] | None = None
    token: str | None = field(default=None, repr=False)


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def guest(socket_id: str) -> Identity:
    """An anonymous guest (open mode, no `auth`: the guide's client sends none)."""
    return Identity(User(id=f"guest:{socket_id}", name=f"Guest {socket_id[:4]}"))


class Authenticator:
    def __init__(self, settings: Settings, http: aiohttp.ClientSession | None) -> None:
        self.settings = settings
        self.http = http

    async def authenticate(self, auth: Any, socket_id: str) -> Identity:
        """Who connects; `auth` is what the client's `io(url, { auth })` sent (None: nothing)."""
        if auth is None and self.settings.auth_mode == "open":
            return guest(socket_id)
        if not isinstance(auth, dict):
            raise AuthError("Authentication required")
        user_id = auth.get("userId")
        if not isinstance(user_id, str) or not user_id:
            raise AuthError("Authentication required")
        if len(user_id) > MAX_USER_ID:
            raise AuthError("Authentication failed")
        token = auth.get("token")
        mode = self.settings.auth_mode
        if mode == "jwt":
            return self._verify_jwt(user_id, token)
        if mode == "verify-url":
            return await self._verify_url(user_id, token)
        name = _text(auth.get("name"), 100) or user_id
        return Identity(User(id=user_id, name=name, avatar=_text(auth.get("avatar"), 2048)))

    def _verify_jwt(self, user_id: str, token: Any) -> Identity:
        if not isinstance(token, str) or not token:
            raise AuthError("Authentication failed")
        assert self.settings.jwt_secret is not None
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=["HS256"],
                options={"require": ["sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("jwt refused: %s", type(exc).__name__)
            raise AuthError("Authentication failed") from None
        if claims.get("sub") != user_id:
            raise AuthError("Authentication failed")
        rooms = claims.get("rooms")
        if rooms is not None and not (
            isinstance(rooms, list) and all(isinstance(r, str) for r in rooms)
        ):
            raise AuthError("Authentication failed")
        role = claims.get("role") if isinstance(claims.get("role"), str) else None
        user = User(
            id=user_id,
            name=_text(claims.get("name"), 100) or user_id,
            avatar=_text(claims.get("avatar"), 2048),
        )
        return Identity(user, role=role, rooms=rooms, token=token)

    async def _verify_url(self, user_id: str, token: Any) -> Identity:
        if not isinstance(token, str) or not token or self.http is None:
            raise AuthError("Authentication failed")
        assert self.settings.auth_verify_url is not None
        try:
            async with self.http.post(
                self.settings.auth_verify_url,
                json={"userId": user_id},
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                if response.status // 100 != 2:
                    raise AuthError("Authentication failed")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            log.warning("auth verify URL unreachable or invalid answer")
            raise AuthError("Authentication failed") from None
        raw = body.get("user") if isinstance(body, dict) else None
        if not isinstance(raw, dict) or str(raw.get("id", user_id)) != user_id:
            raise AuthError("Authentication failed")
        user = User(
            id=user_id,
            name=_text(raw.get("name"), 100) or user_id,
            avatar=_text(raw.get("avatar"), 2048),
        )
        role = raw.get("role") if isinstance(raw.get("role"), str) else None
        rooms = raw.get("rooms") if isinstance(raw.get("rooms"), list) else None
        return Identity(user, role=role, rooms=rooms, token=token)


class MembershipChecker:
    """Asks the application whether a user belongs to a room or study (documents' check-member).

    POSTs `{userId, roomId?, studyId?}` to MEMBERSHIP_URL; `{roomId}` / `{studyId}` in the URL are
    filled in. 2xx means member; anything else, or no answer, means not a member.
    """

    def __init__(self, url: str | None, http: aiohttp.ClientSession | None) -> None:
        self.url = url
        self.http = http

    async def is_member(
        self, identity: Identity, *, room_id: str | None = None, study_id: str | None = None
    ) -> bool:
        if self.url is None or identity.role == "host":
            return True
        if self.http is None:
            return False
        url = self.url.replace("{roomId}", room_id or "").replace("{studyId}", study_id or "")
        body: dict[str, str] = {"userId": identity.user.id}
        if room_id is not None:
            body["roomId"] = room_id
        if study_id is not None:
            body["studyId"] = study_id
        headers = {"Authorization": f"Bearer {identity.token}"} if identity.token else {}
        try:
            async with self.http.post(
                url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                return response.status // 100 == 2
        except (aiohttp.ClientError, TimeoutError):
            log.warning("membership URL unreachable; refusing the join")
            return False

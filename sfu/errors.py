"""The media plane's one error: a client's mistake, never a crash."""


class MediaError(Exception):
    """Bad SDP, bad candidate or unknown participant (a client error, not a crash)."""

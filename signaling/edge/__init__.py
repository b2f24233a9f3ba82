"""The network edge: every private seam of python-socketio and python-engineio, in one place.

`engine` (Engine.IO connections: the lean websocket loop, bounded buffers, closes that close),
`server` (Socket.IO dispatch: only registered client events reach a handler), `frames` (pure
functions reading packets) and `rejects` (counting and budgeting what clients get wrong).
Both libraries are pinned to the series this was written for, and checked here.
"""

from __future__ import annotations

from importlib.metadata import version

for _package, _series in (("python-engineio", "4.15."), ("python-socketio", "5.18.")):
    if not version(_package).startswith(_series):  # pragma: no cover
        raise RuntimeError(f"signaling.edge is written for {_package} {_series}x")

from signaling.edge import engine  # noqa: E402
from signaling.edge.frames import encode_event  # noqa: E402
from signaling.edge.rejects import EdgePolicy  # noqa: E402
from signaling.edge.server import AckError, Dispatch, EdgeServer  # noqa: E402

engine.install()

__all__ = ["AckError", "Dispatch", "EdgePolicy", "EdgeServer", "encode_event"]

"""`python -m signaling`: run one node; `python -m signaling migrate`: migrate the database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from signaling import logs
from signaling.app import Application
from signaling.config import Settings

log = logging.getLogger("signaling")


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="signaling", description="Socket.IO signaling server with an aiortc SFU."
    )
    parser.add_argument("--host", help="interface to bind (HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port, 0 for any free one (PORT, default 8080)")
    parser.add_argument("--mode", choices=["mesh", "sfu", "auto"], help="ROOM_MODE, default auto")
    parser.add_argument("--mesh-max", type=int, help="MESH_MAX: auto mode's largest mesh room")
    parser.add_argument(
        "--guide-mode", choices=["mesh", "sfu"], help="GUIDE_ROOM_MODE, default mesh"
    )
    parser.add_argument("--redis-url", help="REDIS_URL: share state with other nodes")
    parser.add_argument(
        "--database-url", help="DATABASE_URL: unset = SQLite in DATA_DIR, memory, or a URL"
    )
    parser.add_argument(
        "--media-workers", type=int, help="MEDIA_WORKERS: media processes (default: CPUs)"
    )
    args = parser.parse_args(argv)
    overrides = {
        "host": args.host,
        "port": args.port,
        "room_mode": args.mode,
        "mesh_max": args.mesh_max,
        "guide_room_mode": args.guide_mode,
        "redis_url": args.redis_url,
        "database_url": args.database_url,
        "media_workers": args.media_workers,
    }
    return {key: value for key, value in overrides.items() if value is not None}


async def serve(settings: Settings) -> None:
    application = Application(settings)
    runner = web.AppRunner(application.web, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=5.0)
    await site.start()
    # Start-up objects (modules, settings, routes) never die: keep them out of every GC pass.
    gc.freeze()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    print(f"Listening on http://{settings.host}:{port}", flush=True)
    log.info(
        "node %s: mode=%s auth=%s redis=%s",
        application.node_id,
        settings.room_mode,
        settings.auth_mode,
        "on" if settings.redis_url else "off",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()


async def migrate_only(settings: Settings) -> int:
    """Brings the configured database to the newest schema and exits (no server)."""
    from signaling.history.database import create_engine, migrate, redacted, resolve_url

    url = resolve_url(settings.database_url, settings.data_dir)
    if url is None:
        print("DATABASE_URL=memory: nothing to migrate")
        return 0
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    print(f"{redacted(url)} is at the newest schema")
    return 0


def load_settings(argv: list[str]) -> Settings:
    """The settings, or exit 2 with what is wrong with them (no traceback for a typo)."""
    try:
        return Settings(**parse_args(argv))
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            print(f"signaling: {where}: {error['msg']}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["migrate"]:
        settings = load_settings(args[1:])
        logs.configure(settings.log_level, settings.log_format)
        sys.exit(asyncio.run(migrate_only(settings)))
    settings = load_settings(args)
    logs.configure(settings.log_level, settings.log_format)
    from signaling.history import DatabaseUnavailable
    from signaling.store.redis import StoreUnavailable

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; Windows lacks it
        pass
    try:
        asyncio.run(serve(settings))
    except (StoreUnavailable, DatabaseUnavailable) as exc:
        print(f"signaling: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()

"""The guide's own client (tests/js/guide_client.mjs, from the document's hook code) with the
official socket.io-client: it sends no `auth`. In open mode it connects as an anonymous guest
and its rooms work; with a JWT secret it is refused (`connect_error: Authentication required`).
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.server import ROOT, running_server

SCRIPT = ROOT / "tests" / "js" / "guide_client.mjs"
CLIENT = ROOT / "web" / "node_modules" / "socket.io-client" / "package.json"
NODE_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not CLIENT.exists(),
    reason="needs node and web/node_modules/socket.io-client (npm install in web/)",
)


async def run_guide_client(url: str, expect: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        url,
        expect,
        cwd=str(SCRIPT.parent),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


@pytest.mark.parametrize(
    "jwt_secret,expect",
    [("", "open"), ("s" * 64, "refused")],
    ids=["open-mode-guest", "jwt-mode-refused"],
)
async def test_the_guides_client_unmodified(jwt_secret: str, expect: str) -> None:
    async with running_server(ROOM_MODE="mesh", JWT_SECRET=jwt_secret, AUTH_VERIFY_URL="") as node:
        assert f"PASS {expect}" in await run_guide_client(node.url, expect)

"""docs/protocol.md through the official JS `socket.io-client` (tests/js/contract.mjs), by section.

One real `python -m signaling` process (API_KEY set, ROOM_MODE=mesh) serves every section;
each section is its own `node` run so a failure names the part of the contract that broke.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.server import ROOT, running_command, server_env

SCRIPT = ROOT / "tests" / "js" / "contract.mjs"
CLIENT = ROOT / "web" / "node_modules" / "socket.io-client" / "package.json"
API_KEY = "js-contract-key"
NODE_TIMEOUT = 20.0
STARTUP_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not CLIENT.exists(),
    reason="needs node and web/node_modules/socket.io-client (npm install in web/)",
)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The real server process, shared by the sections (each uses its own room names)."""
    env = server_env({"API_KEY": API_KEY, "ROOM_MODE": "mesh", "DATABASE_URL": "memory"})
    with running_command(
        [sys.executable, "-m", "signaling"], env=env, startup_timeout=STARTUP_TIMEOUT
    ) as server:
        yield server.url


def run_section(url: str, section: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(SCRIPT), url, API_KEY, section],
        cwd=Path(SCRIPT).parent,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )


SECTIONS = [
    "connecting",
    "video-websocket",
    "video-polling",
    "guide",
    "studies",
    "pairing",
    "http",
    "chat-user-shape",
]


@pytest.mark.parametrize("section", SECTIONS)
def test_js_client_section(server_url: str, section: str) -> None:
    result = run_section(server_url, section)
    assert result.returncode == 0, (
        f"node exited {result.returncode}\n{result.stdout}{result.stderr}"
    )
    assert f"PASS {section}" in result.stdout, result.stdout

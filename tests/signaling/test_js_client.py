"""PROTOCOL.md through the official JS `socket.io-client` (tests/js/contract.mjs), by section.

One real `python -m signaling` process (API_KEY set, ROOM_MODE=mesh) serves every section;
each section is its own `node` run so a failure names the part of the contract that broke.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LISTENING, ROOT

SCRIPT = ROOT / "tests" / "js" / "contract.mjs"
CLIENT = ROOT / "web" / "node_modules" / "socket.io-client" / "package.json"
API_KEY = "js-contract-key"
NODE_TIMEOUT = 20.0
STARTUP_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not CLIENT.exists(),
    reason="needs node and web/node_modules/socket.io-client (npm install in web/)",
)


def _wait_for_url(process: subprocess.Popen[str]) -> str:
    """Reads the server's stdout until `Listening on URL`, within STARTUP_TIMEOUT."""
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("server exited before listening")
            if match := LISTENING.search(line):
                return match.group(1)
    raise TimeoutError("server did not print its URL")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The real server process, shared by the sections (each uses its own room names)."""
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "API_KEY": API_KEY,
        "ROOM_MODE": "mesh",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": "memory",
    }
    for name in ("JWT_SECRET", "AUTH_VERIFY_URL", "MEMBERSHIP_URL", "REDIS_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "signaling"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield _wait_for_url(process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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

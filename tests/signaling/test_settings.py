"""A server started with settings it cannot run with says which, and exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MEDIA_"))}
    return subprocess.run(
        [sys.executable, "-m", "signaling", "--port", "0"],
        cwd=ROOT,
        env={**clean, "DATABASE_URL": "memory", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"MEDIA_WORKERS": "abc"}, "MEDIA_WORKERS: Input should be a valid integer"),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0", "MEDIA_PIPE_HOST": "0.0.0.0"},
            "needs MEDIA_PIPE_ADVERTISE",
        ),
    ],
)
def test_a_setting_it_cannot_run_with_is_named_without_a_traceback(
    env: dict[str, str], said: str
) -> None:
    result = start(**env)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "Traceback" not in result.stderr

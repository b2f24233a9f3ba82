"""Smoke test of `python -m benchmarks.mesh_vs_sfu`: two Chromium pages, mesh and sfu.

It checks the benchmark still measures (every row has its fields, the pages upload media),
not how fast anything is: timings belong in benchmarks/, not tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = (
    "mode",
    "participants",
    "upload_bytes_per_s_per_client",
    "download_bytes_per_s_per_client",
    "frames_encoded_per_s_per_client",
    "page_cpu_s_per_s",
    "server_cpu_s_per_s",
    "fps_min",
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's Chromium"),
]


@pytest.mark.timeout(45)
def test_mesh_vs_sfu_benchmark_measures_two_pages_in_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "mesh_vs_sfu.json"
    plot = tmp_path / "mesh_vs_sfu.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.mesh_vs_sfu",
            "--participants",
            "2",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            "--setup-timeout",
            "12",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert sorted(row["mode"] for row in rows) == ["mesh", "sfu"]
    for row in rows:
        missing = [f for f in FIELDS if f not in row]
        assert not missing, (row, missing)
        assert row["participants"] == 2
        assert row["upload_bytes_per_s_per_client"] > 0, row
    assert plot.stat().st_size > 0
    assert "mesh/sfu" in proc.stdout

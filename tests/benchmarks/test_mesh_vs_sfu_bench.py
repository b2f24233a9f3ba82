"""Smoke test of `python -m benchmarks.mesh_vs_sfu`: two Chromium pages, mesh and sfu.

It checks the benchmark still measures (every row has its fields, the pages upload media),
not how fast anything is: timings belong in benchmarks/, not tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import run_benchmark

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


@pytest.mark.timeout(75)
def test_mesh_vs_sfu_benchmark_measures_two_pages_in_every_mode(tmp_path: Path) -> None:
    args = ["--participants", "2", "--seconds", "2", "--warmup", "0.5", "--setup-timeout", "12"]
    run = run_benchmark("mesh_vs_sfu", args, tmp_path, FIELDS, 70)
    assert sorted(row["mode"] for row in run.rows) == ["mesh", "sfu", "sfu-docs"]
    for row in run.rows:
        assert row["participants"] == 2
        assert row["upload_bytes_per_s_per_client"] > 0, row
    assert "mesh/sfu" in run.stdout

"""Smoke test of `python -m benchmarks.signaling`: tiny load against both servers.

It checks the benchmark still measures (every row has its fields, nothing is lost at 8
clients), not how fast anything is: timings belong in benchmarks/, not tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = (
    "server",
    "clients",
    "join_storm_s",
    "rtt_ms_p50",
    "rtt_ms_p99",
    "answered_per_s",
    "sent",
    "lost",
    "rss_kb_per_conn",
)

pytestmark = pytest.mark.skipif(
    not (ROOT / "benchmarks" / "reference" / "node_modules" / "ws").is_dir(),
    reason="benchmarks/reference/node_modules missing (make test-deps installs it)",
)


@pytest.mark.timeout(60)
def test_signaling_benchmark_runs_against_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "signaling.json"
    plot = tmp_path / "signaling.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.signaling",
            "--clients",
            "8",
            "--seconds",
            "2",
            "--grace",
            "2",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {row["server"] for row in rows} == {"python", "node"}
    for row in rows:
        missing = [f for f in FIELDS if f not in row]
        assert not missing, (row, missing)
        assert row["clients"] == 8
        assert row["sent"] > 0
        assert row["lost"] == 0, row
        assert row["errors"] == 0, row
        assert row["rtt_ms_p99"] is not None and row["rtt_ms_p99"] > 0
    assert result["machine"]["nproc"] >= 1
    assert plot.stat().st_size > 0
    assert "ours/node" in proc.stdout

"""Smoke test of `python -m benchmarks.signaling`: tiny load against both servers.

It checks the benchmark still measures (every row has its fields, nothing is lost at 8
clients), not how fast anything is: timings belong in benchmarks/, not tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import ROOT, run_benchmark

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
    run = run_benchmark(
        "signaling", ["--clients", "8", "--seconds", "2", "--grace", "2"], tmp_path, FIELDS, 55
    )
    assert {row["server"] for row in run.rows} == {"python", "node"}
    for row in run.rows:
        assert row["clients"] == 8
        assert row["sent"] > 0
        assert row["lost"] == 0, row
        assert row["errors"] == 0, row
        assert row["rtt_ms_p99"] is not None and row["rtt_ms_p99"] > 0
    assert run.result["machine"]["nproc"] >= 1
    assert "ours/node" in run.stdout

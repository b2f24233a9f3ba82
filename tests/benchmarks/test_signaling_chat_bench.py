"""Smoke test of `python -m benchmarks.signaling --load chat`: acked study messages against our
server with its history in memory, in SQLite and in PostgreSQL.

It checks the benchmark still measures (every row has its fields, every message is acked, none
lost), not how fast anything is: timings belong in benchmarks/, not tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import ROOT, run_benchmark

FIELDS = ("server", "clients", "rtt_ms_p50", "rtt_ms_p99", "answered_per_s", "sent", "lost")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (ROOT / "benchmarks" / "reference" / "node_modules" / "ws").is_dir(),
        reason="benchmarks/reference/node_modules missing (make test-deps installs it)",
    ),
]


@pytest.mark.timeout(90)
def test_chat_benchmark_acks_every_message_on_every_backend(tmp_path: Path, postgres: str) -> None:
    args = ["--load", "chat", "--clients", "8", "--seconds", "2", "--grace", "2"]
    args += ["--postgres-url", postgres]
    run = run_benchmark("signaling", args, tmp_path, FIELDS, 85)
    assert [row["server"] for row in run.rows] == ["memory", "sqlite", "sqlite-full", "postgresql"]
    for row in run.rows:
        assert row["clients"] == 8 and row["load"] == "chat"
        assert row["sent"] > 0 and row["answered"] == row["sent"], row
        assert row["lost"] == 0 and row["errors"] == 0, row
    assert "Chat load" in run.stdout

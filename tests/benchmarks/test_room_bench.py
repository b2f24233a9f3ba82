"""Smoke test of `python -m benchmarks.room` with workers, rooms and the CPU cap.

It checks the benchmark still measures what benchmarks/README.md quotes (rows per rooms x
workers, each worker's CPU, the largest load held and its ratio to one worker), not how
fast anything is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._cpucap import CpuCap
from tests.benchmarks import run_benchmark

FIELDS = (
    "participants",
    "rooms",
    "workers",
    "packets_per_s",
    "fps_min",
    "worker_cpu",
    "worker_cpu_cap",
    "throttled_s_per_s",
)


def _can_cap() -> bool:
    try:
        CpuCap(0.5)
    except (RuntimeError, OSError):
        return False
    return True


@pytest.mark.timeout(150)
@pytest.mark.skipif(not _can_cap(), reason="needs a writable cgroup cpu controller")
def test_room_benchmark_measures_rooms_on_one_and_two_capped_workers(tmp_path: Path) -> None:
    args = ["--participants", "3", "--rooms", "2", "--workers", "1,2", "--modes", "forward"]
    args += ["--rounds", "1", "--seconds", "1.5", "--warmup", "0.5", "--worker-cpu", "0.5"]
    run = run_benchmark("room", args, tmp_path, FIELDS, 140)
    assert sorted(row["workers"] for row in run.rows) == [1, 2]
    for row in run.rows:
        assert row["rooms"] == 2 and row["worker_cpu_cap"] == 0.5
        assert row["packets_per_s"] > 0 and row["fps_min"] > 0, row
    two = next(row for row in run.rows if row["workers"] == 2)
    assert len(two["worker_cpu"]) == 2  # each worker's CPU apart
    held = {c["workers"]: c for c in run.result["capacity"]}
    assert set(held) == {1, 2} and all(c["saturated"] > 0 for c in held.values())
    assert "Largest room held" in run.stdout

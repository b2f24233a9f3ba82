"""Smoke tests of the benchmarks: they still run and report, never how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BenchmarkRun:
    rows: list[dict[str, Any]]
    result: dict[str, Any]
    stdout: str


def run_benchmark(
    module: str, args: list[str], tmp_path: Path, fields: tuple[str, ...], timeout: float
) -> BenchmarkRun:
    """Runs `python -m benchmarks.<module>` with a JSON and a plot file; checks that it
    exited 0, that every row carries `fields` and that the plot was written."""
    out = tmp_path / f"{module}.json"
    plot = tmp_path / f"{module}.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"benchmarks.{module}",
            *args,
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    for row in result["rows"]:
        missing = [f for f in fields if f not in row]
        assert not missing, (row, missing)
    assert plot.stat().st_size > 0
    return BenchmarkRun(result["rows"], result, proc.stdout)

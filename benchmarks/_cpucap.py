"""Hold media processes to a fixed share of a core with a cgroup CPU quota.

Why: on a 2-core machine the load generator shares the cores with the server, so two
workers can never saturate two cores of their own. Capping every media process at the same
fraction of a core makes "a worker" a fixed, smaller unit of CPU, so the scaling from one
worker to two can be measured with the generator beside them. Each process gets its own
cgroup (cgroup v1 ``cpu`` controller or cgroup v2 ``cpu.max``), removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

PERIOD_US = 10_000
"""A short period, so a capped worker is never off the CPU long enough to overflow its
socket buffers (10 ms at a 0.3 quota: at most 7 ms of arrivals queue)."""

_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")


def _root() -> tuple[Path, bool]:
    """The cpu hierarchy to create groups in, and whether it is cgroup v2."""
    if (_V1 / "cpu.cfs_quota_us").exists():
        return _V1, False
    if (_V2 / "cgroup.controllers").exists() and "cpu" in (_V2 / "cgroup.controllers").read_text():
        return _V2, True
    raise RuntimeError("no writable cgroup cpu controller: --worker-cpu needs one (run as root)")


class CpuCap:
    """One cgroup per capped process, each at ``share`` of a core."""

    def __init__(self, share: float) -> None:
        if not 0.01 <= share <= 64:
            raise ValueError("a CPU share is between 0.01 and 64 cores")
        self.share = share
        self.root, self.v2 = _root()
        self.groups: list[Path] = []

    def cap(self, pid: int) -> None:
        group = self.root / f"bench-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        self.groups.append(group)
        quota = int(self.share * PERIOD_US)
        if self.v2:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        # every thread of the process: a v1 "procs" write moves them all
        (group / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Time the capped processes spent throttled (they wanted more than their share)."""
        total = 0.0
        for group in self.groups:
            with contextlib.suppress(OSError):
                for line in (group / "cpu.stat").read_text().splitlines():
                    key, value = line.split()
                    if key == "throttled_time":  # v1, ns
                        total += int(value) / 1e9
                    elif key == "throttled_usec":  # v2
                        total += int(value) / 1e6
        return total

    def release(self) -> None:
        """Move the processes back to the root group and remove the groups."""
        for group in self.groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.root / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                os.rmdir(group)
        self.groups.clear()


@contextlib.contextmanager
def capped(share: float | None, pids: list[int]) -> Iterator[CpuCap | None]:
    """Cap each of ``pids`` at ``share`` of a core for the block (nothing if ``share`` is None)."""
    if share is None:
        yield None
        return
    cap = CpuCap(share)
    try:
        for pid in pids:
            cap.cap(pid)
        yield cap
    finally:
        cap.release()

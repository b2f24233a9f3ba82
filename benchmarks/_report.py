"""What every benchmark reports alongside its numbers: the machine, its load, a progress bar."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

Metric = tuple[str, str, Callable[[Any], str]]  # row key, label, format


def fmt(v: Any) -> str:
    """A table cell: `-` for nothing, thousands separators, two decimals below 100."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def save_figure(fig: Any, axes: Sequence[Any], title: str, path: Path) -> None:
    """Grid and legend on every axis, the title, then the PNG (and the figure closed)."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_progress(console: Console) -> Progress:
    """One bar for the whole sweep plus one per case."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def machine_busy_s() -> float:
    """CPU-seconds all processes have used (every core), to see who else was running."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def machine(**extra: Any) -> dict[str, Any]:
    """What the numbers were measured on (plus the versions a benchmark adds)."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        **extra,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def add_side_by_side(
    table: Table,
    group: str,
    ours: dict[str, Any],
    theirs: dict[str, Any],
    metrics: Sequence[Metric],
) -> None:
    """One table row per metric: our value, the baseline's, and their ratio."""
    for key, label, fmt in metrics:
        a, b = ours.get(key), theirs.get(key)
        ratio = f"{a / b:.2f}x" if isinstance(a, int | float) and b else "-"
        table.add_row(
            group, label, "-" if a is None else fmt(a), "-" if b is None else fmt(b), ratio
        )

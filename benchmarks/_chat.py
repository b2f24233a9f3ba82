"""The chat load of `benchmarks.signaling` (`--load chat`): one server, three history backends.

C clients in studies of R send study messages with acks; the ack comes once the message is
stored. The same server runs with `DATABASE_URL=memory`, with SQLite (a fresh file; `sqlite`
is the default `SQLITE_SYNCHRONOUS=normal`, `sqlite-full` fsyncs every commit) and with
PostgreSQL (a fresh database on `--postgres-url`), one at a time, round after round, so that
the ratios against memory are measured under the same machine load; each cell is the median
of its rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks._postgres import create_database, drop_database
from benchmarks._report import fmt as _fmt
from benchmarks._report import save_figure

VARIANTS = ("memory", "sqlite", "sqlite-full", "postgresql")
MEDIAN_KEYS = (
    "join_storm_s",
    "rtt_ms_p50",
    "rtt_ms_p99",
    "rtt_ms_max",
    "answered_per_s",
    "offered_per_s",
    "server_cpu_s_per_s",
    "server_cpu_us_per_offer",
    "loadgen_cpu_s_per_s",
    "other_cpu_s_per_s",
    "rss_kb_per_conn",
)
SUM_KEYS = ("sent", "answered", "lost", "errors", "disconnects")


@contextmanager
def server_env(variant: str, postgres_server: str) -> Iterator[dict[str, str]]:
    """The history settings of one cell: nothing, a fresh SQLite file, or a fresh database."""
    if variant == "memory":
        yield {"DATABASE_URL": "memory"}
    elif variant.startswith("sqlite"):
        synchronous = "full" if variant == "sqlite-full" else "normal"
        with tempfile.TemporaryDirectory(prefix="studycall-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'history.db'}"
            yield {"DATABASE_URL": url, "SQLITE_SYNCHRONOUS": synchronous}
    else:
        url = asyncio.run(create_database(postgres_server, prefix="studycall_bench"))
        try:
            yield {"DATABASE_URL": url}
        finally:
            asyncio.run(drop_database(url))


def median_rows(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its rounds: medians of the timings, sums of the counts."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    cell = dict(ok[0])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in ok if r.get(key) is not None]
        cell[key] = round(statistics.median(values), 3) if values else None
    for key in SUM_KEYS:
        cell[key] = sum(r.get(key, 0) for r in ok)
    cell["rounds"] = len(ok)
    cell["rtt_ms_p99_rounds"] = [r.get("rtt_ms_p99") for r in ok]
    if len(ok) < len(rounds):
        cell["failed_rounds"] = [r["error"] for r in rounds if "error" in r]
    return cell


METRICS = (
    ("rtt_ms_p50", "ack RTT p50 (ms)"),
    ("rtt_ms_p99", "ack RTT p99 (ms)"),
    ("answered_per_s", "acked/s"),
    ("lost", "lost"),
    ("errors", "errors"),
    ("server_cpu_us_per_offer", "server CPU µs/message"),
    ("server_cpu_s_per_s", "server CPU s/s"),
    ("join_storm_s", "join storm (s)"),
    ("other_cpu_s_per_s", "other processes CPU s/s"),
)


def _ratio(a: Any, b: Any) -> str:
    return (
        f"{a / b:.2f}x" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"
    )


def verdict(memory: dict[str, Any], sqlite: dict[str, Any]) -> str:
    """Issue 12's target: SQLite p99 within 2x of memory, nothing lost."""
    p99 = sqlite.get("rtt_ms_p99")
    ok_rtt = p99 is not None and p99 <= 2 * (memory.get("rtt_ms_p99") or 0)
    ok_lost = sqlite.get("lost") == 0 and sqlite.get("errors") == 0
    miss = [n for n, ok in (("p99", ok_rtt), ("lost", ok_lost)) if not ok]
    return "[green]met" if not miss else f"[red]missed: {', '.join(miss)}"


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Chat load: acked study messages, history in memory vs SQLite vs PostgreSQL")
    others = VARIANTS[1:]
    for col in ("clients", "metric", *VARIANTS, *(f"{v}/memory" for v in others)):
        t.add_column(col, justify="left" if col == "metric" else "right")
    by = {(r["server"], r["clients"]): r for r in rows}
    for clients in sorted({r["clients"] for r in rows}):
        cells = [by.get((v, clients), {}) for v in VARIANTS]
        for key, label in METRICS:
            values = [c.get(key) for c in cells]
            t.add_row(
                str(clients),
                label,
                *(_fmt(v) for v in values),
                *(_ratio(v, values[0]) for v in values[1:]),
            )
        for variant, cell in zip(VARIANTS, cells, strict=True):
            if "error" in cell:
                t.add_row(str(clients), f"[red]{variant} error", cell["error"][:60])
        if cells[0] and cells[1] and "error" not in cells[0] and "error" not in cells[1]:
            t.add_row(str(clients), "target", verdict(cells[0], cells[1]), end_section=True)
    return t


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    lines = [
        f"Measured {meta['date']} on {m['nproc']} x {m['cpu_model']} (Python {m['python']}), "
        f"load average at start {m['load_avg_at_start']}, median of "
        f"{meta['params']['rounds']} rounds per cell:",
        "",
        f"    {meta['command']}",
        "",
        "| clients | history | ack RTT p50 ms | ack RTT p99 ms | p99 vs memory | acked/s | sent "
        "| lost | errors | server CPU µs/msg | other procs CPU s/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["server"], r["clients"]): r for r in rows}
    for clients in sorted({r["clients"] for r in rows}):
        memory = by.get(("memory", clients), {})
        for variant in VARIANTS:
            r = by.get((variant, clients))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {clients} | {variant} | error: {r['error'][:80]} |")
                continue
            cells = [
                clients,
                variant,
                _fmt(r.get("rtt_ms_p50")),
                _fmt(r.get("rtt_ms_p99")),
                _ratio(r.get("rtt_ms_p99"), memory.get("rtt_ms_p99")),
                _fmt(r.get("answered_per_s")),
                _fmt(r.get("sent")),
                _fmt(r.get("lost")),
                _fmt(r.get("errors")),
                _fmt(r.get("server_cpu_us_per_offer")),
                _fmt(r.get("other_cpu_s_per_s")),
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Ack RTT p50 and p99 against C for the three backends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in VARIANTS:
        pts = sorted((r["clients"], r) for r in rows if r["server"] == variant and "error" not in r)
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ax1.plot(xs, [r["rtt_ms_p50"] for _, r in pts], marker="o", label=variant)
        ax2.plot(xs, [r["rtt_ms_p99"] for _, r in pts], marker="o", label=variant)
    ax1.set(xlabel="clients", ylabel="message -> ack p50 (ms)")
    ax2.set(xlabel="clients", ylabel="message -> ack p99 (ms)", yscale="log")
    save_figure(
        fig, (ax1, ax2), "Study chat with acks: history in memory, SQLite, PostgreSQL", path
    )

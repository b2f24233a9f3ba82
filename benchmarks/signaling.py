"""Signaling load benchmark: our server against a plain Node socket.io relay, in the same run.

C clients join rooms of R; each sends a 4 KB `video:offer` RATE times a second to a room-mate,
who answers with a 4 KB `video:answer`. Per server and per C we report the join storm time,
the offer->answer round trip p50/p99, answered/s, lost offers, server RSS per idle connection
and server CPU. The load generator is `benchmarks/reference/loadgen.js` (Node, raw websocket)
so that it costs far less than the servers it measures. Servers run one at a time, each on a
fresh process, because the generator and the server share the machine's cores.

    python -m benchmarks.signaling --clients 100,400,1000 --seconds 10 \\
        --json benchmarks/results/signaling.json --plot benchmarks/results/signaling.png

`--load chat` measures the durable history instead (see `benchmarks/_chat.py`): study
messages with acks, our server with its history in memory, in SQLite and in PostgreSQL.

    python -m benchmarks.signaling --load chat --clients 100,400 --rate 2 --rounds 3 \\
        --json benchmarks/results/chat.json --plot benchmarks/results/chat.png
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from benchmarks import _chat as chat
from benchmarks import _report as report
from benchmarks._report import (
    Metric,
    add_side_by_side,
    machine_busy_s,
    save_figure,
    sweep_progress,
)
from benchmarks._report import (
    fmt as _fmt,
)
from devtools.server import ServerExited, pump_lines, running_command

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "benchmarks" / "reference"
LOADGEN = REFERENCE / "loadgen.js"
TMP = ROOT / "benchmarks" / "results" / "tmp"
SERVERS = ("python", "node")
# Settings that would take our server out of in-memory, open-auth mode.
_SCRUB_ENV = (
    "REDIS_URL",
    "JWT_SECRET",
    "AUTH_VERIFY_URL",
    "MEMBERSHIP_URL",
    "PORT",
    "HOST",
    "DATABASE_URL",
    "SQLITE_SYNCHRONOUS",
)

console = Console(stderr=True)


class BenchError(RuntimeError):
    """A server or the load generator did not behave; the row records the message."""


@dataclass
class Params:
    """One run's knobs, echoed into the JSON so a result says how it was made."""

    clients: list[int]
    rooms_of: int
    rate: float
    seconds: float
    grace: float
    size: int
    concurrency: int
    servers: list[str]
    python_cmd: list[str]
    node_cmd: list[str]
    deflate: bool
    py_spy_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    load: str = "offer"
    rounds: int = 1
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"


@dataclass
class Server:
    """A server subprocess that printed `Listening on http://HOST:PORT`."""

    name: str
    proc: subprocess.Popen[str]
    url: str
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def running(name: str, argv: Sequence[str], env: dict[str, str]) -> Iterator[Server]:
    """Start a server on port 0, wait for its Listening line, stop it afterwards."""
    TMP.mkdir(parents=True, exist_ok=True)
    log = TMP / f"signaling-{name}.log"
    with log.open("w") as err, contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(running_command(argv, env=env, stderr=err))
        except TimeoutError:
            raise BenchError(f"{name} server printed no Listening line in 30 s") from None
        except ServerExited as exc:
            raise BenchError(f"{name} {exc}: {_log_tail(log)}") from None
        yield Server(name, started.process, started.url, log)


class LoadGen:
    """One run of loadgen.js; its JSON-lines events are read with a timeout."""

    def __init__(self, url: str, p: Params, clients: int, seconds: float, wait: bool) -> None:
        argv = [
            "node",
            str(LOADGEN),
            "--url",
            url,
            "--clients",
            str(clients),
            "--rooms-of",
            str(p.rooms_of),
            "--rate",
            str(p.rate),
            "--seconds",
            str(seconds),
            "--grace",
            str(p.grace),
            "--size",
            str(p.size),
            "--concurrency",
            str(p.concurrency),
            "--mode",
            p.load,
        ]
        if wait:
            argv.append("--wait")
        if not p.deflate:
            argv.append("--no-deflate")
        self.proc = subprocess.Popen(
            argv,
            cwd=REFERENCE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._out = pump_lines(self.proc.stdout)
        self._err = pump_lines(self.proc.stderr)

    def next_event(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"load generator silent for {timeout:.0f} s") from None
            if line is None:
                err: list[str] = []
                while not self._err.empty():
                    e = self._err.get()
                    if e is not None:
                        err.append(e)
                raise BenchError(f"load generator exited: {' '.join(err[-5:])}")
            if line.startswith("{"):
                event: dict[str, Any] = json.loads(line)
                if event.get("event") == "fatal":
                    raise BenchError(f"load generator failed: {event.get('error')}")
                return event

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _server_env(p: Params, history: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env.update({"ROOM_MODE": "mesh", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    # The offer load measures the relay: its history stays in memory.
    env.update(history or {"DATABASE_URL": "memory"})
    env.update(p.extra_env)
    return env


def _argv_for(name: str, p: Params) -> list[str]:
    return p.node_cmd if name == "node" else p.python_cmd


def run_one(name: str, clients: int, p: Params, progress: Progress, task: TaskID) -> dict[str, Any]:
    """One fresh server (and database), a warm-up, idle memory with C clients joined, then
    the offer load (or the chat load)."""
    if p.load != "chat":
        return _run_one(name, clients, p, progress, task, _server_env(p))
    with chat.server_env(name, p.postgres_url) as history:
        return _run_one(name, clients, p, progress, task, _server_env(p, history))


def _run_one(
    name: str, clients: int, p: Params, progress: Progress, task: TaskID, env: dict[str, str]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "server": name,
        "clients": clients,
        "rooms_of": p.rooms_of,
        "rate": p.rate,
        "seconds": p.seconds,
        "load": p.load,
    }
    with running(name, _argv_for(name, p), env) as server:
        # Warm-up: imports, code paths and JIT are paid before the baseline is taken.
        warm = LoadGen(server.url, p, clients=max(2 * p.rooms_of, 8), seconds=1, wait=False)
        try:
            while warm.next_event(timeout=60)["event"] != "result":
                pass
        finally:
            warm.close()
        time.sleep(0.5)
        rss0 = server.rss()
        progress.update(task, description=f"{name} C={clients}: join storm")
        gen = LoadGen(server.url, p, clients=clients, seconds=p.seconds, wait=True)
        spy: subprocess.Popen[bytes] | None = None
        try:
            joined = gen.next_event(timeout=120 + clients / 10)
            if joined["connected"] < clients:
                raise BenchError(
                    f"{joined['connected']}/{clients} joined; first failure: {joined['failure']}"
                )
            time.sleep(1.0)  # idle: C clients connected and joined, nothing in flight
            rss1 = server.rss()
            cpu0, busy0, wall0 = server.cpu_s(), machine_busy_s(), time.monotonic()
            if p.py_spy_dir is not None and name != "node":
                spy = _start_py_spy(server.proc.pid, p, clients)
            gen.go()
            progress.update(task, description=f"{name} C={clients}: offers")
            while (event := gen.next_event(timeout=p.seconds + p.grace + 30))["event"] == "tick":
                progress.update(task, completed=min(event["t"], p.seconds))
            cpu1, busy1, wall1 = server.cpu_s(), machine_busy_s(), time.monotonic()
        finally:
            gen.close()
            if spy is not None:
                spy.wait(timeout=60)
    progress.update(task, completed=p.seconds)
    row.update(
        {
            "join_storm_s": round(event["join_storm_s"], 3),
            "rtt_ms_p50": _round(event["rtt_ms_p50"]),
            "rtt_ms_p99": _round(event["rtt_ms_p99"]),
            "rtt_ms_max": _round(event["rtt_ms_max"]),
            "answered_per_s": round(event["answered_per_s"], 1),
            "offered_per_s": round(event["offered_per_s"], 1),
            "sent": event["sent"],
            "answered": event["answered"],
            "lost": event["lost"],
            "errors": event["errors"],
            "disconnects": event["disconnects"],
            "rss_kb_per_conn": round((rss1 - rss0) / 1024 / clients, 1),
            "rss_mb_idle": round(rss1 / 2**20, 1),
            "server_cpu_s_per_s": round((cpu1 - cpu0) / (wall1 - wall0), 3),
            # Server CPU per answered offer (offer in+out, answer in+out): the number that
            # other people's load on a shared machine disturbs least.
            "server_cpu_us_per_offer": round((cpu1 - cpu0) * 1e6 / max(1, event["answered"]), 1),
            "loadgen_cpu_s_per_s": round(event["loadgen_cpu_s_per_s"], 3),
            # Everything else on the machine (other people's work): the honesty column.
            "other_cpu_s_per_s": round(
                max(
                    0.0,
                    (busy1 - busy0 - (cpu1 - cpu0)) / (wall1 - wall0)
                    - event["loadgen_cpu_s_per_s"],
                ),
                3,
            ),
        }
    )
    if event.get("first_error"):
        row["first_error"] = event["first_error"]
    return row


def _start_py_spy(pid: int, p: Params, clients: int) -> subprocess.Popen[bytes]:
    """Sample our server during the offer phase (py-spy from PyPI; needs ptrace rights).

    Writes collapsed stacks (`.folded`): open them in https://www.speedscope.app or
    flamegraph.pl; `top_frames` prints the heaviest frames after the run.
    """
    assert p.py_spy_dir is not None
    p.py_spy_dir.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(p.seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(p.py_spy_dir / f"signaling-python-{clients}.folded"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_FRAME = re.compile(r"^(?P<fn>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def _short_frame(frame: str) -> str:
    """`fn (…/site-packages/pkg/mod.py:12)` -> `fn (pkg/mod.py)`."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", m["path"])
    return f"{m['fn']} ({path.removeprefix(str(ROOT) + '/')})"


def top_frames(folded: Path, n: int = 15) -> Table:
    """Self and inclusive share of samples per frame, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short_frame(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for f in set(frames):
            incl[f] += int(count)
    t = Table(title=f"{folded.name}: {total} samples")
    t.add_column("self %", justify="right")
    t.add_column("frame (self)")
    t.add_column("incl %", justify="right")
    t.add_column("frame (inclusive, below the event loop)")
    skip = max(incl.values(), default=0)  # frames in every sample: runpy, the loop
    inclusive = [(f, c) for f, c in incl.most_common() if c < skip][:n]
    for (fs, cs), (fi, ci) in zip(own.most_common(n), inclusive, strict=False):
        t.add_row(f"{100 * cs / total:.1f}", fs, f"{100 * ci / total:.1f}", fi)
    return t


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def run(p: Params) -> list[dict[str, Any]]:
    """The sweep: for each C and round, each server in turn on a fresh process; a cell is the
    median of its rounds (rounds interleave the servers, so drift hits them alike)."""
    rows: list[dict[str, Any]] = []
    with sweep_progress(console) as progress:
        total = len(p.clients) * len(p.servers) * p.rounds
        overall = progress.add_task("sweep", total=total)
        for clients in p.clients:
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in p.servers}
            for _ in range(p.rounds):
                for name in p.servers:
                    task = progress.add_task(f"{name} C={clients}: start", total=p.seconds)
                    try:
                        rounds[name].append(run_one(name, clients, p, progress, task))
                    except BenchError as exc:
                        console.print(f"[red]{name} C={clients}: {exc}")
                        rounds[name].append({"server": name, "clients": clients, "error": str(exc)})
                    progress.remove_task(task)
                    progress.advance(overall)
            for name in p.servers:
                cells = rounds[name]
                rows.append(chat.median_rows(cells) if len(cells) > 1 else cells[0])
    return rows


METRICS: tuple[Metric, ...] = (
    ("join_storm_s", "join storm (s)", _fmt),
    ("rtt_ms_p50", "RTT p50 (ms)", _fmt),
    ("rtt_ms_p99", "RTT p99 (ms)", _fmt),
    ("answered_per_s", "answered/s", _fmt),
    ("offered_per_s", "offered/s", _fmt),
    ("lost", "lost", _fmt),
    ("rss_kb_per_conn", "RSS KB/conn (idle)", _fmt),
    ("server_cpu_s_per_s", "server CPU s/s", _fmt),
    ("server_cpu_us_per_offer", "server CPU µs/offer", _fmt),
    ("loadgen_cpu_s_per_s", "loadgen CPU s/s", _fmt),
    ("other_cpu_s_per_s", "other processes CPU s/s", _fmt),
)


def table(rows: list[dict[str, Any]]) -> Table:
    """Side by side: ours, Node, and ours/Node per client count and metric."""
    t = Table(title="Signaling load: ours (python) vs plain Node socket.io relay")
    for col in ("clients", "metric", "ours", "node", "ours/node"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    by = {(r["server"], r["clients"]): r for r in rows}
    for clients in sorted({r["clients"] for r in rows}):
        py, node = by.get(("python", clients), {}), by.get(("node", clients), {})
        add_side_by_side(t, str(clients), py, node, METRICS)
        for side, r in (("ours", py), ("node", node)):
            if "error" in r:
                t.add_row(str(clients), f"[red]{side} error", r["error"][:60], "", "")
        if py and node and "error" not in py and "error" not in node:
            t.add_row(str(clients), "target", _verdict(py, node), "", "", end_section=True)
    return t


def _verdict(py: dict[str, Any], node: dict[str, Any]) -> str:
    """Issue 2's target: p99 <= 2x Node's, nothing lost, <= 50 KB per idle connection."""
    ok_rtt = py["rtt_ms_p99"] is not None and py["rtt_ms_p99"] <= 2 * (node["rtt_ms_p99"] or 0)
    ok_lost = py["lost"] == 0
    ok_mem = py["rss_kb_per_conn"] <= 50
    miss = [n for n, ok in (("p99", ok_rtt), ("lost", ok_lost), ("memory", ok_mem)) if not ok]
    return "[green]met" if not miss else f"[red]missed: {', '.join(miss)}"


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The README table: one line per client count, ours against Node."""
    m = meta["machine"]
    lines = [
        f"Measured {meta['date']} on {m['nproc']} x {m['cpu_model']} (Python {m['python']}, "
        f"Node {m['node']}), load average at start {m['load_avg_at_start']}:",
        "",
        f"    {meta['command']}",
        "",
        "| clients | server | join storm s | RTT p50 ms | RTT p99 ms | answered/s | sent | lost "
        "| KB/conn idle | server CPU s/s | CPU µs/offer | other procs CPU s/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["clients"], r["server"] != "python")):
        if "error" in r:
            lines.append(f"| {r['clients']} | {r['server']} | error: {r['error'][:80]} |")
            continue
        cells = [
            r["clients"],
            "ours" if r["server"] == "python" else "Node",
            *(
                _fmt(r.get(k))
                for k in (
                    "join_storm_s",
                    "rtt_ms_p50",
                    "rtt_ms_p99",
                    "answered_per_s",
                    "sent",
                    "lost",
                    "rss_kb_per_conn",
                    "server_cpu_s_per_s",
                    "server_cpu_us_per_offer",
                    "other_cpu_s_per_s",
                )
            ),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return report.machine(node=node.stdout.strip())


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """RTT p99 and answered/s against C for both servers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"python": "ours (python-socketio)", "node": "Node socket.io relay"}
    for name in SERVERS:
        pts = sorted((r["clients"], r) for r in rows if r["server"] == name and "error" not in r)
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ax1.plot(xs, [r["rtt_ms_p99"] for _, r in pts], marker="o", label=labels[name])
        ax2.plot(xs, [r["answered_per_s"] for _, r in pts], marker="o", label=labels[name])
    per_c: dict[int, float] = {}
    for r in rows:
        if "error" not in r:
            per_c[r["clients"]] = max(per_c.get(r["clients"], 0.0), r["offered_per_s"])
    offered = sorted(per_c.items())
    if offered:
        ax2.plot(
            [c for c, _ in offered],
            [o for _, o in offered],
            linestyle="--",
            color="grey",
            label="offered",
        )
    ax1.set(xlabel="clients", ylabel="offer->answer RTT p99 (ms)", yscale="log")
    ax2.set(xlabel="clients", ylabel="answered offers / s")
    save_figure(fig, (ax1, ax2), "Signaling relay under load (rooms of 4, 4 KB offers)", path)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Params, argparse.Namespace]:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.signaling",
        description=(
            "Signaling load: C clients in rooms of R exchanging offers and answers, against "
            "our server (python -m signaling, in-memory, mesh) and the plain Node socket.io "
            "relay in benchmarks/reference/, one server at a time."
        ),
    )
    ap.add_argument("--clients", default="100,400,1000", help="comma list of client counts")
    ap.add_argument("--rooms-of", type=int, default=4, help="clients per room")
    ap.add_argument(
        "--load",
        choices=["offer", "chat"],
        default="offer",
        help="offer: the relay, ours vs Node; chat: acked study messages, history in "
        "memory vs SQLite vs PostgreSQL",
    )
    ap.add_argument("--rate", type=float, help="offers (chat: messages) per second per client")
    ap.add_argument("--seconds", type=float, default=10.0, help="offer phase length")
    ap.add_argument("--grace", type=float, default=3.0, help="wait for late answers")
    ap.add_argument("--size", type=int, help="offer/answer SDP size, chat message size (chars)")
    ap.add_argument("--concurrency", type=int, default=100, help="connects in flight")
    ap.add_argument(
        "--servers",
        help=f"which servers, comma list (offer: {','.join(SERVERS)}; chat: "
        f"{','.join(chat.VARIANTS)})",
    )
    ap.add_argument("--rounds", type=int, default=1, help="rounds per cell; cells are medians")
    ap.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="chat load: PostgreSQL server (no database: a fresh one per cell is made)",
    )
    ap.add_argument(
        "--python-cmd",
        default=f"{shlex.quote(sys.executable)} -m signaling --host 127.0.0.1 --port 0 --mode mesh",
        help="command for our server (must print 'Listening on URL'); e.g. a patched copy",
    )
    ap.add_argument(
        "--node-cmd",
        default=f"node {shlex.quote(str(REFERENCE / 'server.js'))} --port 0",
        help="command for the Node reference",
    )
    ap.add_argument(
        "--no-deflate",
        action="store_true",
        help="clients do not offer permessage-deflate (browsers always do)",
    )
    ap.add_argument("--py-spy-dir", type=Path, help="record our server with py-spy per C")
    ap.add_argument("--json", type=Path, help="write rows and metadata here")
    ap.add_argument("--plot", type=Path, help="write a PNG plot here")
    ap.add_argument("--markdown", type=Path, help="write the README table here")
    a = ap.parse_args(argv)
    known = chat.VARIANTS if a.load == "chat" else SERVERS
    servers = [s.strip() for s in (a.servers or ",".join(known)).split(",") if s.strip()]
    if not servers or any(s not in known for s in servers):
        ap.error(f"--servers takes {', '.join(known)} with --load {a.load}")
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    p = Params(
        clients=[int(c) for c in a.clients.split(",") if c.strip()],
        rooms_of=a.rooms_of,
        rate=a.rate if a.rate is not None else (2.0 if a.load == "chat" else 5.0),
        seconds=a.seconds,
        grace=a.grace,
        size=a.size if a.size is not None else (200 if a.load == "chat" else 4096),
        concurrency=a.concurrency,
        servers=servers,
        python_cmd=shlex.split(a.python_cmd),
        node_cmd=shlex.split(a.node_cmd),
        deflate=not a.no_deflate,
        py_spy_dir=a.py_spy_dir,
        load=a.load,
        rounds=a.rounds,
        postgres_url=a.postgres_url.rstrip("/"),
    )
    return p, a


def main(argv: Sequence[str] | None = None) -> int:
    p, a = parse_args(argv)
    if not (REFERENCE / "node_modules" / "ws").is_dir():
        console.print(
            "[red]benchmarks/reference/node_modules missing: "
            "run `make test-deps` or `cd benchmarks/reference && npm ci`"
        )
        return 2
    meta = {
        "benchmark": "signaling",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.signaling "
        + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv)),
        "machine": machine(),
        "params": {
            "clients": p.clients,
            "rooms_of": p.rooms_of,
            "rate": p.rate,
            "seconds": p.seconds,
            "grace": p.grace,
            "size": p.size,
            "concurrency": p.concurrency,
            "deflate_offered": p.deflate,
            "load": p.load,
            "rounds": p.rounds,
        },
    }
    rows = run(p)
    chat_load = p.load == "chat"
    Console().print(chat.table(rows) if chat_load else table(rows))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    if a.plot:
        (chat.plot if chat_load else plot)(rows, a.plot)
    if a.markdown:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(chat.markdown(meta, rows) if chat_load else markdown(meta, rows))
    if p.py_spy_dir is not None:
        for folded in sorted(p.py_spy_dir.glob("signaling-python-*.folded")):
            Console().print(top_frames(folded))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

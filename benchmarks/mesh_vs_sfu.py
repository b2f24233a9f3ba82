"""Mesh against SFU in real browsers: N Chromium pages of our web client in one room.

For each N and each room mode (``ROOM_MODE=mesh``: one peer connection per other person,
every page encodes its camera once per peer; ``ROOM_MODE=sfu``: one connection to the
server, one encode, the server forwards; ``sfu-docs``: an sfu room of pages of the
documents' own client, `benchmarks.documents`, which knows nothing of the SFU and gets a
mesh the server makes, uploading on one of its connections) we open N pages of the call link
(``/?room=...&name=...``) in one Chromium (one browser context each, fake camera and
microphone), wait until every page plays every other page's video, let bandwidth
estimation settle, then measure over a window:

* per client upload / download bytes per second: sums of ``outbound-rtp`` ``bytesSent`` /
  ``inbound-rtp`` ``bytesReceived`` deltas of ``getStats()`` over every peer connection the
  page created (payload bytes, audio + video; RTP headers, RTCP and SRTP overhead excluded).
  The pages' connections are recorded by wrapping ``RTCPeerConnection`` in an init script,
  since ``window.__call`` does not expose them;
* frames encoded per second per client (``framesEncoded`` deltas of outbound video);
* ``fps_min``: the lowest receive frame rate of any remote video on any page
  (``framesDecoded`` delta over the window; ``framesPerSecond`` is also recorded);
* page CPU: CPU-seconds per second of Chromium's renderer processes (one per page, where
  the encoders and decoders run), per page; and of the whole browser (renderers, browser
  process with the fake capture device, network service), per client;
* server CPU-seconds per second of the ``python -m signaling`` process (and children).

The server runs in its own process; the browser runs in this one's process tree. Both share
the machine's cores, so past some N the browser saturates the machine and fps drops: that
is part of the result, not an error (``complete`` says whether every video played before
the window).

    python -m benchmarks.mesh_vs_sfu --participants 2,3,4,5,6 --seconds 6 \\
        --json benchmarks/results/mesh_vs_sfu.json --plot benchmarks/results/mesh_vs_sfu.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psutil
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

import devtools.server
from benchmarks import _report as report
from benchmarks._report import Metric, machine_busy_s, sweep_progress
from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.documents import ALL_PLAYING as DOCUMENTS_PLAYING
from benchmarks.documents import open_documents_client
from devtools.server import ServerExited, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
MODES = ("mesh", "sfu", "sfu-docs")
DOCUMENTS = "sfu-docs"

console = Console(stderr=True)

# Every RTCPeerConnection the page creates, in creation order (closed ones included).
RECORD_PCS = """
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || Native.__benchWrapped) return;
  const pcs = [];
  class Recorded extends Native {
    constructor(...args) { super(...args); pcs.push(this); }
  }
  Recorded.__benchWrapped = true;
  window.RTCPeerConnection = Recorded;
  Object.defineProperty(window, '__benchPcs', { value: pcs });
})();
"""

# Cumulative RTP counters of every live connection, keyed "pc index/stat id".
STATS = """
async () => {
  const out = {};
  const pcs = window.__benchPcs || [];
  for (let i = 0; i < pcs.length; i++) {
    const pc = pcs[i];
    if (pc.connectionState === 'closed') continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out[`${i}/${s.id}`] = { dir: 'out', kind: s.kind, bytes: s.bytesSent || 0,
          frames: s.framesEncoded || 0 };
      } else if (s.type === 'inbound-rtp') {
        out[`${i}/${s.id}`] = { dir: 'in', kind: s.kind, bytes: s.bytesReceived || 0,
          frames: s.framesDecoded || 0, fps: s.framesPerSecond ?? null };
      }
    });
  }
  return { t: performance.now() / 1000, pcs: pcs.length, stats: out };
}
"""

REMOTE_TILES = "[...document.querySelectorAll('.tile[data-kind=camera]:not([data-local])')]"
# True once the page shows `n` remote camera videos with frames whose playback time has moved
# on by 0.3 s since each was first seen playing.
ALL_PLAYING = (
    "n => { const tiles = " + REMOTE_TILES + ";"
    """
  const seen = (window.__benchSeen ??= {});
  let ok = tiles.length === n;
  for (const t of tiles) {
    const v = t.querySelector('video');
    if (!v || !v.videoWidth || v.paused) { ok = false; continue; }
    const first = (seen[t.dataset.peer] ??= v.currentTime);
    if (v.currentTime < first + 0.3) ok = false;
  }
  return ok;
}"""
)


class BenchError(RuntimeError):
    """The server or the browser did not behave; the row records the message."""


@dataclass
class Params:
    """One run's knobs, echoed into the JSON so a result says how it was made."""

    participants: list[int]
    modes: list[str]
    seconds: float
    warmup: float
    setup_timeout: float
    resolution: str
    root: Path = ROOT


# ---------------------------------------------------------------- processes


@contextlib.asynccontextmanager
async def running_server(mode: str, root: Path = ROOT) -> AsyncIterator[ServerProcess]:
    """`python -m signaling --port 0` with ROOM_MODE=mode, run from `root`, stopped afterwards.

    The server serves `root`'s web client too, so `root` may be another checkout (to
    measure a change against this one).
    """
    env = {
        "ROOM_MODE": "sfu" if mode == DOCUMENTS else mode,
        "MAX_PARTICIPANTS": "16",
        "DATABASE_URL": "memory",  # signaling's history is not what this measures
        "MEDIA_WORKERS": "1",  # server CPU is this one process (benchmarks.room measures workers)
    }
    try:
        async with devtools.server.running_server(env=env, cwd=root) as server:
            yield server
    except ServerExited as exc:
        raise BenchError(str(exc)) from None


def _tree_cpu(server_pid: int) -> dict[int, tuple[str, float]]:
    """CPU-seconds of this process and its descendants: pid -> (role, seconds).

    Roles: Chromium's process types (``browser``, ``renderer``, ``utility``, ``gpu-process``,
    ``zygote``), ``server`` (the signaling process and its children) and ``harness`` (this
    Python process and Playwright's driver).
    """
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    server: set[int] = {server_pid}
    with contextlib.suppress(psutil.Error):
        server |= {c.pid for c in psutil.Process(server_pid).children(recursive=True)}
    out: dict[int, tuple[str, float]] = {}
    for p in procs:
        try:
            t = p.cpu_times()
            role = "server" if p.pid in server else _role(p)
            out[p.pid] = (role, float(t.user + t.system))
        except psutil.Error:
            continue
    return out


def _role(p: psutil.Process) -> str:
    cmd: list[str] = p.cmdline()
    if not cmd or not os.path.basename(cmd[0]).startswith("chrom"):
        return "harness"
    if "--top-chrome-webui" in cmd:
        # Headless Chromium's own UI renderer, not a page: browser overhead.
        return "webui-renderer"
    for arg in cmd:
        if arg.startswith("--type="):
            return arg.removeprefix("--type=")
    return "browser"


def _delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU-seconds spent per role between two snapshots (new processes count from 0)."""
    spent: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        spent[role] = spent.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
    return spent


# ---------------------------------------------------------------- one case


def _window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Byte and frame rates of one page between two STATS snapshots."""
    elapsed = after["t"] - before["t"]
    prev: dict[str, dict[str, Any]] = before["stats"]
    up = down = up_video = frames_enc = 0.0
    fps: list[float] = []
    fps_reported: list[float] = []
    for key, s in after["stats"].items():
        p = prev.get(key, {"bytes": 0, "frames": 0})
        bytes_ = s["bytes"] - p["bytes"]
        frames = s["frames"] - p["frames"]
        if s["dir"] == "out":
            up += bytes_
            if s["kind"] == "video":
                up_video += bytes_
                frames_enc += frames
        else:
            down += bytes_
            if s["kind"] == "video":
                fps.append(frames / elapsed)
                if s.get("fps") is not None:
                    fps_reported.append(float(s["fps"]))
    return {
        "up": up / elapsed,
        "up_video": up_video / elapsed,
        "down": down / elapsed,
        "frames_encoded": frames_enc / elapsed,
        "fps_min": min(fps, default=0.0),
        "fps_reported_min": min(fps_reported, default=0.0),
        "inbound_video": float(len(fps)),
        "pcs": float(after["pcs"]),
    }


async def _open(
    browser: Browser, url: str, room: str, name: str, lowres: bool, documents: bool
) -> Page:
    context: BrowserContext = await browser.new_context(viewport={"width": 1000, "height": 620})
    await context.add_init_script(RECORD_PCS)
    if documents:  # its camera is 320x240 at 15 fps, as ours with ?lowres=1
        return await open_documents_client(context, url, room, name)
    page = await context.new_page()
    query = {"room": room, "name": name}
    if lowres:
        query["lowres"] = "1"
    await page.goto(f"{url}/?{urlencode(query)}")
    return page


async def run_case(
    browser: Browser,
    mode: str,
    n: int,
    p: Params,
    progress: Progress,
    task: TaskID,
) -> dict[str, Any]:
    """N pages in one room of a fresh server; measures the window once all videos play."""
    async with running_server(mode, p.root) as server:
        room = f"bench-{mode}-{n}-{int(time.time() * 1000)}"
        pages: list[Page] = []
        try:
            started = time.monotonic()
            progress.update(task, description=f"{mode} N={n}: joining")
            for i in range(n):
                pages.append(
                    await _open(
                        browser, server.url, room, f"p{i}", p.resolution == "low", mode == DOCUMENTS
                    )
                )
            playing = DOCUMENTS_PLAYING if mode == DOCUMENTS else ALL_PLAYING
            progress.update(task, description=f"{mode} N={n}: waiting for video")
            complete = True
            try:
                await asyncio.gather(
                    *(
                        pg.wait_for_function(
                            playing, arg=n - 1, polling=250, timeout=p.setup_timeout * 1000
                        )
                        for pg in pages
                    )
                )
            except Exception as exc:  # Playwright's TimeoutError: measure what there is
                complete = False
                console.print(f"[yellow]{mode} N={n}: not every video played ({exc!s:.80})")
            setup_s = time.monotonic() - started
            if mode != DOCUMENTS:  # (the documents' client has no notion of a mode)
                modes = {(await pg.evaluate("window.__call.state.mode")) for pg in pages}
                if modes != {mode}:
                    raise BenchError(f"pages report room mode {sorted(map(str, modes))}")
            progress.update(task, description=f"{mode} N={n}: warm-up")
            await asyncio.sleep(p.warmup)

            progress.update(task, description=f"{mode} N={n}: measuring", completed=0)
            before = await asyncio.gather(*(pg.evaluate(STATS) for pg in pages))
            cpu0, busy0 = _tree_cpu(server.pid), machine_busy_s()
            t0 = time.monotonic()
            while (left := p.seconds - (time.monotonic() - t0)) > 0:
                await asyncio.sleep(min(0.25, left))
                progress.update(task, completed=min(p.seconds, time.monotonic() - t0))
            elapsed = time.monotonic() - t0
            cpu1, busy1 = _tree_cpu(server.pid), machine_busy_s()
            after = await asyncio.gather(*(pg.evaluate(STATS) for pg in pages))
        finally:
            for pg in pages:
                with contextlib.suppress(Exception):
                    await pg.context.close()

    per_page = [_window(a, b) for a, b in zip(before, after, strict=True)]
    by_role = {k: v / elapsed for k, v in _delta(cpu0, cpu1).items()}
    renderers = by_role.get("renderer", 0.0)
    browser_total = sum(v for k, v in by_role.items() if k not in ("server", "harness"))
    server_cpu = by_role.get("server", 0.0)
    # Everything on the machine that is neither the browser, the server nor this harness:
    # other people's work on a shared machine.
    other = (busy1 - busy0) / elapsed - sum(by_role.values())
    return {
        "mode": mode,
        "participants": n,
        "upload_bytes_per_s_per_client": round(sum(x["up"] for x in per_page) / n, 1),
        "download_bytes_per_s_per_client": round(sum(x["down"] for x in per_page) / n, 1),
        "frames_encoded_per_s_per_client": round(sum(x["frames_encoded"] for x in per_page) / n, 2),
        "page_cpu_s_per_s": round(renderers / n, 4),
        "server_cpu_s_per_s": round(server_cpu, 4),
        "fps_min": round(min(x["fps_min"] for x in per_page), 2),
        # Context for the numbers above.
        "upload_video_bytes_per_s_per_client": round(sum(x["up_video"] for x in per_page) / n, 1),
        "upload_bytes_per_s_max_client": round(max(x["up"] for x in per_page), 1),
        "fps_reported_min": round(min(x["fps_reported_min"] for x in per_page), 2),
        "browser_cpu_s_per_s": round(browser_total, 4),
        "cpu_s_per_s_by_process_type": {k: round(v, 4) for k, v in sorted(by_role.items())},
        "other_cpu_s_per_s": round(max(0.0, other), 4),
        "inbound_video_streams_min": int(min(x["inbound_video"] for x in per_page)),
        "peer_connections_per_client": max(int(x["pcs"]) for x in per_page),
        "complete": complete,
        "setup_s": round(setup_s, 2),
        "window_s": round(elapsed, 2),
    }


async def run(p: Params) -> list[dict[str, Any]]:
    """The sweep: one Chromium per case, N contexts, a fresh server per case."""
    rows: list[dict[str, Any]] = []
    with sweep_progress(console) as progress:
        overall = progress.add_task("sweep", total=len(p.participants) * len(p.modes))
        async with async_playwright() as pw:
            for n in p.participants:
                for mode in p.modes:
                    task = progress.add_task(f"{mode} N={n}: start", total=p.seconds)
                    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    try:
                        row = await run_case(browser, mode, n, p, progress, task)
                    except Exception as exc:
                        console.print(f"[red]{mode} N={n}: {exc!s:.200}")
                        row = {"mode": mode, "participants": n, "error": str(exc)[:500]}
                    finally:
                        await browser.close()
                    rows.append(row)
                    progress.remove_task(task)
                    progress.advance(overall)
    return rows


# ---------------------------------------------------------------- output


def _kb(v: float) -> str:
    return f"{v / 1000:,.1f}"


METRICS: tuple[Metric, ...] = (
    ("upload_bytes_per_s_per_client", "upload kB/s per client", _kb),
    ("download_bytes_per_s_per_client", "download kB/s per client", _kb),
    ("frames_encoded_per_s_per_client", "frames encoded/s per client", "{:.1f}".format),
    ("fps_min", "fps min at receivers", "{:.1f}".format),
    ("page_cpu_s_per_s", "page (renderer) CPU s/s", "{:.3f}".format),
    ("browser_cpu_s_per_s", "whole browser CPU s/s", "{:.2f}".format),
    ("server_cpu_s_per_s", "server CPU s/s", "{:.3f}".format),
    ("other_cpu_s_per_s", "other processes CPU s/s", "{:.2f}".format),
)


def table(rows: list[dict[str, Any]]) -> Table:
    """Side by side: mesh, sfu, the documents' client in sfu, and the ratios to sfu."""
    t = Table(title="Mesh against SFU: N Chromium pages in one room")
    cols = ("N", "metric", "mesh", "sfu", "sfu-docs", "mesh/sfu", "docs/sfu")
    for col in cols:
        t.add_column(col, justify="left" if col == "metric" else "right")
    by = {(r["mode"], r["participants"]): r for r in rows}
    for n in sorted({r["participants"] for r in rows}):
        mesh, sfu, docs = (by.get((m, n), {}) for m in MODES)
        for key, label, fmt in METRICS:
            values = [r.get(key) for r in (mesh, sfu, docs)]
            base = values[1]
            t.add_row(
                str(n),
                label,
                *("-" if v is None else fmt(v) for v in values),
                *(
                    f"{v / base:.2f}x" if isinstance(v, int | float) and base else "-"
                    for v in (values[0], values[2])
                ),
            )
        for side, r in (("mesh", mesh), ("sfu", sfu), (DOCUMENTS, docs)):
            if "error" in r:
                t.add_row(str(n), f"[red]{side} error", r["error"][:60], "", "", "", "")
            elif r and not r["complete"]:
                t.add_row(str(n), f"[yellow]{side}: not every video played", "", "", "", "", "")
        t.add_section()
    return t


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The README table: one line per (N, mode)."""
    m = meta["machine"]
    lines = [
        f"Measured {meta['date']} on {m['nproc']} x {m['cpu_model']} ({m['chromium']}, "
        f"Python {m['python']}), load average at start {m['load_avg_at_start']}:",
        "",
        f"    {meta['command']}",
        "",
        "| N | mode | upload kB/s /client | download kB/s /client | frames enc/s /client "
        "| fps min | page CPU s/s | browser CPU s/s | server CPU s/s | other procs CPU s/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["participants"], r["mode"])):
        if "error" in r:
            lines.append(f"| {r['participants']} | {r['mode']} | error: {r['error'][:80]} |")
            continue
        mark = "" if r["complete"] else " (not all playing)"
        cells = [
            r["participants"],
            r["mode"] + mark,
            _kb(r["upload_bytes_per_s_per_client"]),
            _kb(r["download_bytes_per_s_per_client"]),
            f"{r['frames_encoded_per_s_per_client']:.1f}",
            f"{r['fps_min']:.1f}",
            f"{r['page_cpu_s_per_s']:.3f}",
            f"{r['browser_cpu_s_per_s']:.2f}",
            f"{r['server_cpu_s_per_s']:.3f}",
            f"{r['other_cpu_s_per_s']:.2f}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Upload per client, server CPU and browser CPU against N, mesh and sfu."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (
        ("upload_bytes_per_s_per_client", 1e-3, "upload per client (kB/s)"),
        ("server_cpu_s_per_s", 1.0, "server CPU-seconds per second"),
        ("browser_cpu_s_per_s", 1.0, "whole browser CPU-seconds per second (N pages)"),
    )
    for mode, style in (("mesh", "o-"), ("sfu", "s--"), (DOCUMENTS, "^:")):
        pts = sorted((r["participants"], r) for r in rows if r["mode"] == mode and "error" not in r)
        if not pts:
            continue
        xs = [n for n, _ in pts]
        for ax, (key, scale, _) in zip(axes, panels, strict=True):
            ax.plot(xs, [r[key] * scale for _, r in pts], style, label=mode)
    cores = os.cpu_count() or 1
    axes[2].axhline(cores, color="grey", linestyle=":", label=f"all {cores} cores")
    for ax, (_, _, title) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("participants N")
        ax.set_xticks(sorted({r["participants"] for r in rows}))
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    chromium = "Chromium"
    with contextlib.suppress(OSError):
        import subprocess

        out = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        found = re.search(r"Chromium [\d.]+", out.stdout)
        chromium = found.group(0) if found else chromium
    return report.machine(chromium=chromium)


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError("participants are integers >= 2, e.g. 2,3,4")
    return values


def _modes(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or any(v not in MODES for v in values):
        raise argparse.ArgumentTypeError("modes are mesh, sfu and/or sfu-docs")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mesh_vs_sfu",
        description=(
            "N Chromium pages of the web client (fake camera) in a mesh room and in an sfu "
            "room: upload/download per client, frames encoded, page and server CPU."
        ),
    )
    parser.add_argument(
        "--participants", type=_ints, default=[2, 3, 4, 5, 6], help="comma-separated N values"
    )
    parser.add_argument(
        "--modes", type=_modes, default=list(MODES), help="mesh,sfu,sfu-docs (default)"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement window (s)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds after every video plays, before measuring (bandwidth estimation ramps)",
    )
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=45.0,
        help="seconds to wait for every page to play every other video before measuring anyway",
    )
    parser.add_argument(
        "--resolution",
        choices=["low", "medium"],
        default="low",
        help="low: ?lowres=1, 320x240 at 15 fps (default); medium: the client's 640x480 at 24",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="checkout whose server and web client are measured (default: this one)",
    )
    parser.add_argument("--json", type=Path, help="write {meta, rows} to this JSON file")
    parser.add_argument("--plot", type=Path, help="write a PNG plot to this file")
    parser.add_argument("--markdown", type=Path, help="write the README table to this file")
    args = parser.parse_args(argv)
    params = Params(
        participants=args.participants,
        modes=args.modes,
        seconds=args.seconds,
        warmup=args.warmup,
        setup_timeout=args.setup_timeout,
        resolution=args.resolution,
        root=args.root.resolve(),
    )
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.mesh_vs_sfu "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "params": {**params.__dict__, "root": str(params.root)},
    }
    rows = asyncio.run(run(params))
    Console(width=110).print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(meta, rows))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Real networks: N Chromium pages of our web client in one room, the last one on a shaped link.

Pages A, B, C (``--pages`` minus one) run in a Chromium on the host; page D runs in a
second Chromium inside a network namespace (`devtools.netns`: a veth pair on a private /30,
the namespace's default route via the host end). The server (``python -m signaling``,
``ROOM_MODE=sfu`` or ``mesh``, one process) listens on the host end's address, which every
page reaches (D over the veth, A-C locally). D's link is set up before D joins:

* ``none``: D in the namespace, unshaped (the baseline of the same run);
* ``down<K>``: D's downlink held to K kbit/s (``tc tbf`` on the host end's egress);
* ``up<K>``: D's uplink held to K kbit/s (``tc tbf`` on D's end's egress);
* ``loss<P>``: P % of UDP dropped at random each way (nftables ``numgen random``);
* ``udp-blocked``: every UDP datagram to or from D dropped (signaling over TCP still works);
* several joined with ``+``, e.g. ``down300+loss5``.

Each case (mode x scenario x round) gets a fresh namespace, server and browsers. The run
waits until every page plays every other (``complete``; bounded by ``--setup-timeout``,
then measured anyway: what never played counts as 0 fps), warms up, then
samples every page's ``getStats()`` every ``--interval`` s over a ``--seconds`` window
(`benchmarks._pagestats`). Rows are medians over ``--rounds`` rounds.

The camera: Chromium's fake device at ``--camera-fps`` (15) and the client's default
profile (640x480, capped at 600 kbit/s in sfu rooms, no cap in mesh): the capture of the
issue-20 measurement. ``--resolution low`` uses ``?lowres=1`` (320x240 at 15 fps).

    python -m benchmarks.network --modes sfu,mesh \\
        --scenarios none,down300,up250,loss5,udp-blocked --rounds 3 --warmup 15 --seconds 30 \\
        --json benchmarks/results/network.json --markdown benchmarks/results/network.md
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psutil
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from rich.console import Console
from rich.progress import Progress, TaskID

import devtools.server
from benchmarks import _report
from benchmarks._network_figures import groups, summarize
from benchmarks._network_report import markdown, plot, table
from benchmarks._pagestats import Sampler, first_frames, window_stats
from devtools.browser import CHROMIUM_ARGS, fake_camera, launch_chromium, secure_origins
from devtools.netns import DEFAULT_QUEUE_MS, Namespace, sweep_stale
from devtools.server import ServerExited

ROOT = Path(__file__).resolve().parent.parent
MODES = ("sfu", "mesh")
SCENARIOS = ("none", "down300", "up250", "loss5", "udp-blocked")
console = Console(stderr=True)


class BenchError(RuntimeError):
    """The server or the browsers did not behave; the case records the message."""


@dataclass(frozen=True)
class Scenario:
    """What D's link does: `name` parsed into namespace calls."""

    name: str
    steps: tuple[tuple[str, int], ...]

    def apply(self, ns: Namespace, queue_ms: float) -> None:
        for what, value in self.steps:
            if what == "down":
                ns.shape_downlink(value, latency_ms=queue_ms)
            elif what == "up":
                ns.shape_uplink(value, latency_ms=queue_ms)
            elif what == "loss":
                ns.drop_udp(value)
            elif what == "udp-blocked":
                ns.block_udp()


def scenario(text: str) -> Scenario:
    steps: list[tuple[str, int]] = []
    for part in text.split("+"):
        if part in ("none", "udp-blocked"):
            steps += [] if part == "none" else [("udp-blocked", 0)]
        elif m := re.fullmatch(r"(down|up)(\d+)", part):
            steps.append((m.group(1), int(m.group(2))))
        elif (m := re.fullmatch(r"loss(\d+)", part)) and int(m.group(1)) <= 100:
            steps.append(("loss", int(m.group(1))))
        else:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {part!r}: none, down<kbit/s>, up<kbit/s>, loss<percent>, "
                "udp-blocked, or several joined with +"
            )
    return Scenario(text, tuple(steps))


@dataclass
class Params:
    """One run's knobs, echoed into the JSON so a result says how it was made."""

    pages: int
    modes: list[str]
    scenarios: list[Scenario]
    rounds: int
    warmup: float
    seconds: float
    setup_timeout: float
    interval: float
    resolution: str
    camera_fps: int
    queue_ms: float
    root: Path = ROOT

    @property
    def names(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(self.pages)]


# ---------------------------------------------------------------- one case


def _cpu(pid: int) -> float:
    """CPU-seconds of a process and its children."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


async def _open(context: BrowserContext, url: str, room: str, name: str, lowres: bool) -> Page:
    page = await context.new_page()
    query = {"room": room, "name": name, **({"lowres": "1"} if lowres else {})}
    await page.goto(f"{url}/?{urlencode(query)}")
    return page


@contextlib.asynccontextmanager
async def running_server(
    mode: str, address: str, root: Path
) -> AsyncIterator[devtools.server.ServerProcess]:
    """`python -m signaling` on `address` (the namespace's host end: every page reaches it,
    D over the veth, A-C locally), one process, history in memory."""
    env = {
        "HOST": address,
        "ROOM_MODE": mode,
        "MAX_PARTICIPANTS": "16",
        "DATABASE_URL": "memory",
        "MEDIA_WORKERS": "1",  # the server's CPU is this one process
    }
    try:
        async with devtools.server.running_server(env=env, cwd=root) as server:
            yield server
    except ServerExited as exc:
        raise BenchError(str(exc)) from None


async def run_case(
    pw: Playwright, mode: str, scen: Scenario, rnd: int, p: Params, progress: Progress, task: TaskID
) -> dict[str, Any]:
    """One room on a fresh namespace, server and browsers; what every page saw."""

    def step(what: str) -> None:
        progress.update(task, description=f"{mode} {scen.name} r{rnd}: {what}")

    async with Namespace() as ns:
        scen.apply(ns, p.queue_ms)
        async with running_server(mode, ns.host_address, p.root) as server:
            args = secure_origins(fake_camera(CHROMIUM_ARGS, fps=p.camera_fps), [server.url])
            async with (
                launch_chromium(pw, args=args) as host_browser,
                launch_chromium(pw, args=args, namespace=ns) as inside_browser,
            ):
                case = await _measure(
                    (host_browser, inside_browser), server, mode, scen.name, rnd, p, step
                )
        return {"link": ns.describe(), **case}


async def _measure(
    browsers: tuple[Browser, Browser],
    server: devtools.server.ServerProcess,
    mode: str,
    scenario_name: str,
    rnd: int,
    p: Params,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Opens the pages (the last one in the namespace's browser), waits for video, warms up
    and measures the window."""
    names = p.names
    host, inside = names[:-1], names[-1]
    room = f"net-{mode}-{scenario_name}-{rnd}-{int(time.time() * 1000)}"
    pages: dict[str, Page] = {}
    opened: dict[str, float] = {}
    step("joining")
    started = time.monotonic()
    for name in names:
        browser = browsers[1] if name == inside else browsers[0]
        context = await browser.new_context(viewport={"width": 1000, "height": 620})
        pages[name] = await _open(context, server.url, room, name, p.resolution == "low")
        opened[name] = time.monotonic()
    async with Sampler(pages, p.interval) as sampler:
        step("waiting for video")
        complete = await sampler.until(
            lambda: all(sampler.sees(v, [o for o in names if o != v]) for v in names),
            started + p.setup_timeout - time.monotonic(),
        )
        # What did not play by now is measured as it is (0 fps), not waited for.
        host_complete = all(sampler.sees(v, [o for o in host if o != v]) for v in host)
        setup_s = time.monotonic() - started
        # A page that has no room state yet (starved, or its join still on the way) reports
        # the client's default mode: only a joined page's mode tells the room's.
        states = {
            n: await pg.evaluate("(({ joined, mode }) => ({ joined, mode }))(window.__call.state)")
            for n, pg in pages.items()
        }
        unjoined = [n for n, st in states.items() if not st["joined"]]
        wrong = {n: st["mode"] for n, st in states.items() if st["joined"] and st["mode"] != mode}
        if wrong:
            raise BenchError(f"pages report room mode {wrong} in a {mode} room")
        step("warm-up")
        await asyncio.sleep(p.warmup)
        step("measuring")
        w0 = sampler.count()
        cpu0, busy0, t0 = _cpu(server.pid), _report.machine_busy_s(), time.monotonic()
        await asyncio.sleep(p.seconds)
        await sampler.until(lambda: all(n > w0[k] + 1 for k, n in sampler.count().items()), 10)
        cpu1, busy1, t1 = _cpu(server.pid), _report.machine_busy_s(), time.monotonic()
        load = os.getloadavg()[0]
        samples = {n: list(s) for n, s in sampler.samples.items()}
        errors = dict(sampler.errors)
    for pg in pages.values():
        with contextlib.suppress(Exception):
            await pg.context.close()
    elapsed = t1 - t0
    per_page: dict[str, Any] = {}
    for name in names:
        window = samples[name][w0[name] :]
        where = "namespace" if name == inside else "host"
        if len(window) < 2:  # its renderer starved: what it saw is unknown, not zero
            why = errors.get(name, "getStats() did not answer in the window")
            per_page[name] = {"where": where, "stalled": why, "video": {}, "audio": {}, "sent": {}}
            continue
        walls = {o: opened[o] - opened[name] for o in names}
        first = first_frames(
            [{**s, "t": s["wall"] - opened[name]} for s in samples[name]],
            {o: max(0.0, w) for o, w in walls.items()},
        )
        per_page[name] = {
            "where": where,
            "first_frame_s": first,
            **window_stats(window),
        }
    server_cpu = (cpu1 - cpu0) / elapsed
    return {
        "mode": mode,
        "scenario": scenario_name,
        "round": rnd,
        "complete": complete,
        "host_complete": host_complete,
        "stalled_pages": [n for n, pg in per_page.items() if "stalled" in pg],
        "unjoined_at_setup": unjoined,
        "setup_s": round(setup_s, 1),
        "window_s": round(elapsed, 1),
        "server_cpu_s_per_s": round(server_cpu, 3),
        "other_cpu_s_per_s": round(max(0.0, (busy1 - busy0) / elapsed - server_cpu), 2),
        "load_avg_1m": round(load, 2),
        "pages": per_page,
        "groups": groups(per_page, host, inside),
    }


async def run(p: Params) -> list[dict[str, Any]]:
    """Every round runs every mode and scenario once (rounds interleave: drift spreads)."""
    cases: list[dict[str, Any]] = []
    total = p.rounds * len(p.modes) * len(p.scenarios)
    with _report.sweep_progress(console) as progress:
        overall = progress.add_task("sweep", total=total)
        async with async_playwright() as pw:
            for rnd in range(1, p.rounds + 1):
                for mode in p.modes:
                    for scen in p.scenarios:
                        task = progress.add_task(f"{mode} {scen.name} r{rnd}", total=1)
                        try:
                            case = await run_case(pw, mode, scen, rnd, p, progress, task)
                        except Exception as exc:
                            console.print(f"[red]{mode} {scen.name} r{rnd}: {exc!s:.300}")
                            case = {
                                "mode": mode,
                                "scenario": scen.name,
                                "round": rnd,
                                "error": str(exc)[:500],
                            }
                        cases.append(case)
                        progress.remove_task(task)
                        progress.advance(overall)
    return cases


# ---------------------------------------------------------------- command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _pages(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2 pages (one on the host, one in the namespace)")
    return value


def _list(allowed: tuple[str, ...] | None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed or ())}")
        return values

    return parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.network",
        description=(
            "N Chromium pages of the web client in one room, the last one (D) in a network "
            "namespace whose link is shaped (tc tbf) or lossy/blocked (nftables); what each "
            "page sees, from getStats(). Needs root, iproute2 and nftables."
        ),
    )
    ap.add_argument("--pages", type=_pages, default=4, help="pages in the room (default 4)")
    ap.add_argument("--modes", type=_list(MODES), default=list(MODES), help="sfu,mesh")
    ap.add_argument(
        "--scenarios",
        type=lambda t: [scenario(x.strip()) for x in t.split(",") if x.strip()],
        default=[scenario(s) for s in SCENARIOS],
        help="D's link: none, down<kbit/s>, up<kbit/s>, loss<percent>, udp-blocked, joined "
        f"with + (default {','.join(SCENARIOS)})",
    )
    ap.add_argument("--rounds", type=_positive_int, default=3, help="rounds; rows are medians")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds before the window")
    ap.add_argument("--seconds", type=float, default=30.0, help="measurement window (s)")
    ap.add_argument(
        "--setup-timeout",
        type=float,
        default=40.0,
        help="seconds for every page to play every other before measuring anyway",
    )
    ap.add_argument("--interval", type=float, default=1.0, help="getStats() sampling period")
    ap.add_argument(
        "--resolution",
        choices=["medium", "low"],
        default="medium",
        help="medium: the client's default, 640x480 capped at 600 kbit/s in sfu (default); "
        "low: ?lowres=1, 320x240 at 15 fps capped at 250 kbit/s",
    )
    ap.add_argument("--camera-fps", type=_positive_int, default=15, help="fake camera fps")
    ap.add_argument(
        "--queue-ms",
        type=float,
        default=DEFAULT_QUEUE_MS,
        help="tbf queue (latency) of a shaped direction, ms",
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose server and client run")
    ap.add_argument("--json", type=Path, help="write {meta, rows, cases} to this JSON file")
    ap.add_argument("--markdown", type=Path, help="write the README table to this file")
    ap.add_argument("--plot", type=Path, help="write a PNG plot to this file")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = Params(
        pages=args.pages,
        modes=args.modes,
        scenarios=args.scenarios,
        rounds=args.rounds,
        warmup=args.warmup,
        seconds=args.seconds,
        setup_timeout=args.setup_timeout,
        interval=args.interval,
        resolution=args.resolution,
        camera_fps=args.camera_fps,
        queue_ms=args.queue_ms,
        root=args.root.resolve(),
    )
    swept = sweep_stale()
    if swept:
        console.print(f"removed what a killed run left: {', '.join(swept)}")
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.network "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": _report.machine(),
        "params": {
            **params.__dict__,
            "scenarios": [s.name for s in params.scenarios],
            "root": str(params.root),
        },
    }
    cases = asyncio.run(run(params))
    rows = summarize(cases)
    Console(width=160).print(table(rows, params.names))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "cases": cases}, indent=2))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(meta, rows, params.names))
    if args.plot:
        plot(rows, args.plot)
    if any("error" in c for c in cases):
        sys.exit(1)


if __name__ == "__main__":
    main()
